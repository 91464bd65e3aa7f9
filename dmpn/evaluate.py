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

Resuming: given a method key, :func:`predict_folder` records each PNG it writes in
``OUT/.predictions.json`` (:class:`PredictionRecord`) and reuses, on a later run, the PNGs made by
the same method (for the net: deploy prototxt, weights, options, Caffe build; see the ``*_method_key``
functions) from the same image and trimap content; anything else is predicted again.

Units: SAD, Grad and Conn are divided by 1000 (as printed in papers; the MATLAB code divides SAD
only, its gradient and connectivity functions return the plain sums), MSE is a plain mean (tables
print it x 1000). An image with no unknown pixel has nothing to score: its errors are undefined
(n/a, null in JSON), it is left out of every mean, and reported.
"""
from __future__ import annotations

import argparse
import errno
import glob
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from dmpn import metrics
from dmpn.baselines import known_sides
from dmpn.caffe_checks import mapped_libraries
from dmpn import cli
from dmpn.cli import check_writable, error_text, positive_float, positive_int, run_tool
from dmpn.net import DEPLOY_INPUTS, DEPLOY_OUTPUT, padded
from dmpn.unpooling import FLOAT32_EXACT_PLANE
from dmpn.imageio import (InputError, file_sha256, list_images, read_alpha, read_image, read_trimap,
                          warn_once, write_json, write_png, TRIMAP_NOT_SCORED)

__all__ = ["MethodResult", "match_names", "score_arrays", "score_files", "score_paths",
           "score_folders", "trimap_to_01", "predict_file", "predict_folder", "score_predictor",
           "pad_to_multiple", "caffe_predictor", "load_predictor", "format_table",
           "results_to_json", "write_json", "main", "NO_UNKNOWN_NOTE", "PROTOCOL_NOTE",
           "NO_KNOWN_PIXEL", "TOOL_ERRORS", "PredictorError", "Predictions", "PredictionRecord", "PREDICTIONS_RECORD",
           "caffe_method_key", "baseline_method_key", "python_method_key", "resume_command",
           "read_pair", "check_not_an_input", "check_deploy_prototxt"]

NO_UNKNOWN_NOTE = ("no unknown pixel (128) in the trimap: nothing to score, the four errors undefined "
                   "and the image left out of every mean")
PROTOCOL_NOTE = ("predictions set to 0 / 1 on the trimap's known pixels before scoring "
                 "(standard protocol)")
NO_PROTOCOL_NOTE = "predictions scored as they are on known pixels (--keep-known-pixels)"
NO_KNOWN_PIXEL = ("the trimap has no known pixel (0 or 255): the network's propagation has nothing "
                  "to propagate (its linear system is singular)")
# Said by predict.py and evaluate.py alike (a model's mattes are predicted, then scored).
NOT_SCORED_WARNING = ("{path}: warning: {count} trimap pixel(s) with values other than 0, 128 and 255 "
                      "(a lossy format's noise?) are taken as unknown; a scoring leaves them out, as "
                      "Deep Image Matting's evaluation code does")
NOT_SCORED_NOTE = ("{count} trimap pixel(s) with values other than 0, 128 and 255 taken as unknown "
                   "and not scored")
NO_KNOWN_PIXEL_WARNING = ("{path}: warning: the trimap has no known pixel (0 or 255): the method (a "
                          "baseline or --predictor) has nothing to propagate from, and its matte "
                          "says nothing of the image")
# Exit status of evaluate.py and predict.py: bad input or an unusable path 2, pycaffe missing or
# a predictor that cannot be loaded 1, interrupted (Ctrl-C; what was predicted is kept) 130.
TOOL_ERRORS = ((InputError, 2), (OSError, 2), (RuntimeError, 1), (KeyboardInterrupt, 130))
# How far outside [0, 1] a predictor's matte may stray before it is refused rather than clipped:
# closed-form and propagation solutions overshoot a little; a 0-255 matte does not.
PREDICTION_SLACK = 1.0


class PredictorError(RuntimeError):
    """A predictor's output that cannot be a matte of its image: another shape, NaN or inf, or
    values far outside [0, 1]. Exit status 1, as for a predictor that cannot be loaded."""


# ----------------------------------------------------------------------------- results
@dataclass
class MethodResult:
    """Per-image errors of one method: {image name: {"sad", "mse", "grad", "conn"}} (raw units)."""
    name: str
    per_image: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)   # image name -> remark (e.g. NO_UNKNOWN_NOTE)
    folder: str = ""                            # where its PNGs are
    paths: dict = field(default_factory=dict)   # image name -> the PNG scored
    source: dict = field(default_factory=dict)  # what made the mattes (see run), for the JSON

    def mean(self) -> dict:
        """Mean of each error over the images scored (those with an unknown pixel)."""
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


def _warn_not_scored(trimap_path, trimap) -> int:
    """How many of the trimap's pixels are unknown but not scored; a warning once per file."""
    count = int(np.count_nonzero(trimap == TRIMAP_NOT_SCORED))
    if count:
        warn_once("trimap not scored", trimap_path,
                  NOT_SCORED_WARNING.format(path=trimap_path, count=count))
    return count


