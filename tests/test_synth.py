"""Synthetic originals, compositing, rotation, trimaps and default backgrounds."""

import numpy as np
import pytest

from dmpn import compose
from dmpn.backgrounds import default_backgrounds, random_crop_resize
from dmpn.synth import KINDS, generate_originals, make_original, trimap_from_alpha, write_originals


@pytest.mark.parametrize("kind", KINDS)
def test_kind_is_a_hard_matting_case(kind):
    o = make_original(3, 0, (96, 128), kind=kind)
    assert o.kind == kind and o.name.endswith(kind)
    assert o.image.shape == (96, 128, 3) and o.fg.shape == (96, 128, 3)
    assert o.alpha.shape == (96, 128) and o.trimap.shape == (96, 128)
    for a in (o.image, o.alpha, o.fg):
        assert a.min() >= 0.0 and a.max() <= 1.0 and np.all(np.isfinite(a))
    frac = (o.alpha > 0) & (o.alpha < 1)
    assert frac.mean() > 0.01, "soft alpha expected"
    assert (o.alpha == 0).mean() > 0.2, "some pure background expected"
    assert set(np.unique(o.trimap)) <= {0, 128, 255}
    unknown = o.trimap == 128
    assert unknown.any()
    assert unknown[frac].all(), "every fractional pixel must be unknown"
    assert np.all(o.alpha[o.trimap == 255] == 1) and np.all(o.alpha[o.trimap == 0] == 0)
    # every kind has definite foreground in its trimap: propagation needs both sides known
    assert (o.trimap == 255).any() and (o.trimap == 0).any()
    # the image is a composite of the foreground with alpha
    solid = o.alpha == 1
    np.testing.assert_allclose(o.image[solid], o.fg[solid])


def test_fine_structures_and_low_contrast():
    hair = make_original(0, 0, (128, 128), kind="hair")
    # thin strands: many faint fractional pixels
    thin = (hair.alpha > 0) & (hair.alpha < 0.9)
    assert thin.sum() > 300
    low = make_original(0, 5, (128, 128), kind="lowcontrast")
    inside = low.alpha == 1
    outside = low.alpha == 0
    # foreground colours close to the backdrop's (low contrast)
    diff = np.abs(low.image[inside].mean(0) - low.image[outside].mean(0)).max()
    assert diff < 0.35


def test_seeded_and_deterministic():
    a = make_original(7, 2, (64, 80))
    b = make_original(7, 2, (64, 80))
    c = make_original(8, 2, (64, 80))
    for x, y in ((a.image, b.image), (a.alpha, b.alpha), (a.fg, b.fg), (a.trimap, b.trimap)):
        assert np.array_equal(x, y)
    assert not np.array_equal(a.alpha, c.alpha)
    kinds = [o.kind for o in generate_originals(len(KINDS), (32, 32), seed=1)]
    assert sorted(kinds) == sorted(KINDS)
    with pytest.raises(ValueError):
        make_original(0, 0, (8, 8))
    with pytest.raises(ValueError):
        make_original(0, 0, (32, 32), kind="nope")


def test_any_size():
    for size in ((16, 16), (40, 200), (301, 97)):
        o = make_original(0, 1, size)
        assert o.alpha.shape == size


def test_trimap_from_alpha_band():
    alpha = np.zeros((40, 40))
    alpha[:, 20:] = 1.0  # hard edge: no fractional pixel, still an unknown band
    tri = trimap_from_alpha(alpha, 3)
    row = tri[20]
    assert row[0] == 0 and row[-1] == 255
    assert (row == 128).sum() == 6  # 3 px on each side
    assert tri[0, 0] == 0 and tri[0, -1] == 255  # image border is no class boundary


