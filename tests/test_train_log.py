"""dmpn.train_log and tools/plot_training_log.py: a `caffe train` log read back by iteration
and drawn as a PNG."""
import subprocess
import sys

import numpy as np
from skimage.io import imread

from conftest import ROOT, refused
from dmpn import train_log as T

# Lines as BVLC's solver.cpp / sgd_solver.cpp log them (glog prefix included), with a test pass
# and a resumed run appended that repeats iterations 20 and 30 from a snapshot at 20.
LOG = """\
I1127 07:02:00.645654 25915 solver.cpp:239] Iteration 0 (-2.76014e-05 iter/s, 0.481s/10 iters), loss = 0.0945657
I1127 07:02:00.645882 25915 solver.cpp:258]     Train net output #0: loss = 0.0945657 (* 1 = 0.0945657 loss)
I1127 07:02:00.645895 25915 sgd_solver.cpp:112] Iteration 0, lr = 0.1
I1127 07:02:06.219007 25915 solver.cpp:239] Iteration 10 (1.79437 iter/s, 5.573s/10 iters), loss = 0.143205
I1127 07:02:06.219100 25915 sgd_solver.cpp:112] Iteration 10, lr = 0.1
I1127 07:02:09.000000 25915 solver.cpp:330] Iteration 20, Testing net (#0)
I1127 07:02:10.000000 25915 solver.cpp:397]     Test net output #0: loss = 0.25 (* 1 = 0.25 loss)
I1127 07:02:10.000001 25915 solver.cpp:397]     Test net output #1: sad = 12.5
I1127 07:02:11.000000 25915 solver.cpp:239] Iteration 20 (1.8 iter/s, 5.5s/10 iters), loss = 0.2
I1127 07:02:11.000100 25915 sgd_solver.cpp:112] Iteration 20, lr = 0.01
I1127 07:02:16.000000 25915 solver.cpp:239] Iteration 30 (1.8 iter/s, 5.5s/10 iters), loss = 0.3
I1127 07:03:00.000000 26000 solver.cpp:295] Restoring previous solver status from snap_iter_20.solverstate
I1127 07:03:05.000000 26000 solver.cpp:239] Iteration 20, loss = 0.12
I1127 07:03:10.000000 26000 solver.cpp:239] Iteration 30 (1.8 iter/s, 5.5s/10 iters), loss = 1e-1
I1127 07:03:15.000000 26000 solver.cpp:330] Iteration 40, Testing net (#0)
I1127 07:03:16.000000 26000 solver.cpp:397]     Test net output #0: loss = 0.2 (* 1 = 0.2 loss)
"""


def test_a_log_is_read_by_iteration_the_later_value_of_a_resumed_run_winning():
    log = T.parse(LOG.splitlines())
    assert log.train_loss == [(0, 0.0945657), (10, 0.143205), (20, 0.12), (30, 0.1)]
    assert log.learning_rate == [(0, 0.1), (10, 0.1), (20, 0.01)]
    assert log.test == {"net #0 loss": [(20, 0.25), (40, 0.2)], "net #0 sad": [(20, 12.5)]}


def test_what_a_stopped_run_logged_past_the_restored_snapshot_is_dropped():
    """A run killed at 40 (snapshot at 20; a test pass at 40) and resumed from 20 up to 30 only:
    the curve ends at 30, as the weights do, not at the killed run's 40."""
    killed = [l for l in LOG.splitlines() if "26000" not in l] + [
        "I1127 07:02:21.000000 25915 solver.cpp:239] Iteration 40 (1.8 iter/s, 5.5s/10 iters), loss = 0.4",
        "I1127 07:02:21.000100 25915 sgd_solver.cpp:112] Iteration 40, lr = 0.01",
        "I1127 07:02:22.000000 25915 solver.cpp:330] Iteration 40, Testing net (#0)",
        "I1127 07:02:22.000001 25915 solver.cpp:397]     Test net output #0: loss = 0.9 (* 1 = 0.9 loss)"]
    resumed = [l for l in LOG.splitlines() if "26000" in l][:3]  # restore, 20, 30
    log = T.parse(killed + resumed)
    assert log.train_loss == [(0, 0.0945657), (10, 0.143205), (20, 0.12), (30, 0.1)]
    assert log.learning_rate == [(0, 0.1), (10, 0.1), (20, 0.01)]
    assert log.test == {"net #0 loss": [(20, 0.25)], "net #0 sad": [(20, 12.5)]}
    # Caffe snapshots at 20 before its test pass at 20, so a restored run tests 20 again: the
    # second pass replaces the first, and one loss of weight 1 adds no weighted total (the two
    # passes' losses had been summed into one: 0.25 + 0.3).
    again = resumed[:1] + ["I solver.cpp:330] Iteration 20, Testing net (#0)",
                           "I solver.cpp:397]     Test net output #0: loss = 0.3 (* 1 = 0.3 loss)",
                           "I solver.cpp:397]     Test net output #1: sad = 11"]
    assert T.parse(LOG.splitlines()[:10] + again).test == {"net #0 loss": [(20, 0.3)],
                                                           "net #0 sad": [(20, 11.0)]}
    h5 = ["I solver.cpp:239] Iteration 50, loss = 0.5",
          "I solver.cpp:295] Restoring previous solver status from /my runs/net/snap_iter_40.solverstate.h5"]
    assert T.parse(h5).train_loss == []


