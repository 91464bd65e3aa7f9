"""The propagation layers through Caffe: the C++ layers and the Python layers against the
float64 reference (dmpn.propagation) on the same inputs (fixed and random trimaps), the Python
layers' gradients against float64 finite differences, and their errors."""
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from dmpn import propagation as P
from test_cpp_layers import cpp_net_error, input_layer


def whole(msg):
    """A pytest.raises match for exactly ``msg``, not a fragment of it."""
    return "^" + re.escape(msg) + "$"


NET = """
name: "propagation"
force_backward: true
layer {{ name: "in" type: "Input" top: "features" top: "trimap"
  input_param {{ shape {{ dim: {n} dim: {t} dim: {h} dim: {w} }} shape {{ dim: {n} dim: 1 dim: {h} dim: {w} }} }} }}
{affinity}
{solve}
"""
CPP_AFF = """layer { name: "affinity" type: "AffinityExp" bottom: "features" top: "affinity"
  affinity_exp_param { weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "constant" value: 0.1 } exponent_bound: %g } }"""
PY_AFF = """layer { name: "affinity" type: "Python" bottom: "features" top: "affinity"
  python_param { module: "dmpn.layers.affinity_exp" layer: "AffinityExpLayer" param_str: '{"exponent_bound": %g}' } }"""
CPP_SOLVE = """layer { name: "solve" type: "SparseLaplacianSolve" bottom: "affinity" bottom: "trimap" top: "alpha"
  sparse_laplacian_solve_param { c: 0.8 shrink: %d tolerance: 1e-12 } }"""
PY_SOLVE = """layer { name: "solve" type: "Python" bottom: "affinity" bottom: "trimap" top: "alpha"
  python_param { module: "dmpn.layers.sparse_laplacian_solve" layer: "SparseLaplacianSolveLayer"
                 param_str: '{"c": 0.8, "shrink": %d}' } }"""


def make_net(caffe, tmp_path, flavour, n=2, t=5, h=23, w=19, shrink=1, bound=20.0, c=0.8):
    aff, solve = (CPP_AFF, CPP_SOLVE) if flavour == "cpp" else (PY_AFF, PY_SOLVE)
    solve = solve.replace("c: 0.8", f"c: {c!r}").replace('"c": 0.8', f'"c": {c!r}')
    path = tmp_path / f"{flavour}.prototxt"
    path.write_text(NET.format(n=n, t=t, h=h, w=w, affinity=aff % bound, solve=solve % shrink))
    return caffe.Net(str(path), caffe.TEST)


def inputs(n=2, t=5, h=23, w=19, seed=0):
    rng = np.random.default_rng(seed)
    f = rng.normal(0, 1, (n, t, h, w)).astype(np.float32)
    tri = np.full((n, 1, h, w), 128 / 255, np.float32)
    tri[:, :, :, :4] = 0
    tri[:, :, :, -4:] = 1
    if n > 1 and h > 10 and w > 10:
        tri[1, 0, 10, 10] = 1
    return f, tri


def random_trimap(rng, n, h, w):
    """N x 1 x H x W float32: random 0 / 1 / 0.5 (unknown) with unknown corners, and in each
    item an isolated 0 inside and an isolated 1 on the top border (their 8 neighbours unknown),
    so every item has known pixels of both kinds and unknown pixels on its border."""
    tri = rng.choice(np.float32([0.5, 0, 1]), size=(n, 1, h, w), p=[0.6, 0.2, 0.2])
    for i in range(n):
        y, x = int(rng.integers(2, h - 2)), int(rng.integers(2, w - 2))
        xb = int(rng.integers(1, w - 1))
        tri[i, 0, y - 1:y + 2, x - 1:x + 2] = 0.5
        tri[i, 0, :2, xb - 1:xb + 2] = 0.5
        tri[i, 0, y, x], tri[i, 0, 0, xb] = 0, 1
    tri[:, 0, [0, 0, -1, -1], [0, -1, 0, -1]] = 0.5
    return tri


