"""dmpn.metrics against hand-computed values, including the cases where popular Python ports of
Deep Image Matting's MATLAB evaluation code go wrong (design note, section 4)."""
import math
from collections import deque

import numpy as np
import pytest

from dmpn import metrics as M

U8 = 1.0 / 255.0


def unknown(shape):
    return np.full(shape, 128, dtype=np.uint8)


# ----------------------------------------------------------------------------- SAD / MSE
def test_sad_mse_hand_values_only_unknown_region():
    pred = np.array([[0.0, 0.5, 1.0], [0.25, 1.0, 0.0]])
    gt = np.array([[0.0, 1.0, 0.5], [0.0, 1.0, 1.0]])
    tri = np.array([[128, 128, 128], [0, 255, 128]], dtype=np.uint8)
    # unknown: (0,0) 0, (0,1) 0.5, (0,2) 0.5, (1,2) 1.0 -> sum 2.0; squares 0.25+0.25+1 = 1.5 over 4
    assert M.sad(pred, gt, tri) == pytest.approx(2.0 / 1000, abs=1e-15)
    assert M.mse(pred, gt, tri) == pytest.approx(1.5 / 4, abs=1e-15)
    # a port summing over the whole image would add the known pixels' 0.25 (SAD) / 0.0625 (MSE)


def test_sad_mse_8bit_inputs_equal_float():
    pred8 = np.array([[10, 200], [255, 0]], dtype=np.uint8)
    gt8 = np.array([[0, 255], [255, 3]], dtype=np.uint8)
    tri = unknown((2, 2))
    assert M.sad(pred8, gt8, tri) == pytest.approx((10 + 55 + 0 + 3) / 255 / 1000)
    assert M.sad(pred8, gt8, tri) == pytest.approx(M.sad(pred8 / 255, gt8 / 255, tri))
    assert M.mse(pred8, gt8, tri) == pytest.approx((10 ** 2 + 55 ** 2 + 3 ** 2) / 255 ** 2 / 4)


def test_no_unknown_pixel_mse_nan_others_zero():
    pred = np.array([[0.3, 0.7]])
    gt = np.array([[0.0, 1.0]])
    tri = np.array([[0, 255]], dtype=np.uint8)
    assert math.isnan(M.mse(pred, gt, tri))
    e = M.all_errors(pred, gt, tri)
    assert e["sad"] == 0.0 and e["grad"] == 0.0 and e["conn"] == 0.0 and math.isnan(e["mse"])


def test_float_trimap_and_force_known():
    tri8 = np.array([[0, 128, 255]], dtype=np.uint8)
    tri01 = np.array([[0.0, 0.5, 1.0]])
    assert np.array_equal(M.unknown_mask(tri8), [[False, True, False]])
    assert np.array_equal(M.unknown_mask(tri01), [[False, True, False]])
    p = np.array([[0.4, 0.4, 0.4]])
    assert np.array_equal(M.force_known(p, tri8), [[0.0, 0.4, 1.0]])
    assert np.array_equal(M.force_known(p, tri01), [[0.0, 0.4, 1.0]])


