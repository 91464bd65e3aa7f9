"""The main job end to end (README command 1 without its set-up), with a few seconds of
training: dataset, stock `caffe train`, prediction, scoring against the baselines, figures."""
import json
import re
import subprocess
import sys

from conftest import ROOT, refused, require_caffe


def test_main_job_runs_end_to_end(tmp_path):
    require_caffe()
    out = tmp_path / "results"
    cmd = [sys.executable, "-c", "import sys; from dmpn.main_job import main; sys.exit(main())",
           "--out", str(out), "--minutes", "0.15"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1200)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"cf", "knn", "handcrafted"} <= set(metrics["methods"])
    assert len(metrics["per_image"]) == 32  # 8 held-out generated originals x 4 composites
    for name in ("loss_curve.png", "figures/sad.png", "figures/mse.png", "figures/qualitative.png",
                 "summary.md", "metrics.md"):
        assert (out / name).stat().st_size > 0, name
    assert "| handcrafted |" in (out / "summary.md").read_text()
    # Training started from the edge-aware initialisation (dmpn/edge_init.py), via -weights.
    assert "edge-aware initialisation" in res.stdout
    # The scored model is the last snapshot with its BatchNorm statistics recomputed.
    summary = (out / "summary.md").read_text()
    scored = re.search(r"weights: net/(bn_recomputed_iter_(\d+)\.caffemodel)", summary)
    assert scored and (out / "net" / scored.group(1)).exists()
    assert (out / "net" / f"snap_iter_{scored.group(2)}.caffemodel").exists()
    assert "Finetuning from " + str(out / "net" / "init_edge.caffemodel") in (out / "net" / "train.log").read_text()
    # Run again: the dataset is reused and training resumes from its last snapshot.
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1200)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    resumed = re.search(r"resuming training from iteration (\d+)", again.stdout)
    assert resumed, again.stdout[-3000:]
    # Caffe itself restored the solver state (not a fresh start from the fillers) ...
    train_log = (out / "net" / "train.log").read_text()
    assert f"Resuming from {out / 'net'}/snap_iter_{resumed.group(1)}.solverstate" in train_log
    # ... and the rerun scored a later snapshot.
    rescored = re.search(r"weights: net/bn_recomputed_iter_(\d+)", (out / "summary.md").read_text())
    assert int(rescored.group(1)) > int(resumed.group(1)) >= int(scored.group(2))
    # metrics.json names the weights it scored, the summary's; no staging folder is left.
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["weights"] == f"net/bn_recomputed_iter_{rescored.group(1)}.caffemodel"
    assert not (out / ".scoring").exists()


def test_recomputed_statistics_are_reused_only_for_the_same_snapshot(tmp_path, monkeypatch):
    """bn_recomputed_iter_N is reused when its record names the snapshot's content, batches and
    seed; a snapshot of the same iteration from another training gets its statistics again."""
    from dmpn import main_job as J
    netdir = tmp_path / "net"
    netdir.mkdir()
    (netdir / "snap_iter_5.caffemodel").write_bytes(b"weights of a first training")
    runs = []

    def fake_recompute(cmd, env):
        runs.append(cmd)
        with open(cmd[cmd.index("--out") + 1], "wb") as f:
            f.write(b"statistics %d" % len(runs))
        return subprocess.CompletedProcess(cmd, 0)
    monkeypatch.setattr(J.subprocess, "run", fake_recompute)
    out = J.recompute_bn(str(netdir), seed=3)
    assert out == str(netdir / "bn_recomputed_iter_5.caffemodel") and len(runs) == 1
    assert J.recompute_bn(str(netdir), seed=3) == out and len(runs) == 1  # reused
    J.recompute_bn(str(netdir), seed=4)                                    # another seed
    assert len(runs) == 2
    (netdir / "snap_iter_5.caffemodel").write_bytes(b"weights of a second training")
    J.recompute_bn(str(netdir), seed=4)
    assert len(runs) == 3 and (netdir / "bn_recomputed_iter_5.caffemodel").read_bytes() == b"statistics 3"


