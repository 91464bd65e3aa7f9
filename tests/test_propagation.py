"""The float64 reference (dmpn.propagation): exact gradients against finite differences, the
solve against a dense solve, and its errors."""
import numpy as np
import pytest

from dmpn import propagation as P


def random_system(rng, h, w, sigma=1.0, n_known=None):
    aff = np.exp(rng.normal(0, sigma, (2, h, w))) * P.edge_mask(h, w)
    t = np.full((h, w), 0.5)
    t[0, :] = 0
    t[-1, :] = 1
    t[h // 2, w // 3] = 128 / 255  # the trimap file's unknown value
    return aff, t


def dense_alpha(aff, t, c=0.8):
    """(L + C)^-1 C alpha* built entry by entry from the definitions (design note, section 1),
    independently of the module's system_matrix and constraint_terms."""
    h, w = t.shape
    a = np.zeros((h * w, h * w))
    rhs = np.zeros(h * w)
    for y in range(h):
        for x in range(w):
            i = y * w + x
            if t[y, x] <= 1e-3 or t[y, x] >= 1 - 1e-3:  # known: C = c, alpha* = 1 on foreground
                a[i, i] += c
                rhs[i] = c if t[y, x] >= 1 - 1e-3 else 0.0
            for k, (y2, x2) in enumerate(((y, x + 1), (y + 1, x))):
                if y2 < h and x2 < w:
                    j, e = y2 * w + x2, aff[k, y, x]
                    a[i, i] += e
                    a[j, j] += e
                    a[i, j] -= e
                    a[j, i] -= e
    return np.linalg.solve(a, rhs).reshape(t.shape)


def test_solve_matches_dense_and_is_a_matte():
    rng = np.random.default_rng(0)
    aff, t = random_system(rng, 9, 11, sigma=2.0)
    alpha = P.solve_alpha(aff, t)
    np.testing.assert_allclose(alpha, dense_alpha(aff, t), atol=1e-12)
    # A discrete maximum principle: a propagated matte stays in [0, 1].
    assert alpha.min() >= -1e-12 and alpha.max() <= 1 + 1e-12


def test_known_pixels_and_128_is_unknown():
    bg, fg = P.known_masks(np.array([0.0, 128 / 255, 0.5, 1.0, 1 / 255]))
    assert bg.tolist() == [True, False, False, False, False]
    assert fg.tolist() == [False, False, False, True, False]


def numeric_edge_gradient(aff, t, top, s=1, eps=1e-6):
    num = np.zeros_like(aff)
    for idx in zip(*np.nonzero(P.edge_mask(*aff.shape[1:]))):
        wp, wm = aff.copy(), aff.copy()
        wp[idx] += eps
        wm[idx] -= eps
        num[idx] = ((P.solve_alpha(wp, t, shrink=s) - P.solve_alpha(wm, t, shrink=s)) * top).sum() / (2 * eps)
    return num


@pytest.mark.parametrize("shrink", [1, 2, 3])
def test_solve_gradient_finite_differences(shrink):
    rng = np.random.default_rng(shrink)
    aff, t = random_system(rng, 7, 8)
    top = rng.normal(size=t.shape)
    _, grad = P.solve_alpha_backward(aff, t, top, shrink=shrink)
    num = numeric_edge_gradient(aff, t, top, shrink)
    np.testing.assert_allclose(grad, num, atol=1e-7 * max(1, np.abs(num).max()))
    assert np.abs(grad).max() > 1e-3  # not trivially zero
    mask = P.edge_mask(7, 8)
    assert np.all(grad[mask == 0] == 0)  # padding entries carry no gradient


def test_paper_eq4_gradient_is_not_the_exact_one():
    """The paper's Eq. 4 differentiates W_ji alone and omits D; the exact gradient differs."""
    rng = np.random.default_rng(5)
    aff, t = random_system(rng, 5, 6)
    top = rng.normal(size=t.shape)
    alpha, grad = P.solve_alpha_backward(aff, t, top)
    g = P.Propagation(aff, t).lu.solve(top.ravel()).reshape(t.shape)
    eq4 = np.zeros_like(aff)  # dE/dW_ji = g_i alpha_j only
    eq4[0, :, :-1] = g[:, :-1] * alpha[:, 1:]
    eq4[1, :-1, :] = g[:-1, :] * alpha[1:, :]
    assert np.abs(eq4 - grad).max() > 1e-2


def test_affinity_exp_gradients_and_clipping():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(3, 5, 6))
    theta = rng.normal(size=(2, 3))
    b = 0.3
    top = rng.normal(size=(2, 5, 6))
    for bound in (20.0, 1.0):
        w = P.affinity_exp_forward(f, theta, b, bound)
        assert w.max() <= np.exp(bound) + 1e-9
        assert np.all(w[0, :, -1] == 0) and np.all(w[1, -1, :] == 0)
        df, dth, db = P.affinity_exp_backward(f, theta, b, top, bound)

        def energy(f_, th_, b_):
            return (P.affinity_exp_forward(f_, th_, b_, bound) * top).sum()

        eps = 1e-6
        for arr, grad in ((f, df), (theta, dth)):
            num = np.zeros_like(arr)
            for i in np.ndindex(arr.shape):
                old = arr[i]
                arr[i] = old + eps
                ep = energy(f, theta, b)
                arr[i] = old - eps
                em = energy(f, theta, b)
                arr[i] = old
                num[i] = (ep - em) / (2 * eps)
            np.testing.assert_allclose(grad, num, atol=1e-5)
        np.testing.assert_allclose(db, (energy(f, theta, b + eps) - energy(f, theta, b - eps)) / (2 * eps), atol=1e-5)


