"""tools/predict.py: alpha mattes from image + trimap with a trained DeepMattePropNet.

Any image size up to 2^24 pixels once padded (4096 x 4096; BVLC's float32 pooling masks hold no
larger index exactly, so a larger image is refused, naming it): the CNN's input is padded to a
multiple of 32 (edge replication), and the deploy
net crops the affinities back to the image's size before the solve, so the matte is the
propagation on the image's own grid (dmpn.evaluate.caffe_predictor, dmpn.net.deploy). The known pixels of the trimap keep their propagated value
(the solve already pins them towards 0 / 1); pass --force-known to set them to exactly 0 / 1.
Trimap values between 1 and 254 are all unknown; a trimap with no known pixel (0 or 255) is
refused, naming the file: the propagation has nothing to start from.

--composite BG also writes each matte's composite over a new background (a colour such as
green or #3366cc, or an image file, resized to each image): the foreground colours estimated
from the image and the matte (pymatting's estimate_foreground_ml), round(a F + (1 - a) BG);
beside a single matte as NAME_composite.png, in folder mode as --out/composites/NAME.png.

Folder mode resumes: --out/.predictions.json records, for each matte written, the model (deploy
prototxt and weights content), --force-known, CPU or GPU, the Caffe build and the image and
trimap content it came from; a rerun reuses the mattes whose record matches and predicts the
rest (--no-resume predicts them all).
"""
from __future__ import annotations

import argparse
import functools
import os

import numpy as np

from dmpn.cli import check_writable, run_tool
from dmpn.evaluate import (TOOL_ERRORS, caffe_method_key, caffe_predictor, check_not_an_input,
                           predict_file, predict_folder, resume_command)
from dmpn.imageio import (IMAGE_EXTENSIONS, InputError, list_images, read_alpha, read_image, to_uint8,
                          write_png)


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
    ap.add_argument("--composite", metavar="BG", help="also write each matte's composite over BG: a colour "
                    "(a name such as green, or #rrggbb) or an image file (resized to each image)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap


def background(spec):
    """``--composite``'s BG as a function of (H, W) -> float64 H x W x 3 in [0, 1]: an image file
    (resized, bilinear) or a matplotlib colour; InputError naming it otherwise."""
    if os.path.isfile(spec):
        from skimage.transform import resize
        bg = read_image(spec)
        return lambda h, w: resize(bg, (h, w, 3), order=1, mode="edge", anti_aliasing=bg.shape[0] > h)
    from matplotlib.colors import to_rgb
    try:
        rgb = np.array(to_rgb(spec), np.float64)
    except ValueError:
        raise InputError(f"{spec}: --composite wants an image file or a colour (a name such as green, "
                         "or #rrggbb); no such file or colour") from None
    return lambda h, w: np.broadcast_to(rgb, (h, w, 3))


def composite(image, alpha, bg) -> np.ndarray:
    """uint8 H x W x 3: round(a F + (1 - a) BG) with F the foreground colours pymatting estimates
    from ``image`` and ``alpha`` (float64 in [0, 1]), ``bg`` from background()."""
    import pymatting
    from dmpn.compose import composite_uint8
    fg = np.clip(pymatting.estimate_foreground_ml(image, alpha), 0.0, 1.0)
    h, w = alpha.shape
    return composite_uint8(to_uint8(alpha), to_uint8(fg), to_uint8(bg(h, w)))


def composite_path(matte_path) -> str:
    stem, ext = os.path.splitext(matte_path)
    return stem + "_composite" + ext


def write_composites(mattes, images_dir, out_dir, bg, progress=True) -> list:
    """Folder mode: the composite of each matte in ``mattes`` ({name: matte path}) with the image
    of that name in ``images_dir``, written to ``out_dir``/NAME.png; returns the paths."""
    from tqdm import tqdm
    images = list_images(images_dir)
    written = []
    for name in tqdm(sorted(mattes), desc="compositing", unit="image", disable=not progress):
        path = os.path.join(out_dir, name + ".png")
        write_png(path, composite(read_image(images[name]), read_alpha(mattes[name]), bg))
        written.append(path)
    return written


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
    bg = background(a.composite) if a.composite else None
    composites = composite_path(out) if not folder_mode else os.path.join(a.out, "composites")
    if not folder_mode:  # folder mode: predict_folder checks the folders
        check_not_an_input(out, a.image, a.trimap)
    if bg is not None:
        inputs = (a.image, a.trimap) + ((a.composite,) if os.path.isfile(a.composite) else ())
        check_not_an_input(composites, *inputs)
        check_writable(composites, folder=folder_mode)
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
        if bg is not None:
            write_composites(written, a.image, composites, bg, progress=not a.no_progress)
            print(f"{len(written)} composites in {composites}")
    else:
        alpha = predict_file(predictor, a.image, a.trimap)
        write_png(out, alpha)
        print(f"wrote {out}")
        if bg is not None:
            write_png(composites, composite(read_image(a.image), alpha, bg))
            print(f"wrote {composites}")
    return 0


def main(argv=None):
    a = build_parser().parse_args(argv)
    return run_tool("predict", lambda: predict(a), TOOL_ERRORS)