def score_files(pred_path, gt_path, trimap_path, force_known: bool = True) -> dict:
    """Read three PNGs, check their sizes (InputError naming the file) and score them over the
    pixels whose trimap is exactly 128 (a warning names a trimap with other unknown values)."""
    return _score_files(pred_path, gt_path, trimap_path, force_known)[0]


def _score_files(pred_path, gt_path, trimap_path, force_known):
    """score_files' scores, and the count of the trimap's unknown pixels left unscored."""
    gt = read_alpha(gt_path)
    trimap = read_trimap(trimap_path, scoring=True)
    not_scored = _warn_not_scored(trimap_path, trimap)
    pred = read_alpha(pred_path)
    if trimap.shape != gt.shape:
        raise InputError(f"{trimap_path}: trimap size {_shape_str(trimap)} does not match "
                         f"ground truth {gt_path} ({_shape_str(gt)})")
    if pred.shape != gt.shape:
        raise InputError(f"{pred_path}: prediction size {_shape_str(pred)} does not match "
                         f"ground truth {gt_path} ({_shape_str(gt)})")
    # A binary matte written as 0/1 instead of 0/255 reads as nearly transparent everywhere and
    # would score as a poor prediction rather than fail.
    if pred.max() == 1 / 255 and np.all((pred == 0) | (pred == 1 / 255)) and gt.max() > 0.5:
        raise InputError(f"{pred_path}: prediction holds only the values 0 and 1 of 255 where "
                         f"its ground truth {gt_path} reaches {gt.max():.3g}: a 0/1 matte saved "
                         "as 8-bit? save it as 0..255")
    return score_arrays(pred, gt, trimap, force_known=force_known), not_scored


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
        result.per_image[n], not_scored = _score_files(preds[n], gts[n], tris[n], force_known)
        result.paths[n] = preds[n]
        notes = [NOT_SCORED_NOTE.format(count=not_scored)] if not_scored else []
        if not np.isfinite(result.per_image[n]["mse"]):  # no scored pixel: SAD etc. would be 0
            # and pull the means down while MSE's left the image out; all four leave it out.
            result.per_image[n] = {k: float("nan") for k in result.per_image[n]}
            notes.insert(0, NO_UNKNOWN_NOTE)
        if notes:
            result.notes[n] = "; ".join(notes)
    return result


def score_folders(pred_dir, gt_dir, trimap_dir, force_known: bool = True, name: str = "prediction",
                  progress: bool = False) -> MethodResult:
    """Score every prediction PNG in ``pred_dir`` against ``gt_dir`` with ``trimap_dir``."""
    return score_paths(list_images(pred_dir), list_images(gt_dir), list_images(trimap_dir),
                       force_known=force_known, name=name, folder=pred_dir, progress=progress)


# ----------------------------------------------------------------------------- predicting
def _check_known_pixel(predictor, trimap, trimap_path) -> None:
    """InputError naming the trimap file when ``predictor`` (the network: its attribute
    ``needs_known_pixel``) cannot take it; the baselines take any trimap, with a warning where
    it has no known pixel."""
    if not any(known_sides(trimap_to_01(trimap))):
        if getattr(predictor, "needs_known_pixel", False):
            raise InputError(f"{trimap_path}: {NO_KNOWN_PIXEL}")
        warn_once("trimap without known pixels", trimap_path,
                  NO_KNOWN_PIXEL_WARNING.format(path=trimap_path))


def _check_plane(predictor, image, image_path) -> None:
    """InputError naming the image when ``predictor`` (the network: its attributes
    ``largest_plane`` and ``multiple``) cannot take an image of its size: the deploy net unpools
    its padded full-resolution plane with BVLC Pooling's float32 mask, exact only up to 2^24
    pixels (the C++ Unpooling layer would abort the process)."""
    limit = getattr(predictor, "largest_plane", None)
    if limit is None:
        return
    h, w = image.shape[:2]
    ph, pw = padded(h, predictor.multiple), padded(w, predictor.multiple)
    if ph * pw > limit:
        raise InputError(f"{image_path}: {h} x {w} pixels (padded to {ph} x {pw} for the network) "
                         f"is more than the {limit} whose indices the network's float32 pooling "
                         "masks hold exactly (4096 x 4096 at most): downscale it")


def read_pair(predictor, image_path, trimap_path):
    """(image, trimap) read and checked for ``predictor``: InputError naming the file when their
    sizes differ, the image is larger than the predictor takes, or the trimap has no known pixel
    that the predictor needs."""
    image = read_image(image_path)
    trimap = read_trimap(trimap_path, scoring=True)  # unknown either way; warns of odd values
    _warn_not_scored(trimap_path, trimap)             # (a JPEG's noise turns known into unknown)
    if image.shape[:2] != trimap.shape:
        raise InputError(f"{trimap_path}: trimap size {_shape_str(trimap)} does not match image "
                         f"{image_path} ({_shape_str(image)})")
    _check_plane(predictor, image, image_path)
    _check_known_pixel(predictor, trimap, trimap_path)
    return image, trimap