def test_affinity_exp_is_the_pair_convolution():
    """exp(theta . [f_i; f_j] + b): the paper's 1 x 1 x 2T convolution of the pair features."""
    rng = np.random.default_rng(2)
    f = rng.normal(size=(4, 3, 3))
    theta = rng.normal(size=(2, 4))
    w = P.affinity_exp_forward(f, theta, 0.1)
    pair = np.concatenate([f[:, 1, 0], f[:, 1, 1]])  # pixel (1,0) and its right neighbour
    assert np.isclose(w[0, 1, 0], np.exp(theta.ravel() @ pair + 0.1))
    pair = np.concatenate([f[:, 0, 2], f[:, 1, 2]])  # pixel (0,2) and the one below it
    assert np.isclose(w[1, 0, 2], np.exp(theta.ravel() @ pair + 0.1))


def test_errors_name_the_problem():
    rng = np.random.default_rng(3)
    aff, t = random_system(rng, 4, 4)
    with pytest.raises(P.PropagationError, match="no known pixel"):
        P.solve_alpha(aff, np.full((4, 4), 0.5))
    bad = aff.copy()
    bad[0, 1, 1] = np.nan
    with pytest.raises(P.PropagationError, match="non-finite"):
        P.solve_alpha(bad, t)
    with pytest.raises(P.PropagationError, match="negative"):
        P.solve_alpha(-aff, t)
    padded = aff.copy()
    padded[0, :, -1] = np.nan  # no neighbour there: not part of the system (as in C++)
    padded[1, -1, :] = -1
    assert np.array_equal(P.solve_alpha(padded, t), P.solve_alpha(aff, t))


def test_trimap_outside_unit_range_is_an_error():
    aff, t = random_system(np.random.default_rng(4), 5, 6)
    t = t * 255  # a 0-255 trimap fed by mistake would make 128 known foreground
    with pytest.raises(P.PropagationError, match=r"trimap value 127.5 at \(1, 0\) is not in \[0, 1\]"):
        P.solve_alpha(aff, t)


