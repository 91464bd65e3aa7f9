"""Benchmark of the propagation layer (tools/bench_propagation.py): forward + backward of
SparseLaplacianSolve against scipy's sparse LU (factor + two solves), all in one process so that
ratios hold on a noisy shared machine.

Problems: a 600 x 800 image with random affinities exp(N(0, sigma)) and a 9 % unknown band
(the design note's stress case), the same grid with hand-crafted colour affinities of a real or
generated image, and a training batch of crops.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import scipy.sparse.linalg as spla

from dmpn import propagation as P


def band_trimap(h, w, unknown_fraction=0.09, seed=0):
    """A disk of foreground with an unknown band around its border covering ~unknown_fraction."""
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    cy, cx = h * (0.45 + 0.1 * rng.random()), w * (0.45 + 0.1 * rng.random())
    r = 0.3 * min(h, w)
    d = np.hypot(yy - cy, xx - cx) - r
    # band half-width so that the band's area is unknown_fraction of the image
    half = unknown_fraction * h * w / (4 * np.pi * r)
    t = np.where(d < 0, 1.0, 0.0)
    t[np.abs(d) < half] = 0.5
    return t


def random_problem(h, w, sigma=2.0, seed=0):
    rng = np.random.default_rng(seed)
    aff = np.exp(rng.normal(0, sigma, (2, h, w))) * P.edge_mask(h, w)
    return aff, band_trimap(h, w, seed=seed)


def image_problem(h, w, seed=0):
    """Hand-crafted affinities of a generated matting original (a realistic, high-contrast
    structure: strong edges inside the foreground, weak across its border)."""
    from dmpn.synth import make_original
    o = make_original(seed, 0, (h, w), kind="hair")
    t = np.where(o.trimap == 0, 0.0, np.where(o.trimap == 255, 1.0, 0.5))
    return P.handcrafted_affinity(o.image, sigma=0.1), t


def scipy_splu(aff, trimap, top, c=0.8):
    """scipy's reference: sparse LU factorisation, forward solve, backward solve."""
    t0 = time.perf_counter()
    diag, rhs = P.constraint_terms(trimap, c)
    lu = spla.splu(P.system_matrix(aff, diag).tocsc())
    alpha = lu.solve(rhs.ravel()).reshape(trimap.shape)
    g = lu.solve(top.ravel()).reshape(trimap.shape)
    grad = P.edge_gradient(g, alpha)
    return time.perf_counter() - t0, alpha, grad


SOLVE_NET = """
name: "bench"
force_backward: true
layer {{ name: "in" type: "Input" top: "affinity" top: "trimap"
  input_param {{ shape {{ dim: {n} dim: 2 dim: {h} dim: {w} }} shape {{ dim: {n} dim: 1 dim: {h} dim: {w} }} }} }}
{layer}
"""
CPP_LAYER = """layer {{ name: "solve" type: "SparseLaplacianSolve" bottom: "affinity" bottom: "trimap" top: "alpha"
  sparse_laplacian_solve_param {{ tolerance: {tol} }} }}"""
PY_LAYER = """layer { name: "solve" type: "Python" bottom: "affinity" bottom: "trimap" top: "alpha"
  python_param { module: "dmpn.layers.sparse_laplacian_solve" layer: "SparseLaplacianSolveLayer" } }"""


def caffe_layer_net(flavour, n, h, w, tol=1e-8):
    import caffe
    layer = CPP_LAYER.format(tol=tol) if flavour == "cpp" else PY_LAYER
    with tempfile.NamedTemporaryFile("w", suffix=".prototxt", delete=False) as f:
        f.write(SOLVE_NET.format(n=n, h=h, w=w, layer=layer))
    try:
        return caffe.Net(f.name, caffe.TEST)
    finally:
        os.unlink(f.name)


