#!/usr/bin/env python3
"""Writes prototxt/ (train_val, deploy and solver, paper-size and slim, C++ and Python layer
flavours) from the one definition in dmpn/net.py. tests/test_net.py fails when the committed
files drift from it.

With --solver-for DATA/manifest.json, writes instead the paper's solver with max_iter for
--epochs (default 20, the paper's) over that dataset's training composites (tools/make_lmdb.py
writes the manifest), to --solver-out (default DATA/solver.prototxt); then
`caffe train -solver DATA/solver.prototxt` from the repository root."""
import argparse
import json
import os
import sys

from dmpn import net
from dmpn.cli import positive_float, run_tool
from dmpn.imageio import write_text


def write_solver_for(manifest_path, epochs, out):
    with open(manifest_path) as f:
        manifest = json.load(f)
    try:
        items = int(manifest["counts"]["train"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{manifest_path}: no training count (counts.train): not a manifest "
                         "written by tools/make_lmdb.py") from None
    if items < 1:
        raise ValueError(f"{manifest_path}: the dataset has no training composites")
    text, iters = net.paper_solver_text(items, epochs, "Written by tools/make_prototxt.py "
                                        f"--solver-for {manifest_path}.")
    write_text(out, text)
    print(f"{out}: max_iter {iters} ({epochs:g} epochs x {items} training composites / batch "
          f"{net.NetConfig().batch}); the last snapshot: data/deepmattepropnet_iter_{iters}.caffemodel")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "prototxt"),
                    help="folder to write (default: the repository's prototxt/)")
    ap.add_argument("--solver-for", metavar="MANIFEST",
                    help="instead: the paper's solver scaled to this dataset's manifest.json")
    ap.add_argument("--epochs", type=positive_float, default=net.PAPER_EPOCHS,
                    help="with --solver-for: epochs (default 20, the paper's)")
    ap.add_argument("--solver-out", help="with --solver-for: where to write (default: "
                    "solver.prototxt beside the manifest)")
    a = ap.parse_args(argv)

    def body():
        if a.solver_for:
            out = a.solver_out or os.path.join(os.path.dirname(a.solver_for), "solver.prototxt")
            write_solver_for(a.solver_for, a.epochs, out)
            return 0
        for name in net.write_files(a.out):
            print(os.path.join(a.out, name))
        return 0
    return run_tool("make_prototxt.py", body)


if __name__ == "__main__":
    sys.exit(main())