def test_an_interrupted_scoring_leaves_the_last_complete_results(tmp_path, monkeypatch):
    """The scoring's results are staged and moved into --out together: interrupted after
    evaluate.py wrote its metrics (and before the summary), --out keeps the previous set whole,
    which a rerun then replaces, leaving no staging folder."""
    import pytest
    from dmpn import main_job as J
    out = tmp_path / "results"
    out.mkdir()
    old = {name: f"old {name}" for name in J.RESULTS}
    for name, text in old.items():
        (out / name).write_text(text)
    (out / "figures").mkdir()
    (out / "figures" / "sad.png").write_text("old figure")
    stage = out / J.STAGE

    def staged_run(fail):
        import shutil
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
        (stage / "figures").mkdir()
        (stage / "figures" / "sad.png").write_text("new figure")
        for name in J.RESULTS[:-1]:
            (stage / name).write_text(f"new {name}")
        if fail:
            raise KeyboardInterrupt
        (stage / "summary.md").write_text("new summary.md")
        J.publish(str(out), str(stage))

    with pytest.raises(KeyboardInterrupt):
        staged_run(fail=True)
    assert {name: (out / name).read_text() for name in J.RESULTS} == old
    assert (out / "figures" / "sad.png").read_text() == "old figure"
    staged_run(fail=False)
    assert all((out / name).read_text() == f"new {name}" for name in J.RESULTS)
    assert (out / "figures" / "sad.png").read_text() == "new figure" and not stage.exists()


def test_a_moved_results_folder_resumes(tmp_path):
    """Caffe's solver state names its .caffemodel by the path it was written at: after the
    results folder moved, the state is pointed at the .caffemodel beside it (it had stopped the
    run with 'the weights of this snapshot ... are missing')."""
    require_caffe()
    from caffe.proto import caffe_pb2
    from dmpn.caffe_checks import check_solverstate
    from dmpn.main_job import relink_moved_snapshot
    net = tmp_path / "moved" / "net"
    net.mkdir(parents=True)
    model = caffe_pb2.NetParameter()
    model.layer.add(name="conv", type="Convolution")
    (net / "snap_iter_100.caffemodel").write_bytes(model.SerializeToString())
    state = caffe_pb2.SolverState(iter=100, learned_net=str(tmp_path / "gone/net/snap_iter_100.caffemodel"))
    state.history.add()
    (net / "snap_iter_100.solverstate").write_bytes(state.SerializeToString())
    relink_moved_snapshot(str(net / "snap_iter_100.solverstate"))
    again = check_solverstate(net / "snap_iter_100.solverstate")
    assert again.learned_net == str(net / "snap_iter_100.caffemodel") and again.iter == 100
    # a state whose .caffemodel is where it says is left alone
    before = (net / "snap_iter_100.solverstate").read_bytes()
    relink_moved_snapshot(str(net / "snap_iter_100.solverstate"))
    assert (net / "snap_iter_100.solverstate").read_bytes() == before
    # a copied folder: its state names the original's .caffemodel, still there; it resumes from
    # its own
    import shutil
    shutil.copytree(net, tmp_path / "copy" / "net")
    copied = tmp_path / "copy" / "net" / "snap_iter_100.solverstate"
    relink_moved_snapshot(str(copied))
    assert check_solverstate(copied).learned_net == str(tmp_path / "copy/net/snap_iter_100.caffemodel")


def test_verdict_compares_ours_with_the_handcrafted_baseline():
    from dmpn.main_job import verdict

    def metrics(ours_sad, ours_mse):
        mean = lambda sad, mse: {"sad": sad, "mse": mse, "grad": 1.0, "conn": 1.0}  # noqa: E731
        return {"methods": {"cf": {"mean": mean(0.2, 0.005)}, "handcrafted": {"mean": mean(1.8, 0.067)},
                            "model": {"mean": mean(ours_sad, ours_mse)}}}
    table, beat, ours = verdict(metrics(1.3, 0.050))
    assert (beat, ours) == (True, "model") and "| model | 1.300 | 50.000 |" in table
    assert verdict(metrics(1.3, 0.070))[1] is False  # better SAD, worse MSE: not both
    assert verdict(metrics(1.9, 0.050))[1] is False