def check_not_an_input(out_path, *input_paths) -> None:
    """InputError when writing ``out_path`` would overwrite one of ``input_paths`` (the same
    file or folder, through any link or spelling)."""
    cli.check_not_an_input(out_path, [(p, p) for p in input_paths],
                           "writing the mattes there would overwrite it")


def predict_file(predictor, image_path, trimap_path) -> np.ndarray:
    """Read an image and its trimap, check them (InputError naming the file) and run
    ``predictor(image, trimap01)``: the matte, float64 HxW in [0, 1]."""
    image, trimap = read_pair(predictor, image_path, trimap_path)
    try:
        alpha = np.asarray(predictor(image, trimap_to_01(trimap)), dtype=np.float64)
    except InputError as exc:  # the method cannot take this image (a baseline's size limit)
        raise InputError(f"{image_path}: {exc}") from None
    if alpha.ndim > 2 and all(d == 1 for d in alpha.shape[:-2]):  # e.g. 1 x 1 x H x W; never
        alpha = alpha.reshape(alpha.shape[-2:])                     # a transposed W x H
    if alpha.shape != trimap.shape:
        raise PredictorError(f"predictor returned shape {alpha.shape} for {image_path} "
                             f"({trimap.shape} expected)")
    bad = np.count_nonzero(~np.isfinite(alpha))
    if bad:  # a diverged net: scoring its matte as 0 / 1 would give believable numbers
        raise PredictorError(f"predictor returned {bad} non-finite value(s) (NaN or inf) for "
                             f"{image_path}")
    low, high = float(alpha.min()), float(alpha.max())
    if low < -PREDICTION_SLACK or high > 1 + PREDICTION_SLACK:
        raise PredictorError(f"predictor returned values from {low:g} to {high:g} for "
                             f"{image_path}: a matte is in [0, 1] (a 0-255 matte?)")
    return np.clip(alpha, 0.0, 1.0)  # solvers overshoot [0, 1] a little


# ----------------------------------------------------------------------------- resuming
# A prediction folder's record of what it holds (OUT/METHOD/.predictions.json for evaluate.py,
# --out/.predictions.json for predict.py): for each PNG, the digest of the method key that made it
# and the SHA-256 of its image, its trimap and the PNG itself. A PNG is reused only when all four
# match this run's; anything else (no entry, another method, changed inputs, a PNG edited or
# rewritten since) is predicted again. The PNG's own hash makes the record safe against a crash
# between writing a PNG and the record, and against other writers (older versions, by hand).
PREDICTIONS_RECORD = ".predictions.json"
_RECORD_VERSION = 1
_RECORD_SAVE_S = 1.0   # the record is rewritten (atomically) at most this often while predicting
# The dmpn modules every prediction goes through (reading, predicting, writing): their source is
# part of each method key, so that a change to the code re-predicts.
_PIPELINE_MODULES = ("dmpn.imageio", "dmpn.evaluate", "dmpn.predict")
_BASELINE_MODULES = ("dmpn.baselines", "dmpn.propagation")
# What "the same" means for each kind of method, for the line that says predictions are reused.
_SAME = {"caffe net": "same model, weights, options, Caffe build and inputs",
         "baseline": "same method, parameters, libraries and inputs",
         "python predictor": "same MODULE:FUNC and module source, same inputs"}


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _files_sha256(paths) -> str:
    """One hash of the content of the files ``paths`` (in any order)."""
    return _digest(sorted(file_sha256(p) for p in paths))


def _code_sha256(modules) -> str:
    """One hash of the source files of ``modules``."""
    import importlib
    return _files_sha256(importlib.import_module(m).__file__ for m in modules)


def _caffe_build_sha256():
    """One hash of the Caffe build the net runs in: pycaffe's extension and the libcaffe this
    process loaded (our layers live in it), or None where pycaffe is not a real build."""
    import caffe
    if not getattr(caffe, "__file__", None):
        return None
    files = set(glob.glob(os.path.join(os.path.dirname(os.path.abspath(caffe.__file__)), "_caffe*.so")))
    files.update(p for p in mapped_libraries() if os.path.basename(p).startswith("libcaffe"))
    return _files_sha256(p for p in files if os.path.isfile(p))


# Libraries besides libcaffe whose version can change a net's low bits: BLAS / LAPACK on the CPU,
# CUDA's on the GPU (Caffe loads cuBLAS and cuRAND, which load the runtime).
_NUMERIC_LIBRARY_PREFIXES = ("libopenblas", "libblas", "liblapack", "libmkl", "libcublas",
                             "libcudart", "libcurand", "libcudnn")


