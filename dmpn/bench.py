"""Benchmark of the propagation layer (tools/bench_propagation.py): forward + backward of
SparseLaplacianSolve against scipy's sparse LU (factor + two solves), all in one process so that
ratios hold on a noisy shared machine.

Problems: a 600 x 800 image with random affinities exp(N(0, sigma)) and a 9 % unknown band
(the design note's stress case), the same grid with hand-crafted colour affinities of a real or
generated image, and a training batch of crops.

With --contrast, a sweep of affinity contrast instead (contrast_sweep): where the C++ layer's
multigrid-preconditioned CG stops converging, against scipy's LU solution.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from unittest import mock

import numpy as np
import scipy.sparse.linalg as spla

from dmpn import propagation as P
from dmpn.cli import InputError, check_writable, dims, positive_int, read_bytes, run_tool
from dmpn.evaluate import trimap_to_01
from dmpn.imageio import write_json


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


# The smallest grid of the image problem: dmpn.synth's originals need 16 x 16 pixels.
MIN_IMAGE_SIDE = 16


def trimap_lacks(t):
    """The kinds of pixel (foreground, background, unknown) a trimap in [0, 1] has none of: a
    problem without one of them measures nothing (e.g. no foreground: alpha 0, b = 0). On grids
    smaller than 5 x 5, or very narrow ones, band_trimap's disk or band vanishes."""
    return [name for name, v in (("foreground", 1.0), ("background", 0.0), ("unknown", 0.5))
            if not (t == v).any()]


# From this side on, the generated original had all three kinds in every shape we tried (64 x
# 64 to 64 x 1000 and 600 x 800); below it the check generates the original to see.
IMAGE_CHECK_SIDE = 64


def grid_arg(count, example, min_side=1):
    """argparse type: ``count`` whole numbers joined by 'x' (HxW, or NxHxW for a batch of
    problems seeded 0..N-1), whose H x W grid is at least min_side on each side and gives every
    problem's band trimap foreground, background and unknown pixels; with min_side > 1 (the
    image problem's grid) its generated trimap too."""
    parse = dims(count, example=example)

    def check(text):
        shape = parse(text)
        h, w = shape[-2:]
        if min(h, w) < min_side:
            raise argparse.ArgumentTypeError(
                f"the image problem needs at least {min_side} x {min_side} pixels (synthetic "
                f"originals), got {h} x {w}; e.g. {example}")
        for seed in range(shape[0] if count == 3 else 1):
            lacks = trimap_lacks(band_trimap(h, w, seed=seed))
            if lacks:
                raise argparse.ArgumentTypeError(
                    f"a {h} x {w} grid is too small or too narrow: the problem's trimap (seed "
                    f"{seed}) has no {' and no '.join(lacks)} pixel; e.g. {example}")
        if min_side > 1 and min(h, w) < IMAGE_CHECK_SIDE:
            lacks = trimap_lacks(image_problem(h, w)[1])
            if lacks:
                raise argparse.ArgumentTypeError(
                    f"a {h} x {w} grid is too small for the image problem: its generated trimap "
                    f"has no {' and no '.join(lacks)} pixel; e.g. {example}")
        return shape
    return check


def random_problem(h, w, sigma=2.0, seed=0):
    rng = np.random.default_rng(seed)
    aff = np.exp(rng.normal(0, sigma, (2, h, w))) * P.edge_mask(h, w)
    return aff, band_trimap(h, w, seed=seed)


def contrast_problem(h, w, spread, bound, field="iid", seed=0):
    """Affinities exp(e), e with standard deviation `spread`, drawn per edge ("iid") or smoothed
    over ~3 pixels ("smooth"), clipped to +-bound as AffinityExp clips its exponent; band
    trimap. Weights that jump by e^(2 bound) between neighbours make the system's condition
    number explode: the stress test of any CG."""
    rng = np.random.default_rng(seed)
    e = rng.normal(0, 1, (2, h, w))
    if field == "smooth":
        from scipy.ndimage import gaussian_filter
        e = gaussian_filter(e, (0, 3, 3))
    elif field != "iid":
        raise ValueError(f"field must be 'iid' or 'smooth', got {field!r}")
    e *= spread / e.std()
    aff = np.exp(np.clip(e, -bound, bound)) * P.edge_mask(h, w)
    return aff.astype(np.float32).astype(np.float64), band_trimap(h, w, seed=seed)


