"""tools/make_prototxt.py: writes prototxt/ (train_val, deploy and solver, paper-size and slim,
C++ and Python layer flavours) from the one definition in dmpn/net.py. tests/test_net.py fails when the committed
files drift from it.

With --solver-for DATA/manifest.json, writes instead a training net and the paper's solver for
that dataset (tools/make_lmdb.py writes the manifest and the LMDBs beside it): to the folder of
--solver-out (default DATA/solver.prototxt), train_val.prototxt reading DATA/train_lmdb and
DATA/test_lmdb, and the solver with max_iter for --epochs (default 20, the paper's) over the
dataset's training composites, snapshots DATA/deepmattepropnet_iter_N. Paths are written as
given (relative ones are relative to the folder this runs in: run caffe from there too); then
`caffe train -solver DATA/solver.prototxt` (--cpu for solver_mode CPU, --slim for the slim net)."""
import argparse
import json
import os

from dmpn import net
from dmpn.cli import REPO, check_writable, positive_float, run_tool
from dmpn.imageio import InputError, write_text


def read_train_count(manifest_path) -> int:
    """The manifest's training count; InputError naming the file when it has none."""
    try:
        with open(manifest_path) as f:
            manifest = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{manifest_path}: not a JSON manifest ({exc})") from None
    try:
        items = int(manifest["counts"]["train"])
    except (KeyError, TypeError, ValueError, OverflowError):
        raise InputError(f"{manifest_path}: no training count (counts.train): not a manifest "
                         "written by tools/make_lmdb.py") from None
    if items < 1:
        raise InputError(f"{manifest_path}: the dataset has no training composites")
    return items


def write_solver_for(manifest_path, epochs, out, slim=False, cpu=False):
    from dmpn.caffe_checks import check_lmdb
    items = read_train_count(manifest_path)
    data = os.path.dirname(manifest_path)
    cfg = net.NetConfig(width=net.SLIM_WIDTH, crop=160) if slim else net.NetConfig()
    net_path = os.path.join(os.path.dirname(out), "train_val.prototxt")
    committed = os.path.join(REPO, "prototxt")
    for path in (out, net_path):  # both checked before either is written
        check_writable(path, folder=False)
        if os.path.realpath(os.path.dirname(os.path.abspath(path))) == os.path.realpath(committed):
            raise InputError(f"{path}: would replace the repository's generated prototxt/ files: "
                             "choose another --solver-out")
    lmdbs = [os.path.join(data, f"{split}_lmdb") for split in ("train", "test")]
    for lmdb in lmdbs:
        if not os.path.isdir(lmdb):
            raise InputError(f"{lmdb}: no such LMDB beside {manifest_path} (tools/make_lmdb.py "
                             "writes both there)")
        try:  # caffe train would abort on items smaller than the crop
            check_lmdb(lmdb, crop=cfg.crop)
        except InputError as exc:
            hint = "" if slim else " (--slim trains on 160 x 160 crops)"
            raise InputError(f"{exc}{hint}") from None
    prefix = os.path.join(data, "deepmattepropnet" + ("_slim" if slim else ""))
    note = f"Written by tools/make_prototxt.py --solver-for {manifest_path}."
    text, iters = net.paper_solver_text(items, epochs, note, net_path=net_path, snapshot_prefix=prefix,
                                        gpu=not cpu, batch=cfg.batch)
    train_val = net.header(f"DeepMattePropNet{' (slim)' if slim else ''} for {data or '.'}.\n{note}") + str(
        net.train_val(cfg, train_lmdb=lmdbs[0], test_lmdb=lmdbs[1]))
    write_text(net_path, train_val)
    write_text(out, text)
    print(f"{net_path}: the net, reading {lmdbs[0]}")
    print(f"{out}: max_iter {iters} ({epochs:g} epochs x {items} training composites / batch "
          f"{cfg.batch}), solver_mode {'CPU' if cpu else 'GPU'}; the last snapshot: "
          f"{prefix}_iter_{iters}.caffemodel")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="make_prototxt.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, "prototxt"),
                    help="folder to write (default: the repository's prototxt/)")
    ap.add_argument("--solver-for", metavar="MANIFEST",
                    help="instead: the paper's solver scaled to this dataset's manifest.json")
    ap.add_argument("--epochs", type=positive_float, default=net.PAPER_EPOCHS,
                    help="with --solver-for: epochs (default 20, the paper's)")
    ap.add_argument("--solver-out", help="with --solver-for: where to write (default: "
                    "solver.prototxt beside the manifest; train_val.prototxt goes beside it)")
    ap.add_argument("--cpu", action="store_true", help="with --solver-for: solver_mode CPU")
    ap.add_argument("--slim", action="store_true", help="with --solver-for: the slim net (width "
                    f"{net.SLIM_WIDTH:g}, crops 160), for CPU runs")
    a = ap.parse_args(argv)

    def body():
        if a.solver_for:
            out = a.solver_out or os.path.join(os.path.dirname(a.solver_for), "solver.prototxt")
            write_solver_for(a.solver_for, a.epochs, out, slim=a.slim, cpu=a.cpu)
            return 0
        for name in net.write_files(a.out):
            print(os.path.join(a.out, name))
        return 0
    return run_tool("make_prototxt.py", body)


