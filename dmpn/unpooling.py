"""SegNet-style unpooling with pooling indices, in float64 numpy: the one reference that the
Python layer (``dmpn.layers.unpooling``) uses and that the C++/CUDA layer ``Unpooling`` is
tested against.

values, mask: N x C x h x w. Each mask entry is the flat index y * W + x, within its (n, c)
plane of the N x C x H x W output, that BVLC's MAX Pooling recorded as the argmax (its second
top). The output is 0 except out[n, c].flat[mask] = value. A position named by several pooled
cells (overlapping pooling windows only) receives their sum, so that the backward, the gather
top_diff[mask], is the forward's exact adjoint. No gradient goes to the mask.
"""
from __future__ import annotations

import numpy as np


class UnpoolingError(ValueError):
    """A mask that is not a valid argmax mask for the output size."""


def output_size(pooled_hw, out_height=0, out_width=0, reference_hw=None):
    """(H, W): the reference blob's size if given, else out_height/out_width (0: twice)."""
    if reference_hw is not None:
        return int(reference_hw[0]), int(reference_hw[1])
    h, w = pooled_hw
    return (int(out_height) if out_height > 0 else 2 * h,
            int(out_width) if out_width > 0 else 2 * w)


# BVLC's MAX Pooling writes its argmax mask in the net's type, and float32 holds every whole
# number only up to 2^24: a larger plane's indices would round to other pixels, unseen.
FLOAT32_EXACT_PLANE = 2 ** 24


def check_output_plane(out_hw, float32_mask, where="Unpooling"):
    """UnpoolingError where a float32 mask cannot name every pixel of the H x W output exactly
    (more than 2^24 of them: 4096 x 4096 is the largest square)."""
    H, W = out_hw
    if float32_mask and H * W > FLOAT32_EXACT_PLANE:
        raise UnpoolingError(f"{where}: the output plane {H} x {W} has more than 2^24 = "
                             f"{FLOAT32_EXACT_PLANE} pixels, and a float32 mask (MAX Pooling's "
                             "second top) cannot hold their indices exactly: use smaller images")


def check_mask(values, mask, out_hw, where="Unpooling"):
    """The mask as int64 N x C x (h*w) indices, or UnpoolingError naming the first bad entry."""
    values = np.asarray(values)
    mask = np.asarray(mask, dtype=np.float64)
    if values.ndim != 4 or mask.shape != values.shape:
        raise UnpoolingError(f"{where}: the mask (bottom[1]) is {mask.shape}, the pooled values "
                             f"(bottom[0]) are {values.shape}; they must be the same N x C x h x w")
    H, W = out_hw
    bad = ~((mask >= 0) & (mask < H * W) & (mask == np.floor(mask)))  # NaN is bad too
    if bad.any():
        n, c, y, x = (int(v) for v in np.argwhere(bad)[0])
        raise UnpoolingError(f"{where}: mask value {mask[n, c, y, x]:g} at (n {n}, c {c}, y {y}, "
                             f"x {x}) is not an integer flat index in [0, {H * W}) of the "
                             f"{H} x {W} output")
    return mask.astype(np.int64).reshape(mask.shape[0], mask.shape[1], -1)


def unpool_forward(values, mask, out_hw, where="Unpooling"):
    """N x C x H x W: zeros, with each value added at the position its mask entry names."""
    idx = check_mask(values, mask, out_hw, where)
    n, c = idx.shape[:2]
    H, W = out_hw
    out = np.zeros((n, c, H * W))
    v = np.asarray(values, dtype=np.float64).reshape(n, c, -1)
    planes = np.arange(n * c).reshape(n, c, 1) * (H * W)
    np.add.at(out.reshape(-1), (planes + idx).ravel(), v.ravel())
    return out.reshape(n, c, H, W)


def unpool_backward(top_diff, mask, where="Unpooling"):
    """Gradient of sum(top_diff * unpool_forward(values, mask)) in values: top_diff at the mask."""
    top_diff = np.asarray(top_diff, dtype=np.float64)
    idx = check_mask(np.empty(np.shape(mask)), mask, top_diff.shape[2:], where)
    flat = top_diff.reshape(top_diff.shape[0], top_diff.shape[1], -1)
    return np.take_along_axis(flat, idx, axis=2).reshape(np.shape(mask))
