"""Compositing, rotation and trimap generation for the training data (paper, Sec. 4.1).

- :func:`rotation_angles`: the paper uses "3 different rotations of the foreground and alpha
  matte" without giving angles. We use 0 and symmetric small tilts: for K rotations the angles
  are 0, +a, -a, +2a, -2a, ... scaled so the largest is ``max_angle`` (default 15 degrees):
  K = 3 gives 0, +15, -15; K = 2 gives 0, +15.
- :func:`rotate_original`: rotates foreground, alpha and trimap together about the image centre
  (same size, bilinear; pixels brought in from outside get alpha 0, trimap background, and the
  nearest foreground colour). The trimap follows the alpha: it is rotated bilinearly and every
  pixel whose rotated value is not a pure 0 or 255 (a class border) becomes unknown, so the
  unknown band can only grow.
- :func:`trimap_from_alpha` (from ``dmpn.synth``): where an original has no trimap, one is made
  from the (rotated) alpha by a fixed erosion (Deep Image Matting dilates the unknown band by a
  random amount; ours is deterministic, so every rotation and rerun gets the same trimap):
  foreground = alpha = 1 eroded by a disk of
  radius r, background = alpha = 0 eroded likewise, the rest unknown. :func:`default_trimap_radius`
  gives r = max(2, round(1.5 % of the shorter side)), i.e. 9 px at 600 x 800.
- :func:`composite_uint8`: the composite is computed from the 8-bit alpha, foreground and
  background that are stored alongside it, so ``image = a F + (1 - a) B`` holds on the stored
  channels to within rounding (half a level).
"""

from __future__ import annotations

import numpy as np
from skimage.transform import resize, rotate

from dmpn.datum import CHANNEL_ORDER, ITEM_CHANNEL_NAMES as CHANNELS  # channel order of one LMDB item
from dmpn.imageio import to_uint8  # the one float -> 8-bit rule (round(x * 255), NaN -> 0)
from dmpn.synth import trimap_from_alpha

__all__ = [
    "rotation_angles",
    "rotate_original",
    "trimap_from_alpha",
    "default_trimap_radius",
    "resize_original",
    "to_uint8",
    "composite_uint8",
    "pack_item",
    "CHANNELS",
]


def rotation_angles(k: int, max_angle: float = 15.0) -> list:
    """K angles in degrees: 0, +a, -a, +2a, -2a, ..., the largest magnitude = ``max_angle``."""
    k = int(k)
    if k < 1:
        raise ValueError("need at least one rotation")
    steps = (k - 1 + 1) // 2  # number of distinct magnitudes
    out = [0.0]
    for r in range(1, k):
        m = (r + 1) // 2
        sign = 1.0 if r % 2 else -1.0
        out.append(sign * float(max_angle) * m / steps)
    return out


def default_trimap_radius(size) -> int:
    return max(2, int(round(0.015 * min(int(size[0]), int(size[1])))))


def resize_original(image, alpha, fg, trimap, size):
    """Resize an original to ``size`` (H, W): bilinear with anti-aliasing for image, alpha and
    foreground; nearest for the trimap. Arrays are returned as float64 / uint8."""
    h, w = int(size[0]), int(size[1])
    if image.shape[:2] == (h, w):
        return image, alpha, fg, trimap

    def rs(a):
        aa = bool(a.shape[0] > h or a.shape[1] > w)
        return np.clip(resize(a, (h, w) + a.shape[2:], order=1, mode="edge", anti_aliasing=aa), 0, 1)

    image, alpha = rs(image), rs(alpha)
    fg = None if fg is None else rs(fg)
    if trimap is not None:
        trimap = resize(trimap, (h, w), order=0, preserve_range=True,
                        anti_aliasing=False).astype(np.uint8)
    return image, alpha, fg, trimap


def rotate_original(fg, alpha, trimap, angle: float):
    """Rotate ``fg`` (H x W x 3), ``alpha`` (H x W) and ``trimap`` (uint8 H x W or None) by
    ``angle`` degrees counter-clockwise about the centre, keeping the size."""
    if angle == 0:
        return fg, alpha, trimap
    alpha_r = np.clip(rotate(alpha, angle, order=1, mode="constant", cval=0.0), 0.0, 1.0)
    fg_r = np.clip(rotate(fg, angle, order=1, mode="edge"), 0.0, 1.0)
    tri_r = None
    if trimap is not None:
        t = rotate(trimap.astype(np.float64) / 255.0, angle, order=1, mode="constant", cval=0.0)
        tri_r = np.full(trimap.shape, 128, np.uint8)
        tri_r[t <= 1e-6] = 0
        tri_r[t >= 1 - 1e-6] = 255
    return fg_r, alpha_r, tri_r


def composite_uint8(alpha8: np.ndarray, fg8: np.ndarray, bg8: np.ndarray) -> np.ndarray:
    """``round(a F + (1 - a) B)`` on 8-bit inputs (alpha H x W, colours H x W x 3), vectorised."""
    a = alpha8.astype(np.float32)[..., None] / 255.0
    c = a * fg8.astype(np.float32) + (1.0 - a) * bg8.astype(np.float32)
    return np.rint(np.clip(c, 0, 255)).astype(np.uint8)


def pack_item(image8, trimap8, alpha8, fg8, bg8) -> np.ndarray:
    """Stack into the 11 x H x W uint8 item: image RGB, trimap, alpha, fg RGB, bg RGB
    (dmpn.datum.CHANNEL_ORDER)."""
    h, w = alpha8.shape
    out = np.empty((len(CHANNELS), h, w), np.uint8)
    parts = {"image": image8, "trimap": trimap8, "alpha": alpha8, "fg": fg8, "bg": bg8}
    for name, channels in CHANNEL_ORDER.items():
        out[channels] = np.moveaxis(np.atleast_3d(parts[name]), 2, 0)
    return out