def run(net, f, tri, theta, b, top_diff):
    net.params["affinity"][0].data[...] = theta
    net.params["affinity"][1].data[...] = b
    net.blobs["features"].data[...] = f
    net.blobs["trimap"].data[...] = tri
    net.forward()
    for p in net.params["affinity"]:
        p.diff[...] = 0
    net.blobs["alpha"].diff[...] = top_diff
    net.backward()
    return (net.blobs["affinity"].data.copy(), net.blobs["alpha"].data.copy(),
            net.blobs["affinity"].diff.copy(), net.blobs["features"].diff.copy(),
            net.params["affinity"][0].diff.copy(), net.params["affinity"][1].diff.copy())


def reference(f, tri, theta, b, top_diff, shrink, bound, c=0.8):
    outs = []
    for i in range(f.shape[0]):
        w = P.affinity_exp_forward(f[i], theta, b, bound)
        alpha, dw = P.solve_alpha_backward(w, tri[i, 0], top_diff[i, 0], c=c, shrink=shrink)
        df, dth, db = P.affinity_exp_backward(f[i], theta, b, dw, bound)
        outs.append((w, alpha[None], dw, df, dth, db))
    return (np.stack([o[0] for o in outs]), np.stack([o[1] for o in outs]), np.stack([o[2] for o in outs]),
            np.stack([o[3] for o in outs]), sum(o[4] for o in outs), np.array([sum(o[5] for o in outs)]))


def check_flavours_against_reference(caffe, tmp_path, f, tri, shrink, bound, c, rng):
    theta = rng.normal(0, 0.3, (2, f.shape[1])).astype(np.float32)
    b = np.float32(0.1)
    top = rng.normal(size=tri.shape).astype(np.float32)
    ref = reference(f.astype(np.float64), tri.astype(np.float64), theta.astype(np.float64), float(b),
                    top.astype(np.float64), shrink, bound, c)
    names = ("affinity", "alpha", "d affinity", "d features", "d theta", "d bias")
    for flavour in ("cpp", "python"):
        got = run(make_net(caffe, tmp_path, flavour, *f.shape, shrink=shrink, bound=bound, c=c),
                  f, tri, theta, b, top)
        for name, g, r in zip(names, got, ref):
            scale = max(1.0, np.abs(r).max())
            np.testing.assert_allclose(g, r, atol=2e-5 * scale, err_msg=f"{flavour}: {name}")


@pytest.mark.parametrize("shrink,bound,c", [(1, 20.0, 0.8), (2, 20.0, 0.8), (3, 20.0, 0.8),
                                            (1, 1.0, 0.8), (1, 20.0, 0.05), (2, 20.0, 5.0)])
def test_cpp_and_python_layers_match_the_reference(caffe, tmp_path, shrink, bound, c):
    f, tri = inputs()
    check_flavours_against_reference(caffe, tmp_path, f, tri, shrink, bound, c,
                                     np.random.default_rng(3))


@pytest.mark.parametrize("shrink", [1, 2, 3])
def test_cpp_and_python_layers_match_the_reference_on_a_random_trimap(caffe, tmp_path, shrink):
    # Isolated known pixels, unknown corners and borders, unlike inputs()'s bands; with shrink,
    # blocks that mix known and unknown pixels.
    rng = np.random.default_rng(10 + shrink)
    f = rng.normal(0, 1, (2, 5, 23, 19)).astype(np.float32)
    tri = random_trimap(rng, 2, 23, 19)
    check_flavours_against_reference(caffe, tmp_path, f, tri, shrink, 20.0, 0.8, rng)


