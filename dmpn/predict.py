"""tools/predict.py: alpha mattes from image + trimap with a trained DeepMattePropNet.

Any image size: the CNN's input is padded to a multiple of 32 (edge replication), and the deploy
net crops the affinities back to the image's size before the solve, so the matte is the
propagation on the image's own grid (dmpn.evaluate.caffe_predictor, dmpn.net.deploy). The known pixels of the trimap keep their propagated value
(the solve already pins them towards 0 / 1); pass --force-known to set them to exactly 0 / 1.
Trimap values between 1 and 254 are all unknown; a trimap with no known pixel (0 or 255) is
refused, naming the file: the propagation has nothing to start from.

Folder mode resumes: --out/.predictions.json records, for each matte written, the model (deploy
prototxt and weights content), --force-known, CPU or GPU, the Caffe build and the image and
trimap content it came from; a rerun reuses the mattes whose record matches and predicts the
rest (--no-resume predicts them all).
"""
from __future__ import annotations

import argparse
import functools
import os

from dmpn.cli import check_writable, run_tool
from dmpn.evaluate import (TOOL_ERRORS, caffe_method_key, caffe_predictor, check_not_an_input,
                           predict_file, predict_folder, resume_command)
from dmpn.imageio import IMAGE_EXTENSIONS, InputError, write_png


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Exit status: 0 done; 2 bad input or an output that cannot "
                                        "be written (the file is named); 1 pycaffe not importable; "
                                        "130 interrupted (the mattes written are kept and recorded: "
                                        "the same command, without --no-resume, goes on from there).")
    ap.add_argument("--model", required=True, help="deploy prototxt (e.g. prototxt/deploy.prototxt)")
    ap.add_argument("--weights", required=True, help="trained .caffemodel")
    ap.add_argument("--image", required=True, help="an image file, or a folder of them")
    ap.add_argument("--trimap", required=True, help="its trimap (0/128/255), or a folder matched by name")
    ap.add_argument("--out", required=True, help="output PNG file (single image) or folder")
    ap.add_argument("--gpu", type=int, default=None, help="GPU id (default: CPU)")
    ap.add_argument("--force-known", action="store_true", help="set the trimap's known pixels to 0 / 1")
    ap.add_argument("--no-resume", action="store_true",
                    help="folder mode: predict every image again; by default a matte in --out that an "
                         "earlier run made with the same model, weights and options from the same "
                         "image and trimap is reused (--out/.predictions.json records them)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap


def _forcing_known(inner):
    """The predictor ``inner`` with the trimap's known pixels set to exactly 0 / 1."""
    @functools.wraps(inner)  # keeps inner's attributes (needs_known_pixel)
    def predictor(image, trimap01):
        alpha = inner(image, trimap01)
        alpha[trimap01 <= 0] = 0
        alpha[trimap01 >= 1] = 1
        return alpha
    return predictor


def predict(a) -> int:
    """The work of main for parsed arguments."""
    folder_mode = os.path.isdir(a.image)
    if folder_mode and not os.path.isdir(a.trimap):
        raise InputError(f"{a.trimap}: --image is a folder, so --trimap must be one too")
    if not folder_mode and os.path.isdir(a.trimap):
        raise InputError(f"{a.trimap}: --trimap is a folder, so --image must be one too "
                         f"({a.image} is not a folder)")
    ext = os.path.splitext(a.out)[1].lower()
    if not folder_mode and ext in IMAGE_EXTENSIONS and ext != ".png":
        raise InputError(f"{a.out}: mattes are written as PNG: --out must end in .png (or be a folder)")
    out_is_file = not folder_mode and ext == ".png"
    if out_is_file or folder_mode:
        out = a.out
    else:  # one image into the folder --out
        out = os.path.join(a.out, os.path.splitext(os.path.basename(a.image))[0] + ".png")
    if not folder_mode:  # folder mode: predict_folder checks the folders
        check_not_an_input(out, a.image, a.trimap)
    check_writable(a.out, folder=not out_is_file)  # before the net is loaded
    predictor = caffe_predictor(a.model, a.weights, gpu=a.gpu)
    if a.force_known:
        predictor = _forcing_known(predictor)
    if folder_mode:
        key = caffe_method_key(a.model, a.weights, gpu=a.gpu, force_known=a.force_known)
        written = predict_folder(predictor, a.image, a.trimap, a.out, progress=not a.no_progress,
                                 key=key, resume=not a.no_resume,
                                 resume_how=resume_command(a.no_resume))
        print(f"{len(written)} mattes in {a.out} ({written.summary()})")
    else:
        write_png(out, predict_file(predictor, a.image, a.trimap))
        print(f"wrote {out}")
    return 0


def main(argv=None):
    a = build_parser().parse_args(argv)
    return run_tool("predict", lambda: predict(a), TOOL_ERRORS)