def time_net(net, affs, trimaps, tops, repeats, gpu=False):
    import caffe
    if gpu:
        caffe.set_mode_gpu()
    else:
        caffe.set_mode_cpu()
    net.blobs["affinity"].data[...] = affs
    net.blobs["trimap"].data[...] = trimaps
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        net.forward()
        net.blobs["alpha"].diff[...] = tops
        net.backward()
        _ = net.blobs["affinity"].diff[0, 0, 0, 0]  # waits for the device
        times.append(time.perf_counter() - t0)
    return min(times), net.blobs["alpha"].data.copy(), net.blobs["affinity"].diff.copy()


def run(size=(600, 800), batch=(4, 320, 320), repeats=3, gpu=False, python_layer=True,
        problems=("random", "image")):
    rows = []
    cases = []
    for p in problems:
        cases.append((p, 1) + tuple(size))
    cases.append(("random", batch[0], batch[1], batch[2]))
    for kind, n, h, w in cases:
        make = random_problem if kind == "random" else image_problem
        probs = [make(h, w, seed=i) for i in range(n)]
        affs = np.stack([a for a, _ in probs]).astype(np.float32)
        tris = np.stack([t for _, t in probs])[:, None].astype(np.float32)
        rng = np.random.default_rng(1)
        tops = rng.normal(size=(n, 1, h, w)).astype(np.float32)
        ref_t, ref_a, ref_g = 0.0, [], []
        for i in range(n):
            t, a, g = scipy_splu(affs[i].astype(np.float64), tris[i, 0].astype(np.float64), tops[i, 0].astype(np.float64))
            ref_t += t
            ref_a.append(a)
            ref_g.append(g)
        ref_a = np.stack(ref_a)[:, None]
        row = {"problem": kind, "shape": f"{n}x{h}x{w}", "scipy_splu_s": ref_t}
        flavours = [("cpp", False)] + ([("cpp", True)] if gpu else []) + ([("python", False)] if python_layer else [])
        for flavour, on_gpu in flavours:
            net = caffe_layer_net(flavour, n, h, w)
            t, a, g = time_net(net, affs, tris, tops, repeats if flavour == "cpp" else 1, gpu=on_gpu)
            key = f"{flavour}{'_gpu' if on_gpu else ''}"
            row[f"{key}_s"] = t
            row[f"{key}_speedup_vs_splu"] = ref_t / t
            row[f"{key}_max_alpha_err"] = float(np.abs(a - ref_a).max())
            gscale = max(1e-12, max(np.abs(g_).max() for g_ in ref_g))
            row[f"{key}_max_grad_rel_err"] = float(np.abs(g - np.stack(ref_g)).max() / gscale)
        rows.append(row)
    return rows


def format_rows(rows):
    lines = []
    for r in rows:
        lines.append(f"{r['problem']:>7} {r['shape']:>12}  scipy splu+2 solves {r['scipy_splu_s']*1000:9.1f} ms")
        for k in ("cpp", "cpp_gpu", "python"):
            if f"{k}_s" in r:
                lines.append(f"{'':>21}  {k:>6} layer fwd+bwd {r[k + '_s']*1000:9.1f} ms  "
                             f"x{r[k + '_speedup_vs_splu']:6.1f} vs splu   max|alpha-splu| "
                             f"{r[k + '_max_alpha_err']:.1e}  grad rel err {r[k + '_max_grad_rel_err']:.1e}")
    return "\n".join(lines)


def main(argv=None):
    os.environ.setdefault("GLOG_minloglevel", "2")  # keep Caffe's net dumps out of the table
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="600x800", help="image size HxW (default 600x800, the paper's)")
    ap.add_argument("--batch", default="4x320x320", help="training batch NxHxW (default 4x320x320)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats of the C++ layer (the best is kept)")
    ap.add_argument("--gpu", action="store_true", help="also time the CUDA layer (needs a GPU)")
    ap.add_argument("--no-python", action="store_true", help="skip the (slow) Python layer")
    ap.add_argument("--json", help="write the figures to this file")
    a = ap.parse_args(argv)
    h, w = (int(v) for v in a.size.lower().split("x"))
    batch = tuple(int(v) for v in a.batch.lower().split("x"))
    rows = run((h, w), batch, a.repeats, a.gpu, not a.no_python)
    print(format_rows(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0
