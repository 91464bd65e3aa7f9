"""Scoring matting results with the field's four errors (``dmpn.metrics``), as published tables do.

The scorer reads PNG files: predictions, ground-truth alphas and trimaps are matched by file name
(without extension). 8-bit PNGs give exactly the values the MATLAB reference sees (pred / 255);
16-bit greyscale PNGs are read at full precision (/ 65535; see ``dmpn.imageio`` for 16-bit colour
PNGs). Before scoring, predictions are set to 0 / 1 on the trimap's known pixels (the standard
protocol; ``force_known=False`` turns it off).

The scored region is the pixels whose trimap is exactly 128, as in the MATLAB code. Predictors
take every value between 1 and 254 as unknown (design note, section 2), but the other values
are not scored: a trimap holding them gets one warning on stderr, naming the file and the count.

Predictors (the network through :func:`caffe_predictor`, a baseline from ``dmpn.baselines``, or
any Python callable ``predictor(image HxWx3, trimap01 HxW) -> alpha HxW``) are run by
:func:`predict_folder`, which writes 8-bit PNGs; :func:`score_predictor` predicts and scores the
PNGs it wrote in this run (not other files the folder may hold), so the numbers equal those of
scoring those files later. The network needs a trimap with a known pixel: :func:`predict_file`
refuses one without, naming the file, before running it.

Units: SAD, Grad and Conn are divided by 1000 (as printed in papers), MSE is a plain mean (tables
print it x 1000). An image with no unknown pixel scores 0 / undefined MSE and is reported.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass, field

import numpy as np

from dmpn import metrics
from dmpn.baselines import known_sides
from dmpn.cli import check_writable, positive_float, run_tool
from dmpn.imageio import (InputError, list_images, read_alpha, read_image, read_trimap, write_json,
                          write_png, TRIMAP_NOT_SCORED)

__all__ = ["MethodResult", "match_names", "score_arrays", "score_files", "score_paths",
           "score_folders", "trimap_to_01", "predict_file", "predict_folder", "score_predictor",
           "pad_to_multiple", "caffe_predictor", "load_predictor", "format_table",
           "results_to_json", "write_json", "main", "NO_UNKNOWN_NOTE", "PROTOCOL_NOTE",
           "NO_KNOWN_PIXEL", "TOOL_ERRORS"]

NO_UNKNOWN_NOTE = "no unknown pixel in the trimap: MSE undefined (left out of the mean), SAD/Grad/Conn 0"
PROTOCOL_NOTE = ("predictions set to 0 / 1 on the trimap's known pixels before scoring "
                 "(standard protocol)")
NO_PROTOCOL_NOTE = "predictions scored as they are on known pixels (--keep-known-pixels)"
NO_KNOWN_PIXEL = ("the trimap has no known pixel (0 or 255): the network's propagation has nothing "
                  "to propagate (its linear system is singular)")
NOT_SCORED_WARNING = ("{path}: warning: {count} trimap pixel(s) with values other than 0, 128 and 255 "
                      "not scored, as Deep Image Matting's evaluation code does not; they are "
                      "predicted as unknown")
# Exit status of evaluate.py and predict.py: bad input or an unusable path 2, pycaffe missing or
# a predictor that cannot be loaded 1.
TOOL_ERRORS = ((InputError, 2), (OSError, 2), (RuntimeError, 1))


# ----------------------------------------------------------------------------- results
@dataclass
class MethodResult:
    """Per-image errors of one method: {image name: {"sad", "mse", "grad", "conn"}} (raw units)."""
    name: str
    per_image: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)   # image name -> remark (e.g. NO_UNKNOWN_NOTE)
    folder: str = ""                            # where its PNGs are
    paths: dict = field(default_factory=dict)   # image name -> the PNG scored

    def mean(self) -> dict:
        """Mean of each error over the images; MSE over the images where it is defined."""
        out = {}
        for key in metrics.METRICS:
            vals = np.array([v[key] for v in self.per_image.values()], dtype=np.float64)
            vals = vals[np.isfinite(vals)]
            out[key] = float(vals.mean()) if vals.size else float("nan")
        return out

    def std(self) -> dict:
        out = {}
        for key in metrics.METRICS:
            vals = np.array([v[key] for v in self.per_image.values()], dtype=np.float64)
            vals = vals[np.isfinite(vals)]
            out[key] = float(vals.std()) if vals.size else float("nan")
        return out


# ----------------------------------------------------------------------------- scoring
def trimap_to_01(trimap) -> np.ndarray:
    """uint8 0/128/255 trimap -> float64 with 0, 0.5 (unknown), 1."""
    t = np.asarray(trimap)
    out = np.full(t.shape, 0.5)
    out[t == 0] = 0.0
    out[t == 255] = 1.0
    return out


def score_arrays(pred, gt, trimap, force_known: bool = True) -> dict:
    """The four errors of one prediction (arrays as in ``dmpn.metrics``)."""
    if force_known:
        pred = metrics.force_known(pred, trimap)
    return metrics.all_errors(pred, gt, trimap)


def _shape_str(a):
    return f"{a.shape[1]}x{a.shape[0]}"


_warned_not_scored = set()


def _warn_not_scored(trimap_path, trimap) -> None:
    """Once per trimap file and process: how many of its pixels are unknown but not scored."""
    count = int(np.count_nonzero(trimap == TRIMAP_NOT_SCORED))
    key = os.path.abspath(os.fspath(trimap_path))
    if count and key not in _warned_not_scored:
        _warned_not_scored.add(key)
        print(NOT_SCORED_WARNING.format(path=trimap_path, count=count), file=sys.stderr, flush=True)


def score_files(pred_path, gt_path, trimap_path, force_known: bool = True) -> dict:
    """Read three PNGs, check their sizes (InputError naming the file) and score them over the
    pixels whose trimap is exactly 128 (a warning names a trimap with other unknown values)."""
    gt = read_alpha(gt_path)
    trimap = read_trimap(trimap_path, scoring=True)
    _warn_not_scored(trimap_path, trimap)
    pred = read_alpha(pred_path)
    if trimap.shape != gt.shape:
        raise InputError(f"{trimap_path}: trimap size {_shape_str(trimap)} does not match "
                         f"ground truth {gt_path} ({_shape_str(gt)})")
    if pred.shape != gt.shape:
        raise InputError(f"{pred_path}: prediction size {_shape_str(pred)} does not match "
                         f"ground truth {gt_path} ({_shape_str(gt)})")
    return score_arrays(pred, gt, trimap, force_known=force_known)


def match_names(primary: dict, gt: dict, trimap: dict, primary_label: str = "prediction") -> list:
    """Names scored: those of ``primary`` ({name: path}); each needs a ground truth and a trimap,
    and every ground truth needs a ``primary`` partner (a missing prediction would flatter the mean).
    InputError naming the file without a partner."""
    for name, path in primary.items():
        if name not in gt:
            folder = os.path.dirname(next(iter(gt.values())))
            raise InputError(f"{path}: no ground truth named {name!r} in {folder}")
        if name not in trimap:
            folder = os.path.dirname(next(iter(trimap.values())))
            raise InputError(f"{path}: no trimap named {name!r} in {folder}")
    for name, path in gt.items():
        if name not in primary:
            folder = os.path.dirname(next(iter(primary.values())))
            raise InputError(f"{path}: no {primary_label} named {name!r} in {folder}")
    return sorted(primary)


def _progress(iterable, desc, enabled, total=None):
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return iterable
    # disable=None: no bar when stderr is not a terminal (logs, pipes)
    return tqdm(iterable, desc=desc, total=total, file=sys.stderr, leave=False, disable=None)


def score_paths(preds: dict, gts: dict, tris: dict, force_known: bool = True,
                name: str = "prediction", folder="", progress: bool = False) -> MethodResult:
    """Score the predictions ``preds`` ({name: PNG path}) against the ground truths and trimaps
    of the same names (``gts``, ``tris``: {name: path}; see match_names)."""
    names = match_names(preds, gts, tris)
    result = MethodResult(name=name, folder=os.fspath(folder))
    for n in _progress(names, f"scoring {name}", progress):
        result.per_image[n] = score_files(preds[n], gts[n], tris[n], force_known=force_known)
        result.paths[n] = preds[n]
        if not np.isfinite(result.per_image[n]["mse"]):
            result.notes[n] = NO_UNKNOWN_NOTE
    return result


def score_folders(pred_dir, gt_dir, trimap_dir, force_known: bool = True, name: str = "prediction",
                  progress: bool = False) -> MethodResult:
    """Score every prediction PNG in ``pred_dir`` against ``gt_dir`` with ``trimap_dir``."""
    return score_paths(list_images(pred_dir), list_images(gt_dir), list_images(trimap_dir),
                       force_known=force_known, name=name, folder=pred_dir, progress=progress)


# ----------------------------------------------------------------------------- predicting
def _check_known_pixel(predictor, trimap, trimap_path) -> None:
    """InputError naming the trimap file when ``predictor`` (the network: its attribute
    ``needs_known_pixel``) cannot take it. The baselines take any trimap."""
    if getattr(predictor, "needs_known_pixel", False) and not any(known_sides(trimap_to_01(trimap))):
        raise InputError(f"{trimap_path}: {NO_KNOWN_PIXEL}")


def predict_file(predictor, image_path, trimap_path) -> np.ndarray:
    """Read an image and its trimap, check them (InputError naming the file) and run
    ``predictor(image, trimap01)``: the matte, float64 HxW in [0, 1]."""
    image = read_image(image_path)
    trimap = read_trimap(trimap_path)
    if image.shape[:2] != trimap.shape:
        raise InputError(f"{trimap_path}: trimap size {_shape_str(trimap)} does not match image "
                         f"{image_path} ({_shape_str(image)})")
    _check_known_pixel(predictor, trimap, trimap_path)
    alpha = np.squeeze(np.asarray(predictor(image, trimap_to_01(trimap)), dtype=np.float64))
    if alpha.shape != trimap.shape:
        raise ValueError(f"predictor returned shape {alpha.shape} for {image_path} "
                         f"({trimap.shape} expected)")
    return np.clip(np.nan_to_num(alpha), 0.0, 1.0)


def predict_folder(predictor, images_dir, trimap_dir, out_dir, names=None, progress: bool = True,
                   desc: str = "predicting") -> dict:
    """Run ``predictor(image, trimap01) -> alpha`` on every image (with the trimap of the same
    name) and write the mattes as 8-bit PNGs ``out_dir/NAME.png``. Returns {name: written path}."""
    images, tris = list_images(images_dir), list_images(trimap_dir)
    if names is None:
        names = sorted(images)
    os.makedirs(out_dir, exist_ok=True)
    written = {}
    for n in _progress(names, desc, progress, total=len(names)):
        if n not in images:
            raise InputError(f"{os.path.join(os.fspath(images_dir), n)}.*: no such image")
        if n not in tris:
            raise InputError(f"{images[n]}: no trimap named {n!r} in {trimap_dir}")
        path = os.path.join(out_dir, n + ".png")
        write_png(path, predict_file(predictor, images[n], tris[n]))
        written[n] = path
    return written


def score_predictor(predictor, images_dir, trimap_dir, gt_dir, out_dir, force_known: bool = True,
                    name: str = "model", progress: bool = True) -> MethodResult:
    """Predict every image of ``images_dir``, save the PNGs in ``out_dir`` and score them: the
    PNGs written now, whatever else ``out_dir`` holds (e.g. an earlier run's other images)."""
    images, gts, tris = list_images(images_dir), list_images(gt_dir), list_images(trimap_dir)
    names = match_names(images, gts, tris, primary_label="image")
    for n in names:  # check sizes and trimaps before spending time predicting
        g, t = read_alpha(gts[n]), read_trimap(tris[n])
        if g.shape != t.shape:
            raise InputError(f"{tris[n]}: trimap size {_shape_str(t)} does not match "
                             f"ground truth {gts[n]} ({_shape_str(g)})")
        _check_known_pixel(predictor, t, tris[n])
    written = predict_folder(predictor, images_dir, trimap_dir, out_dir, names=names,
                             progress=progress, desc=f"predicting ({name})")
    return score_paths(written, gts, tris, force_known=force_known, name=name, folder=out_dir)


def pad_to_multiple(x, multiple: int = 32):
    """Pad HxW(xC) up to multiples of ``multiple`` by edge replication; returns (padded, (H, W))."""
    x = np.asarray(x)
    h, w = x.shape[:2]
    ph, pw = (-h) % multiple, (-w) % multiple
    pad = [(0, ph), (0, pw)] + [(0, 0)] * (x.ndim - 2)
    return (np.pad(x, pad, mode="edge") if (ph or pw) else x), (h, w)


def caffe_predictor(deploy, weights, gpu=None, multiple: int = 32):
    """A predictor running a deploy net through pycaffe (imported lazily).

    The net's input blob "data" is 1x4xHxW: RGB in [0, 1] (channels 0-2) and the trimap in [0, 1]
    with 0.5 for unknown (channel 3); its output blob "alpha" is 1x1xHxW. Inputs are padded to a
    multiple of ``multiple`` by edge replication and the output cropped back. ``gpu``: device id,
    or None for the CPU.
    """
    for path, what in ((deploy, "deploy prototxt"), (weights, "weights")):
        if not os.path.isfile(os.fspath(path)):
            raise InputError(f"{path}: no such {what} file")
    try:
        import caffe
    except ImportError as exc:
        raise RuntimeError(f"pycaffe is not importable ({exc}); build it with tools/setup.sh") from None
    if gpu is None:
        caffe.set_mode_cpu()
    else:
        caffe.set_device(int(gpu))
        caffe.set_mode_gpu()
    net = caffe.Net(os.fspath(deploy), os.fspath(weights), caffe.TEST)
    from dmpn.bn_stats import missing_statistics
    empty = missing_statistics(net)
    if empty:
        which = f"'{empty[0]}' holds" if len(empty) == 1 else f"'{empty[0]}' and {len(empty) - 1} more hold"
        raise InputError(f"{weights}: BatchNorm layer {which} no statistics (weights never trained, "
                         "e.g. an initialisation): train them, or fill the statistics with "
                         "tools/recompute_bn.py")

    def predict(image, trimap01):
        if not any(known_sides(trimap01)):  # the C++ solve would abort the process
            raise InputError(NO_KNOWN_PIXEL)
        # The net was trained on the LMDB's trimap scaled by 1/255: unknown is 128/255 there,
        # so the predictors' 0.5 is given to it as 128/255 (the same input as in training).
        t = np.asarray(trimap01, np.float64)
        t = np.where((t > 0) & (t < 1), 128 / 255, t)
        x = np.concatenate([np.asarray(image, np.float64), t[..., None]], axis=2)
        xp, (h, w) = pad_to_multiple(x, multiple)
        blob = np.ascontiguousarray(xp.transpose(2, 0, 1)[None], dtype=np.float32)
        net.blobs["data"].reshape(*blob.shape)
        net.reshape()
        net.blobs["data"].data[...] = blob
        net.forward()
        out = np.asarray(net.blobs["alpha"].data)
        out = out.reshape(out.shape[-2:]) if out.size == out.shape[-2] * out.shape[-1] else out[0, 0]
        return np.clip(out[:h, :w].astype(np.float64), 0.0, 1.0)

    predict.net = net
    predict.needs_known_pixel = True
    return predict


def load_predictor(spec: str):
    """'package.module:function' -> the callable (a Python predictor for the command line). The
    module is looked for in the current folder first, then on sys.path (the current folder is
    on sys.path for this import only). RuntimeError with a one-line message when it cannot be
    loaded."""
    import importlib
    if ":" not in spec:
        raise RuntimeError(f"--predictor {spec!r}: expected MODULE:FUNCTION")
    mod, func = spec.split(":", 1)
    cwd = os.getcwd()
    sys.path.insert(0, cwd)
    try:
        obj = getattr(importlib.import_module(mod), func)
    except (ImportError, AttributeError) as exc:
        raise RuntimeError(f"--predictor {spec!r}: cannot load it ({type(exc).__name__}: {exc})") from None
    finally:
        sys.path.remove(cwd)  # the first occurrence: ours
    if not callable(obj):
        raise RuntimeError(f"--predictor {spec!r} is not callable")
    return obj


# ----------------------------------------------------------------------------- output
def _fmt(v, scale=1.0, width=9, prec=3):
    if v is None or not np.isfinite(v):
        return f"{'n/a':>{width}}"
    return f"{v * scale:>{width}.{prec}f}"


def format_table(results, force_known: bool = True) -> str:
    """Per-image and mean errors of each method, in the units papers print."""
    results = list(results)
    lines = ["Errors over the unknown region (trimap == 128), as Deep Image Matting's MATLAB code: "
             "SAD, Grad, Conn / 1000; MSE x 1000 (mean over the region).",
             "Note: " + (PROTOCOL_NOTE if force_known else NO_PROTOCOL_NOTE) + "."]
    header = f"{'image':<24}{'SAD':>9}{'MSEx1e3':>9}{'Grad':>9}{'Conn':>9}"
    for res in results:
        lines += ["", f"== {res.name}" + (f" ({res.folder})" if res.folder else ""), header]
        for n, v in res.per_image.items():
            flag = "  *" if n in res.notes else ""
            lines.append(f"{n:<24}{_fmt(v['sad'])}{_fmt(v['mse'], 1000)}{_fmt(v['grad'])}"
                         f"{_fmt(v['conn'])}{flag}")
        m = res.mean()
        lines.append(f"{'mean (' + str(len(res.per_image)) + ' images)':<24}{_fmt(m['sad'])}"
                     f"{_fmt(m['mse'], 1000)}{_fmt(m['grad'])}{_fmt(m['conn'])}")
        for n, note in res.notes.items():
            lines.append(f"  * {n}: {note}")
    if len(results) > 1:
        lines += ["", "== mean per method", f"{'method':<24}{'SAD':>9}{'MSEx1e3':>9}{'Grad':>9}{'Conn':>9}"]
        for res in results:
            m = res.mean()
            lines.append(f"{res.name:<24}{_fmt(m['sad'])}{_fmt(m['mse'], 1000)}{_fmt(m['grad'])}"
                         f"{_fmt(m['conn'])}")
    return "\n".join(lines)


def _clean(v):
    return None if (v is None or not math.isfinite(v)) else float(v)


def _method_json(res: MethodResult) -> dict:
    return {"per_image": {n: {k: _clean(v[k]) for k in metrics.METRICS} for n, v in res.per_image.items()},
            "mean": {k: _clean(v) for k, v in res.mean().items()},
            "notes": dict(res.notes)}


def results_to_json(results, force_known: bool = True) -> dict:
    """``{"per_image": {NAME: {"sad", "mse", "grad", "conn"}}, "mean": {...}}`` for the first
    method (raw units: SAD, Grad, Conn / 1000, MSE unscaled; undefined MSE is null), plus
    "methods" (every method in the same form), "notes" and the protocol used."""
    results = list(results)
    first = _method_json(results[0])
    return {"per_image": first["per_image"], "mean": first["mean"], "notes": first["notes"],
            "method": results[0].name,
            "known_pixels_forced": bool(force_known),
            "units": {"sad": "/1000", "mse": "mean (not scaled)", "grad": "/1000", "conn": "/1000"},
            "methods": {r.name: _method_json(r) for r in results}}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="evaluate.py",
        description="Score alpha mattes with SAD, MSE, gradient and connectivity errors exactly as "
                    "Deep Image Matting's MATLAB evaluation code (files matched by name).")
    p.add_argument("--pred", metavar="DIR", help="folder of predicted alpha PNGs")
    p.add_argument("--gt", metavar="DIR", required=True, help="folder of ground-truth alpha PNGs")
    p.add_argument("--trimap", metavar="DIR", required=True, help="folder of trimaps (0/128/255)")
    p.add_argument("--json", metavar="FILE", help="also write the raw values as JSON")
    p.add_argument("--keep-known-pixels", action="store_true",
                   help="do not set predictions to 0 / 1 on the trimap's known pixels before scoring")
    p.add_argument("--images", metavar="DIR", help="input images (for --model/--predictor/--baselines)")
    p.add_argument("--model", metavar="PROTOTXT", help="deploy prototxt of a net to run and score")
    p.add_argument("--weights", metavar="FILE", help=".caffemodel for --model")
    p.add_argument("--gpu", type=int, metavar="N", help="GPU id for --model (default: CPU)")
    p.add_argument("--predictor", metavar="MODULE:FUNC",
                   help="Python callable predictor(image, trimap01) -> alpha to run and score; "
                        "MODULE is looked for in the current folder first, then on the Python path")
    p.add_argument("--baselines", metavar="LIST",
                   help="also score baselines: comma list of cf, knn, handcrafted (or 'all')")
    p.add_argument("--sigma", type=positive_float, default=0.1,
                   help="sigma of the handcrafted affinity (0.1)")
    p.add_argument("--out", metavar="DIR", default=os.path.join("results", "evaluate"),
                   help="where predicted PNGs of --model/--predictor/--baselines go "
                        "(OUT/METHOD/NAME.png; default results/evaluate)")
    p.add_argument("--figures", metavar="DIR", help="write bar charts and a qualitative grid (PNG)")
    p.add_argument("--grid-rows", type=int, default=4, help="images in the qualitative grid (4)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def run(args) -> list:
    """Score everything the parsed arguments ask for; returns the MethodResults (printed by main)."""
    from dmpn import baselines as bl
    force = not args.keep_known_pixels
    progress = not args.no_progress
    baseline_names = bl.parse_baselines(args.baselines) if args.baselines else []
    # check the data before any long computation
    gts, tris = list_images(args.gt), list_images(args.trimap)
    if args.images:
        match_names(list_images(args.images), gts, tris, primary_label="image")
    results = []
    if args.pred:
        results.append(score_folders(args.pred, args.gt, args.trimap, force_known=force,
                                     name="prediction", progress=progress))
    predictors = []
    if args.model:
        predictors.append(("model", caffe_predictor(args.model, args.weights, gpu=args.gpu)))
    if args.predictor:
        predictors.append((args.predictor.split(":")[-1], load_predictor(args.predictor)))
    for b in baseline_names:
        f = bl.get_baseline(b)
        if b == "handcrafted":
            sigma = args.sigma
            f = (lambda image, trimap01, _f=f: _f(image, trimap01, sigma=sigma))
        predictors.append((b, f))
    for name, predictor in predictors:
        results.append(score_predictor(predictor, args.images, args.trimap, args.gt,
                                       os.path.join(args.out, name), force_known=force, name=name,
                                       progress=progress))
    return results


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    force = not args.keep_known_pixels
    from dmpn import baselines as bl
    try:
        baseline_names = bl.parse_baselines(args.baselines) if args.baselines else []
    except ValueError as exc:
        parser.error(str(exc))
    if not (args.pred or args.model or args.predictor or baseline_names):
        parser.error("give --pred, --model, --predictor or --baselines")
    if args.model and not args.weights:
        parser.error("--model needs --weights")
    if (args.model or args.predictor or baseline_names) and not args.images:
        parser.error("--model, --predictor and --baselines need --images")

    def work():
        # outputs that cannot be written are refused before the long part, not after it
        if args.json:
            check_writable(args.json, folder=False)
        if args.figures:
            check_writable(args.figures)
        if args.model or args.predictor or baseline_names:
            check_writable(args.out)
        results = run(args)
        print(format_table(results, force_known=force))
        if args.json:
            write_json(args.json, results_to_json(results, force_known=force))
            print(f"\nwrote {args.json}")
        if args.figures:
            from dmpn import figures
            paths = figures.make_figures(results, args.figures, images_dir=args.images,
                                         gt_dir=args.gt, trimap_dir=args.trimap,
                                         rows=args.grid_rows)
            print("wrote " + ", ".join(paths))
    return run_tool("evaluate.py", work, TOOL_ERRORS)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