def _numeric_libraries_key(maps: str = "/proc/self/maps") -> list:
    """[real path, size, mtime] of each numerical library mapped into this process: an upgrade
    replaces the file. Not their content: cuBLAS is hundreds of MB, too much to hash per run."""
    key = []
    for path in mapped_libraries(maps):
        if os.path.basename(path).startswith(_NUMERIC_LIBRARY_PREFIXES):
            try:
                st = os.stat(path)
            except OSError:
                continue
            key.append([os.path.realpath(path), st.st_size, st.st_mtime_ns])
    return sorted(key)


def _gpu_model(device: int):
    """'NAME, driver VERSION' of CUDA device ``device`` (as CUDA numbers it, after
    CUDA_VISIBLE_DEVICES), from the driver library; None where there is no driver or device.
    Results differ between GPU models (other cuBLAS kernels), so the key names it."""
    import ctypes
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    handle, version = ctypes.c_int(), ctypes.c_int()
    name = ctypes.create_string_buffer(256)
    if (cuda.cuInit(0) != 0 or cuda.cuDeviceGet(ctypes.byref(handle), int(device)) != 0
            or cuda.cuDeviceGetName(name, len(name), handle) != 0
            or cuda.cuDriverGetVersion(ctypes.byref(version)) != 0):
        return None
    return f"{name.value.decode(errors='replace')}, driver {version.value}"


def _python_layers_sha256(deploy):
    """One hash of the source a deploy net's Python layers run: each python_param module's file
    and, where one is ours (dmpn.layers), every source file of the dmpn package (the layers
    share its numpy reference); None for a net without Python layers."""
    import importlib.util
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format
    with open(deploy) as f:
        param = text_format.Parse(f.read(), caffe_pb2.NetParameter())
    modules = sorted({layer.python_param.module for layer in param.layer if layer.type == "Python"})
    if not modules:
        return None
    files = set()
    for m in modules:
        spec = importlib.util.find_spec(m)
        if spec is None or not spec.origin:
            raise InputError(f"{deploy}: Python layer module {m!r} is not importable")
        files.add(spec.origin)
    if any(m.split(".")[0] == "dmpn" for m in modules):
        import dmpn
        import dmpn.layers
        for folder in list(dmpn.__path__) + list(dmpn.layers.__path__):
            files.update(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".py"))
    return _files_sha256(files)


def caffe_method_key(deploy, weights, gpu=None, force_known: bool = False) -> dict:
    """The method key of a deploy net's predictions (see :class:`PredictionRecord`): the SHA-256 of
    the deploy prototxt's and the weights' content (hashed in full: every snapshot of one net has
    the same size, and an mtime can be kept or be coarse), --force-known, CPU or GPU and which
    GPU model (their floating-point sums differ), the Caffe build, the BLAS / CUDA libraries it
    runs on and the dmpn code."""
    return {"kind": "caffe net", "deploy": file_sha256(deploy), "weights": file_sha256(weights),
            "force_known": bool(force_known), "device": "cpu" if gpu is None else "gpu",
            "gpu_model": None if gpu is None else _gpu_model(gpu),
            "caffe_build": _caffe_build_sha256(), "numeric_libraries": _numeric_libraries_key(),
            "python_layers": _python_layers_sha256(deploy), "code": _code_sha256(_PIPELINE_MODULES)}


def baseline_method_key(name: str, sigma: float = 0.1) -> dict:
    """The method key of a baseline's predictions: its name, --sigma for the hand-crafted
    affinity, the numerical libraries' versions and the dmpn code."""
    from importlib import metadata

    def version(package):
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None
    key = {"kind": "baseline", "baseline": name, "numpy": version("numpy"), "scipy": version("scipy"),
           "code": _code_sha256(_PIPELINE_MODULES + _BASELINE_MODULES)}
    if name == "handcrafted":
        key["sigma"] = float(sigma)
    else:  # cf, knn
        key["pymatting"] = version("pymatting")
    return key


def python_method_key(spec: str, func):
    """The method key of a --predictor MODULE:FUNC: the spec and the SHA-256 of MODULE's file and
    of the file that defines the function itself (a decorator's wrapper is looked through). None
    when one cannot be found. What the function loads itself (its own weights, other modules)
    is not seen, which is why evaluate.py reuses such mattes only with --resume-predictor."""
    import importlib
    import inspect
    try:
        files = {importlib.import_module(spec.rsplit(":", 1)[0]).__file__,
                 inspect.getsourcefile(inspect.unwrap(func))}
    except (TypeError, ImportError):
        return None
    if not all(f and os.path.isfile(f) for f in files):
        return None
    return {"kind": "python predictor", "predictor": spec,
            "source": _files_sha256(files),
            "code": _code_sha256(_PIPELINE_MODULES)}