def test_snapshots_are_not_resumed_on_other_data(tmp_path):
    """results/data deleted and rebuilt from other originals: the snapshots in results/net were
    trained on the old data, so the rerun stops with the reason instead of resuming them."""
    import pytest
    from dmpn.main_job import TRAINED_ON, check_trained_on
    netdir, data = tmp_path / "net", tmp_path / "data"
    synthetic = {"fingerprint": "a" * 64, "originals": {"input": {"source": "synthetic (dmpn.synth)"}}}
    real = {"fingerprint": "b" * 64, "originals": {"input": {"source": "/data/alphamatting"}}}
    check_trained_on(str(netdir), str(data), synthetic, data_built_now=True)  # fresh: recorded
    assert json.loads((netdir / TRAINED_ON).read_text())["data_fingerprint"] == "a" * 64
    (netdir / "snap_iter_100.solverstate").write_bytes(b"")
    check_trained_on(str(netdir), str(data), synthetic, data_built_now=True)  # same data: resume
    with pytest.raises(SystemExit, match=r"net: its snapshots were trained on another dataset.*"
                                         r"/data/alphamatting.*delete .*net to train afresh"):
        check_trained_on(str(netdir), str(data), real, data_built_now=True)
    # snapshots from before the record: fine on the data they were trained on (not rebuilt) ...
    (netdir / TRAINED_ON).unlink()
    check_trained_on(str(netdir), str(data), real, data_built_now=False)
    assert json.loads((netdir / TRAINED_ON).read_text())["data_fingerprint"] == "b" * 64
    # ... but not on a dataset built anew
    (netdir / TRAINED_ON).unlink()
    with pytest.raises(SystemExit, match="no record of the data they were trained on"):
        check_trained_on(str(netdir), str(data), real, data_built_now=True)


def test_time_and_length_must_be_positive_numbers(tmp_path, capsys):
    import pytest
    from dmpn.main_job import main
    for option, value in (("--minutes", "nan"), ("--minutes", "0"), ("--epochs", "inf")):
        with pytest.raises(SystemExit) as exc:
            main(["--out", str(tmp_path / "results"), option, value])
        assert exc.value.code == 2 and option in capsys.readouterr().err


def test_epochs_beyond_int32_iterations_leave_the_time_limit(tmp_path):
    """--epochs caps what --minutes allows: 1e12 epochs is max_iter 2^31 - 2 (Caffe's int32,
    with room for the test interval max_iter + 1), not a protobuf error after the data build."""
    require_caffe()
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format
    from dmpn import net
    from dmpn.main_job import write_nets
    manifest = {"size": {"height": 192, "width": 192}, "counts": {"train": 224}}
    netdir, max_iter, _, _ = write_nets(str(tmp_path), str(tmp_path / "data"), manifest, 1e12)
    assert max_iter == net.MAX_ITER_LIMIT
    s = caffe_pb2.SolverParameter()
    text_format.Merge(open(f"{netdir}/solver.prototxt").read(), s)
    assert s.max_iter == max_iter and s.test_interval == max_iter + 1
    assert write_nets(str(tmp_path), str(tmp_path / "data"), manifest, 2.2)[1] == 124  # 2.2 x 224 / 4


def job(*args, code=None, env=None):
    """The main job in a subprocess (as tools/main_job.sh runs it, after its set-up); ``code``:
    Python run first in that process (e.g. to stop it at a given step)."""
    import os
    prog = (code or "") + "\nimport sys\nfrom dmpn.main_job import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run([sys.executable, "-c", prog, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=600, env=dict(os.environ, **(env or {})))


