"""Unpooling and MattingLoss: the float64 references (dmpn.unpooling, dmpn.matting_loss)
against finite differences and hand values, then the C++ layers, the Python layers and the
references on the same inputs through pycaffe, BVLC Pooling -> Unpooling round trips with odd
sizes and with overlapping windows, and bad inputs."""
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from dmpn import matting_loss as M
from dmpn import unpooling as U
from dmpn.propagation import KNOWN_TOL


def whole(msg):
    """A pytest.raises match for exactly ``msg``, not a fragment of it."""
    return "^" + re.escape(msg) + "$"


# ---- references ---------------------------------------------------------------------------

def pooled_mask(rng, n, c, H, W):
    """A valid 2 x 2 / stride 2 (ceil-mode) argmax mask for an H x W plane."""
    h, w = (H + 1) // 2, (W + 1) // 2
    y = np.minimum(2 * np.arange(h)[:, None] + rng.integers(0, 2, (n, c, h, w)), H - 1)
    x = np.minimum(2 * np.arange(w)[None, :] + rng.integers(0, 2, (n, c, h, w)), W - 1)
    return (y * W + x).astype(np.float64)


def test_unpool_reference_places_values_and_gradient_is_adjoint():
    rng = np.random.default_rng(0)
    mask = pooled_mask(rng, 2, 3, 7, 9)
    v = rng.normal(size=mask.shape)
    out = U.unpool_forward(v, mask, (7, 9))
    assert out.shape == (2, 3, 7, 9)
    assert np.count_nonzero(out) == v.size and np.isclose(out.sum(), v.sum())
    n, c, y, x = 1, 2, 3, 4
    m = int(mask[n, c, y, x])
    assert out[n, c, m // 9, m % 9] == v[n, c, y, x]
    g = rng.normal(size=out.shape)
    grad = U.unpool_backward(g, mask)
    eps = 1e-6
    num = np.zeros_like(v)
    for i in np.ndindex(v.shape):
        vp, vm = v.copy(), v.copy()
        vp[i] += eps
        vm[i] -= eps
        num[i] = ((U.unpool_forward(vp, mask, (7, 9)) - U.unpool_forward(vm, mask, (7, 9))) * g).sum() / (2 * eps)
    np.testing.assert_allclose(grad, num, atol=1e-8)


def test_unpool_reference_sums_repeated_positions():
    """Overlapping pooling windows can name one position twice: the values add up."""
    v = np.array([[[[1.0, 2.0]]]])
    out = U.unpool_forward(v, np.array([[[[3.0, 3.0]]]]), (2, 2))
    assert out[0, 0, 1, 1] == 3.0 and np.count_nonzero(out) == 1


def test_unpool_output_size():
    assert U.output_size((13, 13), reference_hw=(25, 25)) == (25, 25)
    assert U.output_size((4, 5)) == (8, 10)
    assert U.output_size((4, 5), 7, 0) == (7, 10)


@pytest.mark.parametrize("value,shown", [(2.5, "2.5"), (-1, "-1"), (48, "48"), (np.nan, "nan")])
def test_unpool_reference_bad_mask(value, shown):
    mask = pooled_mask(np.random.default_rng(1), 2, 2, 6, 8)
    mask[1, 0, 2, 1] = value
    with pytest.raises(U.UnpoolingError, match=whole(
            f"Unpooling: mask value {shown} at (n 1, c 0, y 2, x 1) is not an integer flat index in "
            "[0, 48) of the 6 x 8 output")):
        U.unpool_forward(np.ones(mask.shape), mask, (6, 8))
    with pytest.raises(U.UnpoolingError, match=whole(
            "Unpooling: the mask (bottom[1]) is (2, 2, 3, 4), the pooled values (bottom[0]) are "
            "(2, 2, 3, 3); they must be the same N x C x h x w")):
        U.unpool_forward(np.ones((2, 2, 3, 3)), mask, (6, 8))


def loss_inputs(rng, n=2, h=4, w=5):
    """Residuals away from 0 (the Charbonnier kink); every kind of trimap value."""
    alpha = rng.uniform(0, 1, (n, 1, h, w))
    sign = np.where(rng.uniform(size=alpha.shape) < 0.5, -1, 1)
    pred = alpha + sign * rng.uniform(0.2, 0.5, alpha.shape)
    trimap = rng.choice([0.0, 1.0, 0.5, 128 / 255, 0.01, 0.0005, 0.9995], size=alpha.shape)
    fg, bg = rng.uniform(0, 1, (2, n, 3, h, w))
    image = rng.uniform(-0.5, 1.5, (n, 3, h, w))
    return [pred, alpha, trimap, fg, bg, image]


def test_matting_loss_hand_values():
    pred = np.array([0.7, 0.9, 0.2, 0.0]).reshape(1, 1, 2, 2)
    alpha = np.array([0.4, 0.0, 0.6, 1.0]).reshape(1, 1, 2, 2)
    trimap = np.array([0.5, 0, 128 / 255, 1]).reshape(1, 1, 2, 2)
    fg = np.array([1, 5, 1, 5, 1, 5, 0, 5, 1, 5, 0.5, 5.]).reshape(1, 3, 2, 2)
    bg = np.array([0, 3, 0, 3, 0, 3, 1, 3, 0, 3, 0.5, 3.]).reshape(1, 3, 2, 2)
    image = np.array([0.4, 9, 0.6, 9, 0.4, 9, 0.4, 9, 0.4, 9, 0.5, 9]).reshape(1, 3, 2, 2)
    args = (pred, alpha, trimap, fg, bg, image)
    s2, s3 = np.sqrt(2), np.sqrt(3)
    assert np.isclose(M.matting_loss_forward(*args), (0.15 + 0.15 * s3 + 0.2 + 0.2 * s2) / 2)
    g = M.matting_loss_backward(*args, top_diff=2.0).ravel()
    np.testing.assert_allclose(g, [0.5 + 0.5 * s3, 0, -0.5 - 0.5 * s2, 0], atol=1e-9)
    assert np.isclose(M.matting_loss_forward(*args, alpha_weight=1, composition_weight=0), 0.35)
    # eps enters under each square root: sqrt(r^2 + eps) (the paper's Charbonnier term)
    assert np.isclose(M.matting_loss_forward(*args, alpha_weight=1, composition_weight=0, eps=0.01),
                      (np.sqrt(0.09 + 0.01) + np.sqrt(0.16 + 0.01)) / 2)


def test_matting_loss_reference_finite_differences():
    rng = np.random.default_rng(2)
    args = loss_inputs(rng)
    params = {"eps": 1e-12, "alpha_weight": 0.3, "composition_weight": 0.8}
    grad = M.matting_loss_backward(*args, top_diff=1.5, **params)
    pred, eps = args[0], 1e-6
    num = np.zeros_like(pred)
    for i in np.ndindex(pred.shape):
        p, m = pred.copy(), pred.copy()
        p[i] += eps
        m[i] -= eps
        num[i] = 1.5 * (M.matting_loss_forward(p, *args[1:], **params)
                        - M.matting_loss_forward(m, *args[1:], **params)) / (2 * eps)
    np.testing.assert_allclose(grad, num, atol=1e-8)
    assert np.abs(grad).max() > 1e-2


def test_matting_loss_averages_over_unknown_pixels_only():
    rng = np.random.default_rng(3)
    args = loss_inputs(rng)
    known = ~M.unknown_mask(args[2])
    assert known.any() and (~known).any()
    loss = M.matting_loss_forward(*args)
    per, _, unknown = M.per_pixel(*args)
    assert np.isclose(loss, per.sum() / unknown.sum())  # one mean over the batch's unknowns
    changed = [a.copy() for a in args]
    changed[0][known] += 10
    changed[1][known] -= 3
    assert M.matting_loss_forward(*changed) == loss
    assert np.all(M.matting_loss_backward(*changed)[known] == 0)
    # the tolerance is propagation's: 0.0005 is known, 0.01 unknown
    assert M.unknown_mask([KNOWN_TOL / 2, 0.01, 1 - KNOWN_TOL / 2]).tolist() == [False, True, False]
    args[2][...] = 1.0
    assert M.matting_loss_forward(*args) == 0.0
    assert np.all(M.matting_loss_backward(*args) == 0)


def test_matting_loss_reference_shapes():
    args = loss_inputs(np.random.default_rng(4))
    args[4] = args[4][:, :1]
    with pytest.raises(ValueError, match=whole(
            "MattingLoss: the background (bottom[4]) must be 2 x 3 x 4 x 5, got (2, 1, 4, 5)")):
        M.matting_loss_forward(*args)


# ---- through pycaffe: C++ layer vs Python layer vs reference ------------------------------

def input_layer(names_shapes):
    tops = " ".join(f'top: "{n}"' for n, _ in names_shapes)
    shapes = " ".join("shape { " + " ".join(f"dim: {d}" for d in s) + " }" for _, s in names_shapes)
    return f'layer {{ name: "input" type: "Input" {tops} input_param {{ {shapes} }} }}\n'


def make_net(caffe, tmp_path, name, text):
    path = tmp_path / f"{name}.prototxt"
    path.write_text(f'name: "{name}"\nforce_backward: true\n' + text)
    return caffe.Net(str(path), caffe.TEST)


UNPOOL_CPP = 'type: "Unpooling" unpooling_param { out_height: %d out_width: %d }'
UNPOOL_PY = ('type: "Python" python_param { module: "dmpn.layers.unpooling" layer: "UnpoolingLayer" '
             'param_str: \'{"out_height": %d, "out_width": %d}\' }')


@pytest.mark.parametrize("with_ref,size", [(True, (0, 0)), (False, (0, 0)), (False, (7, 9))])
def test_unpooling_cpp_python_reference_agree(caffe, tmp_path, with_ref, size):
    rng = np.random.default_rng(5)
    H, W = (7, 9) if with_ref or size != (0, 0) else (8, 10)
    mask = pooled_mask(rng, 2, 3, H, W)
    v = rng.normal(size=mask.shape)
    shapes = [("v", v.shape), ("m", mask.shape)] + ([("ref", (1, 1, H, W))] if with_ref else [])
    bottoms = 'bottom: "v" bottom: "m"' + (' bottom: "ref"' if with_ref else "")
    g = rng.normal(size=(2, 3, H, W))
    ref_out = U.unpool_forward(v, mask, (H, W))
    ref_grad = U.unpool_backward(g, mask)
    for kind, layer in (("cpp", UNPOOL_CPP), ("py", UNPOOL_PY)):
        net = make_net(caffe, tmp_path, f"unpool_{kind}", input_layer(shapes)
                       + f'layer {{ name: "unpool" {layer % size} {bottoms} top: "out" }}\n')
        net.blobs["v"].data[...] = v
        net.blobs["m"].data[...] = mask
        net.forward()
        np.testing.assert_allclose(net.blobs["out"].data, ref_out, atol=1e-6, err_msg=kind)
        net.backward(out=g.astype(np.float32))
        np.testing.assert_allclose(net.blobs["v"].diff, ref_grad, atol=1e-6, err_msg=kind)


ROUND_TRIP = """
layer { name: "pool" type: "Pooling" bottom: "data" top: "pooled" top: "mask"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "unpool" %s bottom: "pooled" bottom: "mask" bottom: "data" top: "out" }
"""


@pytest.mark.parametrize("H,W", [(25, 25), (7, 9), (6, 8)])
def test_pooling_unpooling_round_trip(caffe, tmp_path, H, W):
    """BVLC's MAX Pooling (ceil mode: 25 -> 13) then our Unpooling sized by the pooled blob:
    each window's maximum goes back in place. Backward reaches the data only through the
    maxima: the reference bottom (the same blob, through a Split) adds nothing."""
    rng = np.random.default_rng(H * W)
    data = rng.normal(size=(2, 3, H, W))
    g = rng.normal(size=data.shape)
    hp, wp = (H + 1) // 2, (W + 1) // 2
    pad = np.full((2, 3, 2 * hp, 2 * wp), -np.inf)
    pad[:, :, :H, :W] = data
    blocks = pad.reshape(2, 3, hp, 2, wp, 2)
    is_max = (pad == blocks.max(axis=(3, 5)).repeat(2, 2).repeat(2, 3))[:, :, :H, :W]
    expected = np.where(is_max, data, 0.0)
    for kind, layer in (("cpp", UNPOOL_CPP % (0, 0)), ("py", UNPOOL_PY % (0, 0))):
        net = make_net(caffe, tmp_path, f"round_{kind}",
                       input_layer([("data", data.shape)]) + ROUND_TRIP % layer)
        net.blobs["data"].data[...] = data
        net.forward()
        assert net.blobs["pooled"].data.shape == (2, 3, hp, wp)
        np.testing.assert_allclose(net.blobs["out"].data, expected, atol=1e-6, err_msg=kind)
        net.backward(out=g.astype(np.float32))
        np.testing.assert_allclose(net.blobs["data"].diff, np.where(is_max, g, 0.0), atol=1e-6,
                                   err_msg=kind)


OVERLAP = """
layer { name: "pool" type: "Pooling" bottom: "data" top: "pooled" top: "mask"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "unpool" %s bottom: "pooled" bottom: "mask" bottom: "data" top: "out" }
"""


def test_overlapping_pooling_windows_unpool_to_the_sum(caffe, tmp_path):
    """MAX Pooling with kernel 3, stride 2: neighbouring windows share a row or a column, and
    a peak there is the maximum of up to 4 windows, whose mask entries all name it. Unpooling
    adds their values (each the peak) there; backward gives each of them the peak's gradient,
    and Pooling's backward adds those up at the peak. 9 x 10: windows from 0, 2, ... (4 x 5;
    the last column's clipped to 8-9)."""
    rng = np.random.default_rng(11)
    H, W = 9, 10
    data = rng.uniform(0, 1, (2, 2, H, W))
    # (y, x): peaks on a shared row and column (4 windows; (2, 8) with the clipped last column),
    # on a shared row (2) and in one window only, with no window holding two.
    peaks = {(2, 2): 4, (6, 6): 4, (2, 8): 4, (6, 1): 2, (5, 9): 1}
    for k, (y, x) in enumerate(peaks):
        data[:, :, y, x] = 10 + k + np.arange(4).reshape(2, 2)
    hp, wp = 4, 5
    rows = [set(range(2 * i, min(2 * i + 3, H))) for i in range(hp)]
    cols = [set(range(2 * j, min(2 * j + 3, W))) for j in range(wp)]
    holding = [[p for p in peaks if p[0] in r and p[1] in c] for r in rows for c in cols]
    assert max(map(len, holding)) == 1
    assert all(sum(p in h for h in holding) == k for p, k in peaks.items())
    g = rng.normal(size=data.shape)
    for kind, layer in (("cpp", UNPOOL_CPP % (0, 0)), ("py", UNPOOL_PY % (0, 0))):
        net = make_net(caffe, tmp_path, f"overlap_{kind}",
                       input_layer([("data", data.shape)]) + OVERLAP % layer)
        net.blobs["data"].data[...] = data
        net.forward()
        pooled, mask = net.blobs["pooled"].data.astype(np.float64), net.blobs["mask"].data.copy()
        assert pooled.shape == (2, 2, hp, wp)
        flat = mask.reshape(4, -1)
        assert all(len(np.unique(m)) < m.size for m in flat)   # repeated positions, in each plane
        out = net.blobs["out"].data
        np.testing.assert_allclose(out, U.unpool_forward(pooled, mask, (H, W)), rtol=1e-6, err_msg=kind)
        for (y, x), k in peaks.items():   # the sums, by hand
            assert np.count_nonzero(flat == y * W + x) == 4 * k, (kind, y, x)
            np.testing.assert_allclose(out[:, :, y, x], k * data[:, :, y, x], rtol=1e-6, err_msg=kind)
        net.backward(out=g.astype(np.float32))
        d_pooled = U.unpool_backward(g, mask)
        np.testing.assert_allclose(net.blobs["pooled"].diff, d_pooled, rtol=1e-6, atol=1e-6,
                                   err_msg=kind)
        # Pooling's backward, the adjoint of its gather: the same sum as Unpooling's forward
        np.testing.assert_allclose(net.blobs["data"].diff, U.unpool_forward(d_pooled, mask, (H, W)),
                                   rtol=1e-5, atol=1e-6, err_msg=kind)
        for (y, x), k in peaks.items():
            np.testing.assert_allclose(net.blobs["data"].diff[:, :, y, x], k * g[:, :, y, x],
                                       rtol=1e-5, err_msg=kind)


LOSS_CPP = 'type: "MattingLoss" matting_loss_param { alpha_weight: %g composition_weight: %g eps: %g }'
LOSS_PY = ('type: "Python" python_param { module: "dmpn.layers.matting_loss" layer: "MattingLossLayer" '
           'param_str: \'{"alpha_weight": %g, "composition_weight": %g, "eps": %g}\' }')
LOSS_BOTTOMS = ["pred", "alpha", "trimap", "fg", "bg", "image"]


@pytest.mark.parametrize("loss_weight,eps", [(1.0, 1e-12), (2.5, 1e-2)])
def test_matting_loss_cpp_python_reference_agree(caffe, tmp_path, loss_weight, eps):
    rng = np.random.default_rng(6)
    args = loss_inputs(rng, 2, 9, 11)
    params = {"alpha_weight": 0.3, "composition_weight": 0.8, "eps": eps}
    ref = M.matting_loss_forward(*args, **params)
    ref_grad = M.matting_loss_backward(*args, top_diff=loss_weight, **params)
    bottoms = " ".join(f'bottom: "{b}"' for b in LOSS_BOTTOMS)
    for kind, layer in (("cpp", LOSS_CPP), ("py", LOSS_PY)):
        net = make_net(caffe, tmp_path, f"loss_{kind}",
                       input_layer([(b, a.shape) for b, a in zip(LOSS_BOTTOMS, args)])
                       + f'layer {{ name: "loss" {layer % (0.3, 0.8, eps)} {bottoms} top: "loss" '
                       f'loss_weight: {loss_weight} }}\n')
        for b, a in zip(LOSS_BOTTOMS, args):
            net.blobs[b].data[...] = a
        out = net.forward()
        assert net.blobs["loss"].data.size == 1
        assert np.isclose(float(out["loss"]), ref, rtol=1e-5), kind
        net.backward()
        np.testing.assert_allclose(net.blobs["pred"].diff, ref_grad, atol=1e-6, err_msg=kind)
        for b in LOSS_BOTTOMS[1:]:
            assert not net.blobs[b].diff.any(), (kind, b)


def test_matting_loss_no_unknown_pixel_in_pycaffe(caffe, tmp_path):
    args = loss_inputs(np.random.default_rng(7), 1, 3, 4)
    args[2][...] = np.where(np.arange(12).reshape(1, 1, 3, 4) % 2, 1.0, 0.0)
    bottoms = " ".join(f'bottom: "{b}"' for b in LOSS_BOTTOMS)
    for kind, layer in (("cpp", LOSS_CPP), ("py", LOSS_PY)):
        net = make_net(caffe, tmp_path, f"none_{kind}",
                       input_layer([(b, a.shape) for b, a in zip(LOSS_BOTTOMS, args)])
                       + f'layer {{ name: "loss" {layer % (0.5, 0.5, 1e-12)} {bottoms} top: "loss" '
                       'loss_weight: 1 }\n')
        for b, a in zip(LOSS_BOTTOMS, args):
            net.blobs[b].data[...] = a
        assert float(net.forward()["loss"]) == 0.0
        net.blobs["pred"].diff[...] = 7
        net.backward()
        assert not net.blobs["pred"].diff.any(), kind


# ---- bad inputs ---------------------------------------------------------------------------

BAD_MASK_SCRIPT = """
import sys, numpy as np, caffe
caffe.set_mode_cpu()
net = caffe.Net(sys.argv[1], caffe.TEST)
net.blobs["m"].data[...] = 0
net.blobs["m"].data[1, 0, 2, 1] = float(sys.argv[2])
net.forward()
print("no error")
"""


@pytest.mark.parametrize("value,shown", [(2.5, "2.5"), (48, "48"), (-1, "-1")])
def test_bad_mask_through_pycaffe(caffe, tmp_path, value, shown):
    shapes = [("v", (2, 2, 3, 4)), ("m", (2, 2, 3, 4))]
    msg = (f"mask value {shown} at (n 1, c 0, y 2, x 1) is not an integer flat index in [0, 48) "
           "of the 6 x 8 output")
    # C++: a CHECK failure ends the process, so it runs in a child.
    path = tmp_path / "bad_cpp.prototxt"
    path.write_text(input_layer(shapes) + 'layer { name: "unpool" type: "Unpooling" bottom: "v" '
                    'bottom: "m" top: "out" }\n')
    out = subprocess.run([sys.executable, "-c", BAD_MASK_SCRIPT, str(path), str(value)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode != 0 and "no error" not in out.stdout
    assert "Unpooling layer 'unpool': " + msg in out.stderr, out.stderr[-2000:]
    # Python: an exception with the same message.
    net = make_net(caffe, tmp_path, "bad_py", input_layer(shapes)
                   + f'layer {{ name: "unpool" {UNPOOL_PY % (0, 0)} bottom: "v" bottom: "m" top: "out" }}\n')
    net.blobs["m"].data[...] = 0
    net.blobs["m"].data[1, 0, 2, 1] = value
    with pytest.raises(U.UnpoolingError, match=whole("Unpooling Python layer: " + msg)):
        net.forward()


@pytest.mark.parametrize("size,msg,py_error,py_end", [
    ((3000000000, 0), "out_height must be a whole number from 0 to 2147483647, got 3000000000",
     ValueError, ""),
    ((4097, 4096), "the output plane 4097 x 4096 has more than 2^24 = 16777216 pixels, and a "
                   "float32 mask (MAX Pooling's second top) cannot hold their indices exactly",
     U.UnpoolingError, ": use smaller images")])
def test_unpooling_output_too_large_is_an_error(caffe, tmp_path, size, msg, py_error, py_end):
    """Both flavours: out_height beyond a blob dimension's int (the C++ layer had wrapped it to a
    negative number and used twice the input size), and a plane whose indices a float32 mask
    cannot hold exactly (pycaffe's nets are float32); 4096 x 4096 still fits."""
    from test_cpp_layers import cpp_net_error
    shapes = [("v", (1, 1, 1, 2)), ("m", (1, 1, 1, 2))]
    for kind, layer in (("cpp", UNPOOL_CPP), ("py", UNPOOL_PY)):
        text = (input_layer(shapes) + f'layer {{ name: "unpool" {layer % size} bottom: "v" '
                'bottom: "m" top: "out" }\n')
        if kind == "cpp":
            err = cpp_net_error(tmp_path, text)
            assert "Unpooling layer 'unpool': " + msg in err, err[-2000:]
        else:
            with pytest.raises(py_error, match=whole("Unpooling Python layer: " + msg + py_end)):
                make_net(caffe, tmp_path, "large_py", text)
        fits = make_net(caffe, tmp_path, f"fits_{kind}", input_layer(shapes)
                        + f'layer {{ name: "unpool" {layer % (4096, 4096)} bottom: "v" '
                        'bottom: "m" top: "out" }\n')
        assert fits.blobs["out"].data.shape == (1, 1, 4096, 4096)


def test_bad_shapes_through_pycaffe(caffe, tmp_path):
    shapes = [("v", (2, 2, 3, 4)), ("m", (2, 2, 3, 5))]
    with pytest.raises(U.UnpoolingError, match=whole(
            "Unpooling Python layer: the mask (bottom[1]) is (2, 2, 3, 5), the pooled values "
            "(bottom[0]) are (2, 2, 3, 4); they must be the same N x C x h x w")):
        make_net(caffe, tmp_path, "shape_py", input_layer(shapes)
                 + f'layer {{ name: "unpool" {UNPOOL_PY % (0, 0)} bottom: "v" bottom: "m" top: "out" }}\n')
    args = loss_inputs(np.random.default_rng(8), 1, 3, 4)
    args[3] = args[3][:, :2]
    bottoms = " ".join(f'bottom: "{b}"' for b in LOSS_BOTTOMS)
    with pytest.raises(ValueError, match=whole("MattingLoss Python layer: the foreground (bottom[3]) "
                                               "must be 1 x 3 x 3 x 4, got (1, 2, 3, 4)")):
        make_net(caffe, tmp_path, "shape_loss_py",
                 input_layer([(b, a.shape) for b, a in zip(LOSS_BOTTOMS, args)])
                 + f'layer {{ name: "loss" {LOSS_PY % (0.5, 0.5, 1e-12)} {bottoms} top: "loss" loss_weight: 1 }}\n')


def loss_net_text(layer, args, name="loss"):
    bottoms = " ".join(f'bottom: "{b}"' for b in LOSS_BOTTOMS)
    return (input_layer([(b, a.shape) for b, a in zip(LOSS_BOTTOMS, args)])
            + f'layer {{ name: "{name}" {layer} {bottoms} top: "loss" loss_weight: 1 }}\n')


@pytest.mark.parametrize("param,value,shown", [
    ("eps", "NaN", "nan"), ("eps", "0", "0"), ("eps", "-1", "-1"), ("eps", "Infinity", "inf"),
    ("eps", '"1e-12"', "'1e-12'"), ("alpha_weight", "NaN", "nan"), ("alpha_weight", "-0.5", "-0.5"),
    ("composition_weight", "Infinity", "inf")])
def test_matting_loss_python_params_follow_the_cpp_rules(caffe, tmp_path, param, value, shown):
    # C++ (MattingLossLayer::LayerSetUp): eps finite > 0 (0 makes sqrt(0) the divisor of the
    # gradient where a residual is 0), the weights finite >= 0.
    args = loss_inputs(np.random.default_rng(9), 1, 3, 4)
    params = {"eps": "1e-12", "alpha_weight": "0.5", "composition_weight": "0.5", param: value}
    layer = ('type: "Python" python_param { module: "dmpn.layers.matting_loss" layer: "MattingLossLayer" '
             "param_str: '{" + ", ".join(f'"{k}": {v}' for k, v in params.items()) + "}' }")
    rule = "a finite number > 0" if param == "eps" else "a finite number >= 0"
    with pytest.raises(ValueError, match=whole(f"MattingLoss Python layer: {param} must be {rule}, "
                                               f"got {shown}")):
        make_net(caffe, tmp_path, "params_py", loss_net_text(layer, args))


@pytest.mark.parametrize("param,value", [("eps", "0"), ("eps", "inf"), ("alpha_weight", "inf"),
                                         ("composition_weight", "nan")])
def test_matting_loss_cpp_params(caffe, tmp_path, param, value):
    from test_cpp_layers import cpp_net_error
    args = loss_inputs(np.random.default_rng(9), 1, 3, 4)
    layer = (LOSS_CPP % (0.5, 0.5, 1e-12)).replace(f"{param}: ", f"{param}: {value} _was: ")
    layer = re.sub(r" _was: \S+", "", layer)
    rule = "a finite number > 0" if param == "eps" else "a finite number >= 0"
    err = cpp_net_error(tmp_path, loss_net_text(layer, args))
    assert f"MattingLoss layer 'loss': {param} must be {rule}, got {value}" in err, err[-2000:]


def test_matting_loss_trimap_outside_unit_range_is_an_error(caffe, tmp_path):
    # A trimap in 0-255 (128 unknown) would make every pixel known: the loss and its gradient
    # silently 0. The reference, the Python layer and the C++ layer refuse it alike.
    from test_cpp_layers import cpp_net_error
    args = loss_inputs(np.random.default_rng(10), 2, 3, 4)
    args[2][...] = 0.5
    args[2][1, 0, 2, 1] = 128
    msg = ("the trimap (bottom[2]) value 128 of item 1 at (2, 1) is not in [0, 1] "
           "(0 background, 1 foreground, between unknown)")
    with pytest.raises(ValueError, match=whole("MattingLoss: " + msg)):
        M.matting_loss_forward(*args)
    net = make_net(caffe, tmp_path, "trimap_py", loss_net_text(LOSS_PY % (0.5, 0.5, 1e-12), args))
    for b, a in zip(LOSS_BOTTOMS, args):
        net.blobs[b].data[...] = a
    with pytest.raises(ValueError, match=whole("MattingLoss Python layer: " + msg)):
        net.forward()
    err = cpp_net_error(tmp_path, loss_net_text(LOSS_CPP % (0.5, 0.5, 1e-12), args),
                        dict(zip(LOSS_BOTTOMS, args)))
    assert "MattingLoss layer 'loss': " + msg in err, err[-2000:]
    args[2][1, 0, 2, 1] = np.nan
    with pytest.raises(ValueError, match=whole("MattingLoss: " + msg.replace("128", "nan"))):
        M.matting_loss_forward(*args)