@pytest.mark.parametrize("shrink", [1, 2])
def test_python_layers_finite_differences(caffe, tmp_path, shrink):
    """The Python layers' gradients of E = sum(alpha * top) with respect to every feature, every
    theta entry and the bias, against central differences of E in float64 through the maths the
    layers run (dmpn.propagation) on the same inputs. Differences through the net would carry its
    float32 blobs' rounding (~1e-7 of E, divided by the step); in float64 a step of 1e-6 leaves
    ~1e-9. The layers' float32 affinities and diffs put the gradients ~1e-7 (of the largest entry)
    from the exact ones, so the tolerance (1e-6 of the largest entry, 1e-5 relative) fails a
    gradient 1% off, or a single entry 1% off down to 1e-4 of the largest."""
    n, t, h, w, bound = 2, 3, 7, 6, 20.0
    rng = np.random.default_rng(1)
    f = rng.normal(0, 1, (n, t, h, w)).astype(np.float32)
    tri = random_trimap(rng, n, h, w)
    theta = rng.normal(0, 0.5, (2, t)).astype(np.float32)
    top = rng.normal(size=(n, 1, h, w)).astype(np.float32)
    net = make_net(caffe, tmp_path, "python", n, t, h, w, shrink=shrink, bound=bound)
    *_, dfeat, dtheta, dbias = run(net, f, tri, theta, 0.25, top)
    f64, theta64, top64, tri64 = (a.astype(np.float64) for a in (f, theta, top, tri))
    # no exponent near the clip, where E is not differentiable
    assert max(np.abs(P.affinity_exponent(fi, theta64, 0.25)).max() for fi in f64) < bound - 1

    def energy(i, fi, th, bias):
        alpha = P.solve_alpha(P.affinity_exp_forward(fi, th, bias, bound), tri64[i, 0], shrink=shrink)
        return float((alpha * top64[i, 0]).sum())

    def total(th, bias):
        return sum(energy(i, f64[i], th, bias) for i in range(n))

    eps = 1e-6
    num_f = np.zeros_like(f64)
    for idx in np.ndindex(f.shape):
        fp, fm = f64[idx[0]].copy(), f64[idx[0]].copy()
        fp[idx[1:]] += eps
        fm[idx[1:]] -= eps
        num_f[idx] = (energy(idx[0], fp, theta64, 0.25) - energy(idx[0], fm, theta64, 0.25)) / (2 * eps)
    num_th = np.zeros_like(theta64)
    for idx in np.ndindex(theta.shape):
        tp, tm = theta64.copy(), theta64.copy()
        tp[idx] += eps
        tm[idx] -= eps
        num_th[idx] = (total(tp, 0.25) - total(tm, 0.25)) / (2 * eps)
    num_b = np.array([(total(theta64, 0.25 + eps) - total(theta64, 0.25 - eps)) / (2 * eps)])
    for name, got, num in (("features", dfeat, num_f), ("theta", dtheta, num_th), ("bias", dbias, num_b)):
        assert np.abs(num).max() > 1e-2, (name, num)
        np.testing.assert_allclose(got, num, rtol=1e-5, atol=1e-6 * np.abs(num).max(), err_msg=name)


def test_python_solve_errors_name_the_item(caffe, tmp_path):
    f, tri = inputs()
    tri[1] = 0.5  # item 1 has no known pixel
    net = make_net(caffe, tmp_path, "python")
    net.blobs["features"].data[...] = f
    net.blobs["trimap"].data[...] = tri
    with pytest.raises(P.PropagationError, match=whole(
            "SparseLaplacianSolve Python layer, batch item 1: the trimap has no known pixel, the "
            "system is singular")):
        net.forward()


@pytest.mark.parametrize("bad,shown", [(np.nan, "nan"), (-np.inf, "-inf")])
def test_python_solve_non_finite_top_diff_is_an_error(caffe, tmp_path, bad, shown):
    """As the C++ layer (its gtest TestNonFiniteTopDiffIsAnError): a NaN or inf gradient from
    above names the item and the pixel; it had reached the affinities' gradient, then theta."""
    f, tri = inputs()
    net = make_net(caffe, tmp_path, "python")
    net.blobs["features"].data[...] = f
    net.blobs["trimap"].data[...] = tri
    net.forward()
    net.blobs["alpha"].diff[...] = 1
    net.blobs["alpha"].diff[1, 0, 2, 3] = bad
    with pytest.raises(P.PropagationError, match=whole(
            "SparseLaplacianSolve Python layer, batch item 1: the gradient from above (top diff) "
            f"is {shown} at (2, 3)")):
        net.backward()


def test_backward_after_a_reshape_without_forward_is_an_error(caffe, tmp_path):
    """Backward reuses the forward's systems; after a Reshape to another size both flavours stop
    with the same message (the C++ layer's CPU path had corrupted the heap; its death test is
    the gtest TestBackwardAfterReshapeWithoutForwardIsAnError)."""
    f, tri = inputs()
    net = make_net(caffe, tmp_path, "python")
    net.blobs["features"].data[...] = f
    net.blobs["trimap"].data[...] = tri
    net.forward()
    net.blobs["features"].reshape(2, 5, 4, 4)
    net.blobs["trimap"].reshape(2, 1, 4, 4)
    net.reshape()
    net.blobs["alpha"].diff[...] = 1
    with pytest.raises(ValueError, match=whole(
            "SparseLaplacianSolve Python layer: Backward without a Forward at this shape: the last "
            "Forward solved affinities 2 x 2 x 23 x 19, bottom[0] is now 2 x 2 x 4 x 4 (a Reshape "
            "in between)")):
        net.backward()


