"""The main job (README command 1, run by tools/main_job.sh after the set-up): builds a small
composited dataset, trains the slim DeepMattePropNet with the stock `caffe train` on the CPU for a
bounded time, predicts the held-out composites and scores them against the baselines.

Everything goes to one results folder:

    data/                 the LMDBs and test PNGs (tools/make_lmdb.py)
    net/                  train_val, deploy and solver prototxts, init_edge.caffemodel (the
                          edge-aware start), snapshots, train.log, bn_recomputed_iter_N.caffemodel
                          (the last snapshot with its BatchNorm statistics recomputed: scored)
    mattes/METHOD/*.png   every method's mattes on the held-out composites (with the record
                          .predictions.json, by which a rerun reuses them)
    metrics.json, metrics.md   SAD / MSE / Grad / Conn per method (tools/evaluate.py; the json
                          names the weights scored)
    figures/              sad.png, mse.png (bar charts), qualitative.png (image / trimap /
                          ours / baselines / truth)
    loss_curve.png        training loss

The results of a scoring (summary.md, the metrics, figures/, loss_curve.png, mattes/) are written
to .scoring/ first and moved here together: an interrupted scoring leaves the last complete set.

Run again with the same arguments, it resumes: the dataset is reused, training continues from
the last snapshot until the iteration target is reached. net/trained_on.json records the
fingerprint of the dataset the snapshots were trained on (manifest.json's); a rerun whose dataset
differs (e.g. data/ deleted and rebuilt from other --originals) is refused with a message,
rather than resuming those snapshots on other data: delete net/ (or use another --out) to train
afresh.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

# The standard library and dmpn.cli only at module level: tools/main_job.sh checks the arguments
# with any python3 before the set-up has installed numpy (--check-arguments); dmpn.imageio and the
# rest are imported where they are used.
from dmpn import train_log
from dmpn.cli import INTERRUPTED, REPO as ROOT, USER_ERRORS, InputError, check_writable, positive_float, run_tool, seed

# The usage text's name for the job (it runs as `python -c` from there, or `python -m dmpn.main_job`).
PROG = "tools/main_job.sh"
# The exit status of `--check-arguments --help`: tools/main_job.sh stops there with status 0.
ARGUMENTS_ANSWERED = 10


def say(msg):
    print(f"[main job] {msg}", flush=True)


def venv_tool(name):
    return os.path.join(os.path.dirname(sys.executable), name)


def build_data(out, originals=None, seed=0):
    """(data folder, its manifest, whether it was built in this call rather than reused)."""
    data = os.path.join(out, "data")
    reused = os.path.exists(os.path.join(data, "manifest.json"))
    cmd = [sys.executable, os.path.join(ROOT, "tools", "make_lmdb.py"), "--out", data, "--seed", str(seed)]
    if originals:
        # Real originals: small stored size and few backgrounds, so it stays a CPU-sized run.
        cmd += ["--originals", originals, "--preset", "demo", "--size", "192x256",
                "--bg-per-original", "3", "--rotations", "1"]
        if os.path.isdir(os.path.join(originals, "trimap1")) and not os.path.isdir(os.path.join(originals, "trimap")):
            cmd += ["--trimap-dir", "trimap1"]
    else:
        # Many generated originals, few composites each: with the demo preset's 8 training
        # originals the net memorised them (training loss fell, held-out error stayed at plain
        # diffusion's); diversity of originals is what the held-out score needs.
        cmd += ["--preset", "demo", "--synthetic", str(SYNTHETIC_ORIGINALS), "--test-originals",
                str(SYNTHETIC_TEST_ORIGINALS), "--bg-per-original", "2"]
    say("building the dataset: " + " ".join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in cmd[1:]))
    res = subprocess.run(cmd)
    if res.returncode != 0:  # make_lmdb has said why, naming the file
        raise SystemExit(f"tools/make_lmdb.py failed (exit {res.returncode})")
    with open(os.path.join(data, "manifest.json")) as f:
        return data, json.load(f), not reused


# The affinity module's 2T + 1 parameters must reach |theta . f| ~ 10 to cut an edge, and with
# gradients ~5e-4 the paper's lr 0.1 moves them by ~1e-3 a step: fine over the paper's 750,000
# iterations, far too slow for a 14-minute CPU run (held-out SAD 2.014 -> 1.970 at 10x, same
# data and seed). The paper-size prototxts keep lr_mult 1.
AFFINITY_LR_MULT = 10.0
SYNTHETIC_ORIGINALS = 64
SYNTHETIC_TEST_ORIGINALS = 8


def write_nets(out, data, manifest, epochs, seed=0):
    from dmpn import net
    from dmpn.imageio import write_text
    netdir = os.path.join(out, "net")
    os.makedirs(netdir, exist_ok=True)
    h, w = manifest_size(manifest)
    crop = min(160, (min(h, w) // 32) * 32)
    cfg = net.NetConfig(width=net.SLIM_WIDTH, crop=crop, batch=4, affinity_lr_mult=AFFINITY_LR_MULT)
    train = net.train_val(cfg, train_lmdb=os.path.join(data, "train_lmdb"),
                          test_lmdb=os.path.join(data, "test_lmdb"))
    deploy = net.deploy(cfg, height=h, width=w)  # the CNN input is padded to multiples of 32
    n_train = manifest_count(manifest, "train")
    # --epochs only caps what --minutes allows: a cap beyond Caffe's int32 max_iter is no cap
    max_iter = min(net.epochs_to_iterations(epochs, n_train, cfg.batch), net.MAX_ITER_LIMIT)
    solver = net.solver(os.path.join(netdir, "train_val.prototxt"), max_iter,
                        os.path.join(netdir, "snap"), snapshot=100, display=10, gpu=False,
                        clip_gradients=CLIP_GRADIENTS)
    solver.random_seed = seed  # crops, mirroring and fillers: the run is reproducible
    for name, proto in (("train_val", train), ("deploy", deploy), ("solver", solver)):
        write_text(os.path.join(netdir, name + ".prototxt"), str(proto))
    return netdir, max_iter, n_train, cfg


# A guard, not a fix: the paper's fixed learning rate 0.1 with momentum 0.9 has not diverged from
# scratch in our runs (gradient norms stay far below this; Caffe logs "Gradient clipping" when
# it acts, and it never did), but one step through exp() in AffinityExp could blow up. Caffe's
# own clip_gradients (global L2 norm of all parameter gradients) bounds such a step without
# changing the paper's learning rate.
CLIP_GRADIENTS = 10.0


def manifest_size(m):
    return m["size"]["height"], m["size"]["width"]


def manifest_count(m, split):
    return int(m["counts"][split])


def latest_snapshot(netdir, ext):
    """(path, iteration) of the newest snap_iter_N.<ext> in netdir, or (None, 0)."""
    found = [(int(re.search(r"_iter_(\d+)\.", os.path.basename(p)).group(1)), p)
             for p in glob.glob(os.path.join(netdir, f"snap_iter_*.{ext}"))]
    if not found:
        return None, 0
    it, path = max(found)
    return path, it


TRAINED_ON = "trained_on.json"


def check_trained_on(netdir, data, manifest, data_built_now):
    """The snapshots in ``netdir`` must have been trained on this dataset: SystemExit with the
    reason when net/trained_on.json names another dataset fingerprint, or when snapshots
    without that record meet a dataset built in this run (they predate the record, and their
    data is gone); else the record is written (before training starts) or confirmed."""
    record = os.path.join(netdir, TRAINED_ON)
    fingerprint = manifest["fingerprint"]
    source = manifest.get("originals", {}).get("input", {})
    source = source.get("source", "?") if isinstance(source, dict) else str(source)
    afresh = f"delete {netdir} to train afresh on this data, or give another --out"
    if os.path.exists(record):
        with open(record) as f:
            old = json.load(f)
        if old.get("data_fingerprint") != fingerprint:
            raise SystemExit(
                f"{netdir}: its snapshots were trained on another dataset (fingerprint "
                f"{str(old.get('data_fingerprint'))[:12]}, originals {old.get('originals', '?')}); "
                f"{data} is {fingerprint[:12]} (originals {source}). Resuming would train them on "
                f"other data: {afresh}")
        return
    snapshots = glob.glob(os.path.join(netdir, "snap_iter_*"))
    if snapshots and data_built_now:
        raise SystemExit(f"{netdir}: holds snapshots with no record of the data they were trained "
                         f"on, and {data} was built anew in this run, so they may come from "
                         f"other data: {afresh}")
    os.makedirs(netdir, exist_ok=True)
    from dmpn.imageio import write_json
    write_json(record, {"data_fingerprint": fingerprint, "data": os.path.abspath(data),
                        "originals": source})


def initial_weights(netdir, init, seed):
    """The starting .caffemodel for `caffe train -weights` (None: the prototxt's fillers); one
    kept from an earlier run is checked against the net (dmpn.caffe_checks)."""
    if init == "fillers":
        return None
    from dmpn import edge_init
    path = os.path.join(netdir, "init_edge.caffemodel")
    if os.path.exists(path):
        from dmpn.caffe_checks import check_weights
        check_weights(path, os.path.join(netdir, "deploy.prototxt"))
    else:
        edge_init.write_edge_init(os.path.join(netdir, "deploy.prototxt"), path, seed=seed)
        say(f"edge-aware initialisation of the low-level branch and AffinityExp: {path}")
    return path


def relink_moved_snapshot(state_path):
    """Caffe's solver state names its snapshot's .caffemodel by the path it was written at, which
    is gone once the results folder has been moved (or names the original folder's file once it
    has been copied, or leads elsewhere for a relative --out given from another folder): where the
    .caffemodel of the same name lies beside the state and is not that file, the state is
    rewritten (atomically) to name it, so that the run resumes from its own weights."""
    from dmpn.caffe_checks import solver_state
    from dmpn.cli import read_bytes
    from dmpn.imageio import atomic_write
    state = solver_state(read_bytes(state_path, "solver state"))
    if state is None:  # not a solver state: check_solverstate names it
        return
    model = state.learned_net
    beside = os.path.join(os.path.dirname(os.path.abspath(state_path)), os.path.basename(model))
    if not model or not os.path.isfile(beside) or (
            os.path.isfile(model) and os.path.samefile(model, beside)):
        return
    say(f"{os.path.basename(state_path)} names {model}: resuming with the one beside it, {beside}")
    state.learned_net = beside

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(state.SerializeToString())
    atomic_write(state_path, write)


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an interrupt (on_sigterm) so that the job stops as on Ctrl-C: Caffe
    is told to snapshot and stop, and the same one-line message says what was kept."""


# The exit status after a SIGTERM (128 + 15, as a shell reports it); Ctrl-C's is INTERRUPTED.
TERMINATED = 143


def on_sigterm(signum, frame):
    raise Terminated()


# Caffe's first line once its SIGINT handler is in place (caffe.cpp installs it before it sets the
# solver up): a SIGINT before it would kill Caffe with no snapshot, so the time limit starts here.
SOLVING = re.compile(r"\] Solving ")


def train(netdir, max_iter, minutes, weights=None):
    """Stock `caffe train`, stopped with SIGINT (Caffe snapshots, then exits) at the time limit,
    counted from the start of solving. An interrupt of the job (Ctrl-C, or a SIGINT or SIGTERM to
    this process alone) is passed on to Caffe as SIGINT, and its lines up to its exit (the
    snapshot) still go to train.log, before the interrupt goes on."""
    state, done = latest_snapshot(netdir, "solverstate")
    if done >= max_iter:
        say(f"training already complete ({done} iterations)")
        return
    if state:
        from dmpn.caffe_checks import check_solverstate
        relink_moved_snapshot(state)
        check_solverstate(state)  # a damaged one would abort caffe train
    cmd = [venv_tool("caffe"), "train", "-solver", os.path.join(netdir, "solver.prototxt")]
    if state:
        cmd += ["-snapshot", state]
        say(f"resuming training from iteration {done}")
    elif weights:
        cmd += ["-weights", weights]
    say(f"training with the stock caffe tool for at most {minutes:g} minutes (max_iter {max_iter}): "
        f"{' '.join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in cmd)}")
    log = open(os.path.join(netdir, "train.log"), "a", buffering=1)  # line by line: a kill
    # must not lose the iterations the screen showed (a gap in the curve)
    # (INFO lines on: the time limit starts at the "Solving" line, the progress is read from them)
    env = dict(os.environ, GLOG_logtostderr="1", GLOG_minloglevel="0")
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=log, text=True, env=env)
    # (threading's longest wait: a larger --minutes had failed in the timer's thread, leaving
    # training with no time limit at all)
    timer = threading.Timer(min(minutes * 60, threading.TIMEOUT_MAX),
                            lambda: p.send_signal(signal.SIGINT))
    t0 = time.time()
    try:
        try:
            for line in p.stderr:
                log.write(line)
                if timer.ident is None and SOLVING.search(line):  # not started yet
                    timer.start()
                    t0 = time.time()
                m = train_log.TRAIN_LOSS.search(line)
                if m:
                    say(f"iteration {m.group(1)}/{max_iter}  loss {float(m.group(2)):.4f}  "
                        f"({time.time() - t0:.0f} s)")
        except KeyboardInterrupt:  # Terminated too
            stop_caffe(p, log)
            raise
    finally:
        timer.cancel()
        rc = p.wait()
        log.close()
    if rc != 0:
        raise SystemExit(f"caffe train failed (exit {rc}); see {os.path.join(netdir, 'train.log')}")