def image_problem(h, w, seed=0):
    """Hand-crafted affinities of a generated matting original (a realistic, high-contrast
    structure: strong edges inside the foreground, weak across its border)."""
    from dmpn.synth import make_original
    o = make_original(seed, 0, (h, w), kind="hair")
    return P.handcrafted_affinity(o.image, sigma=0.1), trimap_to_01(o.trimap)


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
  sparse_laplacian_solve_param {{ tolerance: {tol} max_iterations: {max_iterations} }} }}"""
PY_LAYER = """layer { name: "solve" type: "Python" bottom: "affinity" bottom: "trimap" top: "alpha"
  python_param { module: "dmpn.layers.sparse_laplacian_solve" layer: "SparseLaplacianSolveLayer" } }"""


def caffe_layer_net(flavour, n, h, w, tol=1e-8, max_iterations=2000):
    import caffe
    layer = CPP_LAYER.format(tol=tol, max_iterations=max_iterations) if flavour == "cpp" else PY_LAYER
    with tempfile.NamedTemporaryFile("w", suffix=".prototxt", delete=False) as f:
        f.write(SOLVE_NET.format(n=n, h=h, w=w, layer=layer))
    try:
        return caffe.Net(f.name, caffe.TEST)
    finally:
        os.unlink(f.name)


# The CUDA layer's switches, read at each solve (the .cu's header): CUDA graphs off where
# DMPN_CUDA_GRAPHS is "0"; DMPN_GPU_MULTIGRID (GPU_MULTIGRID_SYNTAX) its V-cycle's tuning.
CUDA_GRAPHS = "DMPN_CUDA_GRAPHS"
GPU_MULTIGRID = "DMPN_GPU_MULTIGRID"
GPU_MULTIGRID_SYNTAX = "SWEEPS[/BLOCK_SWEEPS],OMEGA,BLOCK_UNKNOWNS[,tiled[,MIN_TILES]][,float]"
# as the .cu's ParseGpuMultigrid takes it: ASCII digits, no signs, spaces or exponents
_GPU_MULTIGRID_SPEC = re.compile(
    r"([1-8])(/[0-8])?,([0-9]+(?:\.[0-9]*)?),([0-9]{1,9})(,tiled(,[0-9]{1,9})?)?(,float)?")


def gpu_multigrid_arg(text):
    """argparse type of --gpu-multigrid: GPU_MULTIGRID_SYNTAX as the CUDA layer takes it."""
    m = _GPU_MULTIGRID_SPEC.fullmatch(text)
    if not m or not 0 < float(m.group(3)) < 2:
        raise argparse.ArgumentTypeError(
            f"{text!r}: want {GPU_MULTIGRID_SYNTAX} with 1 <= SWEEPS <= 8, 0 <= BLOCK_SWEEPS <= 8, "
            "0 < OMEGA < 2 and 0 <= BLOCK_UNKNOWNS, MIN_TILES < 10^9, for example 3,1.5,2048 or "
            "3/1,1.5,2048,tiled,132,float")
    return text


def environment(changes):
    """os.environ with `changes` (name -> value) for a with-block, then as it was."""
    return mock.patch.dict(os.environ, changes)


def time_net(net, affs, trimaps, tops, repeats, gpu=False):
    import caffe
    if gpu:
        from dmpn.caffe_checks import check_gpu
        check_gpu(None, cpu_fallback=False)  # an InputError, where Caffe would abort the process
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
        problems=("random", "image"), gpu_multigrid=()):
    """Rows of figures per problem (see format_rows); gpu_multigrid: more CUDA rows (graphs on),
    one per DMPN_GPU_MULTIGRID spec, keyed cpp_gpu_graphs[SPEC]."""
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
        # (key, layer flavour, on the GPU, environment): the CUDA layer with direct launches,
        # with its CG iterations replayed as CUDA graphs, and with other V-cycle tunings, in
        # this one process.
        flavours = [("cpp", "cpp", False, {})]
        if gpu:
            # "" : the layer's own tuning, whatever the caller's environment says
            flavours += [("cpp_gpu", "cpp", True, {CUDA_GRAPHS: "0", GPU_MULTIGRID: ""}),
                         ("cpp_gpu_graphs", "cpp", True, {CUDA_GRAPHS: "1", GPU_MULTIGRID: ""})]
            flavours += [(f"cpp_gpu_graphs[{spec}]", "cpp", True, {CUDA_GRAPHS: "1", GPU_MULTIGRID: spec})
                         for spec in gpu_multigrid]
        if python_layer:
            flavours.append(("python", "python", False, {}))
        for key, flavour, on_gpu, env in flavours:
            net = caffe_layer_net(flavour, n, h, w)
            with environment(env):
                t, a, g = time_net(net, affs, tris, tops, repeats if flavour == "cpp" else 1, gpu=on_gpu)
            row[f"{key}_s"] = t
            row[f"{key}_speedup_vs_splu"] = ref_t / t
            row[f"{key}_max_alpha_err"] = float(np.abs(a - ref_a).max())
            gscale = max(1e-12, max(np.abs(g_).max() for g_ in ref_g))
            row[f"{key}_max_grad_rel_err"] = float(np.abs(g - np.stack(ref_g)).max() / gscale)
        rows.append(row)
    return rows


def profile_once(size=(600, 800)):
    """One forward + backward of the CUDA layer on the image problem of this size, untimed: the
    work for a profiler to look at (gpu_check.sh's profile step runs ncu over it)."""
    h, w = size
    aff, tri = image_problem(h, w)
    tops = np.random.default_rng(1).normal(size=(1, 1, h, w)).astype(np.float32)
    net = caffe_layer_net("cpp", 1, h, w)
    time_net(net, aff[None].astype(np.float32), tri[None, None].astype(np.float32), tops, 1, gpu=True)


# The C++ layer's log (GLOG_v=1) and its non-convergence error.
_CONVERGED = re.compile(r"forward solve: \d+ levels, (\d+) iterations, relative residual (\S+)")
_NOT_CONVERGED = re.compile(r"did not converge: relative residual (\S+) after (\d+) iterations")


# ncu --print-summary per-kernel: a header line per kernel name and launch configuration, e.g.
#   "  void <unnamed>::Upsample<float>(int, ...) (938, 1, 1)x(512, 1, 1), Device 0, CC 9.0, Invocations 1"
# (ncu prints "<unnamed>" as "unnamed>"), then the metric's line, average in its 4th column:
#   "    gpu__time_duration.sum          us    6.37    6.37    6.37"
_NCU_KERNEL = re.compile(r"^\s+(?:void )?(?:[\w<>]+::)*(\w+)[<(].*\)x\(\d+, \d+, \d+\), .*"
                         r"Invocations (\d+)\s*$")
_NCU_TIME = re.compile(r"^\s+gpu__time_duration\.sum\s+(\w+)\s+\S+\s+\S+\s+([0-9.,]+)\s*$")
_NCU_UNIT_US = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3,
                "s": 1e6, "second": 1e6}