def test_cpp_solve_runs_in_a_forked_child(caffe, tmp_path):
    # The C++ layer keeps a team of worker threads; a child forked after the parent used it
    # (a fork-based data loader, multiprocessing) has none of them and must build its own
    # instead of waiting for ever. A batch of 2 runs its items on the team.
    import os
    import time
    f, tri = inputs()
    net = make_net(caffe, tmp_path, "cpp")
    net.blobs["features"].data[...] = f
    net.blobs["trimap"].data[...] = tri
    parent_alpha = net.forward()["alpha"].copy()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if np.array_equal(net.forward()["alpha"], parent_alpha) else 3
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child's forward pass hung (worker team not rebuilt after fork)")
    assert os.waitstatus_to_exitcode(status) == 0


def test_python_param_str_is_checked(caffe, tmp_path):
    path = tmp_path / "bad.prototxt"
    path.write_text(NET.format(n=1, t=2, h=4, w=4, affinity=PY_AFF % 20,
                               solve=PY_SOLVE.replace('"shrink": %d', '"shrnk": 1')))
    with pytest.raises(ValueError, match=whole("SparseLaplacianSolve Python layer: unknown "
                                               "parameter(s) ['shrnk']; known: ['c', 'shrink']")):
        caffe.Net(str(path), caffe.TEST)


def test_python_affinity_exp_takes_the_cpp_fillers(caffe, tmp_path):
    # The same fields and defaults as caffe.proto's AffinityExpParameter: FillerParameter JSON,
    # unset = constant 0, as Caffe fills it.
    def net_with(param):
        path = tmp_path / "fill.prototxt"
        layer = PY_AFF.replace('{"exponent_bound": %g}', param)
        path.write_text(NET.format(n=1, t=300, h=4, w=4, affinity="{affinity}", solve=PY_SOLVE % 1)
                        .replace("{affinity}", layer))
        return caffe.Net(str(path), caffe.TEST)
    net = net_with('{"weight_filler": {"type": "gaussian", "std": 0.5}, '
                   '"bias_filler": {"type": "constant", "value": 0.25}}')
    theta, b = net.params["affinity"][0].data, net.params["affinity"][1].data
    assert theta.shape == (2, 300) and 0.4 < theta.std() < 0.6 and b[0] == 0.25
    net = net_with("{}")
    assert not net.params["affinity"][0].data.any() and net.params["affinity"][1].data[0] == 0
    net = net_with('{"weight_filler": {"type": "uniform", "min": 2, "max": 3}}')
    theta = net.params["affinity"][0].data
    assert theta.min() >= 2 and theta.max() <= 3
    # spread over the whole range, not a point or a part of it (600 draws: the std's own spread
    # is ~0.005; each end stays empty by 0.02 with probability 0.98^600 ~ 5e-6)
    assert abs(theta.std() - 1 / np.sqrt(12)) < 0.03 and abs(theta.mean() - 2.5) < 0.05
    assert theta.min() < 2.02 and theta.max() > 2.98
    with pytest.raises(ValueError, match=whole("AffinityExp Python layer: weight_filler type 'xavier' "
                                               "is not supported here (constant, gaussian, uniform)")):
        net_with('{"weight_filler": {"type": "xavier"}}')
    with pytest.raises(ValueError, match=whole(
            "AffinityExp Python layer: bias_filler has unknown field(s) ['sdt']; known: "
            "['max', 'mean', 'min', 'std', 'type', 'value']")):
        net_with('{"bias_filler": {"sdt": 1}}')


