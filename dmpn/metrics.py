"""The field's four matting errors, exactly as Deep Image Matting's MATLAB evaluation code computes them.

Reference: ``compute_sad_loss.m``, ``compute_mse_loss.m``, ``compute_gradient_loss.m`` (with
``gaussgradient.m``) and ``compute_connectivity_error.m`` (design note, section 4).

Every function takes a predicted alpha and a ground-truth alpha as float arrays HxW in [0, 1]
(uint8 arrays are also accepted and divided by 255) and a trimap HxW with values 0 / 128 / 255
(uint8; a float trimap in [0, 1] with 0.5 for unknown also works). The scored region U is the
unknown pixels (trimap == 128). The MATLAB code reads 8-bit PNGs, so to reproduce its numbers the
arrays should hold multiples of 1/255 -- which is what ``dmpn.evaluate`` gives them, since it
scores PNG files. The functions themselves do not quantise.

Units are those of published tables: the MATLAB code divides SAD by 1000 (compute_sad_loss.m),
but its gradient and connectivity functions return plain sums, which papers print / 1000 as here:

- :func:`sad`  sum over U of |p - g|, / 1000
- :func:`mse`  mean over U of (p - g)^2 (no / 1000; NaN when U is empty)
- :func:`grad` sum over U of (|grad P| - |grad G|)^2, / 1000, P and G min-max rescaled
  (``mat2gray``), grad = 9x9 normalised first derivative of Gaussian (sigma 1.4), replicated borders
- :func:`conn` sum over U of |phi(p) - phi(g)|, / 1000, thresholds k / 10

None of them pastes the trimap into the prediction: use :func:`force_known` first (the standard
protocol) if the prediction may hold other values than 0 / 1 on known pixels.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

__all__ = ["sad", "mse", "grad", "conn", "all_errors", "unknown_mask", "force_known",
           "gauss_gradient_kernel", "gauss_gradient", "mat2gray", "largest_component", "METRICS"]

METRICS = ("sad", "mse", "grad", "conn")


# ----------------------------------------------------------------------------- input handling
def _alpha(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, got shape {a.shape}")
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    if a.dtype == np.bool_:
        return a.astype(np.float64)
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} holds NaN or infinite values")
    if a.size and (a.min() < 0.0 or a.max() > 1.0):
        raise ValueError(f"{name} must lie in [0, 1] (got {a.min():g}..{a.max():g})")
    return a


def unknown_mask(trimap) -> np.ndarray:
    """Boolean mask of the scored region: trimap == 128 (or 0 < t < 1 for a float [0, 1] trimap)."""
    t = np.asarray(trimap)
    if t.ndim != 2:
        raise ValueError(f"trimap must be a 2-D array, got shape {t.shape}")
    if np.issubdtype(t.dtype, np.floating) and t.size and t.max() <= 1.0:
        return (t > 0.0) & (t < 1.0)
    return t == 128


def _prepare(pred, gt, trimap):
    p = _alpha(pred, "pred")
    g = _alpha(gt, "gt")
    u = unknown_mask(trimap)
    if p.shape != g.shape or p.shape != u.shape:
        raise ValueError(f"shape mismatch: pred {p.shape}, gt {g.shape}, trimap {u.shape}")
    return p, g, u


def force_known(pred, trimap) -> np.ndarray:
    """The standard protocol: prediction set to 0 on background and 1 on foreground trimap pixels."""
    p = _alpha(pred, "pred").copy()
    t = np.asarray(trimap)
    if t.shape != p.shape:
        raise ValueError(f"shape mismatch: pred {p.shape}, trimap {t.shape}")
    u = unknown_mask(t)
    if np.issubdtype(t.dtype, np.floating) and t.size and t.max() <= 1.0:
        p[(~u) & (t <= 0.0)] = 0.0
        p[(~u) & (t >= 1.0)] = 1.0
    else:
        p[t == 0] = 0.0
        p[t == 255] = 1.0
    return p


# ----------------------------------------------------------------------------- SAD and MSE
def sad(pred, gt, trimap) -> float:
    """Sum of absolute differences over the unknown region, / 1000 (compute_sad_loss.m)."""
    p, g, u = _prepare(pred, gt, trimap)
    return float(np.abs(p[u] - g[u]).sum() / 1000.0)


def mse(pred, gt, trimap) -> float:
    """Mean squared error over the unknown region (compute_mse_loss.m); NaN when it is empty."""
    p, g, u = _prepare(pred, gt, trimap)
    n = int(u.sum())
    if n == 0:
        return float("nan")
    d = p[u] - g[u]
    return float(np.dot(d, d) / n)


# ----------------------------------------------------------------------------- gradient error
def _gauss(x, sigma):
    return np.exp(-x ** 2 / (2.0 * sigma ** 2)) / (sigma * math.sqrt(2.0 * math.pi))


def _dgauss(x, sigma):
    return -x * _gauss(x, sigma) / sigma ** 2


def _halfsize(sigma: float, epsilon: float = 1e-2) -> int:
    return int(math.ceil(sigma * math.sqrt(-2.0 * math.log(math.sqrt(2.0 * math.pi) * sigma * epsilon))))


def gauss_gradient_kernel(sigma: float = 1.4):
    """(hx, hy) exactly as gaussgradient.m builds them: hx(i, j) = gauss(i - h) dgauss(j - h),
    divided by its Frobenius norm; hy = hx'. For sigma 1.4, h = 4 (9 x 9)."""
    h = _halfsize(sigma)
    x = np.arange(-h, h + 1, dtype=np.float64)
    hx = np.outer(_gauss(x, sigma), _dgauss(x, sigma))
    hx = hx / np.sqrt(np.sum(np.abs(hx) * np.abs(hx)))
    return hx, hx.T.copy()


