"""Synthetic matting originals: foregrounds with soft ground-truth alpha, seeded, any count and size.

A fresh clone has no real matting data, so the data builder (``tools/make_lmdb.py``) and the
tests default to these. Each original is a foreground colour image ``fg`` (defined everywhere,
like the foreground images of Deep Image Matting), a soft alpha, the photograph-like ``image``
``= alpha * fg + (1 - alpha) * bg0`` on a synthetic textured backdrop ``bg0``, and a trimap with
a real unknown band. The kinds imitate the hard cases of matting:

- ``hair``:   a solid head-like blob with hundreds of thin, curved, partly transparent strands;
- ``fur``:    a blob whose outline is frayed by fine radial fibres and high-frequency noise;
- ``motion``: a solid shape motion-blurred along a random direction (wide, smooth alpha ramps);
- ``glass``:  a semi-transparent object (alpha 0.25 to 0.75) with holes and a solid rim;
- ``net``:    a holed object: a soft mesh of thin threads inside a soft outline;
- ``lowcontrast``: a textured soft-edged object whose colours are close to the backdrop's.

Everything is vectorised numpy / scipy; the output depends only on ``(seed, index, size)``
(``numpy.random.default_rng([seed, index])``), so originals can be regenerated in any order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.transform import resize

__all__ = [
    "KINDS",
    "SynthOriginal",
    "make_original",
    "generate_originals",
    "write_originals",
    "trimap_from_alpha",
]

KINDS = ("hair", "fur", "motion", "glass", "net", "lowcontrast")


@dataclass
class SynthOriginal:
    name: str
    kind: str
    image: np.ndarray   # float64 H x W x 3 in [0, 1]
    alpha: np.ndarray   # float64 H x W in [0, 1]
    fg: np.ndarray      # float64 H x W x 3 in [0, 1]
    trimap: np.ndarray  # uint8 H x W in {0, 128, 255}


def trimap_from_alpha(alpha: np.ndarray, radius: int, eps: float = 1e-3) -> np.ndarray:
    """Trimap from alpha by a fixed erosion (Deep Image Matting dilates its training trimaps by a
    random amount instead; ours is deterministic): unknown = the fractional pixels and every pixel
    within ``radius`` (a disk) of both a non-foreground and a non-background pixel.

    Definite foreground (255) = pixels whose alpha >= 1 - eps, eroded by a disk of ``radius``;
    definite background (0) = pixels whose alpha <= eps, eroded likewise; the rest 128.
    """
    r = max(int(radius), 1)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disk = (yy * yy + xx * xx) <= r * r
    fg = alpha >= 1.0 - eps
    bg = alpha <= eps
    # border_value=1: the image border is not a class boundary.
    fg_core = ndimage.binary_erosion(fg, structure=disk, border_value=1)
    bg_core = ndimage.binary_erosion(bg, structure=disk, border_value=1)
    tri = np.full(alpha.shape, 128, np.uint8)
    tri[fg_core] = 255
    tri[bg_core] = 0
    return tri


# ----------------------------------------------------------------------------------------------
# drawing helpers


def _smooth_noise(rng, shape, scale):
    """Smooth random field in [-1, 1]: white noise on a grid of spacing ~``scale``/2 px,
    Gaussian-filtered and bilinearly upsampled (cheap at any size)."""
    h, w = shape
    step = max(scale / 2.0, 1.0)
    lh, lw = int(np.ceil(h / step)) + 2, int(np.ceil(w / step)) + 2
    low = ndimage.gaussian_filter(rng.standard_normal((lh, lw)), 1.0, mode="wrap")
    up = resize(low, (h, w), order=1, mode="edge", anti_aliasing=False)
    sd = up.std() or 1.0
    return np.clip(up / (2.5 * sd), -1.0, 1.0)


def _palette(rng, base=None, spread=0.35):
    base = rng.uniform(0.1, 0.9, 3) if base is None else np.asarray(base, float)
    return np.clip(base + rng.uniform(-spread, spread, 3), 0.02, 0.98)


def _textured(rng, shape, c1, c2, scale):
    t = (_smooth_noise(rng, shape, scale) + 1.0) / 2.0
    fine = _smooth_noise(rng, shape, max(scale / 8.0, 1.5)) * 0.06
    img = c1[None, None, :] * (1 - t[..., None]) + c2[None, None, :] * t[..., None]
    return np.clip(img + fine[..., None], 0.0, 1.0)


def _blob(rng, shape, center, radii, angle, wobble, freq, soft, yy, xx):
    """Soft star-convex blob: ellipse whose radius is modulated by a random angular series."""
    cy, cx = center
    dy, dx = yy - cy, xx - cx
    ca, sa = np.cos(angle), np.sin(angle)
    u = (dx * ca + dy * sa) / radii[1]
    v = (-dx * sa + dy * ca) / radii[0]
    rho = np.hypot(u, v)
    theta = np.arctan2(v, u)
    mod = np.ones_like(theta)
    for k in range(2, 2 + freq):
        mod += wobble / k * rng.uniform(-1, 1) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    d = (rho - mod) * min(radii)  # ~ signed distance in pixels
    return np.clip(0.5 - d / max(soft, 1e-6), 0.0, 1.0), theta, rho / mod


def _splat(shape, ys, xs, weights):
    """Bilinear splatting of point weights into an image (vectorised np.add.at)."""
    h, w = shape
    acc = np.zeros(h * w)
    y0 = np.floor(ys).astype(np.int64)
    x0 = np.floor(xs).astype(np.int64)
    fy, fx = ys - y0, xs - x0
    for oy, ox, wt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                       (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yi, xi = y0 + oy, x0 + ox
        ok = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
        np.add.at(acc, yi[ok] * w + xi[ok], (weights * wt)[ok])
    return acc.reshape(h, w)


def _strands(rng, shape, roots, directions, length, width, curl, opacity, step=0.5):
    """Alpha of thin curved strands from ``roots`` (S x 2, y/x) heading along ``directions``."""
    s = len(roots)
    n = max(int(length / step), 2)
    turn = rng.normal(0, curl, (s, n)) + rng.normal(0, curl * 0.2, (s, 1)) * 3
    ang = directions[:, None] + np.cumsum(turn, axis=1)
    ys = roots[:, 0:1] + np.cumsum(step * np.sin(ang), axis=1)
    xs = roots[:, 1:2] + np.cumsum(step * np.cos(ang), axis=1)
    # strands taper toward their tips; each has its own width and opacity
    taper = np.linspace(1.0, 0.15, n)[None, :]
    wts = (width * rng.uniform(0.5, 1.5, (s, 1)) * opacity * rng.uniform(0.4, 1.0, (s, 1))
           * taper * step)
    acc = _splat(shape, ys.ravel(), xs.ravel(), wts.ravel())
    acc = ndimage.gaussian_filter(acc, 0.6)
    return 1.0 - np.exp(-2.0 * acc)


def _combine(a, b):
    return 1.0 - (1.0 - a) * (1.0 - b)


# ----------------------------------------------------------------------------------------------
# kinds


def _kind_hair(rng, shape, yy, xx, unit):
    h, w = shape
    c = (h * rng.uniform(0.45, 0.6), w * rng.uniform(0.4, 0.6))
    radii = (unit * rng.uniform(0.18, 0.26), unit * rng.uniform(0.16, 0.24))
    body, theta, _ = _blob(rng, shape, c, radii, rng.uniform(0, np.pi), 0.15, 4, 1.2, yy, xx)
    s = int(rng.integers(150, 400))
    phi = rng.uniform(0, 2 * np.pi, s)
    rr = rng.uniform(0.75, 0.98, s)
    roots = np.stack([c[0] + rr * radii[0] * np.sin(phi), c[1] + rr * radii[1] * np.cos(phi)], 1)
    strands = _strands(rng, shape, roots, phi + rng.normal(0, 0.3, s), unit * rng.uniform(0.1, 0.25),
                       width=rng.uniform(0.3, 0.8), curl=rng.uniform(0.02, 0.08), opacity=1.0)
    alpha = _combine(body, strands)
    c1 = _palette(rng)
    c2 = np.clip(c1 * rng.uniform(0.5, 1.3), 0, 1)
    fg = _textured(rng, shape, c1, c2, unit * 0.05)
    return alpha, fg


def _kind_fur(rng, shape, yy, xx, unit):
    h, w = shape
    c = (h * rng.uniform(0.4, 0.6), w * rng.uniform(0.4, 0.6))
    radii = (unit * rng.uniform(0.22, 0.32), unit * rng.uniform(0.22, 0.32))
    body, theta, rel = _blob(rng, shape, c, radii, rng.uniform(0, np.pi), 0.2, 5, 2.0, yy, xx)
    # frayed fringe: high-frequency angular noise on a soft band outside the body
    fray = 0.5 + 0.5 * np.sin(theta * rng.integers(60, 160) + 3 * _smooth_noise(rng, shape, unit * 0.05))
    fringe = np.clip(1.0 - (rel - 1.0) / rng.uniform(0.08, 0.2), 0, 1) * fray ** 2
    s = int(rng.integers(300, 700))
    phi = rng.uniform(0, 2 * np.pi, s)
    roots = np.stack([c[0] + 0.95 * radii[0] * np.sin(phi), c[1] + 0.95 * radii[1] * np.cos(phi)], 1)
    fibres = _strands(rng, shape, roots, phi, unit * rng.uniform(0.04, 0.1), width=0.5,
                      curl=0.05, opacity=0.9)
    alpha = _combine(_combine(body, np.clip(fringe, 0, 1) * 0.8), fibres)
    c1 = _palette(rng)
    fg = _textured(rng, shape, c1, np.clip(c1 + rng.uniform(-0.2, 0.2, 3), 0, 1), unit * 0.02)
    return alpha, fg


def _kind_motion(rng, shape, yy, xx, unit):
    h, w = shape
    c = (h * rng.uniform(0.4, 0.6), w * rng.uniform(0.4, 0.6))
    radii = (unit * rng.uniform(0.12, 0.22), unit * rng.uniform(0.15, 0.3))
    body, _, _ = _blob(rng, shape, c, radii, rng.uniform(0, np.pi), 0.3, 3, 1.0, yy, xx)
    blur_len = unit * rng.uniform(0.05, 0.15)
    ang = rng.uniform(0, np.pi)
    n = max(int(blur_len), 2)
    acc = np.zeros(shape)
    for t in np.linspace(-blur_len / 2, blur_len / 2, n):
        acc += ndimage.shift(body, (t * np.sin(ang), t * np.cos(ang)), order=1, mode="constant")
    alpha = np.clip(acc / n, 0, 1)
    c1 = _palette(rng)
    fg = _textured(rng, shape, c1, _palette(rng), unit * 0.1)
    return alpha, fg


def _kind_glass(rng, shape, yy, xx, unit):
    h, w = shape
    c = (h * rng.uniform(0.4, 0.6), w * rng.uniform(0.4, 0.6))
    radii = (unit * rng.uniform(0.2, 0.32), unit * rng.uniform(0.2, 0.32))
    outer, _, rel = _blob(rng, shape, c, radii, rng.uniform(0, np.pi), 0.1, 3, 1.5, yy, xx)
    level = rng.uniform(0.25, 0.75)
    body = outer * (level + (1 - level) * np.clip((rel - 0.85) / 0.1, 0, 1))  # solid rim
    body *= 1.0 + 0.15 * _smooth_noise(rng, shape, unit * 0.1)
    k = int(rng.integers(3, 9))
    holes = np.ones(shape)
    for _ in range(k):
        hc = (c[0] + rng.uniform(-0.6, 0.6) * radii[0], c[1] + rng.uniform(-0.6, 0.6) * radii[1])
        hr = unit * rng.uniform(0.02, 0.06)
        d = np.hypot(yy - hc[0], xx - hc[1]) - hr
        holes *= np.clip(d / 1.2 + 0.5, 0, 1)
    alpha = np.clip(body * holes, 0, 1)
    # an opaque handle (a hand mirror's, a spoon's): a trimap with definite foreground
    stem = _blob(rng, shape, (c[0] + radii[0] * 1.05, c[1]), (unit * rng.uniform(0.16, 0.22),
                 unit * rng.uniform(0.06, 0.08)), 0.0, 0.05, 2, 1.5, yy, xx)[0]
    alpha = np.maximum(alpha, stem)
    c1 = _palette(rng)
    fg = _textured(rng, shape, c1, np.clip(c1 + 0.15, 0, 1), unit * 0.2)
    return alpha, fg


def _kind_net(rng, shape, yy, xx, unit):
    h, w = shape
    c = (h * rng.uniform(0.4, 0.6), w * rng.uniform(0.4, 0.6))
    radii = (unit * rng.uniform(0.25, 0.35), unit * rng.uniform(0.25, 0.35))
    outline, _, _ = _blob(rng, shape, c, radii, rng.uniform(0, np.pi), 0.1, 3, 1.5, yy, xx)
    period = max(unit * rng.uniform(0.03, 0.07), 4.0)
    thick = rng.uniform(0.6, 1.6)
    ang = rng.uniform(0, np.pi / 2)
    u = xx * np.cos(ang) + yy * np.sin(ang)
    v = -xx * np.sin(ang) + yy * np.cos(ang)
    du = np.abs((u / period + 0.5) % 1.0 - 0.5) * period
    dv = np.abs((v / period + 0.5) % 1.0 - 0.5) * period
    mesh = np.maximum(np.clip(thick - du + 0.5, 0, 1), np.clip(thick - dv + 0.5, 0, 1))
    alpha = outline * mesh * rng.uniform(0.7, 1.0)
    # an opaque float tied to the mesh (as a fishing net's): a trimap with definite foreground
    ang_f = rng.uniform(0, 2 * np.pi)
    float_c = (c[0] + radii[0] * np.sin(ang_f), c[1] + radii[1] * np.cos(ang_f))
    r_f = unit * rng.uniform(0.07, 0.1)
    alpha = np.maximum(alpha, _blob(rng, shape, float_c, (r_f, r_f), 0.0, 0.05, 2, 1.5, yy, xx)[0])
    c1 = _palette(rng)
    fg = _textured(rng, shape, c1, _palette(rng, c1, 0.2), unit * 0.1)
    return alpha, fg


def _kind_lowcontrast(rng, shape, yy, xx, unit, bg_colors=None):
    h, w = shape
    c = (h * rng.uniform(0.4, 0.6), w * rng.uniform(0.4, 0.6))
    radii = (unit * rng.uniform(0.2, 0.3), unit * rng.uniform(0.2, 0.3))
    body, _, _ = _blob(rng, shape, c, radii, rng.uniform(0, np.pi), 0.25, 5, rng.uniform(2, 6), yy, xx)
    s = int(rng.integers(50, 150))
    phi = rng.uniform(0, 2 * np.pi, s)
    roots = np.stack([c[0] + 0.9 * radii[0] * np.sin(phi), c[1] + 0.9 * radii[1] * np.cos(phi)], 1)
    alpha = _combine(body, _strands(rng, shape, roots, phi, unit * 0.08, 0.6, 0.05, 0.8))
    c1, c2 = bg_colors
    fg = _textured(rng, shape, np.clip(c1 + rng.uniform(-0.08, 0.08, 3), 0, 1),
                   np.clip(c2 + rng.uniform(-0.08, 0.08, 3), 0, 1), unit * 0.05)
    return alpha, fg


_KIND_FUNCS = {
    "hair": _kind_hair,
    "fur": _kind_fur,
    "motion": _kind_motion,
    "glass": _kind_glass,
    "net": _kind_net,
    "lowcontrast": _kind_lowcontrast,
}


def make_original(seed: int, index: int, size=(192, 192), kind: str | None = None) -> SynthOriginal:
    """One synthetic original; deterministic in ``(seed, index, size, kind)``.

    ``kind`` defaults to ``KINDS[index % len(KINDS)]``, so any run of consecutive indices covers
    every kind. The trimap's unknown band is a dilation of the fractional alpha with a radius of
    1 to 3 % of the shorter side (at least 2 px), drawn from the same generator.
    """
    h, w = int(size[0]), int(size[1])
    if h < 16 or w < 16:
        raise ValueError(f"synthetic originals need at least 16 x 16 pixels, got {h} x {w}")
    kind = KINDS[index % len(KINDS)] if kind is None else kind
    if kind not in _KIND_FUNCS:
        raise ValueError(f"unknown synthetic kind {kind!r}; choose from {KINDS}")
    rng = np.random.default_rng([int(seed), int(index), KINDS.index(kind)])
    shape = (h, w)
    unit = float(min(h, w))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    # backdrop of the "photograph"
    b1, b2 = _palette(rng), _palette(rng)
    bg0 = _textured(rng, shape, b1, b2, unit * 0.3)
    if kind == "lowcontrast":
        alpha, fg = _kind_lowcontrast(rng, shape, yy, xx, unit, bg_colors=(b1, b2))
    else:
        alpha, fg = _KIND_FUNCS[kind](rng, shape, yy, xx, unit)
    alpha = np.clip(alpha, 0.0, 1.0)
    alpha[alpha < 1.0 / 512] = 0.0
    alpha[alpha > 1.0 - 1.0 / 512] = 1.0
    image = alpha[..., None] * fg + (1 - alpha[..., None]) * bg0
    radius = max(2, int(round(unit * rng.uniform(0.01, 0.03))))
    trimap = trimap_from_alpha(alpha, radius)
    return SynthOriginal(f"synth{index:04d}_{kind}", kind, image, alpha, fg, trimap)


def generate_originals(count: int, size=(192, 192), seed: int = 0):
    """``count`` synthetic originals (a generator), indices 0 .. count - 1."""
    for i in range(int(count)):
        yield make_original(seed, i, size)


def write_originals(folder, count: int, size=(192, 192), seed: int = 0, with_fg=True,
                    with_trimap=True):
    """Write originals in the builder's input layout: ``image/``, ``alpha/``, ``trimap/``,
    ``fg/`` (8-bit PNGs named ``synthNNNN_kind.png``). Returns the list of names."""
    from dmpn.imageio import write_png

    names = []
    subs = ["image", "alpha"] + (["trimap"] if with_trimap else []) + (["fg"] if with_fg else [])
    for sub in subs:
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    for o in generate_originals(count, size, seed):
        write_png(os.path.join(folder, "image", o.name + ".png"), o.image)
        write_png(os.path.join(folder, "alpha", o.name + ".png"), o.alpha)
        if with_trimap:
            write_png(os.path.join(folder, "trimap", o.name + ".png"), o.trimap)
        if with_fg:
            write_png(os.path.join(folder, "fg", o.name + ".png"), o.fg)
        names.append(o.name)
    return names