def resume_command(no_resume: bool, flag: str = "") -> str:
    """For the messages of an interrupted or unresumed run: the command that goes on where it
    stopped (the same, without --no-resume, with ``flag`` where one more is needed)."""
    return ("the same command" + (" without --no-resume" if no_resume else "")
            + (f" with {flag}" if flag else ""))


class Predictions(dict):
    """{name: PNG path} of :func:`predict_folder`, with the names it ``reused`` from an earlier
    run and those it ``predicted`` now."""

    def __init__(self, *args):
        super().__init__(*args)
        self.reused, self.predicted = [], []

    def summary(self) -> str:
        reused = f", reused {len(self.reused)} from an earlier run" if self.reused else ""
        return f"predicted {len(self.predicted)}{reused}"


class PredictionRecord:
    """The record ``out_dir/.predictions.json`` of which method made each PNG there from which
    inputs (see PREDICTIONS_RECORD above). ``key``: this run's method key (None: nothing is
    reused, and the PNGs written lose their entries). An unreadable record is named in a
    warning and treated as empty."""

    def __init__(self, out_dir, key):
        self.folder = os.fspath(out_dir)
        self.path = os.path.join(self.folder, PREDICTIONS_RECORD)
        if os.path.isdir(self.path):
            raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", self.path)
        self.key = key
        self.digest = None if key is None else _digest(key)
        self.dirty = self.unusable = False
        self.methods, self.entries = self._load()
        if key is not None:
            self.methods[self.digest] = key
        self.saved_at = time.monotonic()

    def _load(self):
        if not os.path.exists(self.path):
            return {}, {}
        try:
            with open(self.path) as f:
                data = json.load(f)
            if data.get("version") != _RECORD_VERSION:
                raise ValueError(f"version {data.get('version')!r}, not {_RECORD_VERSION}")
            methods, entries = dict(data["methods"]), dict(data["predictions"])
            for e in entries.values():
                if not all(isinstance(e[k], str) for k in ("method", "image", "trimap", "png")):
                    raise ValueError("an entry without its hashes")
            if not all(isinstance(m, dict) for m in methods.values()):
                raise ValueError("a method that is not a key")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            print(f"{self.path}: warning: cannot use this record of earlier predictions "
                  f"({error_text(exc)}); predicting everything again", file=sys.stderr, flush=True)
            self.dirty = self.unusable = True
            return {}, {}
        return methods, entries

    def reusable(self, names, inputs, paths, resume: bool = True,
                 resume_how: str = "the same command") -> list:
        """The names whose PNG ``paths[name]`` is this method's prediction from the inputs whose
        hashes are ``inputs[name]`` ((image, trimap)); says on stderr how many are reused and why
        the others are predicted again."""
        if self.key is None:
            return []
        same, other_method, changed_inputs, unrecorded, changed_png = [], [], [], [], []
        for n in names:
            entry = self.entries.get(os.path.basename(paths[n]))
            if not os.path.isfile(paths[n]):
                continue
            if entry is None:
                unrecorded.append(n)
            elif entry["method"] != self.digest:
                other_method.append(entry["method"])
            elif (entry["image"], entry["trimap"]) != tuple(inputs[n]):
                changed_inputs.append(n)
            elif entry["png"] != file_sha256(paths[n]):
                changed_png.append(n)
            else:
                same.append(n)
        again = "predicting them again"
        if other_method:
            old = [self.methods.get(d, {}) for d in set(other_method)]
            fields = sorted({k for o in old for k in set(o) | set(self.key) if o.get(k) != self.key.get(k)})
            what = ", ".join(f.replace("_", " ") for f in fields) or "method"
            self._say(f"{len(other_method)} prediction(s) there were made by another method or "
                      f"model (different {what}): {again}")
        if changed_inputs:
            self._say(f"{len(changed_inputs)} input image(s) or trimap(s) changed since their "
                      f"prediction ({_names(changed_inputs)}): {again}")
        if unrecorded and not self.unusable:  # an unusable record has been named already
            self._say(f"{len(unrecorded)} PNG(s) with no entry in {PREDICTIONS_RECORD}, so not known "
                      f"to be this method's ({_names(unrecorded)}): {again}")
        if changed_png:
            self._say(f"{len(changed_png)} PNG(s) changed since they were predicted "
                      f"({_names(changed_png)}): {again}")
        if not resume:
            if same:
                self._say(f"not resuming: predicting all {len(names)}, the {len(same)} an earlier "
                          f"run made with the same method and inputs too ({resume_how} reuses "
                          "them)")
            return []
        if same:
            self._say(f"reused {len(same)} of {len(names)} predictions from an earlier run "
                      f"({_SAME.get(self.key.get('kind'), 'same method and inputs')}); predicting "
                      f"{len(names) - len(same)}")
        return same

    def _say(self, text):
        print(f"{self.folder}: {text}", file=sys.stderr, flush=True)

    def add(self, inputs, path, png_sha256) -> None:
        """Record the PNG ``path`` just written (its content's hash ``png_sha256``, as
        write_png returns it) from the inputs whose hashes are ``inputs`` (with no key: forget
        what was recorded for it). Saved at most every _RECORD_SAVE_S."""
        name = os.path.basename(path)
        if self.key is not None:
            self.entries[name] = {"method": self.digest, "image": inputs[0], "trimap": inputs[1],
                                  "png": png_sha256}
            self.dirty = True
        elif self.entries.pop(name, None) is not None:
            self.dirty = True
        if time.monotonic() - self.saved_at >= _RECORD_SAVE_S:
            self.save()

    def save(self) -> None:
        """Write the record atomically (entries of PNGs that are gone are dropped)."""
        if self.dirty and (self.entries or os.path.exists(self.path)):
            entries = {name: e for name, e in self.entries.items()
                       if os.path.isfile(os.path.join(self.folder, name))}
            used = {e["method"] for e in entries.values()}
            write_json(self.path, {"version": _RECORD_VERSION,
                                   "about": "written by dmpn.evaluate.predict_folder: PNG name -> "
                                            "method key digest, SHA-256 of image, trimap and PNG",
                                   "methods": {d: k for d, k in self.methods.items() if d in used},
                                   "predictions": entries})
        self.dirty = False
        self.saved_at = time.monotonic()