def test_both_flavours_clip_at_the_default_exponent_bound(caffe, tmp_path):
    """Without exponent_bound, both AffinityExp flavours clip the exponent at the reference's
    default (caffe.proto's default and dmpn.propagation's must not drift apart)."""
    f = np.zeros((1, 2, 4, 5), np.float32)
    f[0, 0, :, :2] = 1.5 * P.DEFAULT_EXPONENT_BOUND   # exponents beyond the bound
    f[0, 0, :, 2:] = -1.5 * P.DEFAULT_EXPONENT_BOUND
    theta = np.array([[1, 0], [0, 0]], np.float32)    # z = f_first[0]
    expected = P.affinity_exp_forward(f[0].astype(np.float64), theta, 0.0)
    assert expected.max() == pytest.approx(np.exp(P.DEFAULT_EXPONENT_BOUND))
    affinity = {"cpp": CPP_AFF.replace(" exponent_bound: %g", ""),
                "python": PY_AFF.replace('{"exponent_bound": %g}', "{}")}
    for flavour, layer in affinity.items():
        path = tmp_path / f"{flavour}.prototxt"
        path.write_text(NET.format(n=1, t=2, h=4, w=5, affinity=layer, solve=""))
        net = caffe.Net(str(path), caffe.TEST)
        net.params["affinity"][0].data[...] = theta
        net.params["affinity"][1].data[...] = 0
        net.blobs["features"].data[...] = f
        net.forward()
        np.testing.assert_allclose(net.blobs["affinity"].data[0], expected, rtol=1e-5,
                                   err_msg=flavour)


# ---- parameters and inputs the layers refuse, with the same rules in both flavours ----------

def python_net(caffe, tmp_path, aff_param='{"exponent_bound": 20}', solve_param='{"c": 0.8, "shrink": 1}',
               h=4, w=4):
    path = tmp_path / "params.prototxt"
    aff = PY_AFF.replace('{"exponent_bound": %g}', aff_param)
    solve = PY_SOLVE.replace("'{\"c\": 0.8, \"shrink\": %d}'", f"'{solve_param}'")
    path.write_text(NET.format(n=1, t=2, h=h, w=w, affinity=aff, solve=solve))
    return caffe.Net(str(path), caffe.TEST)


@pytest.mark.parametrize("value,shown", [("0", "0"), ("NaN", "nan"), ("1000", "1000"), ("-1", "-1"),
                                         ("Infinity", "inf"), ('"10"', "'10'"), ("true", "True")])
def test_python_affinity_exp_refuses_the_bounds_cpp_refuses(caffe, tmp_path, value, shown):
    # C++: 0 < exponent_bound <= 80 (AffinityExpLayer::LayerSetUp)
    with pytest.raises(ValueError, match=whole(
            "AffinityExp Python layer: exponent_bound must be a finite number > 0 and <= 80 (a larger "
            f"one lets float32 affinities overflow), got {shown}")):
        python_net(caffe, tmp_path, aff_param=f'{{"exponent_bound": {value}}}')


@pytest.mark.parametrize("param,value,shown", [
    ("c", "NaN", "nan"), ("c", "Infinity", "inf"), ("c", "0", "0"), ("c", "-0.5", "-0.5"),
    ("c", '"0.8"', "'0.8'"), ("shrink", "2.5", "2.5"), ("shrink", "NaN", "nan"), ("shrink", "0", "0"),
    ("shrink", '"2"', "'2'"), ("shrink", "4294967296", "4294967296")])
def test_python_solve_refuses_the_params_cpp_refuses(caffe, tmp_path, param, value, shown):
    other = {"c": '"shrink": 1', "shrink": '"c": 0.8'}[param]
    rule = "a finite number > 0" if param == "c" else "a whole number from 1 to 4294967295"
    with pytest.raises(ValueError, match=whole(
            f"SparseLaplacianSolve Python layer: {param} must be {rule}, got {shown}")):
        python_net(caffe, tmp_path, solve_param=f'{{"{param}": {value}, {other}}}')


@pytest.mark.parametrize("value,shown,as_float", [("1e39", "1e+39", "inf"), ("1e-50", "1e-50", "0")])
def test_c_beyond_float32_is_refused_by_both_flavours(caffe, tmp_path, value, shown, as_float):
    # The C++ field is a float: 1e39 is inf there, 1e-50 is 0; the Python layer (float64) judges
    # the value as the C++ layer would, rather than accept what the other flavour refuses.
    msg = (f"SparseLaplacianSolve Python layer: c must be a finite number > 0 (as float32, the C++ field's "
           f"type, it is {as_float}), got {shown}")
    with pytest.raises(ValueError, match=whole(msg)):
        python_net(caffe, tmp_path, solve_param=f'{{"c": {value}, "shrink": 1}}')
    solve = CPP_SOLVE.replace("c: 0.8", f"c: {value}")
    err = cpp_net_error(tmp_path, NET.format(n=1, t=2, h=4, w=4, affinity=CPP_AFF % 20, solve=solve % 1))
    assert "SparseLaplacianSolve layer 'solve': c must be a finite number > 0, got " + as_float in err, err[-2000:]