@pytest.mark.parametrize("shrink", [1, 2])
def test_region_cut_off_by_zero_affinities_is_an_error(shrink):
    # A 2 x 2 unknown region at rows / columns 4-5 whose every edge to the rest is 0: alpha is
    # undefined there (scipy's LU would only say "singular"); the error names its pixel.
    aff, t = random_system(np.random.default_rng(5), 10, 10)
    aff[0, 4:6, 3] = aff[0, 4:6, 5] = 0
    aff[1, 3, 4:6] = aff[1, 5, 4:6] = 0
    with pytest.raises(P.PropagationError, match=r"pixel \(4, 4\).* not connected to any known"):
        P.solve_alpha(aff, t, shrink=shrink)
    # Zero edges that cut nothing off are fine: the same region with one edge back.
    aff[0, 4, 5] = 0.3
    assert np.allclose(P.solve_alpha(aff, t), dense_alpha(aff, t))


def test_handcrafted_affinity():
    im = np.zeros((3, 4, 3))
    im[:, 2:] = 1.0
    w = P.handcrafted_affinity(im, sigma=0.5)
    assert w[0, 0, 0] == 1.0 and np.isclose(w[0, 0, 1], np.exp(-3 / 0.25))
    assert np.all(w[0, :, -1] == 0) and np.all(w[1, -1, :] == 0)


@pytest.mark.parametrize("sigma", [0.3, 0.1, None])
def test_handcrafted_affinity_brute_force(sigma):
    """Every edge's weight by the documented formula w_ij = exp(-||I_i - I_j||^2 / sigma^2)
    (the function's docstring; README "Baselines": exp(-||I_i - I_j||^2 / sigma^2)), computed
    with explicit loops over pixels on a small random colour image, both channels: channel 0
    the edge (y, x)-(y, x+1), channel 1 the edge (y, x)-(y+1, x) (README "Blob layout"), and 0
    for the last column / last row, which have no such neighbour. sigma None: the default 0.1."""
    rng = np.random.default_rng(11)
    H, W = 5, 7
    # colours close enough that exp() stays well above 0 at sigma 0.1 (differences <= 0.1)
    im = 0.45 + 0.1 * rng.random((H, W, 3))
    s = 0.1 if sigma is None else sigma
    want = np.full((2, H, W), -1.0)
    for y in range(H):
        for x in range(W):
            for k, (y2, x2) in enumerate(((y, x + 1), (y + 1, x))):
                if y2 >= H or x2 >= W:
                    want[k, y, x] = 0.0
                    continue
                d2 = sum((im[y, x, ch] - im[y2, x2, ch]) ** 2 for ch in range(3))
                want[k, y, x] = np.exp(-d2 / (s * s))
    w = P.handcrafted_affinity(im) if sigma is None else P.handcrafted_affinity(im, sigma=sigma)
    assert w.shape == (2, H, W)
    assert np.all(want[0, :, :-1] > 1e-2) and np.all(want[1, :-1, :] > 1e-2)  # no edge underflowed: every weight is informative
    np.testing.assert_allclose(w[0], want[0], rtol=1e-12, atol=0)
    np.testing.assert_allclose(w[1], want[1], rtol=1e-12, atol=0)
    assert np.all(w[0, :, -1] == 0) and np.all(w[1, -1, :] == 0)
    # a grey image (H x W) is one channel: the same formula with the single difference
    grey = im[..., 0]
    wg = P.handcrafted_affinity(grey, sigma=s)
    for y in range(H):
        for x in range(W - 1):
            assert wg[0, y, x] == pytest.approx(np.exp(-(grey[y, x] - grey[y, x + 1]) ** 2 / s ** 2), rel=1e-12)
    for y in range(H - 1):
        for x in range(W):
            assert wg[1, y, x] == pytest.approx(np.exp(-(grey[y, x] - grey[y + 1, x]) ** 2 / s ** 2), rel=1e-12)