def stop_caffe(p, log):
    """After an interrupt of the job: SIGINT to Caffe (which may not have had one: a signal to
    this process alone), whose lines up to its exit (the snapshot) go on into ``log``. Further
    interrupts meanwhile are passed on too; Caffe stops at the end of its current iteration."""
    say("interrupted: caffe train is saving a snapshot and stopping")
    while True:
        try:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
            for line in p.stderr:
                log.write(line)
            return
        except KeyboardInterrupt:
            continue


# net/TRAINING_ENDED: written when a run's training has ended (time limit or max_iter reached),
# naming the snapshot it ended at; removed once that run's scoring is published. A rerun that
# finds it (its scoring was interrupted) scores that snapshot without training another --minutes.
TRAINING_ENDED = "training_ended.json"


def record_training_ended(netdir, minutes, max_iter):
    from dmpn.imageio import write_json
    _, it = latest_snapshot(netdir, "caffemodel")
    write_json(os.path.join(netdir, TRAINING_ENDED), {"iteration": it, "minutes": minutes, "max_iter": max_iter})


def training_ended(netdir, minutes, max_iter):
    """Whether an earlier run's training ended at the last snapshot and its scoring did not
    finish (net/TRAINING_ENDED), with a --minutes and max_iter no larger than that run's: then
    this run scores that snapshot. A larger one trains on (another --minutes) first."""
    path = os.path.join(netdir, TRAINING_ENDED)
    try:
        with open(path) as f:
            ended = json.load(f)
        it, old_minutes, old_max_iter = int(ended["iteration"]), float(ended["minutes"]), int(ended["max_iter"])
    except (OSError, ValueError, TypeError, KeyError):  # none (or unreadable): train
        return False
    if latest_snapshot(netdir, "caffemodel")[1] != it:  # snapshots since: that record is stale
        return False
    if minutes > old_minutes or max_iter > old_max_iter:
        say(f"the last run's training ended at iteration {it} ({old_minutes:g} minutes, max_iter "
            f"{old_max_iter}) before its scoring finished; a larger --minutes or --epochs: training on")
        return False
    say(f"the last run's training ended at iteration {it} before its scoring finished: scoring "
        "that snapshot (a larger --minutes or --epochs would train on first)")
    return True