def _names(names, most: int = 3) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def predict_folder(predictor, images_dir, trimap_dir, out_dir, names=None, progress: bool = True,
                   desc: str = "predicting", key=None, resume: bool = True,
                   resume_how: str = "the same command") -> Predictions:
    """Run ``predictor(image, trimap01) -> alpha`` on every image (with the trimap of the same
    name) and write the mattes as 8-bit PNGs ``out_dir/NAME.png``. Returns {name: path}
    (a :class:`Predictions`).

    ``key``: the method key of ``predictor`` (:func:`caffe_method_key`, :func:`baseline_method_key`,
    :func:`python_method_key`). With one, ``out_dir/.predictions.json`` records each PNG written
    (see :class:`PredictionRecord`), and with ``resume`` a PNG an earlier run made with the same
    key from the same image and trimap is reused instead of predicted again: an interrupted run
    goes on where it stopped. ``resume_how`` names, for the message of an interrupted run, the
    command that goes on (without ``resume``: the flags that turn it on)."""
    images, tris = list_images(images_dir), list_images(trimap_dir)
    if names is None:
        names = sorted(images)
    for n in names:  # all present before any prediction
        if n not in images:
            raise InputError(f"{os.path.join(os.fspath(images_dir), n)}.*: no such image")
        if n not in tris:
            raise InputError(f"{images[n]}: no trimap named {n!r} in {trimap_dir}")
    check_not_an_input(out_dir, images_dir, trimap_dir)
    paths = {n: os.path.join(out_dir, n + ".png") for n in names}
    record = PredictionRecord(out_dir, key)
    inputs = {n: (file_sha256(images[n]), file_sha256(tris[n])) for n in names} if key is not None else {}
    result = Predictions((n, paths[n]) for n in names)
    result.reused = record.reusable(names, inputs, paths, resume=resume, resume_how=resume_how)
    reused = set(result.reused)
    todo = [n for n in names if n not in reused]
    for n in todo:  # every pair checked before the first prediction, not when reached
        read_pair(predictor, images[n], tris[n])
    os.makedirs(out_dir, exist_ok=True)
    try:
        for n in _progress(todo, desc, progress, total=len(todo)):
            written = write_png(paths[n], predict_file(predictor, images[n], tris[n]))
            record.add(inputs.get(n), paths[n], written)
            result.predicted.append(n)
    except KeyboardInterrupt:  # the record is saved below, before this reaches the caller
        kept = (f"; they are recorded in {record.path}: {resume_how} goes on from there"
                if key is not None else "")
        raise KeyboardInterrupt(f"{out_dir}: interrupted after {len(result.predicted)} of "
                                f"{len(todo)} predictions{kept}") from None
    finally:
        record.save()
    return result


def score_predictor(predictor, images_dir, trimap_dir, gt_dir, out_dir, force_known: bool = True,
                    name: str = "model", progress: bool = True, key=None,
                    resume: bool = True, resume_how: str = "the same command") -> MethodResult:
    """Predict every image of ``images_dir``, save the PNGs in ``out_dir`` and score them: the
    PNGs of this run's images, predicted now or reused (``key``, ``resume``, ``resume_how``: see
    predict_folder), whatever else ``out_dir`` holds (e.g. an earlier run's other images)."""
    images, gts, tris = list_images(images_dir), list_images(gt_dir), list_images(trimap_dir)
    names = match_names(images, gts, tris, primary_label="image")
    for n in names:  # ground truths checked before predicting (predict_folder checks the rest)
        g, t = read_alpha(gts[n]), read_trimap(tris[n])
        if g.shape != t.shape:
            raise InputError(f"{tris[n]}: trimap size {_shape_str(t)} does not match "
                             f"ground truth {gts[n]} ({_shape_str(g)})")
    written = predict_folder(predictor, images_dir, trimap_dir, out_dir, names=names,
                             progress=progress, desc=f"predicting ({name})", key=key, resume=resume,
                             resume_how=resume_how)
    return score_paths(written, gts, tris, force_known=force_known, name=name, folder=out_dir)


