"""dmpn.imageio: what matting data looks like on disk is read as what it means.

16-bit PNGs with colour or alpha keep all 16 bits (Pillow would keep 8), and a matte or trimap
stored as an alpha channel is read from that channel; ambiguous files are refused by name."""
import numpy as np
import png
import pytest
from skimage import io as skio

from dmpn.imageio import InputError, read_alpha, read_image, read_trimap


def write_png16(path, arr):
    """A 16-bit PNG of HxWxC uint16 samples (C: 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA)."""
    h, w, c = arr.shape
    writer = png.Writer(w, h, greyscale=c <= 2, alpha=c in (2, 4), bitdepth=16)
    with open(path, "wb") as f:
        writer.write(f, arr.reshape(h, w * c).tolist())
    return path


def write_png8(path, arr):
    skio.imsave(path, arr, check_contrast=False)
    return path


@pytest.fixture
def samples():
    rng = np.random.default_rng(7)
    return rng.integers(0, 65536, size=(5, 6, 4), dtype=np.uint16)


def test_16_bit_rgb_and_rgba_images_keep_every_bit(tmp_path, samples):
    for c in (3, 4):
        got = read_image(write_png16(tmp_path / f"im{c}.png", samples[..., :c]))
        np.testing.assert_array_equal(got, samples[..., :3] / 65535.0)
        # values differing only in the low byte stay apart (Pillow's decoding merged them)
        assert len(np.unique(got)) == len(np.unique(samples[..., :3]))


def test_16_bit_grey_plus_alpha_matte_keeps_every_bit(tmp_path, samples):
    grey = samples[..., :1]
    opaque = np.full_like(grey, 65535)
    path = write_png16(tmp_path / "la.png", np.concatenate([grey, opaque], axis=2))
    np.testing.assert_array_equal(read_alpha(path), grey[..., 0] / 65535.0)


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("channels", [2, 4])
def test_matte_stored_as_transparency_is_read_from_the_alpha_channel(tmp_path, samples, bits, channels):
    """A cut-out: flat white colour, the matte as the alpha channel (was read as all ones)."""
    matte = samples[..., 0] if bits == 16 else (samples[..., 0] >> 8).astype(np.uint8)
    full = 65535 if bits == 16 else 255
    arr = np.full(matte.shape + (channels,), full, dtype=matte.dtype)
    arr[..., -1] = matte
    path = tmp_path / "cutout.png"
    write_png16(path, arr) if bits == 16 else write_png8(path, arr)
    np.testing.assert_array_equal(read_alpha(path), matte / float(full))


def test_grey_matte_with_opaque_alpha_is_read_from_the_grey_values(tmp_path):
    matte = np.array([[0, 64, 200], [255, 17, 90]], np.uint8)
    rgba = np.stack([matte, matte, matte, np.full_like(matte, 255)], axis=2)
    np.testing.assert_array_equal(read_alpha(write_png8(tmp_path / "m.png", rgba)), matte / 255.0)
    same = np.stack([matte, matte], axis=2)  # grey + alpha holding the same values
    np.testing.assert_array_equal(read_alpha(write_png8(tmp_path / "s.png", same)), matte / 255.0)


def test_trimap_stored_as_transparency(tmp_path):
    tri = np.array([[0, 128, 255], [255, 128, 0]], np.uint8)
    la = np.stack([np.zeros_like(tri), tri], axis=2)  # flat black, the trimap as alpha
    assert read_trimap(write_png8(tmp_path / "t.png", la)).tolist() == tri.tolist()


def test_matte_in_both_grey_and_alpha_is_ambiguous(tmp_path):
    grey = np.array([[0, 64, 200], [255, 17, 90]], np.uint8)
    alpha = np.array([[255, 0, 10], [3, 99, 255]], np.uint8)
    path = write_png8(tmp_path / "both.png", np.stack([grey, alpha], axis=2))
    with pytest.raises(InputError, match=r"both\.png: the alpha matte could be its grey values or "
                                         r"its alpha channel"):
        read_alpha(path)
    # an image has no such question: its alpha channel is dropped
    np.testing.assert_array_equal(read_image(path)[..., 0], grey / 255.0)