def plot_losses(netdir, path):
    """The training curve of net/train.log (dmpn.train_log, dmpn.figures.training_curves);
    returns the log's TrainingLog."""
    from dmpn.figures import training_curves
    log = train_log.read(os.path.join(netdir, "train.log"))
    training_curves(log, path, title="DeepMattePropNet (slim), stock caffe train, CPU")
    return log


# Caffe's BatchNorm statistics are a moving average over ~1,000 iterations, in which the lr 0.1
# weights move a long way: the last snapshot is scored with statistics recomputed for its own
# weights (dmpn/bn_stats.py). Same data and runs: held-out SAD 1.867 -> 1.154 (MSE x1000 69.6
# -> 40.3), and snapshots 100 iterations apart no longer swing by 0.3 in SAD.
BN_BATCHES = 100


def recompute_bn(netdir, seed):
    """The last snapshot with its BatchNorm statistics recomputed (tools/recompute_bn.py); an
    earlier run's file is reused only when its record (``.source`` beside it) names the same
    snapshot content, batches and seed: a snapshot of the same iteration from another training
    (a run started again from an earlier one) gets its own statistics."""
    from dmpn.imageio import file_sha256, write_json
    weights, it = latest_snapshot(netdir, "caffemodel")
    if weights is None:
        raise SystemExit(f"no trained weights in {netdir}")
    out = os.path.join(netdir, f"bn_recomputed_iter_{it}.caffemodel")
    record = {"weights_sha256": file_sha256(weights), "batches": BN_BATCHES, "seed": seed}
    try:
        with open(out + ".source") as f:
            reuse = os.path.exists(out) and json.load(f) == record
    except (OSError, ValueError):
        reuse = False
    if not reuse:
        say(f"recomputing the BatchNorm statistics of {os.path.basename(weights)} over {BN_BATCHES} "
            "training batches (tools/recompute_bn.py)")
        cmd = [sys.executable, os.path.join(ROOT, "tools", "recompute_bn.py"), "--net",
               os.path.join(netdir, "train_val.prototxt"), "--weights", weights, "--out", out,
               "--batches", str(BN_BATCHES), "--seed", str(seed)]
        res = subprocess.run(cmd, env=dict(os.environ, GLOG_minloglevel="2"))
        if res.returncode != 0:
            raise SystemExit(f"tools/recompute_bn.py failed (exit {res.returncode})")
        write_json(out + ".source", record)  # after the .caffemodel: a kill between redoes it
    return out