def test_bad_arrays_raise():
    with pytest.raises(ValueError, match="shape mismatch"):
        M.sad(np.zeros((2, 2)), np.zeros((2, 3)), unknown((2, 2)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.sad(np.full((2, 2), 2.0), np.zeros((2, 2)), unknown((2, 2)))
    with pytest.raises(ValueError, match="2-D"):
        M.mse(np.zeros((2, 2, 3)), np.zeros((2, 2, 3)), unknown((2, 2)))


# ----------------------------------------------------------------------------- gradient
def _matlab_kernel(sigma=1.4):
    """gaussgradient.m, line by line (loops, 1-based indices)."""
    epsilon = 1e-2
    halfsize = math.ceil(sigma * math.sqrt(-2 * math.log(math.sqrt(2 * math.pi) * sigma * epsilon)))
    size = 2 * halfsize + 1
    gauss = lambda x: math.exp(-x ** 2 / (2 * sigma ** 2)) / (sigma * math.sqrt(2 * math.pi))
    dgauss = lambda x: -x * gauss(x) / sigma ** 2
    hx = np.zeros((size, size))
    for i in range(1, size + 1):
        for j in range(1, size + 1):
            u = (i - halfsize - 1, j - halfsize - 1)
            hx[i - 1, j - 1] = gauss(u[0]) * dgauss(u[1])
    hx = hx / math.sqrt(np.sum(np.abs(hx) * np.abs(hx)))
    return hx, hx.T


def _imfilter_replicate_conv(im, k):
    """imfilter(im, k, 'replicate', 'conv') with explicit loops over the kernel."""
    h = k.shape[0] // 2
    pad = np.pad(im, h, mode="edge")
    out = np.zeros_like(im)
    H, W = im.shape
    for a in range(-h, h + 1):
        for b in range(-h, h + 1):
            # convolution: out(y, x) = sum k(a, b) im(y - a, x - b)
            out += k[a + h, b + h] * pad[h - a:h - a + H, h - b:h - b + W]
    return out


def test_gradient_kernel_is_gaussgradient_m():
    hx, hy = M.gauss_gradient_kernel(1.4)
    rhx, rhy = _matlab_kernel(1.4)
    assert hx.shape == (9, 9)  # h = 4
    np.testing.assert_allclose(hx, rhx, rtol=0, atol=1e-15)
    np.testing.assert_allclose(hy, rhy, rtol=0, atol=1e-15)
    assert np.sum(hx * hx) == pytest.approx(1.0)
    # derivative along x (columns): centre row antisymmetric, negative weights on the right
    assert hx[4, 5] < 0 < hx[4, 3]


def test_gauss_gradient_equals_2d_replicate_convolution():
    rng = np.random.default_rng(1)
    im = rng.random((13, 17))
    gx, gy = M.gauss_gradient(im)
    hx, hy = _matlab_kernel()
    np.testing.assert_allclose(gx, _imfilter_replicate_conv(im, hx), atol=1e-13)
    np.testing.assert_allclose(gy, _imfilter_replicate_conv(im, hy), atol=1e-13)
    # convolution orientation: an increasing ramp along x has a positive x derivative
    ramp = np.tile(np.arange(20.0), (12, 1))
    gx, gy = M.gauss_gradient(ramp)
    assert gx[6, 10] > 0 and abs(gy[6, 10]) < 1e-12


def test_grad_hand_value_vertical_step():
    # gt: vertical step 0 | 1 between columns 4 and 5 of a 6 x 10 image; pred constant 0.
    # mat2gray(pred) = 0 -> no gradient. For gt, rows are constant, so after the vertical
    # smoothing (sum of the normalised Gaussian, Sg) gx(c) = Sg * sum over k with c - k >= 5 of
    # dgn(k), gy = 0; the error is the sum of gx^2 over the unknown pixels / 1000. Only rows 1-4
    # x columns 3-6 are unknown: gx(c) is non-zero in columns 1-8, so the known pixels (rows 0
    # and 5, columns 1, 2, 7, 8) differ in gradient between pred and gt and must not count
    # (compute_gradient_loss.m sums over trimap == 128 only).
    sigma, h = 1.4, 4
    x = np.arange(-h, h + 1.0)
    g = np.exp(-x ** 2 / (2 * sigma ** 2))
    dg = -x * g
    gn, dgn = g / np.linalg.norm(g), dg / np.linalg.norm(dg)
    Sg = gn.sum()
    H, W = 6, 10

    def gx(c):  # gt's x derivative in column c (replicated borders), the same in every row
        return Sg * sum(dgn[k + h] for k in range(-h, h + 1) if min(max(c - k, 0), W - 1) >= 5)

    rows, cols = range(1, 5), range(3, 7)
    expected = sum(gx(c) ** 2 for _ in rows for c in cols)
    whole_image = sum(gx(c) ** 2 for _ in range(H) for c in range(W))
    assert whole_image > 1.2 * expected  # the known pixels do carry gradient differences
    gt = np.zeros((H, W))
    gt[:, 5:] = 1.0
    tri = np.where(gt > 0, 255, 0).astype(np.uint8)  # a consistent trimap: 0 left, 255 right
    tri[1:5, 3:7] = 128
    assert M.grad(np.zeros((H, W)), gt, tri) == pytest.approx(expected / 1000, rel=1e-12)
    # an all-unknown trimap scores the whole image: the known band is what made the difference
    assert M.grad(np.zeros((H, W)), gt, unknown((H, W))) == pytest.approx(whole_image / 1000, rel=1e-12)
    assert M.grad(gt, gt, unknown((H, W))) == 0.0


def test_grad_uses_min_max_not_255_for_predictions_not_spanning_full_range():
    # pred = 51/255 + 0.6 gt spans 51..204, not 0..255: mat2gray maps it back onto gt exactly,
    # so the gradient error is 0; the widely copied port (divide by 255) reports a large error.
    rng = np.random.default_rng(2)
    gt8 = np.zeros((20, 20), dtype=np.int64)
    gt8[5:15, 5:15] = 255
    gt8[8:12, :] = rng.integers(0, 256, (4, 20))
    gt8[0, 0], gt8[-1, -1] = 0, 255
    gt = gt8 / 255.0
    pred = (51 + gt8 * 153 / 255) / 255.0
    tri = unknown(gt.shape)
    assert M.grad(pred, gt, tri) == pytest.approx(0.0, abs=1e-20)
    gx, gy = M.gauss_gradient(pred)
    tx, ty = M.gauss_gradient(gt)
    port = np.sum((np.hypot(gx, gy) - np.hypot(tx, ty)) ** 2) / 1000
    assert port > 1e-4
    # min-max of a constant prediction is all zeros (mat2gray), no division by zero
    assert np.array_equal(M.mat2gray(np.full((3, 3), 0.7)), np.zeros((3, 3)))
    assert M.grad(np.full((6, 10), 0.7), np.zeros((6, 10)), unknown((6, 10))) == 0.0


# ----------------------------------------------------------------------------- connectivity
def test_conn_equal_mattes_zero():
    rng = np.random.default_rng(3)
    a = np.round(rng.random((15, 12)) * 255) / 255
    assert M.conn(a, a, unknown(a.shape)) == 0.0


def test_conn_alpha_exactly_on_threshold_153():
    # gt [1, 1, 0, 0], pred [1, 153/255, 0, 0]. 153/255 >= 0.6 holds exactly, so pixel 1 is in
    # Omega up to t = 0.6 and first outside at t = 0.7: level 0.6. pred d = 0 -> phi 1;
    # gt d = 0.4 -> phi 0.6; background pixels: level 0, d = 0 -> phi 1. Conn = 0.4 / 1000.
    # (np.arange(0, 1.1, 0.1)[6] = 0.6000000000000001 would drop the pixel at t = 0.6: level 0.5,
    # Conn 0.5 / 1000.)
    assert 153 / 255 >= 6 / 10 and not 153 / 255 >= np.arange(0, 1.1, 0.1)[6]
    gt = np.array([[1.0, 1.0, 0.0, 0.0]])
    pred = np.array([[1.0, 153 * U8, 0.0, 0.0]])
    assert M.conn(pred, gt, unknown(gt.shape)) == pytest.approx(0.4 / 1000, abs=1e-15)


def test_conn_other_exact_thresholds():
    # alpha = 51/255 = 0.2 and 204/255 = 0.8 (both exact thresholds) against gt 1
    for v, level in ((51, 0.2), (102, 0.4), (204, 0.8)):
        gt = np.array([[1.0, 1.0]])
        pred = np.array([[1.0, v * U8]])
        # pixel 1: level = v/255 exactly; pred d = 0 -> 1; gt d = 1 - level -> phi = level
        assert M.conn(pred, gt, unknown(gt.shape)) == pytest.approx((1 - level) / 1000, abs=1e-15)


def test_conn_background_larger_than_largest_component():
    # gt [1, 1, 0, 0, 0, 0], pred [1, 166/255, 0, 0, 0, 0]: the background (4 pixels) is larger
    # than the only component (2 pixels) but is never Omega. Pixel 1 is in Omega for t <= 0.6,
    # level 0.6: pred d = 0.051 < 0.15 -> phi 1, gt d = 0.4 -> phi 0.6; all else phi 1.
    # Conn = 0.4 / 1000. (The port that takes the background as Omega gives 0.349 / 1000.)
    gt = np.array([[1.0, 1.0, 0, 0, 0, 0]])
    pred = np.array([[1.0, 166 * U8, 0, 0, 0, 0]])
    assert M.conn(pred, gt, unknown(gt.shape)) == pytest.approx(0.4 / 1000, abs=1e-15)


def test_conn_tie_goes_to_first_component_in_column_major_order():
    # Two one-pixel components A = (0, 2) and B = (1, 0). Row-major meets A first,
    # column-major (MATLAB's bwconncomp) meets B first, so Omega = B at every threshold.
    # A (pred 74/255, gt 1) is outside Omega at t = 0.1: level 0; pred d = 0.2902 -> phi 0.7098,
    # gt d = 1 -> phi 0: Conn = (1 - 74/255) / 1000. (Picking A: level 0.2, Conn = 0.8 / 1000.)
    gt = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    pred = np.array([[0.0, 0.0, 74 * U8], [1.0, 0.0, 0.0]])
    assert M.conn(pred, gt, unknown(gt.shape)) == pytest.approx((1 - 74 * U8) / 1000, abs=1e-15)
    omega = M.largest_component(gt > 0)
    assert np.array_equal(omega, [[False, False, False], [True, False, False]])


def test_largest_component_tie_bigger_components_and_4_connectivity():
    mask = np.array([[1, 1, 0, 0],
                     [0, 0, 0, 1],
                     [0, 1, 0, 1],
                     [0, 1, 0, 0]], dtype=bool)
    # three 2-pixel components; column-major first pixel: (0,0) index 0 -> the top-left pair
    assert np.array_equal(M.largest_component(mask), np.array([[1, 1, 0, 0], [0] * 4, [0] * 4, [0] * 4], bool))
    # diagonal pixels are not 4-connected
    diag = np.eye(3, dtype=bool)
    assert M.largest_component(diag).sum() == 1
    assert not M.largest_component(np.zeros((3, 3), bool)).any()


def test_conn_empty_intersection():
    # pred is 0 everywhere: (p >= t) & (g >= t) is empty at every threshold -> Omega empty, no
    # crash; every pixel has level 0; phi(g) = [0.5, 1, 0, 1] (0.1 < 0.15), phi(p) = 1.
    gt = np.array([[0.5, 0.1], [1.0, 0.0]])
    pred = np.zeros((2, 2))
    assert M.conn(pred, gt, unknown(gt.shape)) == pytest.approx(1.5 / 1000, abs=1e-15)
    # empty from t = 0.4 on: gt [0.35, 1] pred [0.35, 0.3]; both pixels one component for t<=0.3,
    # so level 0.3 for both: pred d = [0.05, 0] -> 1, 1; gt d = [0.05, 0.7] -> 1, 0.3 -> 0.7
    gt = np.array([[0.35, 1.0]])
    pred = np.array([[0.35, 0.3]])
    assert M.conn(pred, gt, unknown(gt.shape)) == pytest.approx(0.7 / 1000, abs=1e-12)


def _matlab_conn(pred8, gt8, trimap, step=0.1):
    """compute_connectivity_error.m transliterated, with a column-major BFS standing in for
    bwconncomp(..., 4) and MATLAB's max (first maximum)."""
    pred = pred8 / 255.0
    target = gt8 / 255.0
    H, W = pred.shape
    n = int(round(1 / step))
    thresh = [k / n for k in range(n + 1)]
    l_map = -np.ones((H, W))
    for ii in range(1, n + 1):
        mask = (pred >= thresh[ii]) & (target >= thresh[ii])
        seen = np.zeros((H, W), bool)
        comps = []
        for x in range(W):           # column-major scan
            for y in range(H):
                if mask[y, x] and not seen[y, x]:
                    comp, q = [], deque([(y, x)])
                    seen[y, x] = True
                    while q:
                        cy, cx = q.popleft()
                        comp.append((cy, cx))
                        for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                            ny, nx = cy + dy, cx + dx
                            if 0 <= ny < H and 0 <= nx < W and mask[ny, nx] and not seen[ny, nx]:
                                seen[ny, nx] = True
                                q.append((ny, nx))
                    comps.append(comp)
        omega = np.zeros((H, W))
        if comps:
            sizes = [len(c) for c in comps]
            for (y, x) in comps[sizes.index(max(sizes))]:
                omega[y, x] = 1
        flag = (l_map == -1) & (omega == 0)
        l_map[flag] = thresh[ii - 1]
    l_map[l_map == -1] = 1
    pd, td = pred - l_map, target - l_map
    pphi = 1 - pd * (pd >= 0.15)
    tphi = 1 - td * (td >= 0.15)
    return np.sum(np.abs(pphi - tphi) * (trimap == 128)) / 1000


def test_conn_matches_matlab_transliteration_on_random_mattes():
    rng = np.random.default_rng(4)
    for trial in range(6):
        H, W = rng.integers(4, 12, size=2)
        gt8 = rng.choice([0, 51, 102, 153, 200, 204, 255], size=(H, W))
        pred8 = np.clip(gt8 + rng.integers(-60, 60, size=(H, W)), 0, 255)
        if trial % 2:
            pred8 = np.where(rng.random((H, W)) < 0.3, 153, pred8)
        tri = np.where(rng.random((H, W)) < 0.7, 128, 0).astype(np.uint8)
        assert M.conn(pred8 / 255, gt8 / 255, tri) == pytest.approx(_matlab_conn(pred8, gt8, tri), abs=1e-12)


def test_all_errors_keys_at_2000x2000():
    # A large image through every metric (speed belongs to benchmarks, not to a timed test).
    rng = np.random.default_rng(5)
    H = W = 2000
    yy, xx = np.mgrid[:H, :W]
    gt = np.round(np.clip((xx - 800) / 400 + 0.1 * np.sin(yy / 30), 0, 1) * 255) / 255
    pred = np.round(np.clip(gt + rng.normal(0, 0.05, gt.shape), 0, 1) * 255) / 255
    tri = np.full((H, W), 128, np.uint8)
    tri[gt == 0] = 0
    tri[gt == 1] = 255
    e = M.all_errors(pred, gt, tri)
    assert set(e) == {"sad", "mse", "grad", "conn"}
    assert all(np.isfinite(v) and v > 0 for v in e.values())