def ncu_kernel_times(text):
    """Per kernel name (launch configurations and template arguments merged): (name, launches,
    total microseconds) from ncu's per-kernel summary of gpu__time_duration, largest first.
    ValueError where the text holds no kernel with that metric."""
    totals, launches, pending = {}, {}, None
    for line in text.splitlines():
        m = _NCU_KERNEL.match(line)
        if m:
            pending = (m.group(1), int(m.group(2)))
            continue
        m = _NCU_TIME.match(line)
        if m and pending:
            unit = _NCU_UNIT_US.get(m.group(1))
            if unit is None:
                raise ValueError(f"ncu summary: unknown time unit {m.group(1)!r} in {line.strip()!r}")
            name, n = pending
            totals[name] = totals.get(name, 0.0) + n * float(m.group(2).replace(",", "")) * unit
            launches[name] = launches.get(name, 0) + n
            pending = None
    if not totals:
        raise ValueError("no kernel with gpu__time_duration in it: not the output of ncu "
                         "--metrics gpu__time_duration.sum --print-summary per-kernel")
    return sorted(((k, launches[k], v) for k, v in totals.items()), key=lambda r: -r[2])


def format_kernel_times(rows):
    total = sum(us for _, _, us in rows)
    lines = [f"{'kernel':28} {'launches':>8} {'ms':>9} {'share':>6}"]
    lines += [f"{name:28} {n:8d} {us / 1e3:9.3f} {100 * us / total:5.1f}%" for name, n, us in rows]
    lines.append(f"{'all':28} {sum(n for _, n, _ in rows):8d} {total / 1e3:9.3f} 100.0%")
    return "\n".join(lines)


def _forward_child(folder, max_iterations):
    """Child of cpp_forward_stats: the C++ layer's forward pass on folder/in.npz."""
    z = np.load(os.path.join(folder, "in.npz"))
    h, w = z["trimap"].shape
    net = caffe_layer_net("cpp", 1, h, w, max_iterations=max_iterations)
    net.blobs["affinity"].data[...] = z["affinity"][None]
    net.blobs["trimap"].data[...] = z["trimap"][None, None]
    t0 = time.perf_counter()
    net.forward()
    np.savez(os.path.join(folder, "out.npz"), alpha=net.blobs["alpha"].data[0, 0],
             seconds=time.perf_counter() - t0)