# The results one scoring writes (RESULTS in --out, FIGURES there as a folder): made in STAGE
# and moved into --out together once all are written, so that an interrupted or failed scoring
# leaves the previous run's set whole (summary, metrics, figures and curve of one snapshot) and
# never a new metrics.json beside an old summary.
STAGE = ".scoring"
RESULTS = ("loss_curve.png", "metrics.json", "metrics.md", "summary.md")
FIGURES = "figures"
MATTES = "mattes"


def _link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        shutil.copy2(src, dst)


def prepare_stage(out, stage):
    """The staging folder, emptied of what an interrupted scoring left there but its mattes/
    (tools/evaluate.py reuses the PNGs its .predictions.json records); without those, mattes/
    starts as hard links to the published one's files, reused likewise (evaluate.py replaces a
    PNG or its record by a rename, never in place, so the published files stay as they are)."""
    os.makedirs(stage, exist_ok=True)
    for name in os.listdir(stage):
        if name != MATTES:
            path = os.path.join(stage, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
    staged, published = os.path.join(stage, MATTES), os.path.join(out, MATTES)
    if not os.path.isdir(staged) and os.path.isdir(published):
        shutil.copytree(published, staged + ".part", copy_function=_link_or_copy)
        os.replace(staged + ".part", staged)


def publish(out, stage):
    """Move the staged results into ``out`` (each file by a rename; the figures and mattes
    folders replaced: a crash between leaves the new mattes in the stage, reused by a rerun)."""
    for name in RESULTS:
        os.replace(os.path.join(stage, name), os.path.join(out, name))
    for folder in (FIGURES, MATTES):
        new, old = os.path.join(stage, folder), os.path.join(out, folder)
        if not os.path.isdir(new):
            continue
        if os.path.isdir(old):
            os.replace(old, new + ".old")
        os.replace(new, old)
        shutil.rmtree(new + ".old", ignore_errors=True)
    os.rmdir(stage)


def evaluate(stage, data, netdir, weights, mattes):
    """tools/evaluate.py of ``weights`` and the baselines: metrics.json (naming the weights),
    metrics.md and figures/ in ``stage``; returns the metrics."""
    from dmpn.imageio import write_json, write_text
    cmd = [sys.executable, os.path.join(ROOT, "tools", "evaluate.py"),
           "--model", os.path.join(netdir, "deploy.prototxt"), "--weights", weights,
           "--images", os.path.join(data, "test", "image"), "--trimap", os.path.join(data, "test", "trimap"),
           "--gt", os.path.join(data, "test", "alpha"), "--baselines", "cf,knn,handcrafted",
           "--json", os.path.join(stage, "metrics.json"), "--figures", os.path.join(stage, FIGURES),
           "--out", mattes]
    say(f"scoring {os.path.basename(weights)} and the baselines on the held-out composites")
    # stdout is the table; stderr (progress, warnings, an error naming the file) goes through.
    res = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if res.returncode != 0:
        raise SystemExit(f"tools/evaluate.py failed (exit {res.returncode})")
    write_text(os.path.join(stage, "metrics.md"), res.stdout)
    print(res.stdout)
    with open(os.path.join(stage, "metrics.json")) as f:
        metrics = json.load(f)
    metrics["weights"] = os.path.relpath(weights, os.path.dirname(stage))  # as --out sees it
    write_json(os.path.join(stage, "metrics.json"), metrics)
    return metrics


def verdict(metrics):
    methods = metrics.get("methods", {})
    means = {name: m["mean"] for name, m in methods.items()}
    ours = next((k for k in means if k not in ("cf", "knn", "handcrafted")), None)
    lines = ["| method | SAD | MSE x1000 | Grad | Conn |", "|---|---|---|---|---|"]
    for k, m in means.items():
        lines.append(f"| {k} | {m['sad']:.3f} | {1000 * m['mse']:.3f} | {m['grad']:.3f} | {m['conn']:.3f} |")
    beat = None
    if ours and "handcrafted" in means:
        beat = means[ours]["sad"] < means["handcrafted"]["sad"] and means[ours]["mse"] < means["handcrafted"]["mse"]
    return "\n".join(lines), beat, ours


def check_data(data, crop):
    """The LMDBs `caffe train` reads, checked as its Data layers will read them (an empty or
    broken one would abort it: dmpn.caffe_checks.check_lmdb)."""
    from dmpn.caffe_checks import check_lmdb
    for split in ("train", "test"):
        check_lmdb(os.path.join(data, f"{split}_lmdb"), crop=crop)


def check_arguments(a):
    """What can be checked before anything is created: --originals a folder, --out a folder
    that can be made or written (InputError / OSError naming it)."""
    if not a.out.strip():
        raise InputError("--out is empty: give the results folder")
    if a.originals is not None:
        wants = "(--originals wants the folder holding image/ and alpha/, and trimap/ or trimap1/ if any)"
        if not os.path.exists(a.originals):
            raise InputError(f"{a.originals}: no such folder (--originals)")
        if not os.path.isdir(a.originals):
            raise InputError(f"{a.originals}: not a folder {wants}")
        # As tools/make_lmdb.py reads them (dmpn.lmdb_builder.scan_originals): image/ and alpha/
        # needed; the trimaps optional (made from the alphas), but a trimap folder given must
        # hold them (build_data passes trimap1/ where there is no trimap/).
        needed = ["image", "alpha"]
        for trimaps in ("trimap", "trimap1"):
            if os.path.isdir(os.path.join(a.originals, trimaps)):
                needed.append(trimaps)
                break
        for sub in needed:
            folder = os.path.join(a.originals, sub)
            if not os.path.isdir(folder):
                raise InputError(f"{a.originals}: no {sub}/ folder in it {wants}")
            if not any(not name.startswith(".") for name in os.listdir(folder)):
                raise InputError(f"{folder}: no images in it (--originals)")
    check_writable(a.out)


# What Ctrl-C keeps at each step of the job: (what it was doing, what stays in --out).
STEPS = {
    "data": ("building the dataset", "what was built (tools/make_lmdb.py resumes it)"),
    "train": ("training", "the dataset and the snapshots so far (caffe train snapshots when stopped; "
                          "training resumes from the last)"),
    "score": ("scoring", "the dataset, the trained snapshots and the results of the last "
                         "complete scoring, if any (the same command scores the same snapshot "
                         "again, without training)"),
}


def _remove_if_empty(*folders):
    for folder in folders:
        try:
            os.rmdir(folder)
        except OSError:
            pass


def run(a):
    from dmpn.imageio import write_text
    step = "data"
    check_arguments(a)
    created = not os.path.exists(a.out)
    try:
        os.makedirs(a.out, exist_ok=True)
        t0 = time.time()
        try:
            data, manifest, built_now = build_data(a.out, a.originals, a.seed)
        except (Exception, SystemExit):
            if created:  # a bad --originals: nothing of this run is left behind
                _remove_if_empty(os.path.join(a.out, "data"), a.out)
            raise
        check_trained_on(os.path.join(a.out, "net"), data, manifest, built_now)
        netdir, max_iter, n_train, cfg = write_nets(a.out, data, manifest, a.epochs, a.seed)
        check_data(data, cfg.crop)
        say(f"{n_train} training composites, crops {cfg.crop}x{cfg.crop}, batch {cfg.batch}")
        step = "train"
        if not training_ended(netdir, a.minutes, max_iter):
            train(netdir, max_iter, a.minutes, initial_weights(netdir, a.init, a.seed))
            record_training_ended(netdir, a.minutes, max_iter)
        step = "score"
        stage = os.path.join(a.out, STAGE)
        prepare_stage(a.out, stage)
        pts = plot_losses(netdir, os.path.join(stage, "loss_curve.png")).train_loss
        weights = recompute_bn(netdir, a.seed)
        metrics = evaluate(stage, data, netdir, weights, os.path.join(stage, MATTES))
    except KeyboardInterrupt as stop:  # Terminated (SIGTERM) too, which keeps its class
        doing, kept = STEPS[step]
        raise type(stop)(f"interrupted while {doing}; kept in {a.out}: {kept}; run the same command "
                         "again to go on") from None
    table, beat, ours = verdict(metrics)
    summary = ["# DeepMattePropNet main job", "",
               f"data: {os.path.relpath(data, a.out)} ({n_train} training composites), "
               f"weights: {os.path.relpath(weights, a.out)} (the last snapshot, BatchNorm statistics "
               f"recomputed), last logged iteration {pts[-1][0] if pts else 0}, "
               f"{(time.time() - t0) / 60:.1f} minutes", "", table, "",
               "SAD, Grad, Conn / 1000; MSE x 1000; known trimap pixels set to 0 / 1 before scoring.", ""]
    if beat is not None:
        summary.append(f"ours ({ours}) {'BEATS' if beat else 'does NOT beat'} the hand-crafted-affinity "
                       "propagation on both SAD and MSE; closed-form matting (cf) is the bar to reach next.")
    write_text(os.path.join(stage, "summary.md"), "\n".join(summary) + "\n")
    publish(a.out, stage)
    try:  # this run's scoring is done: a rerun trains on
        os.remove(os.path.join(netdir, TRAINING_ENDED))
    except FileNotFoundError:
        pass
    print("\n".join(summary))
    # (evaluate.py named the staged files: these are where they are now)
    say(f"done in {(time.time() - t0) / 60:.1f} minutes; results in {a.out}: "
        f"{', '.join(RESULTS)}, {FIGURES}/, {MATTES}/")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "results"), help="results folder (default results/)")
    ap.add_argument("--originals", help="folder of real originals (image/, alpha/, trimap/): train and "
                    "score on them instead of generated ones, e.g. ../shared/data/alphamatting_lowres")
    ap.add_argument("--minutes", type=positive_float, default=14.0, help="training time limit (default 14)")
    ap.add_argument("--epochs", type=positive_float, default=200, help="training length in epochs of the training "
                    "composites, if the time limit does not stop it first (default 200)")
    ap.add_argument("--seed", type=seed, default=0, help="seed of the dataset, the crops and the fillers "
                    "(0 <= seed < 2**32; default 0)")
    ap.add_argument("--init", choices=("edge", "fillers"), default="edge",
                    help="start the low-level branch and AffinityExp as an edge-stopping diffusion "
                    "(dmpn/edge_init.py, the default) or from the prototxt's fillers alone")
    # tools/main_job.sh runs this first, with any python3, before its set-up: --help or a bad
    # argument answers at once instead of after minutes of installing. Exit 0: go on; after
    # --help, ARGUMENTS_ANSWERED (the help is all the user asked for).
    ap.add_argument("--check-arguments", action="store_true", help=argparse.SUPPRESS)
    checks_only = "--check-arguments" in (sys.argv[1:] if argv is None else argv)
    try:
        a = ap.parse_args(argv)
    except SystemExit as done:
        if done.code == 0 and checks_only:
            raise SystemExit(ARGUMENTS_ANSWERED) from None
        raise
    if a.check_arguments:
        return run_tool("main_job", lambda: check_arguments(a))
    old_term = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return run_tool("main_job", lambda: run(a),
                        USER_ERRORS + ((Terminated, TERMINATED), (KeyboardInterrupt, INTERRUPTED)))
    finally:
        signal.signal(signal.SIGTERM, old_term)


if __name__ == "__main__":
    sys.exit(main())