def test_bad_arguments_are_refused_before_anything_is_created(tmp_path):
    out = tmp_path / "results"
    for seed in ("-1", str(2 ** 32)):
        refused(job("--out", str(out), "--seed", seed), "argument --seed: expected a whole number from 0 to 4294967295, got '" + seed)
    missing = tmp_path / "no_such_originals"
    refused(job("--out", str(out), "--originals", str(missing)), f"main_job: error: {missing}: no such folder")
    afile = tmp_path / "afile"
    afile.write_text("x")
    refused(job("--out", str(afile / "results")), f"{afile}/results: cannot be created: {afile} is a file")
    refused(job("--out", str(afile)), f"main_job: error: {afile}: exists and is not a folder")
    refused(job("--out", str(out), "--originals", str(afile)), f"{afile}: not a folder")
    # an --originals folder without images: refused here, not by make_lmdb after the set-up
    empty = tmp_path / "emptydir"
    (empty / "image").mkdir(parents=True)
    refused(job("--out", str(out), "--originals", str(empty)), f"{empty}/image: no images in it")
    refused(job("--out", str(out), "--originals", str(empty / "image")),
            f"{empty}/image: no image/ folder in it")
    refused(job("--out", ""), "main_job: error: --out is empty: give the results folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "emptydir"]


def test_usage_names_the_command_not_python_c():
    res = job("--help")
    assert res.returncode == 0 and res.stdout.startswith("usage: tools/main_job.sh [-h]"), res.stdout[:300]
    res = subprocess.run([sys.executable, "-m", "dmpn.main_job", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0 and res.stdout.startswith("usage: tools/main_job.sh [-h]"), res.stderr[-2000:]
    assert "-c:" not in res.stdout + res.stderr
    script = (ROOT / "tools" / "main_job.sh").read_text()
    assert 'runpy.run_module("dmpn.main_job", run_name="__main__", alter_sys=True)' in script


def test_main_job_sh_answers_help_and_bad_arguments_before_its_set_up(tmp_path):
    """tools/main_job.sh checks the arguments with the standard library alone (python3 -S: no
    site-packages, as on a fresh machine before the set-up installed numpy) and stops there:
    the set-up, minutes on a fresh machine, never starts for --help or a mistake."""
    import os
    script = str(ROOT / "tools" / "main_job.sh")
    stdlib_only = tmp_path / "python3"  # the machine's python3 without its site-packages
    stdlib_only.write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")
    stdlib_only.chmod(0o755)
    env = dict(os.environ, PYTHON=str(stdlib_only))
    res = subprocess.run(["bash", script, "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0 and res.stdout.startswith("usage: tools/main_job.sh [-h]"), res.stderr[-2000:]
    assert "[setup]" not in res.stdout + res.stderr and "--check-arguments" not in res.stdout
    missing = tmp_path / "no_such_originals"
    for args, message in ((["--minutes", "-1"], "argument --minutes: must be > 0, got -1"),
                          (["--originals", str(missing)], f"main_job: error: {missing}: no such folder")):
        res = subprocess.run(["bash", script, "--out", str(tmp_path / "results"), *args], capture_output=True,
                             text=True, env=env, timeout=60)
        refused(res, message)
        assert "[setup]" not in res.stdout + res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["python3"]


def test_main_job_sh_goes_on_when_its_early_check_cannot_run(tmp_path):
    """A python3 that cannot run the early check (here: it fails on the job, as one that cannot
    import dmpn would) does not stop the job: the job checks the
    arguments itself after the set-up."""
    import os
    broken = tmp_path / "python3"
    broken.write_text('#!/bin/sh\ncase "$2" in *dmpn.main_job*) echo "no dmpn here" >&2; exit 1;; esac\n'
                      f'exec {sys.executable} "$@"\n')
    broken.chmod(0o755)
    res = subprocess.run(["bash", str(ROOT / "tools" / "main_job.sh"), "--minutes", "-1"], capture_output=True,
                         text=True, env=dict(os.environ, PYTHON=str(broken)), timeout=900)
    refused(res, "argument --minutes: must be > 0, got -1")  # from the job, after the set-up
    assert "the early argument check did not run (exit 1)" in res.stderr
    assert "[setup]" in res.stderr and "no dmpn here" not in res.stderr


def test_ctrl_c_says_what_was_kept_and_how_to_go_on(tmp_path):
    out = tmp_path / "results"
    stop = ("from dmpn import main_job\ndef stop(*a, **k):\n    raise KeyboardInterrupt\n"
            "main_job.build_data = stop\n")
    res = job("--out", str(out), code=stop)
    refused(res, f"main_job: error: interrupted while building the dataset; kept in {out}: what was built "
                 "(tools/make_lmdb.py resumes it); run the same command again to go on", code=130)
    assert len([x for x in res.stderr.splitlines() if x.strip()]) == 1, res.stderr


def test_lmdbs_are_checked_before_caffe_train(tmp_path):
    """A reused dataset whose LMDB is empty (or another broken one): caffe train would abort
    (exit 134 and a glog dump in train.log); the job names the LMDB instead."""
    from test_caffe_checks import write_lmdb
    out = tmp_path / "results"
    data = out / "data"
    data.mkdir(parents=True)
    write_lmdb(data / "train_lmdb", items=0)
    write_lmdb(data / "test_lmdb", items=2, height=64, width=64)
    manifest = {"size": {"height": 64, "width": 64}, "counts": {"train": 4, "test": 2}, "fingerprint": "f" * 64}
    (data / "manifest.json").write_text(json.dumps(manifest))
    fake = ("from dmpn import main_job\nimport json, os\n"
            "def built(out, originals=None, seed=0):\n"
            "    data = os.path.join(out, 'data')\n"
            "    return data, json.load(open(os.path.join(data, 'manifest.json'))), False\n"
            "main_job.build_data = built\n")
    res = job("--out", str(out), "--minutes", "0.05", code=fake)
    refused(res, f"main_job: error: {data / 'train_lmdb'}: the LMDB is empty")
    assert not (out / "net" / "train.log").exists()


# A stand-in for `caffe train` (tests of the job's handling of it, in seconds): FAKE_SETUP seconds
# with the default SIGINT action (as Caffe before its handler is in), then a SIGINT handler, the
# "Solving" line and an iteration line every 0.05 s; on SIGINT it writes many lines (more than a
# pipe holds) and "Snapshotting ...", makes snap_iter_N.caffemodel and exits 0.
FAKE_CAFFE = r'''
import os, signal, sys, time
netdir = os.path.dirname(sys.argv[sys.argv.index("-solver") + 1])
time.sleep(float(os.environ.get("FAKE_SETUP", "0")))
stop = []
signal.signal(signal.SIGINT, lambda *a: stop.append(1))
print("I1128 11:14:01.036492 1 solver.cpp:289] Solving fake", file=sys.stderr, flush=True)
it = 0
while not stop and it < 100000:
    print(f"I1128 11:14:01.664911 1 solver.cpp:239] Iteration {it} (1 iter/s), loss = 0.5", file=sys.stderr, flush=True)
    it += 10
    time.sleep(0.05)
for i in range(2000):
    print(f"I1128 11:14:02.000000 1 solver.cpp:1] stopping line {i} " + "x" * 60, file=sys.stderr)
print(f"I1128 11:14:02.000000 1 solver.cpp:454] Snapshotting to binary proto file {netdir}/snap_iter_{it}.caffemodel", file=sys.stderr, flush=True)
open(os.path.join(netdir, f"snap_iter_{it}.caffemodel"), "w").close()
'''


def fake_training(tmp_path, minutes, env=None):
    """The job with its training (train()) alone, on FAKE_CAFFE: (Popen, net folder)."""
    import os
    fake = tmp_path / "caffe"
    fake.write_text(f"#!{sys.executable}\n{FAKE_CAFFE}")
    fake.chmod(0o755)
    netdir = tmp_path / "net"
    netdir.mkdir()
    (netdir / "solver.prototxt").write_text("")
    prog = (f"import sys\nfrom dmpn import main_job as J\nJ.venv_tool = lambda name: {str(fake)!r}\n"
            f"J.run = lambda a: J.train({str(netdir)!r}, 100000, {minutes})\n"
            f"sys.exit(J.main(['--out', {str(tmp_path / 'out')!r}]))\n")
    p = subprocess.Popen([sys.executable, "-c", prog], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, cwd=ROOT, env=dict(os.environ, **(env or {})))
    return p, netdir


def test_an_interrupt_of_the_job_alone_stops_caffe_with_a_snapshot(tmp_path):
    """SIGINT or SIGTERM to the job's process alone (kill, timeout -s): Caffe is told to stop (it
    snapshots), its lines up to its exit reach train.log, and the job exits 130 / 143; it had
    waited forever on a Caffe that went on training."""
    import os
    import signal
    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        run_dir = tmp_path / sig.name
        run_dir.mkdir()
        p, netdir = fake_training(run_dir, minutes=10)
        for line in p.stdout:
            if "iteration 30/" in line:
                break
        os.kill(p.pid, sig)
        try:
            out, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            raise AssertionError(f"{sig.name}: the job did not stop")
        assert p.returncode == code, (sig.name, p.returncode, err[-2000:])
        assert "main_job: error: interrupted" in err and "Traceback" not in err, err[-2000:]
        log = (netdir / "train.log").read_text()
        assert "stopping line 1999" in log and "Snapshotting to binary proto file" in log
        assert list(netdir.glob("snap_iter_*.caffemodel"))


def test_the_time_limit_starts_once_caffe_is_solving(tmp_path):
    """A --minutes shorter than Caffe's set-up: the SIGINT had come before Caffe's handler and
    killed it ('caffe train failed (exit -2)'); the limit now starts at Caffe's 'Solving' line."""
    p, netdir = fake_training(tmp_path, minutes=0.0005, env={"FAKE_SETUP": "1"})
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, (p.returncode, err[-2000:])
    assert "Snapshotting" in (netdir / "train.log").read_text()


def test_a_rerun_after_an_interrupted_scoring_scores_without_training(tmp_path):
    """net/training_ended.json: a run whose training ended and whose scoring did not finish is
    scored again by the same command without another --minutes of training; a larger
    --minutes or --epochs trains on; snapshots made since make the record stale."""
    from dmpn import main_job as J
    netdir = tmp_path / "net"
    netdir.mkdir()
    (netdir / "snap_iter_200.caffemodel").write_bytes(b"")
    assert not J.training_ended(str(netdir), 0.2, 1000)  # no record: train
    J.record_training_ended(str(netdir), 0.2, 1000)
    assert json.loads((netdir / J.TRAINING_ENDED).read_text())["iteration"] == 200
    assert J.training_ended(str(netdir), 0.2, 1000)
    assert J.training_ended(str(netdir), 0.1, 500)
    assert not J.training_ended(str(netdir), 0.3, 1000) and not J.training_ended(str(netdir), 0.2, 2000)
    (netdir / "snap_iter_300.caffemodel").write_bytes(b"")
    assert not J.training_ended(str(netdir), 0.2, 1000)


def test_the_job_after_an_interrupted_scoring_goes_straight_to_scoring(tmp_path):
    """The job itself: interrupted while scoring, the same command again does not train; once
    scored, the record is gone (a further rerun trains on)."""
    from dmpn import main_job as J
    out = tmp_path / "results"
    code = ("from dmpn import main_job as J\nimport json, os\n"
            "def built(out, originals=None, seed=0):\n"
            "    return os.path.join(out, 'data'), {'fingerprint': 'f' * 64}, False\n"
            "J.build_data = built\n"
            "J.write_nets = lambda out, *a: (os.path.join(out, 'net'), 1000, 8, type('C', (), {'crop': 160, 'batch': 4}))\n"
            "J.check_data = lambda *a: None\nJ.initial_weights = lambda *a: None\n"
            "def train(netdir, *a):\n    print('TRAINING')\n"
            "    open(os.path.join(netdir, 'snap_iter_100.caffemodel'), 'w').close()\n"
            "J.train = train\n"
            "J.plot_losses = lambda *a: type('Log', (), {'train_loss': [(100, 0.5)]})\n"
            "J.recompute_bn = lambda netdir, seed: os.path.join(netdir, 'snap_iter_100.caffemodel')\n"
            "def evaluate(stage, *a):\n"
            "    if os.environ.get('STOP'): raise KeyboardInterrupt\n"
            "    os.makedirs(os.path.join(stage, 'figures'))\n"
            "    for n in ('loss_curve.png', 'metrics.json', 'metrics.md'): open(os.path.join(stage, n), 'w').close()\n"
            "    return {'methods': {}}\n"
            "J.evaluate = evaluate\n")
    res = job("--out", str(out), code=code, env={"STOP": "1"})
    refused(res, "interrupted while scoring", code=130)
    assert "TRAINING" in res.stdout and (out / "net" / J.TRAINING_ENDED).exists()
    res = job("--out", str(out), code=code)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "TRAINING" not in res.stdout and "scoring that snapshot" in res.stdout
    assert not (out / "net" / J.TRAINING_ENDED).exists() and (out / "summary.md").exists()
    assert "TRAINING" in job("--out", str(out), code=code).stdout


def test_originals_without_alphas_are_refused_up_front(tmp_path):
    """--originals needs image/ and alpha/ (tools/make_lmdb.py refused it only after the
    set-up and the job's start, exit 1); a trimap folder, if any, must hold trimaps."""
    out = tmp_path / "results"
    originals = tmp_path / "originals"
    (originals / "image").mkdir(parents=True)
    (originals / "image" / "x.png").write_bytes(b"")
    refused(job("--out", str(out), "--originals", str(originals), "--check-arguments"),
            f"main_job: error: {originals}: no alpha/ folder in it")
    (originals / "alpha").mkdir()
    refused(job("--out", str(out), "--originals", str(originals), "--check-arguments"),
            f"main_job: error: {originals / 'alpha'}: no images in it")
    (originals / "alpha" / "x.png").write_bytes(b"")
    (originals / "trimap1").mkdir()
    refused(job("--out", str(out), "--originals", str(originals), "--check-arguments"),
            f"main_job: error: {originals / 'trimap1'}: no images in it")
    (originals / "trimap1" / "x.png").write_bytes(b"")
    assert job("--out", str(out), "--originals", str(originals), "--check-arguments").returncode == 0
    assert not out.exists()


def test_main_job_sh_runs_the_repositorys_dmpn_from_any_folder(tmp_path):
    """Run from a folder holding a dmpn/ of its own: the repository's is imported (python -m had
    put the caller's folder first on sys.path), and relative --out and --originals are the
    caller's. Both the early check and the job after the set-up."""
    import os
    here = tmp_path / "elsewhere"
    (here / "dmpn").mkdir(parents=True)
    (here / "dmpn" / "__init__.py").write_text("raise SystemExit('the dummy dmpn was imported')\n")
    (here / "originals" / "image").mkdir(parents=True)
    script = str(ROOT / "tools" / "main_job.sh")
    res = subprocess.run(["bash", script, "--out", "results", "--originals", "originals"], capture_output=True,
                         text=True, cwd=here, timeout=60)
    refused(res, "main_job: error: originals/image: no images in it")  # the early check
    assert "dummy" not in res.stderr and "[setup]" not in res.stderr
    broken = tmp_path / "python3"  # no early check: the job itself, after the set-up
    broken.write_text(f'#!/bin/sh\ncase "$2" in *dmpn.main_job*) exit 1;; esac\nexec {sys.executable} "$@"\n')
    broken.chmod(0o755)
    res = subprocess.run(["bash", script, "--out", "results", "--originals", "originals"], capture_output=True,
                         text=True, cwd=here, timeout=900, env=dict(os.environ, PYTHON=str(broken)))
    refused(res, "main_job: error: originals/image: no images in it")
    assert "dummy" not in res.stderr and "[setup]" in res.stderr
    assert sorted(p.name for p in here.iterdir()) == ["dmpn", "originals"]


def test_mattes_are_staged_and_published_with_the_results(tmp_path):
    """mattes/ is part of the scoring's result set: predicted into the stage (starting as links to
    the published PNGs, which evaluate.py reuses and replaces by renames), kept there across an
    interrupted scoring, and moved into --out with the metrics naming the weights that made them."""
    import os
    from dmpn import main_job as J
    out = tmp_path / "results"
    (out / "mattes" / "model").mkdir(parents=True)
    (out / "mattes" / "model" / "a.png").write_text("old matte")
    (out / "mattes" / "model" / ".predictions.json").write_text("old record")
    stage = out / J.STAGE
    J.prepare_stage(str(out), str(stage))
    assert (stage / "mattes" / "model" / ".predictions.json").read_text() == "old record"
    (stage / "mattes" / "model" / "a.png.tmp").write_text("new matte")  # as evaluate.py writes it
    os.replace(stage / "mattes" / "model" / "a.png.tmp", stage / "mattes" / "model" / "a.png")
    (stage / "metrics.json").write_text("half a scoring")  # then interrupted
    assert (out / "mattes" / "model" / "a.png").read_text() == "old matte"
    J.prepare_stage(str(out), str(stage))  # the rerun: the stage's mattes kept, the rest cleared
    assert sorted(p.name for p in stage.iterdir()) == ["mattes"]
    assert (stage / "mattes" / "model" / "a.png").read_text() == "new matte"
    (stage / "figures").mkdir()
    for name in J.RESULTS:
        (stage / name).write_text(f"new {name}")
    J.publish(str(out), str(stage))
    assert (out / "mattes" / "model" / "a.png").read_text() == "new matte" and not stage.exists()
    assert (out / "metrics.json").read_text() == "new metrics.json"