def pad_to_multiple(x, multiple: int = 32):
    """Pad HxW(xC) up to multiples of ``multiple`` by edge replication; returns (padded, (H, W))."""
    x = np.asarray(x)
    h, w = x.shape[:2]
    ph, pw = padded(h, multiple) - h, padded(w, multiple) - w
    pad = [(0, ph), (0, pw)] + [(0, 0)] * (x.ndim - 2)
    return (np.pad(x, pad, mode="edge") if (ph or pw) else x), (h, w)


def check_deploy_prototxt(deploy):
    """The NetParameter of ``deploy``, or InputError naming it unless it is a deploy net as
    dmpn.net.deploy writes: inputs `data` and `trimap` (Input layers), output `alpha`, no data
    layer. A training net given as --model would read its LMDB and overwrite `data`, and its
    `alpha` is the ground truth: it would score perfectly. (Its bottoms are not checked here:
    caffe_checks.check_bottoms, after this message had its chance.)"""
    from dmpn.caffe_checks import check_prototxt, in_phase
    net = check_prototxt(deploy, what="deploy prototxt", phase=None)  # layers checked after ours
    layers = [layer for layer in net.layer  # those of the TEST net the predictor builds
              if in_phase(layer, "TEST", set(net.state.stage), net.state.level)]
    inputs = list(net.input) + [t for layer in layers if layer.type == "Input" for t in layer.top]
    # A layer without bottoms other than Input makes its own data (Data, HDF5Data, Python...).
    readers = [layer.name for layer in layers if not layer.bottom and layer.type != "Input"]
    tops = {t for layer in layers for t in layer.top}
    needed = ", ".join(f"'{n}'" for n in DEPLOY_INPUTS)
    if readers or not set(DEPLOY_INPUTS) <= set(inputs) or DEPLOY_OUTPUT not in tops:
        why = (f"it reads its own data (layer '{readers[0]}'), e.g. a training net" if readers else
               "its only input is 'data' (a deploy net from before the solve ran on the unpadded "
               "trimap: regenerate it)" if inputs == ["data"] else
               f"its inputs are {', '.join(repr(i) for i in inputs) or 'none'}, not {needed}"
               if not set(DEPLOY_INPUTS) <= set(inputs) else f"no layer makes its output '{DEPLOY_OUTPUT}'")
        raise InputError(f"{deploy}: not a deploy net: {why}; the predictor needs Input blobs {needed} "
                         f"and the output '{DEPLOY_OUTPUT}' (prototxt/deploy.prototxt, or "
                         "dmpn.net.deploy for another width)")
    return net


def caffe_predictor(deploy, weights, gpu=None, multiple: int = 32):
    """A predictor running a deploy net (dmpn.net.deploy) through pycaffe (imported lazily).

    The net's inputs: `data` 1x4xH'xW', RGB in [0, 1] (channels 0-2) and the trimap in [0, 1]
    (channel 3), edge-replicated up to H', W', the multiples of ``multiple`` the CNN needs; and
    `trimap` 1x1xHxW, the trimap itself, to whose size the net crops the affinities before the
    solve, so the padding never enters the propagation. Output `alpha` 1x1xHxW. ``gpu``: device
    id, or None for the CPU.
    """
    for path, what in ((deploy, "deploy prototxt"), (weights, "weights")):
        if not os.path.isfile(os.fspath(path)):
            raise InputError(f"{path}: no such {what} file")
    caffe = cli.import_caffe_quietly()  # without Caffe's net dump at INFO
    from dmpn.caffe_checks import check_bottoms, check_gpu, check_weights
    check_bottoms(check_deploy_prototxt(deploy), deploy)  # what Caffe would abort on
    if gpu is None:
        caffe.set_mode_cpu()
    else:
        caffe.set_device(check_gpu(gpu))
        caffe.set_mode_gpu()
    net = caffe.Net(os.fspath(deploy), caffe.TEST)
    check_weights(weights, net, net_path=deploy)   # garbage, a .solverstate, another width
    net.copy_from(os.fspath(weights))
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
        net.blobs["data"].reshape(*(1,) + xp.shape[2:] + xp.shape[:2])
        net.blobs["trimap"].reshape(1, 1, h, w)
        net.reshape()
        net.blobs["data"].data[...] = xp.transpose(2, 0, 1)[None]
        net.blobs["trimap"].data[...] = t
        net.forward()
        out = np.asarray(net.blobs[DEPLOY_OUTPUT].data)
        if out.shape != (1, 1, h, w):
            raise InputError(f"{deploy}: output '{DEPLOY_OUTPUT}' has shape {out.shape} for an image "
                             f"of {h} x {w} (1 x 1 x {h} x {w} expected)")
        return np.clip(out[0, 0].astype(np.float64), 0.0, 1.0)

    predict.net = net
    predict.needs_known_pixel = True
    predict.multiple = multiple
    predict.largest_plane = FLOAT32_EXACT_PLANE
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
    lines = ["Errors over the unknown region (trimap == 128) as Deep Image Matting's MATLAB code "
             "computes them, in the units papers print: SAD, Grad, Conn / 1000 (the MATLAB code "
             "divides SAD only); MSE x 1000 (mean over the region).",
             "Note: " + (PROTOCOL_NOTE if force_known else NO_PROTOCOL_NOTE) + "."]
    header = f"{'image':<24}{'SAD':>9}{'MSEx1e3':>9}{'Grad':>9}{'Conn':>9}"
    for res in results:
        lines += ["", f"== {res.name}" + (f" ({res.folder})" if res.folder else ""), header]
        for n, v in res.per_image.items():
            flag = "  *" if n in res.notes else ""
            lines.append(f"{n:<24}{_fmt(v['sad'])}{_fmt(v['mse'], 1000)}{_fmt(v['grad'])}"
                         f"{_fmt(v['conn'])}{flag}")
        m = res.mean()
        scored = int(sum(np.isfinite(v["mse"]) for v in res.per_image.values()))
        count = (f"{scored} image{'s' * (scored != 1)}" if scored == len(res.per_image)
                 else f"{scored} of {len(res.per_image)}")  # the rest: nothing to score
        lines.append(f"{'mean (' + count + ')':<24}{_fmt(m['sad'])}"
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
            "notes": dict(res.notes), "source": dict(res.source)}