def test_trimap_drawn_on_a_transparent_layer_is_read_from_its_grey_values(tmp_path):
    """Painted in an image editor: the trimap's grey where drawn, the rest left transparent (grey 0
    there, as exported): composited over black it is the trimap."""
    tri = np.array([[0, 128, 255], [255, 128, 0]], np.uint8)
    drawn = tri > 0
    la = np.stack([tri, np.where(drawn, 255, 0).astype(np.uint8)], axis=2)
    assert read_trimap(write_png8(tmp_path / "t.png", la)).tolist() == tri.tolist()


def test_cut_out_with_colour_zeroed_under_transparency_is_read_from_its_alpha(tmp_path):
    """PNG optimisers zero the colour of fully transparent pixels: the colour is flat elsewhere."""
    matte = np.array([[0, 64, 200], [255, 0, 90]], np.uint8)
    grey = np.where(matte > 0, 255, 0).astype(np.uint8)
    rgba = np.stack([grey, grey, grey, matte], axis=2)
    np.testing.assert_array_equal(read_alpha(write_png8(tmp_path / "c.png", rgba)), matte / 255.0)


def test_failed_write_leaves_no_temp_file_and_names_the_destination(tmp_path):
    """A full disk: the temporary file is removed and the error names the file that was being
    written (the bare ENOSPC message named nothing)."""
    import errno

    from dmpn.cli import error_text
    from dmpn.imageio import atomic_write

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half a file")
        raise OSError(errno.ENOSPC, "No space left on device")
    dest = tmp_path / "out" / "model.caffemodel"
    with pytest.raises(OSError) as exc:
        atomic_write(dest, write, suffix=".caffemodel")
    assert exc.value.errno == errno.ENOSPC
    assert error_text(exc.value) == f"{dest}: No space left on device (nothing written)"
    assert list((tmp_path / "out").iterdir()) == []


def test_output_below_a_file_is_refused_as_such(tmp_path):
    """--out afile/x where afile is a regular file: 'File exists' misled; the parent is named."""
    from dmpn.cli import error_text
    from dmpn.imageio import write_text
    afile = tmp_path / "afile"
    afile.write_text("x")
    for dest in (afile / "x.json", afile / "deeper" / "x.json"):
        with pytest.raises(NotADirectoryError) as exc:
            write_text(dest, "{}")
        assert error_text(exc.value) == f"{dest}: cannot be created: {afile} is a file, not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


SAVE_FAILS = """
import errno, sys
import caffe
from dmpn import imageio
def full(src, dst):
    dst.write(src.read(100))
    raise OSError(errno.ENOSPC, "No space left on device")
imageio._copy_file = full
net = caffe.Net(sys.argv[1], caffe.TEST)
try:
    imageio.save_caffemodel(net, sys.argv[2])
except OSError as e:
    from dmpn.cli import error_text
    print("refused:", error_text(e))
"""


def test_caffemodel_save_on_a_full_disk_is_an_error_not_an_abort(tmp_path):
    """Caffe writes with CHECK(SerializeToOstream): a full disk aborted the process and left the
    temporary file behind. The model is serialised into memory and copied by Python instead."""
    import subprocess
    import sys

    from conftest import ROOT, require_caffe
    require_caffe()
    dest = tmp_path / "out" / "m.caffemodel"
    res = subprocess.run([sys.executable, "-c", SAVE_FAILS, str(ROOT / "prototxt" / "slim_deploy.prototxt"), str(dest)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"refused: {dest}: No space left on device (nothing written)" in res.stdout
    assert list((tmp_path / "out").iterdir()) == []


def test_caffemodel_saved_through_memory_is_caffes_own_file(tmp_path):
    from conftest import ROOT, require_caffe
    from dmpn.imageio import save_caffemodel
    caffe = require_caffe()
    net = caffe.Net(str(ROOT / "prototxt" / "slim_deploy.prototxt"), caffe.TEST)
    save_caffemodel(net, tmp_path / "ours.caffemodel")
    net.save(str(tmp_path / "caffe.caffemodel"))
    assert (tmp_path / "ours.caffemodel").read_bytes() == (tmp_path / "caffe.caffemodel").read_bytes()
    assert oct((tmp_path / "ours.caffemodel").stat().st_mode & 0o777) == "0o644"
