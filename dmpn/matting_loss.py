"""The loss of DeepMattePropNet (Sec. 3.4, after Deep Image Matting), in float64 numpy: the one
reference that the Python layer (``dmpn.layers.matting_loss``) uses and that the C++/CUDA layer
``MattingLoss`` is tested against.

Per pixel of the trimap's unknown region (strictly between KNOWN_TOL and 1 - KNOWN_TOL, as for
the propagation):

    alpha_weight * sqrt((a_hat - a)^2 + eps) + composition_weight * sqrt(||c_hat - c||^2 + eps),
    c_hat = a_hat F + (1 - a_hat) B,

averaged over the unknown pixels of the whole batch; 0, with a 0 gradient, when there is none.
Layouts: predicted alpha, true alpha, trimap N x 1 x H x W; F, B, image c N x 3 x H x W.
"""
from __future__ import annotations

import numpy as np

from dmpn.propagation import KNOWN_TOL

DEFAULTS = {"eps": 1e-12, "alpha_weight": 0.5, "composition_weight": 0.5}


def unknown_mask(trimap):
    """True where the trimap is unknown: strictly between KNOWN_TOL and 1 - KNOWN_TOL."""
    t = np.asarray(trimap, dtype=np.float64)
    return (t > KNOWN_TOL) & (t < 1.0 - KNOWN_TOL)


def check_shapes(pred, alpha, trimap, fg, bg, image, where="MattingLoss"):
    shape = np.shape(pred)
    if len(shape) != 4 or shape[1] != 1:
        raise ValueError(f"{where}: the predicted alpha (bottom[0]) must be N x 1 x H x W, got {shape}")
    names = ("true alpha", "trimap", "foreground", "background", "image")
    for b, (name, x) in enumerate(zip(names, (alpha, trimap, fg, bg, image)), start=1):
        want = (shape[0], 1 if b < 3 else 3) + tuple(shape[2:])
        if tuple(np.shape(x)) != want:
            raise ValueError(f"{where}: the {name} (bottom[{b}]) must be "
                             f"{' x '.join(map(str, want))}, got {np.shape(x)}")


def check_trimap(trimap, where="MattingLoss"):
    """Every trimap value in [0, 1] (NaN is not): one in 0-255 would make every pixel known and
    the loss silently 0. The C++ layer has the same rule and message (both devices)."""
    t = np.asarray(trimap, dtype=np.float64)
    outside = ~((t >= 0) & (t <= 1))
    if outside.any():
        n, _, y, x = np.argwhere(outside)[0]
        raise ValueError(f"{where}: the trimap (bottom[2]) value {t[n, 0, y, x]:g} of item {n} at "
                         f"({y}, {x}) is not in [0, 1] (0 background, 1 foreground, between unknown)")


def per_pixel(pred, alpha, trimap, fg, bg, image, eps=1e-12, alpha_weight=0.5,
              composition_weight=0.5, where="MattingLoss"):
    """(loss, d loss / d a_hat, unknown mask), each N x 1 x H x W; 0 on known pixels. ``where``
    starts the messages of bad inputs."""
    check_shapes(pred, alpha, trimap, fg, bg, image, where)
    check_trimap(trimap, where)
    p = np.asarray(pred, dtype=np.float64)
    r = p - np.asarray(alpha, dtype=np.float64)
    fg, bg, image = (np.asarray(x, dtype=np.float64) for x in (fg, bg, image))
    d = p * fg + (1.0 - p) * bg - image  # c_hat - c, N x 3 x H x W
    la = np.sqrt(r * r + eps)
    lc = np.sqrt((d * d).sum(axis=1, keepdims=True) + eps)
    unknown = unknown_mask(trimap)
    loss = np.where(unknown, alpha_weight * la + composition_weight * lc, 0.0)
    grad = np.where(unknown, alpha_weight * r / la
                    + composition_weight * (d * (fg - bg)).sum(axis=1, keepdims=True) / lc, 0.0)
    return loss, grad, unknown


def matting_loss_forward(pred, alpha, trimap, fg, bg, image, **params):
    """The scalar loss: the mean over the batch's unknown pixels (0 without any)."""
    loss, _, unknown = per_pixel(pred, alpha, trimap, fg, bg, image, **params)
    count = int(unknown.sum())
    return float(loss.sum() / count) if count else 0.0


def matting_loss_backward(pred, alpha, trimap, fg, bg, image, top_diff=1.0, **params):
    """d (top_diff * loss) / d pred, N x 1 x H x W (top_diff: the loss weight)."""
    _, grad, unknown = per_pixel(pred, alpha, trimap, fg, bg, image, **params)
    count = int(unknown.sum())
    return grad * (float(top_diff) / count) if count else np.zeros_like(grad)