def test_write_originals_layout(tmp_path):
    from dmpn.imageio import read_alpha, read_trimap

    names = write_originals(tmp_path, 3, (32, 48), seed=2)
    assert len(names) == 3
    for sub in ("image", "alpha", "trimap", "fg"):
        assert sorted(p.stem for p in (tmp_path / sub).iterdir()) == sorted(names)
    o = make_original(2, 0, (32, 48))
    assert np.abs(read_alpha(tmp_path / "alpha" / f"{o.name}.png") - o.alpha).max() <= 0.5 / 255 + 1e-9
    assert np.array_equal(read_trimap(tmp_path / "trimap" / f"{o.name}.png"), o.trimap)


def test_rotation_angles():
    assert compose.rotation_angles(1) == [0.0]
    assert compose.rotation_angles(2) == [0.0, 15.0]
    assert compose.rotation_angles(3) == [0.0, 15.0, -15.0]
    assert compose.rotation_angles(5, 10) == [0.0, 5.0, -5.0, 10.0, -10.0]


def test_rotation_keeps_trimap_consistent_with_alpha():
    o = make_original(0, 1, (80, 100), kind="fur")
    fg, alpha, tri = compose.rotate_original(o.fg, o.alpha, o.trimap, 15.0)
    assert fg.shape == o.fg.shape and alpha.shape == o.alpha.shape and tri.dtype == np.uint8
    assert set(np.unique(tri)) <= {0, 128, 255}
    assert alpha[tri == 255].min() > 0.999
    assert alpha[tri == 0].max() < 0.001
    frac = (alpha > 0.001) & (alpha < 0.999)
    assert np.all(tri[frac] == 128)
    # the unknown band can only grow (up to border effects)
    assert (tri == 128).sum() >= 0.9 * (o.trimap == 128).sum()
    same = compose.rotate_original(o.fg, o.alpha, o.trimap, 0.0)
    assert same[0] is o.fg and same[2] is o.trimap


def test_composite_and_pack():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (5, 6), dtype=np.uint8)
    f = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    c = compose.composite_uint8(a, f, b)
    ref = a[..., None] / 255.0 * f + (1 - a[..., None] / 255.0) * b
    assert np.abs(c - ref).max() <= 0.5 + 1e-4
    t = np.full((5, 6), 128, np.uint8)
    item = compose.pack_item(c, t, a, f, b)
    assert item.shape == (11, 5, 6) and item.dtype == np.uint8
    assert np.array_equal(item[0:3].transpose(1, 2, 0), c)
    assert np.array_equal(item[3], t) and np.array_equal(item[4], a)
    assert np.array_equal(item[5:8].transpose(1, 2, 0), f)
    assert np.array_equal(item[8:11].transpose(1, 2, 0), b)
    assert compose.CHANNELS[3] == "trimap" and len(compose.CHANNELS) == 11


def test_resize_original_trimap_nearest():
    o = make_original(0, 2, (60, 80))
    img, alpha, fg, tri = compose.resize_original(o.image, o.alpha, o.fg, o.trimap, (30, 40))
    assert img.shape == (30, 40, 3) and alpha.shape == (30, 40) and fg.shape == (30, 40, 3)
    assert set(np.unique(tri)) <= {0, 128, 255}


def test_default_backgrounds_need_no_download():
    pool = default_backgrounds()
    assert len(pool) >= 5
    img = pool.image(0)
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8
    s1 = pool.sample(1, (50, 70), np.random.default_rng([1, 2]))
    s2 = pool.sample(1, (50, 70), np.random.default_rng([1, 2]))
    s3 = pool.sample(1, (50, 70), np.random.default_rng([1, 3]))
    assert s1.shape == (50, 70, 3) and np.array_equal(s1, s2) and not np.array_equal(s1, s3)
    assert s1.dtype == np.uint8
    # small images are upsampled, odd aspect ratios handled
    tiny = np.random.default_rng(0).integers(0, 256, (7, 30, 3), dtype=np.uint8)
    assert random_crop_resize(tiny, (40, 20), np.random.default_rng(0)).shape == (40, 20, 3)