def gauss_gradient(image, sigma: float = 1.4):
    """(gx, gy) = imfilter(image, hx / hy, 'replicate', 'conv').

    hx is an outer product, so the 2-D convolution is done as two 1-D ones (identical result:
    replicate padding clips each axis independently), which keeps a 2000 x 2000 image fast.
    """
    im = np.asarray(image, dtype=np.float64)
    h = _halfsize(sigma)
    x = np.arange(-h, h + 1, dtype=np.float64)
    g = _gauss(x, sigma)
    dg = _dgauss(x, sigma)
    g = g / np.linalg.norm(g)
    dg = dg / np.linalg.norm(dg)  # ||outer(g, dg)||_F = ||g|| ||dg||
    smooth_rows = ndimage.convolve1d(im, g, axis=0, mode="nearest")
    gx = ndimage.convolve1d(smooth_rows, dg, axis=1, mode="nearest")
    smooth_cols = ndimage.convolve1d(im, g, axis=1, mode="nearest")
    gy = ndimage.convolve1d(smooth_cols, dg, axis=0, mode="nearest")
    return gx, gy


def mat2gray(a) -> np.ndarray:
    """MATLAB's mat2gray: min-max rescale to [0, 1]; a constant image gives zeros."""
    a = np.asarray(a, dtype=np.float64)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if hi == lo:
        return np.zeros_like(a)
    return (a - lo) / (hi - lo)


def grad(pred, gt, trimap, sigma: float = 1.4) -> float:
    """Gradient error (compute_gradient_loss.m, which returns the sum), / 1000 as papers print it.

    Both mattes are min-max rescaled over the whole image (not / 255), differentiated with the
    normalised derivative-of-Gaussian filter, and the squared difference of the gradient
    magnitudes is summed over the unknown region.
    """
    p, g, u = _prepare(pred, gt, trimap)
    px, py = gauss_gradient(mat2gray(p), sigma)
    gx, gy = gauss_gradient(mat2gray(g), sigma)
    pa = np.sqrt(px * px + py * py)
    ga = np.sqrt(gx * gx + gy * gy)
    d = pa[u] - ga[u]
    return float(np.dot(d, d) / 1000.0)


# ----------------------------------------------------------------------------- connectivity
_FOUR = ndimage.generate_binary_structure(2, 1)


def largest_component(mask) -> np.ndarray:
    """The largest 4-connected component of a boolean mask (bwconncomp(mask, 4) + max).

    Ties go to the component met first in MATLAB's column-major scan (the one holding the
    smallest column-major linear index), as MATLAB's ``max`` returns the first maximum over
    bwconncomp's column-major labels. The background (False) is never a component; an empty
    mask gives an empty result.
    """
    mask = np.asarray(mask, dtype=bool)
    labels, n = ndimage.label(mask, structure=_FOUR)
    if n == 0:
        return np.zeros(mask.shape, dtype=bool)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0  # background
    best = int(sizes.max())
    tied = np.flatnonzero(sizes == best)
    if tied.size == 1:
        return labels == tied[0]
    rows, cols = mask.shape
    first = []
    for lab in tied:
        r, c = np.nonzero(labels == lab)
        first.append(int((c * rows + r).min()))
    return labels == tied[int(np.argmin(first))]


def conn(pred, gt, trimap, step: float = 0.1) -> float:
    """Connectivity error (compute_connectivity_error.m, which returns the sum), / 1000 as papers
    print it.

    Thresholds t_i = i / n (n = round(1 / step), computed as a division so that 153 / 255 >= 0.6
    holds exactly). Omega_i is the largest 4-connected component of (p >= t_i) & (g >= t_i);
    a pixel's level l is t_(i-1) at the first i where it falls outside Omega_i, else 1;
    d = alpha - l; phi = 1 - d [d >= 0.15]; the error sums |phi(p) - phi(g)| over the unknown region.
    """
    p, g, u = _prepare(pred, gt, trimap)
    n = int(round(1.0 / step))
    level = np.ones(p.shape, dtype=np.float64)
    assigned = np.zeros(p.shape, dtype=bool)
    for i in range(1, n + 1):
        t = i / n
        omega = largest_component((p >= t) & (g >= t))
        flag = ~assigned & ~omega
        level[flag] = (i - 1) / n
        assigned |= flag
    pd = p - level
    gd = g - level
    p_phi = 1.0 - pd * (pd >= 0.15)
    g_phi = 1.0 - gd * (gd >= 0.15)
    return float(np.abs(p_phi[u] - g_phi[u]).sum() / 1000.0)


# ----------------------------------------------------------------------------- all four
def all_errors(pred, gt, trimap) -> dict:
    """{"sad", "mse", "grad", "conn"} in the units above (MSE NaN when no pixel is unknown)."""
    return {"sad": sad(pred, gt, trimap), "mse": mse(pred, gt, trimap),
            "grad": grad(pred, gt, trimap), "conn": conn(pred, gt, trimap)}
