"""Baseline matting methods scored beside the network, all as predictors
``predictor(image HxWx3 float64 in [0, 1], trimap01 HxW float in [0, 1], 0.5 = unknown) -> alpha HxW``.

- ``cf``: closed-form matting (Levin et al. 2008), through pymatting.
- ``knn``: KNN matting (Chen et al. 2013), through pymatting.
- ``handcrafted``: propagation with the hand-crafted affinity w = exp(-||I_i - I_j||^2 / sigma^2)
  on the network's 4-neighbour grid, solved by our SparseLaplacianSolve reference
  (``dmpn.propagation``): the ablation that shows what learning the affinities buys.
"""
from __future__ import annotations

import numpy as np

from dmpn.cli import InputError

__all__ = ["BASELINES", "closed_form", "knn", "handcrafted", "get_baseline", "parse_baselines",
           "known_sides"]

BASELINES = ("cf", "knn", "handcrafted")


def _check(image, trimap01):
    image = np.asarray(image, dtype=np.float64)
    trimap01 = np.asarray(trimap01, dtype=np.float64)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != trimap01.shape:
        raise ValueError(f"image {image.shape} and trimap {trimap01.shape} do not match")
    return image, trimap01


def known_sides(trimap01):
    """(any background pixel, any foreground pixel) of a trimap in [0, 1]. A propagation needs at
    least one of them: with no known pixel its Laplacian system is singular."""
    trimap01 = np.asarray(trimap01)
    return bool((trimap01 <= 0).any()), bool((trimap01 >= 1).any())


def _trivial(trimap01):
    """Trimaps the Laplacian solvers cannot take: nothing unknown, nothing known, or one side known."""
    unknown = (trimap01 > 0) & (trimap01 < 1)
    if not unknown.any():
        return (trimap01 >= 1).astype(np.float64)
    has_bg, has_fg = known_sides(trimap01)
    if not has_bg and not has_fg:
        return np.full(trimap01.shape, 0.5)
    if not has_bg or not has_fg:
        # One side known only (e.g. a semi-transparent object with no opaque core): a constant
        # matte is the exact minimiser of the Laplacian energies (pymatting refuses such trimaps).
        return np.full(trimap01.shape, 1.0 if has_fg else 0.0)
    return None


def closed_form(image, trimap01) -> np.ndarray:
    """Closed-form matting (Levin, Lischinski, Weiss 2008) via pymatting.estimate_alpha_cf."""
    image, trimap01 = _check(image, trimap01)
    trivial = _trivial(trimap01)
    if trivial is not None:
        return trivial
    if min(trimap01.shape) < 3:  # its Laplacian is built from 3 x 3 windows
        raise InputError(f"closed-form matting needs an image of at least 3 x 3 pixels, got "
                         f"{trimap01.shape[0]} x {trimap01.shape[1]}")
    from pymatting import estimate_alpha_cf
    return np.clip(estimate_alpha_cf(image, trimap01), 0.0, 1.0)


# pymatting's KNN Laplacian: 20 neighbours, then 10 (knn_laplacian's n_neighbors default)
KNN_NEIGHBORS = (20, 10)


def knn(image, trimap01) -> np.ndarray:
    """KNN matting (Chen, Li, Tang 2013) via pymatting.estimate_alpha_knn. An image of fewer
    pixels than the 20 neighbours pymatting asks for takes every pixel as a neighbour instead."""
    image, trimap01 = _check(image, trimap01)
    trivial = _trivial(trimap01)
    if trivial is not None:
        return trivial
    from pymatting import estimate_alpha_knn
    kwargs = {}
    if trimap01.size < max(KNN_NEIGHBORS):
        kwargs["laplacian_kwargs"] = {"n_neighbors": [min(k, trimap01.size) for k in KNN_NEIGHBORS]}
    return np.clip(estimate_alpha_knn(image, trimap01, **kwargs), 0.0, 1.0)


def handcrafted(image, trimap01, sigma: float = 0.1, c: float = 0.8) -> np.ndarray:
    """Propagation with w = exp(-||I_i - I_j||^2 / sigma^2) on the 4-neighbour grid, solved by
    ``dmpn.propagation.solve_alpha`` (the reference of the network's SparseLaplacianSolve layer)."""
    image, trimap01 = _check(image, trimap01)
    trivial = _trivial(trimap01)
    if trivial is not None:
        return trivial
    from dmpn import propagation  # lazily: written alongside
    affinity = propagation.handcrafted_affinity(image, sigma=sigma)
    return np.clip(np.asarray(propagation.solve_alpha(affinity, trimap01, c=c), dtype=np.float64),
                   0.0, 1.0)


_FUNCS = {"cf": closed_form, "knn": knn, "handcrafted": handcrafted}


def get_baseline(name: str):
    """The predictor called ``name`` (one of BASELINES)."""
    try:
        return _FUNCS[name]
    except KeyError:
        raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}") from None


def parse_baselines(spec: str) -> list:
    """'cf,knn,handcrafted' -> ['cf', 'knn', 'handcrafted'] (checked, duplicates removed); 'all' = every one."""
    names = []
    for part in (spec or "").split(","):
        part = part.strip().lower()
        if not part:
            continue
        if part == "all":
            names.extend(BASELINES)
            continue
        get_baseline(part)
        names.append(part)
    return list(dict.fromkeys(names))
