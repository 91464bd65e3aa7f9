"""Caffe training logs: what `caffe train` writes to stderr, read back by iteration (the
training loss, the learning rate, the test phase's outputs) and drawn as a PNG
(tools/plot_training_log.py; the main job's loss_curve.png).

    tools/plot_training_log.py train.log [--out curve.png] [--title TEXT]

A log appended to by resumed runs (the main job's net/train.log) repeats iterations after the
snapshot it resumed from; the later value of an iteration counts, and what a stopped run logged
past the snapshot that the next one restored is dropped at the restore (those iterations' weights
were thrown away: a run killed at 170 with a snapshot at 100 and resumed to 110 ends at 110).

Standard library only at module level: dmpn.main_job imports it before the set-up.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass, field

from dmpn.cli import InputError, check_writable, read_bytes, run_tool

__all__ = ["TrainingLog", "parse", "read", "main", "TRAIN_LOSS"]

_NUMBER = r"([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf|-nan))"
# solver.cpp: "Iteration 20 (1.79 iter/s, 5.57s/10 iters), loss = 0.143" (older Caffe:
# "Iteration 20, loss = 0.143").
TRAIN_LOSS = re.compile(r"Iteration (\d+)\b[^,]*(?:\([^)]*\))?, loss = " + _NUMBER)
# solver.cpp: "Restoring previous solver status from snap_iter_100.solverstate" (or .solverstate.h5)
RESTORING = re.compile(r"Restoring previous solver status from .*_iter_(\d+)\.solverstate\b")
# sgd_solver.cpp: "Iteration 20, lr = 0.1"
LEARNING_RATE = re.compile(r"Iteration (\d+), lr = " + _NUMBER)
# solver.cpp: "Iteration 100, Testing net (#0)", then "Test net output #0: loss = 0.1 (* 1 = ...)"
TESTING = re.compile(r"Iteration (\d+), Testing net \(#(\d+)\)")
TEST_OUTPUT = re.compile(r"Test net output #(\d+): (\S+) = " + _NUMBER +
                         r"(?: \(\* " + _NUMBER + " = " + _NUMBER + r" loss\))?")
# The test pass's losses weighted and summed as the training loss is ("Iteration N, loss = X"
# is the weighted total), where that differs from its one loss output: several loss outputs, or
# a loss weight other than 1.
WEIGHTED_TOTAL = "weighted_loss_total"


@dataclass
class TrainingLog:
    """Values by iteration, each a sorted list of (iteration, value)."""
    train_loss: list = field(default_factory=list)
    learning_rate: list = field(default_factory=list)
    test: dict = field(default_factory=dict)  # "net #k OUTPUT" -> [(iteration, value)]


def _sorted(pairs) -> list:
    return sorted(dict(pairs).items())  # the later value of a repeated iteration wins


def parse(lines) -> TrainingLog:
    """A TrainingLog of the lines of a `caffe train` log."""
    train, lr, test = [], [], {}
    testing = None  # (iteration, net) of the test pass whose outputs follow
    names = set()   # the output names of that pass so far
    weighted = {}   # (iteration, net) -> [the pass's weighted losses]
    unlike = set()  # nets whose weighted total is not their one loss output
    for line in lines:
        m = TRAIN_LOSS.search(line)
        if m:
            train.append((int(m.group(1)), float(m.group(2))))
            continue
        m = RESTORING.search(line)
        if m:  # the run goes on from this snapshot: what was logged past it is gone
            last = int(m.group(1))
            for pairs in (train, lr, *test.values()):  # (iteration, value) lists
                pairs[:] = [p for p in pairs if p[0] <= last]
            weighted = {k: v for k, v in weighted.items() if k[0] <= last}  # (iteration, net) keys
            testing = None
            continue
        m = LEARNING_RATE.search(line)
        if m:
            lr.append((int(m.group(1)), float(m.group(2))))
            continue
        m = TESTING.search(line)
        if m:
            testing, names = (int(m.group(1)), int(m.group(2))), set()
            weighted.pop(testing, None)  # a pass run again (after a restore) replaces the first
            continue
        m = TEST_OUTPUT.search(line)
        if m and testing is not None:
            index, name, value = int(m.group(1)), m.group(2), float(m.group(3))
            # An output blob of several values logs one line each under its name: the second
            # and later ones are told apart by their output index.
            key = f"net #{testing[1]} {name}" + (f" #{index}" if name in names else "")
            names.add(name)
            test.setdefault(key, []).append((testing[0], value))
            if m.group(5) is not None:  # "(* weight = weighted loss)"
                losses = weighted.setdefault(testing, [])
                losses.append(float(m.group(5)))
                if len(losses) > 1 or float(m.group(4)) != 1:
                    unlike.add(testing[1])
    for (iteration, net), losses in weighted.items():
        if net in unlike:
            test.setdefault(f"net #{net} {WEIGHTED_TOTAL}", []).append((iteration, sum(losses)))
    return TrainingLog(_sorted(train), _sorted(lr), {k: _sorted(v) for k, v in test.items()})


def read(path) -> TrainingLog:
    """The TrainingLog of the file ``path``, or InputError naming it: missing, unreadable, or
    with neither a training iteration nor a test pass in it (not a `caffe train` log)."""
    path = os.fspath(path)
    log = parse(read_bytes(path, "log").decode("utf-8", errors="replace").splitlines())
    if not log.train_loss and not log.test:
        raise InputError(f"{path}: no training iteration or test pass in it ('Iteration N ..., loss = X' "
                         "and 'Test net output' lines of `caffe train`, logged to stderr)")
    return log


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="plot_training_log.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("log", help="a `caffe train` log (its stderr, e.g. caffe train ... 2> train.log)")
    ap.add_argument("--out", help="the PNG to write (default: the log's name with .png)")
    ap.add_argument("--title", default=None, help="the figure's title (default: the log's file name)")
    a = ap.parse_args(argv)

    def run():
        from dmpn.figures import training_curves
        out = a.out or os.path.splitext(a.log)[0] + ".png"
        if not out.lower().endswith(".png"):
            raise InputError(f"{out}: the curves are written as PNG: --out must end in .png")
        if os.path.abspath(out) == os.path.abspath(a.log):
            raise InputError(f"{out}: is the log itself")
        log = read(a.log)
        check_writable(out, folder=False)
        training_curves(log, out, title=a.title or os.path.basename(a.log))
        n = len(log.train_loss)
        said = [f"{n} training point{'' if n == 1 else 's'}"]
        if n:
            said[0] += f", last iteration {log.train_loss[-1][0]} (loss {log.train_loss[-1][1]:.4g})"
        said += [f"{name} at {pts[-1][0]}: {pts[-1][1]:.4g}" for name, pts in log.test.items()]
        print(f"wrote {out}: " + "; ".join(said))
    return run_tool("plot_training_log", run)


if __name__ == "__main__":
    sys.exit(main())
