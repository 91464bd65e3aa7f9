"""tools/predict.py: alpha mattes from image + trimap with a trained DeepMattePropNet.

Any image size: inputs are padded to a multiple of 32 (edge replication) and the matte is cropped
back (dmpn.evaluate.caffe_predictor). The known pixels of the trimap keep their propagated value
(the solve already pins them towards 0 / 1); pass --force-known to set them to exactly 0 / 1.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from dmpn.evaluate import caffe_predictor, predict_folder, trimap_to_01
from dmpn.imageio import InputError, read_image, read_trimap, write_png


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="deploy prototxt (e.g. prototxt/deploy.prototxt)")
    ap.add_argument("--weights", required=True, help="trained .caffemodel")
    ap.add_argument("--image", required=True, help="an image file, or a folder of them")
    ap.add_argument("--trimap", required=True, help="its trimap (0/128/255), or a folder matched by name")
    ap.add_argument("--out", required=True, help="output PNG file (single image) or folder")
    ap.add_argument("--gpu", type=int, default=None, help="GPU id (default: CPU)")
    ap.add_argument("--force-known", action="store_true", help="set the trimap's known pixels to 0 / 1")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap


def main(argv=None):
    a = build_parser().parse_args(argv)
    try:
        predictor = caffe_predictor(a.model, a.weights, gpu=a.gpu)
        if a.force_known:
            inner = predictor

            def predictor(image, trimap01):
                alpha = inner(image, trimap01)
                alpha[trimap01 <= 0] = 0
                alpha[trimap01 >= 1] = 1
                return alpha
        if os.path.isdir(a.image):
            if not os.path.isdir(a.trimap):
                raise InputError(f"{a.trimap}: --image is a folder, so --trimap must be one too")
            written = predict_folder(predictor, a.image, a.trimap, a.out, progress=not a.no_progress)
            print(f"wrote {len(written)} mattes to {a.out}")
        else:
            image = read_image(a.image)
            trimap = read_trimap(a.trimap)
            if trimap.shape != image.shape[:2]:
                raise InputError(f"{a.trimap}: trimap is {trimap.shape[1]}x{trimap.shape[0]}, image "
                                 f"{a.image} is {image.shape[1]}x{image.shape[0]}")
            alpha = predictor(image, trimap_to_01(trimap))
            out = a.out if a.out.lower().endswith(".png") else os.path.join(
                a.out, os.path.splitext(os.path.basename(a.image))[0] + ".png")
            os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
            write_png(out, np.clip(alpha, 0, 1))
            print(f"wrote {out}")
    except InputError as e:
        print(f"predict: {e}", file=sys.stderr)
        return 2
    return 0