def cpp_forward_stats(aff, trimap, max_iterations=2000):
    """The C++ layer's forward solve of one system, in a child process: a solve that does not
    converge stops its process (Caffe's CHECK). Returns a dict: converged, iterations,
    relative_residual (the CG's, as the layer reports it), alpha (None unless converged),
    seconds (forward pass, None unless converged)."""
    with tempfile.TemporaryDirectory() as d:
        np.savez(os.path.join(d, "in.npz"), affinity=aff, trimap=trimap)
        env = dict(os.environ, GLOG_minloglevel="0", GLOG_v="1", GLOG_logtostderr="1")
        code = "import sys; from dmpn.bench import _forward_child; _forward_child(sys.argv[1], int(sys.argv[2]))"
        p = subprocess.run([sys.executable, "-c", code, d, str(max_iterations)], env=env,
                           capture_output=True, text=True)
        ok, bad = _CONVERGED.search(p.stderr), _NOT_CONVERGED.search(p.stderr)
        if p.returncode == 0 and ok:
            out = np.load(os.path.join(d, "out.npz"))
            return {"converged": True, "iterations": int(ok.group(1)), "relative_residual": float(ok.group(2)),
                    "alpha": out["alpha"].astype(np.float64), "seconds": float(out["seconds"])}
        if bad:
            return {"converged": False, "iterations": int(bad.group(2)), "relative_residual": float(bad.group(1)),
                    "alpha": None, "seconds": None}
        raise RuntimeError(f"the C++ layer's child process failed (exit {p.returncode}):\n{p.stderr[-2000:]}")


# (field, spread, bound): AffinityExp's default bound 10, then 20; iid fields from mild to
# nearly every weight at +-bound, and a smooth one.
CONTRAST_CASES = [("iid", 2, 10), ("iid", 4, 10), ("iid", 6, 10), ("iid", 8, 10), ("smooth", 8, 10),
                  ("iid", 2, 20), ("iid", 4, 20), ("iid", 5, 20), ("iid", 6, 20), ("smooth", 8, 20)]


def contrast_sweep(size=(240, 320), cases=CONTRAST_CASES, max_iterations=2000, progress=True):
    """The C++ layer's forward solve on contrast_problem systems, against scipy's LU: CG
    iterations (or the residual where it stopped), the time as a ratio to splu's factor + solve
    of the same system in this run, max |alpha - LU|, and LU's own relative
    residual ||b - A x|| / ||b|| in float64, which the CG's tolerance 1e-8 may be below."""
    h, w = size
    rows = []
    for field, spread, bound in cases:
        aff, tri = contrast_problem(h, w, spread, bound, field)
        diag, rhs = P.constraint_terms(tri)
        A = P.system_matrix(aff, diag).tocsc()
        t0 = time.perf_counter()
        alpha_lu = spla.splu(A).solve(rhs.ravel())
        lu_s = time.perf_counter() - t0
        lu_res = np.linalg.norm(rhs.ravel() - A @ alpha_lu) / np.linalg.norm(rhs)
        st = cpp_forward_stats(aff, tri, max_iterations)
        err = float(np.abs(st["alpha"].ravel() - alpha_lu).max()) if st["converged"] else None
        rows.append({"field": field, "spread": spread, "bound": bound, "shape": f"{h}x{w}",
                     "converged": st["converged"], "iterations": st["iterations"],
                     "relative_residual": st["relative_residual"], "seconds": st["seconds"],
                     "splu_s": lu_s, "speedup_vs_splu": lu_s / st["seconds"] if st["converged"] else None,
                     "max_alpha_err": err, "lu_relative_residual": float(lu_res)})
        if progress:
            print(format_contrast_rows(rows[-1:], header=len(rows) == 1), flush=True)
    return rows


def format_contrast_rows(rows, header=True):
    lines = [f"{'field':>6} {'spread':>6} {'bound':>5}  {'C++ layer forward solve, vs splu factor + solve':<48} {'max|alpha-LU|':>13}  LU rel. residual"] if header else []
    for r in rows:
        if r["converged"]:
            what = (f"{r['iterations']:5d} iterations, {r['seconds'] * 1000:6.1f} ms, "
                    f"x{r['speedup_vs_splu']:5.1f} vs splu")
            err = f"{r['max_alpha_err']:.1e}"
        else:
            what = f"no convergence: {r['relative_residual']:.1e} after {r['iterations']}"
            err = "-"
        lines.append(f"{r['field']:>6} {r['spread']:>6g} {r['bound']:>5g}  {what:<48} {err:>13}  {r['lu_relative_residual']:.1e}")
    return "\n".join(lines)


