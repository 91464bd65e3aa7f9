"""The maths of DeepMattePropNet's propagation, in float64 numpy/scipy: the one reference that
the Python layers use and that the C++/CUDA layers are tested against.

Blob layouts (design note, section 1):

* features ``f``: T x H x W.
* affinities ``w``: 2 x H x W. ``w[0, y, x]`` is the edge (y, x)-(y, x+1), ``w[1, y, x]`` the edge
  (y, x)-(y+1, x). The last column of channel 0 and the last row of channel 1 have no neighbour:
  they are 0 and carry no gradient.
* trimap ``t``: H x W in [0, 1]; 0 background, 1 foreground, anything strictly between unknown.

AffinityExp:  w_ij = exp(clip(theta_1 . f_i + theta_2 . f_j + b, -bound, bound)), i the left or
upper pixel. The pair-feature matrix is never built: two per-pixel projections and a shifted add.

SparseLaplacianSolve:  alpha = (L + C)^-1 C alpha*, L = D - W the Laplacian of the 4-connected
graph with weights w, C = c on known pixels. With A = L + C and g = A^-1 dE/dalpha (A is
symmetric), the exact gradient of an edge weight shared by W_ij = W_ji and by D is
dE/dw_ij = -(g_i - g_j)(alpha_i - alpha_j). (The paper's Eq. 4 differentiates W_ji alone and
omits D; it is not used.)
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph
import scipy.sparse.linalg as spla

KNOWN_TOL = 1e-3  # trimap values within this of 0 or 1 are known; 128/255 is unknown.


class PropagationError(ValueError):
    """A system that cannot be solved: no known pixel, non-finite affinities, ..."""


# ---------------------------------------------------------------------------------------------
# AffinityExp

def affinity_exponent(features, theta, bias):
    """Exponents theta_1 . f_i + theta_2 . f_j + b, layout 2 x H x W (unclipped, 0 without edge)."""
    f = np.asarray(features, dtype=np.float64)
    theta = np.asarray(theta, dtype=np.float64).reshape(2, -1)
    p1 = np.tensordot(theta[0], f, axes=1)  # H x W: theta_1 . f at every pixel
    p2 = np.tensordot(theta[1], f, axes=1)
    z = np.zeros((2,) + f.shape[1:])
    z[0, :, :-1] = p1[:, :-1] + p2[:, 1:] + bias
    z[1, :-1, :] = p1[:-1, :] + p2[1:, :] + bias
    return z


def edge_mask(height, width):
    """1 where the 2 x H x W affinity layout has an edge, 0 on the padding entries."""
    m = np.ones((2, height, width))
    m[0, :, -1] = 0
    m[1, -1, :] = 0
    return m


# AffinityExp's default bound on the exponent (caffe.proto's exponent_bound says the same): at
# 20, learned affinities of real images spanning e^40 made systems too ill-conditioned for the
# CG to reach the solve's tolerance within its iterations (not float64's attainable accuracy:
# README, The layers), and training stopped on a solve that did not converge.
DEFAULT_EXPONENT_BOUND = 10.0
# The largest exponent_bound either AffinityExp flavour accepts (the C++ layer's
# kMaxExponentBound, the same number): e^80 is 5.5e34, float32 ends at 3.4e38 (e^88.7), and a
# pixel's degree sums four weights.
MAX_EXPONENT_BOUND = 80.0


def affinity_exp_forward(features, theta, bias, exponent_bound=DEFAULT_EXPONENT_BOUND):
    """Affinities 2 x H x W from features T x H x W."""
    z = affinity_exponent(features, theta, bias)
    w = np.exp(np.clip(z, -exponent_bound, exponent_bound))
    return w * edge_mask(*z.shape[1:])


def affinity_exp_backward(features, theta, bias, top_diff, exponent_bound=DEFAULT_EXPONENT_BOUND):
    """Gradients (d features, d theta (2 x T), d bias) of sum(top_diff * affinities).

    Where the exponent is clipped the gradient is 0: consistent with the clipped forward.
    """
    f = np.asarray(features, dtype=np.float64)
    z = affinity_exponent(f, theta, bias)
    inside = (np.abs(z) < exponent_bound) * edge_mask(*z.shape[1:])
    dz = np.asarray(top_diff, dtype=np.float64) * np.exp(np.clip(z, -exponent_bound, exponent_bound)) * inside
    # d/d(p1) and d/d(p2) per pixel: p1 enters at the first pixel of each edge, p2 at the second.
    dp1 = dz[0] + dz[1]
    dp2 = np.zeros_like(dp1)
    dp2[:, 1:] += dz[0, :, :-1]
    dp2[1:, :] += dz[1, :-1, :]
    theta = np.asarray(theta, dtype=np.float64).reshape(2, -1)
    d_features = theta[0][:, None, None] * dp1 + theta[1][:, None, None] * dp2
    d_theta = np.stack([np.tensordot(f, dp1, axes=([1, 2], [0, 1])),
                        np.tensordot(f, dp2, axes=([1, 2], [0, 1]))])
    d_bias = dz.sum()
    return d_features, d_theta, d_bias


# ---------------------------------------------------------------------------------------------
# SparseLaplacianSolve

def known_masks(trimap):
    t = np.asarray(trimap, dtype=np.float64)
    return t <= KNOWN_TOL, t >= 1.0 - KNOWN_TOL


def constraint_terms(trimap, c=0.8):
    """(diagonal C, right-hand side C alpha*) as H x W arrays."""
    bg, fg = known_masks(trimap)
    return c * (bg | fg), c * fg


def check_system(affinity, trimap, where="SparseLaplacianSolve"):
    # The padding entries (no neighbour) are not part of the system: ignored, as in C++.
    w = np.where(edge_mask(*np.shape(affinity)[1:]) > 0, affinity, 0)
    if not np.all(np.isfinite(w)):
        raise PropagationError(f"{where}: non-finite affinities")
    if np.any(w < 0):
        raise PropagationError(f"{where}: negative affinities (min {w.min():g})")
    t = np.asarray(trimap, dtype=np.float64)
    outside = ~((t >= 0) & (t <= 1))
    if outside.any():
        y, x = np.argwhere(outside)[0]
        raise PropagationError(f"{where}: trimap value {t[y, x]:g} at ({y}, {x}) is not in [0, 1] "
                               "(0 background, 1 foreground, between unknown)")
    bg, fg = known_masks(trimap)
    if not (bg | fg).any():
        raise PropagationError(f"{where}: the trimap has no known pixel, the system is singular")


def is_whole(value, minimum) -> bool:
    """Whether ``value`` is a whole number >= minimum: 2 and 2.0 are, 2.5, NaN, inf, a bool or
    a string are not (the rule of the Python layers' integer parameters, layers/params.py)."""
    return (not isinstance(value, bool) and isinstance(value, numbers.Real)
            and (isinstance(value, numbers.Integral) or math.isfinite(value))  # ints of any size
            and int(value) == value and value >= minimum)


def check_shrink(shrink, height, width, where="SparseLaplacianSolve"):
    """``shrink`` as an int: a whole number >= 1 and at most min(H, W), so that the solve grid
    keeps a block of full size along each side (the C++ layer's Reshape has the same rule);
    otherwise a PropagationError naming the shrink and the grid."""
    s = shrink
    if not is_whole(s, 1):
        raise PropagationError(f"{where}: shrink must be a whole number >= 1, got {shrink!r}")
    if s > min(height, width):
        raise PropagationError(f"{where}: shrink {int(s)} is larger than the {height} x {width} "
                               f"affinity grid (bottom[0]); at most min(H, W) = {min(height, width)}")
    return int(s)


def unanchored_node(affinity, anchored):
    """(y, x) of the first node (row-major) that no path of edges with weight > 0 links to an
    anchored (known) node, or None; there (L + C) is singular. affinity: 2 x H x W, anchored:
    H x W booleans."""
    w = np.asarray(affinity)
    _, h, wd = w.shape
    east, south = w[0, :, :-1] > 0, w[1, :-1, :] > 0
    if east.all() and south.all():
        return None
    idx = np.arange(h * wd).reshape(h, wd)
    i = np.concatenate([idx[:, :-1][east], idx[:-1, :][south]])
    j = np.concatenate([idx[:, 1:][east], idx[1:, :][south]])
    graph = sp.coo_matrix((np.ones(i.size), (i, j)), shape=(h * wd, h * wd))
    count, labels = csgraph.connected_components(graph, directed=False)
    component_anchored = np.zeros(count, dtype=bool)
    component_anchored[labels[np.asarray(anchored).ravel()]] = True
    cut_off = np.flatnonzero(~component_anchored[labels])
    return tuple(int(v) for v in divmod(cut_off[0], wd)) if cut_off.size else None


def system_matrix(affinity, diag):
    """A = D - W + diag(diag) as CSR, unknowns in row-major pixel order."""
    w = np.asarray(affinity, dtype=np.float64)
    _, h, wd = w.shape
    n = h * wd
    idx = np.arange(n).reshape(h, wd)
    wh = w[0, :, :-1].ravel()
    wv = w[1, :-1, :].ravel()
    i = np.concatenate([idx[:, :-1].ravel(), idx[:-1, :].ravel()])
    j = np.concatenate([idx[:, 1:].ravel(), idx[1:, :].ravel()])
    v = np.concatenate([wh, wv])
    deg = np.bincount(i, v, n) + np.bincount(j, v, n)
    rows = np.concatenate([i, j, idx.ravel()])
    cols = np.concatenate([j, i, idx.ravel()])
    vals = np.concatenate([-v, -v, deg + np.asarray(diag, dtype=np.float64).ravel()])
    return sp.csr_matrix((vals, (rows, cols)), shape=(n, n))


def edge_gradient(g, alpha):
    """dE/dw for every edge of the layout, from g = A^-1 dE/dalpha and alpha (both H x W)."""
    d = np.zeros((2,) + alpha.shape)
    d[0, :, :-1] = -(g[:, :-1] - g[:, 1:]) * (alpha[:, :-1] - alpha[:, 1:])
    d[1, :-1, :] = -(g[:-1, :] - g[1:, :]) * (alpha[:-1, :] - alpha[1:, :])
    return d


# ---- "shrinking" (paper Sec. 3.3): Galerkin aggregation onto an s-times coarser grid ----------

def coarse_shape(height, width, s):
    return -(-height // s), -(-width // s)


def aggregate(x, s):
    """Sum of each s x s block of an H x W array (ragged blocks at the far borders)."""
    h, w = x.shape
    hc, wc = coarse_shape(h, w, s)
    pad = np.zeros((hc * s, wc * s))
    pad[:h, :w] = x
    return pad.reshape(hc, s, wc, s).sum(axis=(1, 3))


def aggregate_affinity(affinity, s):
    """Coarse 2 x Hc x Wc affinities = P^T L P with piecewise-constant P: the sum of the fine
    edges that cross from one block into its right (channel 0) or lower (channel 1) neighbour."""
    w = np.asarray(affinity, dtype=np.float64)
    _, h, wd = w.shape
    hc, wc = coarse_shape(h, wd, s)
    xs = np.arange(wd)
    ys = np.arange(h)
    crossing_x = ((xs + 1) % s == 0) & (xs + 1 < wd)   # edge x -> x+1 leaves its block
    crossing_y = ((ys + 1) % s == 0) & (ys + 1 < h)
    out = np.zeros((2, hc, wc))
    out[0] = aggregate(w[0] * crossing_x[None, :], s)
    out[1] = aggregate(w[1] * crossing_y[:, None], s)
    return out


def upsample_matrix(n_fine, s):
    """1-D linear interpolation (pixel centres, clamped) from ceil(n/s) coarse samples: n x nc."""
    nc = -(-n_fine // s)
    pos = (np.arange(n_fine) + 0.5) / s - 0.5
    pos = np.clip(pos, 0, nc - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, nc - 1)
    frac = pos - lo
    m = np.zeros((n_fine, nc))
    np.add.at(m, (np.arange(n_fine), lo), 1 - frac)
    np.add.at(m, (np.arange(n_fine), hi), frac)
    return m


def upsample(xc, shape, s):
    uy = upsample_matrix(shape[0], s)
    ux = upsample_matrix(shape[1], s)
    return uy @ xc @ ux.T


def upsample_transpose(x, s):
    uy = upsample_matrix(x.shape[0], s)
    ux = upsample_matrix(x.shape[1], s)
    return uy.T @ x @ ux


def _crossing_expand(dc, shape, s):
    """Fine-edge gradient from the coarse-edge gradient: each crossing fine edge gets its coarse
    edge's value, edges inside a block get 0."""
    h, w = shape
    ys, xs = np.arange(h), np.arange(w)
    cross_x = ((xs + 1) % s == 0) & (xs + 1 < w)
    cross_y = ((ys + 1) % s == 0) & (ys + 1 < h)
    d = np.zeros((2, h, w))
    d[0] = dc[0][ys // s][:, xs // s] * cross_x[None, :]
    d[1] = dc[1][ys // s][:, xs // s] * cross_y[:, None]
    return d


class Propagation:
    """One image's system, factorised once and used by forward and backward (float64, exact).

    ``solve()`` gives alpha; ``backward(top_diff)`` gives dE/dw with one more solve that reuses
    the factorisation.
    """

    def __init__(self, affinity, trimap, c=0.8, shrink=1, where="SparseLaplacianSolve"):
        affinity = np.asarray(affinity, dtype=np.float64)
        check_system(affinity, trimap, where)
        self.where = where
        self.shape = affinity.shape[1:]
        self.s = check_shrink(shrink, *self.shape, where=where)
        diag, rhs = constraint_terms(trimap, c)
        if self.s > 1:
            affinity = aggregate_affinity(affinity, self.s)
            diag, rhs = aggregate(diag, self.s), aggregate(rhs, self.s)
        self.grid = affinity.shape[1:]
        cut_off = unanchored_node(affinity, diag > 0)
        if cut_off is not None:
            y, x = (v * self.s for v in cut_off)
            block = f" (the {self.s} x {self.s} block from it)" if self.s > 1 else ""
            raise PropagationError(f"{where}: pixel ({y}, {x}){block} is not connected to any known "
                                   "pixel by affinities > 0, so alpha is undefined there and the "
                                   "system (L + C) is singular")
        self.lu = spla.splu(system_matrix(affinity, diag).tocsc())
        self.alpha_grid = self.lu.solve(rhs.ravel()).reshape(self.grid)
        if not np.all(np.isfinite(self.alpha_grid)):
            raise PropagationError(f"{where}: the solve gave non-finite values (singular system: a "
                                   "connected component without known pixels?)")

    def solve(self):
        if self.s == 1:
            return self.alpha_grid.copy()
        return upsample(self.alpha_grid, self.shape, self.s)

    def backward(self, top_diff):
        top = np.asarray(top_diff, dtype=np.float64)
        bad = np.argwhere(~np.isfinite(top))
        if len(bad):  # as the C++ layer: a NaN here would reach every parameter unseen
            y, x = (int(v) for v in bad[0])
            raise PropagationError(f"{self.where}: the gradient from above (top diff) is "
                                   f"{top[y, x]:g} at ({y}, {x})")
        if self.s > 1:
            top = upsample_transpose(top, self.s)
        g = self.lu.solve(top.ravel()).reshape(self.grid)
        d = edge_gradient(g, self.alpha_grid)
        if self.s > 1:
            d = _crossing_expand(d, self.shape, self.s)
        return d


def solve_alpha(affinity, trimap, c=0.8, shrink=1):
    """alpha = (L + C)^-1 C alpha* for one image (2 x H x W affinities, H x W trimap)."""
    return Propagation(affinity, trimap, c, shrink).solve()


def solve_alpha_backward(affinity, trimap, top_diff, c=0.8, shrink=1):
    """(alpha, dE/dw) for one image."""
    p = Propagation(affinity, trimap, c, shrink)
    return p.solve(), p.backward(top_diff)


def handcrafted_affinity(image, sigma=0.1):
    """The hand-crafted baseline: w_ij = exp(-||I_i - I_j||^2 / sigma^2) on the same grid."""
    im = np.asarray(image, dtype=np.float64)
    if im.ndim == 2:
        im = im[..., None]
    w = np.zeros((2,) + im.shape[:2])
    w[0, :, :-1] = np.exp(-((im[:, :-1] - im[:, 1:]) ** 2).sum(-1) / sigma ** 2)
    w[1, :-1, :] = np.exp(-((im[:-1, :] - im[1:, :]) ** 2).sum(-1) / sigma ** 2)
    return w