def results_to_json(results, force_known: bool = True) -> dict:
    """``{"per_image": {NAME: {"sad", "mse", "grad", "conn"}}, "mean": {...}}`` for the first
    method (raw units: SAD, Grad, Conn / 1000, MSE unscaled; undefined MSE is null), plus
    "methods" (every method in the same form, with its "source": the folder scored, or the
    model and weights, predictor or baseline run, and its method key), "notes" and the
    protocol used."""
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
    p.add_argument("--grid-rows", type=positive_int, default=4, help="images in the qualitative grid (4)")
    p.add_argument("--no-resume", action="store_true",
                   help="predict every image again; by default a matte an earlier run wrote to "
                        "OUT/METHOD with the same method (model and weights content, options, "
                        "code) from the same image and trimap content is reused, as recorded in "
                        "OUT/METHOD/.predictions.json")
    p.add_argument("--resume-predictor", action="store_true",
                   help="reuse --predictor's mattes too (off by default: the record sees the "
                        "function's source files, not what it loads itself, e.g. its weights)")
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
        results[-1].source = {"predictions": os.fspath(args.pred)}
    resume = not args.no_resume
    again = resume_command(args.no_resume)
    predictors = []  # (name, predictor, method key, resume, resume_how, source)
    if args.model:
        predictors.append(("model", caffe_predictor(args.model, args.weights, gpu=args.gpu),
                           caffe_method_key(args.model, args.weights, gpu=args.gpu), resume, again,
                           {"model": os.fspath(args.model), "weights": os.fspath(args.weights)}))
    if args.predictor:
        f = load_predictor(args.predictor)
        key = python_method_key(args.predictor, f)
        if key is None:
            print(f"--predictor {args.predictor}: its source file is not found, so its predictions "
                  "are not reused from an earlier run", file=sys.stderr, flush=True)
        # What the function loads itself (weights, other files) is outside the key: its mattes
        # are recorded always, reused only when asked.
        predictors.append((args.predictor.split(":")[-1], f, key, resume and args.resume_predictor,
                           resume_command(args.no_resume,
                                          "" if args.resume_predictor else "--resume-predictor"),
                           {"predictor": args.predictor}))
    for b in baseline_names:
        f = bl.get_baseline(b)
        if b == "handcrafted":
            sigma = args.sigma
            f = (lambda image, trimap01, _f=f: _f(image, trimap01, sigma=sigma))
        predictors.append((b, f, baseline_method_key(b, sigma=args.sigma), resume, again,
                           {"baseline": b}))
    for name, predictor, key, reuse, resume_how, source in predictors:
        results.append(score_predictor(predictor, args.images, args.trimap, args.gt,
                                       os.path.join(args.out, name), force_known=force, name=name,
                                       progress=progress, key=key, resume=reuse,
                                       resume_how=resume_how))
        # the images scored, the folder of the mattes and the method key (digests of the
        # model, weights, code and libraries; None where a predictor's file is not found)
        results[-1].source = {**source, "images": os.fspath(args.images),
                              "mattes": os.fspath(os.path.join(args.out, name)), "key": key}
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