# Runs an AffinityExp net in a child (a C++ CHECK failure would end this process): sets theta,
# the bias and the features from an .npz, runs forward and saves the affinities.
AFFINITY_CHILD = """
import sys, numpy as np, caffe
caffe.set_mode_cpu()
net = caffe.Net(sys.argv[1], caffe.TEST)
given = np.load(sys.argv[2])
net.params["affinity"][0].data[...] = given["theta"]
net.params["affinity"][1].data[...] = given["bias"]
net.blobs["features"].data[...] = given["features"]
net.forward()
np.save(sys.argv[3], net.blobs["affinity"].data)
"""


def test_python_params_are_judged_as_cpp_judges_them_near_the_limits(caffe, tmp_path):
    # 80.000001 is 80 in the C++ float field: both flavours accept it, and clip there: an
    # exponent of 100 or 1000 gives e^80 (about 5.5e34, within float32), not inf.
    f = np.zeros((1, 2, 2, 4), np.float32)
    f[0, 0] = [[100, 79.5, -100, -79.5], [1000, 80, -1000, 0]]
    theta = np.array([[1, 0], [0, 0]], np.float32)   # the exponent is f[0] at the edge's first pixel
    clipped = P.affinity_exp_forward(f[0].astype(np.float64), theta, 0.0, 80.0)
    assert clipped.max() == np.exp(80.0) and np.exp(100.0) > np.finfo(np.float32).max
    np.savez(tmp_path / "given.npz", theta=theta, bias=np.zeros(1, np.float32), features=f)
    cpp = NET.format(n=1, t=2, h=2, w=4, affinity=CPP_AFF.replace("%g", "80.000001"), solve="")
    (tmp_path / "cpp.prototxt").write_text(cpp)
    out = subprocess.run([sys.executable, "-c", AFFINITY_CHILD, str(tmp_path / "cpp.prototxt"),
                          str(tmp_path / "given.npz"), str(tmp_path / "cpp.npy")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = np.load(tmp_path / "cpp.npy")[0]
    assert np.all(np.isfinite(got)) and got[0, 1, 0] == got[0, 0, 0]
    np.testing.assert_allclose(got, clipped.astype(np.float32), rtol=3e-7)   # ~2 float32 ulps
    # The Python layer clips at the float64 value, e^80.000001: 1e-6 (8 float32 ulps) above.
    net = python_net(caffe, tmp_path, aff_param='{"exponent_bound": 80.000001}', h=2, w=4)
    net.params["affinity"][0].data[...] = theta
    net.params["affinity"][1].data[...] = 0
    net.blobs["features"].data[...] = f
    net.forward(end="affinity")
    np.testing.assert_allclose(net.blobs["affinity"].data[0], clipped, rtol=2e-6)
    # Integers beyond float64's range: refused with the layer's message, not an OverflowError.
    huge = "1" + "0" * 400
    for param, rule in (("c", "a finite number > 0"), ("shrink", "a whole number from 1 to 4294967295")):
        other = {"c": '"shrink": 1', "shrink": '"c": 0.8'}[param]
        with pytest.raises(ValueError, match=whole(
                f"SparseLaplacianSolve Python layer: {param} must be {rule}, got {huge}")):
            python_net(caffe, tmp_path, solve_param=f'{{"{param}": {huge}, {other}}}')


def test_shrink_larger_than_the_grid_is_an_error_in_both_flavours(caffe, tmp_path):
    # A 4 x 6 grid: shrink 4 (a 1 x 2 solve grid) is the largest allowed, 5 is refused.
    msg = "shrink 5 is larger than the 4 x 6 affinity grid (bottom[0]); at most min(H, W) = 4"
    net = python_net(caffe, tmp_path, solve_param='{"c": 0.8, "shrink": 4}', h=4, w=6)
    with pytest.raises(P.PropagationError, match=whole("SparseLaplacianSolve Python layer: " + msg)):
        python_net(caffe, tmp_path, solve_param='{"c": 0.8, "shrink": 5}', h=4, w=6)
    assert net.blobs["alpha"].data.shape == (1, 1, 4, 6)
    cpp = NET.format(n=1, t=2, h=4, w=6, affinity=CPP_AFF % 20, solve=CPP_SOLVE % 5)
    assert "SparseLaplacianSolve layer 'solve': " + msg in cpp_net_error(tmp_path, cpp)
    with pytest.raises(P.PropagationError, match=whole("SparseLaplacianSolve: " + msg)):
        P.solve_alpha(np.ones((2, 4, 6)), np.zeros((4, 6)), shrink=5)


@pytest.mark.parametrize("param,value", [("c", "inf"), ("c", "nan"), ("tolerance", "inf"),
                                         ("tolerance", "nan"), ("tolerance", "0")])
def test_cpp_solve_refuses_non_finite_params(caffe, tmp_path, param, value):
    solve = CPP_SOLVE.replace("tolerance: 1e-12", "") .replace("c: 0.8", f"{param}: {value}")
    err = cpp_net_error(tmp_path, NET.format(n=1, t=2, h=4, w=4, affinity=CPP_AFF % 20,
                                             solve=solve % 1))
    assert f"SparseLaplacianSolve layer 'solve': {param} must be a finite number > 0, got " \
           f"{value}" in err, err[-2000:]


@pytest.mark.parametrize("where,value,shown", [("edge", 1e30, "1e+30"), ("row", 3e38, "3e+38")])
def test_cpp_solve_overflow_names_the_largest_affinity(caffe, tmp_path, where, value, shown):
    # Finite affinities so large that the solve overflows (its float32 V-cycle) give a residual
    # nan: the message says why and names the largest affinity, not a bare "did not converge".
    n, h, w = 2, 40, 40
    net = NET.replace('top: "features" top: "trimap"', 'top: "affinity" top: "trimap"')
    net = net.replace("dim: {t}", "dim: 2").format(n=n, t=2, h=h, w=w, affinity="", solve=CPP_SOLVE % 1)
    rng = np.random.default_rng(0)
    aff = np.exp(rng.normal(0, 1, (n, 2, h, w))).astype(np.float32)
    _, tri = inputs(n, 2, h, w)
    if where == "edge":
        aff[1, 0, 3, 3] = value
        edge = "(3, 3)-(3, 4)"
    else:
        aff[1, :, 20, :] = value
        edge = "(20, 0)-(20, 1)"
    err = cpp_net_error(tmp_path, net, {"affinity": aff, "trimap": tri})
    assert "SparseLaplacianSolve layer 'solve', batch item 1: " in err, err[-2000:]
    assert f"the affinities are too large: the largest is {shown} at the edge {edge}" in err, err[-2000:]


def test_cpp_solve_breakdown_on_extreme_contrast_is_not_called_an_overflow(caffe, tmp_path):
    # A field of e^30 and e^-30 weights (far beyond AffinityExp's default bound e^10) makes CG
    # break down from rounding, no number overflowing: the message says so, with the contrast,
    # instead of "too large" (the largest, 1e13, is far from overflowing).
    n, h, w = 1, 64, 64
    net = NET.replace('top: "features" top: "trimap"', 'top: "affinity" top: "trimap"')
    net = net.replace("dim: {t}", "dim: 2").format(n=n, t=2, h=h, w=w, affinity="",
                                                   solve=CPP_SOLVE.replace("tolerance: 1e-12", "") % 1)
    rng = np.random.default_rng(0)
    aff = np.exp(rng.choice([-30.0, 30.0], size=(n, 2, h, w))).astype(np.float32)
    tri = np.full((n, 1, h, w), 0.5, np.float32)
    tri[..., :3], tri[..., -3:] = 0, 1
    err = cpp_net_error(tmp_path, net, {"affinity": aff, "trimap": tri})
    assert "SparseLaplacianSolve layer 'solve', batch item 0: " in err, err[-2000:]
    assert "the iteration broke down" in err and "too large" not in err, err[-2000:]
    assert "the smallest nonzero 9.35" in err, err[-2000:]   # e^-30


@pytest.mark.parametrize("value,shown", [("0", "0"), ("-1", "-1"), ("80.5", "80.5"), ("1000", "1000"),
                                         ("nan", "nan"), ("inf", "inf"),
                                         ("80.00001", "80.0000076")])  # float32, not "80"
def test_cpp_affinity_exp_refuses_bounds_outside_0_to_80(caffe, tmp_path, value, shown):
    # The rule test_python_affinity_exp_refuses_the_bounds_cpp_refuses holds the Python layer to.
    err = cpp_net_error(tmp_path, NET.format(n=1, t=2, h=4, w=4, solve="",
                                             affinity=CPP_AFF.replace("%g", value)))
    assert ("AffinityExp layer 'affinity': exponent_bound must be a finite number > 0 and <= 80 (a "
            f"larger one lets float32 affinities overflow), got {shown}\n") in err, err[-2000:]


# Reshapes the features to other channels than the layer was set up with (its theta's T).
RESHAPE_CHILD = """
import sys, caffe
caffe.set_mode_cpu()
net = caffe.Net(sys.argv[1], caffe.TEST)
net.blobs["features"].reshape(*map(int, sys.argv[2:]))
net.reshape()
print("no error")
"""


def test_affinity_exp_refuses_features_of_other_channels_than_theta(caffe, tmp_path):
    # theta is 2 x 5: features of 3 channels would be read with a stride of 5.
    path = tmp_path / "cpp.prototxt"
    path.write_text(NET.format(n=2, t=5, h=4, w=4, affinity=CPP_AFF % 20, solve=""))
    out = subprocess.run([sys.executable, "-c", RESHAPE_CHILD, str(path), "2", "3", "4", "4"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode != 0 and "no error" not in out.stdout, out.stderr[-3000:]
    assert "AffinityExp layer 'affinity': feature channels changed from 5 to 3" in out.stderr, \
        out.stderr[-2000:]
    net = make_net(caffe, tmp_path, "python", n=2, t=5, h=4, w=4)
    net.blobs["features"].reshape(2, 3, 4, 4)
    with pytest.raises(ValueError, match=whole(
            "AffinityExp Python layer: blobs[0] is (2, 5), features have 3 channels (expected 2 x 3)")):
        net.reshape()


@pytest.mark.parametrize("aff,tri", [((2, 3, 4, 4), (2, 1, 4, 4)), ((2, 1, 4, 4), (2, 1, 4, 4)),
                                     ((2, 2, 4, 4), (2, 1, 4, 5)), ((2, 2, 4, 4), (1, 1, 4, 4)),
                                     ((2, 2, 4, 4), (2, 2, 4, 4))])
def test_solve_refuses_bottoms_of_other_shapes_in_both_flavours(caffe, tmp_path, aff, tri):
    bottoms = 'bottom: "w" bottom: "t" top: "alpha"'

    def shown(shape):  # Blob::shape_string()
        return " ".join(map(str, shape)) + f" ({np.prod(shape)})"

    if aff[1] != 2:
        cpp_msg = f"affinities must have 2 channels, got {shown(aff)}"
        py_msg = f"affinities must be N x 2 x H x W, got {aff}"
    else:
        cpp_msg = f"trimap must be 2 x 1 x 4 x 4, got {shown(tri)}"
        py_msg = f"trimap must be 2 x 1 x 4 x 4, got {tri}"
    err = cpp_net_error(tmp_path, input_layer([("w", aff), ("t", tri)])
                        + f'layer {{ name: "solve" type: "SparseLaplacianSolve" {bottoms} }}\n')
    assert f"SparseLaplacianSolve layer 'solve': {cpp_msg}\n" in err, err[-2000:]
    path = tmp_path / "py.prototxt"
    path.write_text(input_layer([("w", aff), ("t", tri)]) + f'layer {{ name: "solve" type: "Python" '
                    f'{bottoms} python_param {{ module: "dmpn.layers.sparse_laplacian_solve" '
                    'layer: "SparseLaplacianSolveLayer" } }\n')
    with pytest.raises(ValueError, match=whole(f"SparseLaplacianSolve Python layer: {py_msg}")):
        caffe.Net(str(path), caffe.TEST)


def test_cpp_solve_refuses_shrink_0(caffe, tmp_path):
    # The Python layer's rule: test_python_solve_refuses_the_params_cpp_refuses.
    err = cpp_net_error(tmp_path, NET.format(n=1, t=2, h=4, w=4, affinity=CPP_AFF % 20,
                                             solve=CPP_SOLVE % 0))
    assert "SparseLaplacianSolve layer 'solve': shrink must be >= 1\n" in err, err[-2000:]