def format_rows(rows):
    lines = []
    for r in rows:
        lines.append(f"{r['problem']:>7} {r['shape']:>12}  scipy splu+2 solves {r['scipy_splu_s']*1000:9.1f} ms")
        for k in [k[:-2] for k in r if k.endswith("_s") and k != "scipy_splu_s"]:
            lines.append(f"{'':>21}  {k:>14} layer fwd+bwd {r[k + '_s']*1000:9.1f} ms  "
                             f"x{r[k + '_speedup_vs_splu']:6.1f} vs splu   max|alpha-splu| "
                             f"{r[k + '_max_alpha_err']:.1e}  grad rel err {r[k + '_max_grad_rel_err']:.1e}")
    return "\n".join(lines)


def main(argv=None):
    os.environ.setdefault("GLOG_minloglevel", "2")  # keep Caffe's net dumps out of the table
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=grid_arg(2, "600x800", MIN_IMAGE_SIDE), default=(600, 800),
                    help="image size HxW (default 600x800, the paper's)")
    ap.add_argument("--batch", type=grid_arg(3, "4x320x320"), default=(4, 320, 320),
                    help="training batch NxHxW (default 4x320x320)")
    ap.add_argument("--repeats", type=positive_int, default=3,
                    help="timed repeats of the C++ layer (the best is kept)")
    ap.add_argument("--gpu", action="store_true", help="also time the CUDA layer (needs a GPU)")
    ap.add_argument("--no-python", action="store_true", help="skip the (slow) Python layer")
    ap.add_argument("--gpu-multigrid", nargs="+", type=gpu_multigrid_arg, default=(), metavar="SPEC",
                    help="with --gpu: also time the CUDA layer (graphs on) with each V-cycle tuning "
                         f"{GPU_MULTIGRID_SYNTAX} (smoothing sweeps, on the one-block levels too, SOR "
                         "factor, one-block level size, the tiled smoother, the tiles a level needs "
                         "before it halves them, and a float32 hierarchy; the layer's default is "
                         "3,1.5,2048,tiled,N with N the GPU's multiprocessors)")
    ap.add_argument("--contrast", action="store_true",
                    help="instead: the contrast sweep (where the C++ solve stops converging), at --contrast-size")
    ap.add_argument("--contrast-size", type=grid_arg(2, "240x320"), default=(240, 320),
                    help="grid of the contrast sweep HxW (default 240x320)")
    ap.add_argument("--profile-once", action="store_true",
                    help="instead: one untimed forward + backward of the CUDA layer on the --size image "
                         "problem, for a profiler (needs a GPU)")
    ap.add_argument("--ncu-summary", metavar="LOG",
                    help="instead: the time per kernel of an ncu log (--metrics gpu__time_duration.sum "
                         "--print-summary per-kernel, as tools/gpu_check.sh's profile step writes it), "
                         "summed by kernel name")
    ap.add_argument("--json", help="write the figures to this file (atomically)")
    a = ap.parse_args(argv)
    if a.gpu_multigrid and not a.gpu:
        ap.error("--gpu-multigrid times the CUDA layer: it needs --gpu")

    def work():
        if a.ncu_summary:
            text = read_bytes(a.ncu_summary, "ncu log").decode("utf-8", "replace")
            try:
                print(format_kernel_times(ncu_kernel_times(text)))
            except ValueError as exc:
                raise InputError(f"{a.ncu_summary}: {exc}") from None
            return
        if a.json:
            check_writable(a.json, folder=False)  # before the long part
        if a.profile_once or (a.gpu and not a.contrast):
            # Caffe's set_mode_gpu aborts the process (a stack dump) without the GPU; refused
            # here, in one line, before the CPU rows take their minutes.
            from dmpn.caffe_checks import check_gpu
            if a.profile_once:
                check_gpu(None, option="--profile-once", cpu_fallback=False)
            else:
                check_gpu(None, option="--gpu")
        if a.profile_once:
            profile_once(a.size)
            return
        if a.contrast:
            rows = contrast_sweep(a.contrast_size)
        else:
            rows = run(a.size, a.batch, a.repeats, a.gpu, not a.no_python, gpu_multigrid=a.gpu_multigrid)
            print(format_rows(rows))
        if a.json:
            write_json(a.json, rows, allow_nan=True)
    # --json's path, --ncu-summary's log
    return run_tool("bench_propagation", work, errors=((OSError, 2), (InputError, 2)))