def test_several_values_of_one_output_and_a_log_without_training_lines():
    # An output blob of two values logs two lines under one name (solver.cpp): both are kept.
    # A solver with display: 0 logs test passes only: still a log.
    lines = ["I solver.cpp:330] Iteration 100, Testing net (#0)",
             "I solver.cpp:397]     Test net output #0: acc = 0.25",
             "I solver.cpp:397]     Test net output #1: acc = 0.75",
             "I solver.cpp:397]     Test net output #2: loss = 0.5 (* 0.5 = 0.25 loss)",
             "I solver.cpp:330] Iteration 200, Testing net (#0)",
             "I solver.cpp:397]     Test net output #0: acc = 0.5",
             "I solver.cpp:397]     Test net output #1: acc = 0.8",
             "I solver.cpp:397]     Test net output #2: loss = 0.4 (* 0.5 = 0.2 loss)"]
    log = T.parse(lines)
    # the loss weighted by 0.5 also gives the weighted total, on the training loss's scale
    assert log.train_loss == [] and log.test == {"net #0 acc": [(100, 0.25), (200, 0.5)],
                                                 "net #0 acc #1": [(100, 0.75), (200, 0.8)],
                                                 "net #0 loss": [(100, 0.5), (200, 0.4)],
                                                 "net #0 weighted_loss_total": [(100, 0.25), (200, 0.2)]}


def test_the_weighted_total_of_several_losses_only_where_it_says_more():
    # Two losses of weight 1: their sum is what "Iteration N, loss = X" logs for training. One
    # loss of weight 1 (LOG above, our nets) adds no series: it is the loss itself.
    lines = ["I solver.cpp:330] Iteration 100, Testing net (#1)",
             "I solver.cpp:397]     Test net output #0: alpha_loss = 0.5 (* 1 = 0.5 loss)",
             "I solver.cpp:397]     Test net output #1: comp_loss = 0.25 (* 1 = 0.25 loss)",
             "I solver.cpp:397]     Test net output #2: sad = 7"]
    assert T.parse(lines).test["net #1 weighted_loss_total"] == [(100, 0.75)]
    assert "net #0 weighted_loss_total" not in T.parse(LOG.splitlines()).test


def test_test_only_and_single_point_logs_are_drawn(tmp_path):
    (tmp_path / "test_only.log").write_text("\n".join([
        "I solver.cpp:330] Iteration 100, Testing net (#0)", "I solver.cpp:397]     Test net output #0: sad = 12.5",
        "I solver.cpp:330] Iteration 200, Testing net (#0)", "I solver.cpp:397]     Test net output #0: sad = 10"]) + "\n")
    res = run(tmp_path / "test_only.log")
    assert res.returncode == 0 and "0 training points; net #0 sad at 200: 10" in res.stdout, res.stderr
    (tmp_path / "one.log").write_text("I solver.cpp:239] Iteration 0 (0 iter/s, 0s/10 iters), loss = 0.5\n")
    res = run(tmp_path / "one.log")
    assert res.returncode == 0 and "1 training point, last iteration 0 (loss 0.5)" in res.stdout, res.stderr
    assert imread(tmp_path / "one.png").ndim == 3


def run(*args):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "plot_training_log.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_the_tool_draws_the_curves_as_a_png(tmp_path):
    path = tmp_path / "train.log"
    path.write_text(LOG + "".join(f"I1127 solver.cpp:239] Iteration {i} (1 iter/s, 1s/10 iters), loss = "
                                  f"{1 / (1 + i / 100):.4f}\n" for i in range(50, 400, 10)))
    res = run(path)
    assert res.returncode == 0, res.stderr
    png = tmp_path / "train.png"  # beside the log by default
    assert f"wrote {png}: 39 training points, last iteration 390 (loss 0.2041); net #0 loss at 40: 0.2; " \
           "net #0 sad at 20: 12.5" in res.stdout
    image = imread(png)
    assert image.ndim == 3 and image.shape[0] >= 300 and image.shape[1] >= 500
    assert np.ptp(image[..., :3]) > 100  # drawn, not blank
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_the_tool_refuses_what_is_no_log_naming_the_file(tmp_path):
    refused(run(tmp_path / "missing.log"), f"plot_training_log: error: {tmp_path / 'missing.log'}: no such log file")
    other = tmp_path / "notes.txt"
    other.write_text("no caffe here\nIteration 5, lr = 0.1\n")
    refused(run(other), f"{other}: no training iteration or test pass in it")
    good = tmp_path / "train.log"
    good.write_text(LOG)
    refused(run(good, "--out", tmp_path / "curve.jpg"), "--out must end in .png")
    named_png = tmp_path / "log.png"  # the default --out would be the log itself
    named_png.write_text(LOG)
    refused(run(named_png), f"{named_png}: is the log itself")
    assert named_png.read_text() == LOG
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.png", "notes.txt", "train.log"]
