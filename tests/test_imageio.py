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


def test_cmyk_jpeg_is_read_as_its_rgb_colours(tmp_path):
    """A CMYK JPEG (print workflows, Adobe): its first three channels were taken as RGB, which
    inverted the colours."""
    from PIL import Image
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[...] = (200, 50, 10)
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(path, quality=100)
    assert Image.open(path).mode == "CMYK"
    np.testing.assert_allclose(read_image(path) * 255, rgb, atol=3)


def test_palette_png_with_transparency_keeps_its_alpha(tmp_path):
    """A cut-out saved as a palette PNG (PNG optimisers do it): its transparency (tRNS) is the
    matte; read_alpha gave all ones."""
    from PIL import Image
    matte = np.tile(np.linspace(0, 255, 8).astype(np.uint8), (4, 1))
    rgba = np.zeros((4, 8, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[..., 3] = matte
    path = tmp_path / "cutout.png"
    Image.fromarray(rgba, "RGBA").quantize(colors=16, method=Image.Quantize.FASTOCTREE).save(path)
    with Image.open(path) as im:
        assert im.mode == "P" and "transparency" in im.info
        want = np.asarray(im.convert("RGBA"))[..., 3] / 255.0
    assert len(np.unique(want)) > 2  # the palette kept the matte's levels
    np.testing.assert_array_equal(read_alpha(path), want)
    # a grey trimap with a transparent grey value (L + tRNS): drawn on a transparent layer
    tri = np.array([[0, 128, 255], [255, 128, 0]], np.uint8)
    path = tmp_path / "t.png"
    Image.fromarray(tri, "L").save(path, transparency=0)
    assert read_trimap(path).tolist() == tri.tolist()


@pytest.mark.parametrize("suffix, dtype", [(".png", np.uint16), (".tif", np.uint16), (".tif", np.int32)])
def test_8_bit_values_in_a_wider_file_are_8_bit_for_alpha_and_trimap_alike(tmp_path, suffix, dtype):
    """One rule (imageio._full_scale): no value above 255 in a 16-bit (or int32) file is 8-bit
    data. read_alpha divided a uint16 file by 65535 while read_trimap took it as 8-bit."""
    import tifffile

    def save(name, v):
        path = tmp_path / f"{name}{suffix}"
        if suffix == ".png":
            write_png16(path, v.astype(dtype)[..., None])
        else:
            tifffile.imwrite(path, v.astype(dtype))
        return path
    values = np.array([[0, 128, 200], [255, 64, 255]])
    path = save("m", values)
    np.testing.assert_array_equal(read_alpha(path), values / 255.0)
    assert read_trimap(path).tolist() == [[0, 128, 128], [255, 128, 255]]
    np.testing.assert_array_equal(read_image(path)[..., 0], values / 255.0)
    # 16-bit data (a value above 255) stays on the 16-bit scale, for both
    values16 = values * 257
    path16 = save("m16", values16)
    np.testing.assert_array_equal(read_alpha(path16), values16 / 65535.0)
    assert read_trimap(path16).tolist() == [[0, 128, 128], [255, 128, 255]]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_to_images_alphas_and_trimaps(tmp_path, orientation):
    """A camera's JPEG stores its pixels unrotated with an EXIF orientation: read as shown
    (Pillow's exif_transpose), not sideways; a matte or trimap made for the shown image then fits."""
    from PIL import Image, ImageOps
    rgb = np.zeros((16, 24, 3), np.uint8)
    rgb[:8, :8] = (255, 0, 0)      # a red corner block: where it lands shows the orientation
    rgb[8:, 16:] = (0, 0, 255)
    grey = np.zeros((16, 24), np.uint8)
    grey[:8, :8] = 255
    grey[8:, 16:] = 128
    for name, arr in (("im.jpg", rgb), ("m.jpg", grey), ("t.png", grey)):
        img = Image.fromarray(arr)
        exif = img.getexif()
        exif[0x0112] = orientation
        img.save(tmp_path / name, exif=exif, **({"quality": 100} if name.endswith(".jpg") else {}))

    def shown(name, mode):
        with Image.open(tmp_path / name) as im:
            return np.asarray(ImageOps.exif_transpose(im).convert(mode))
    np.testing.assert_array_equal(read_image(tmp_path / "im.jpg"), shown("im.jpg", "RGB") / 255.0)
    np.testing.assert_array_equal(read_alpha(tmp_path / "m.jpg"), shown("m.jpg", "L") / 255.0)
    want = shown("t.png", "L")
    assert read_trimap(tmp_path / "t.png").tolist() == want.tolist()
    assert want.shape == ((16, 24) if orientation < 5 else (24, 16))


def test_atomic_write_of_a_long_valid_name(tmp_path):
    """A name of 250 bytes is valid; the temporary name was '.' + name + 8 random characters +
    suffix, over NAME_MAX (255): the write failed with 'File name too long'."""
    from dmpn.imageio import write_png, write_text
    long_png = tmp_path / ("m" * 246 + ".png")
    write_png(long_png, np.zeros((2, 3), np.uint8))
    assert read_alpha(long_png).shape == (2, 3)
    write_text(tmp_path / ("t" * 250), "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([long_png.name, "t" * 250])


def test_one_float_to_8_bit_rule():
    """round(x * 255), clipped, NaN -> 0: imageio.to_uint8 is the one the composites, the
    backgrounds and the PNGs written use (compose had a copy that left NaN to the cast)."""
    from dmpn import backgrounds, compose, imageio, predict
    assert compose.to_uint8 is backgrounds.to_uint8 is predict.to_uint8 is imageio.to_uint8
    x = np.array([[np.nan, -0.2, 0.0, 0.5, 1 / 255, 0.998, 1.0, 7.0, np.inf, -np.inf]])
    assert imageio.to_uint8(x).tolist() == [[0, 0, 0, 128, 1, 254, 255, 255, 255, 0]]
    assert imageio.to_uint8(x.astype(np.float32)).tolist() == imageio.to_uint8(x).tolist()


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("channels", [2, 4])
def test_image_with_transparency_warns_once_naming_the_file(tmp_path, capsys, bits, channels):
    """A cut-out used as the image would be run on the colour its transparency hides: one
    warning line naming it and the share of pixels that are not opaque (opaque: 255, or 65535
    for 16-bit), once per file; a fully opaque file is silent."""
    full = 65535 if bits == 16 else 255
    dtype = np.uint16 if bits == 16 else np.uint8
    write = write_png16 if bits == 16 else write_png8
    arr = np.full((4, 5, channels), full, dtype=dtype)
    arr[..., 0] = full // 3
    opaque = write(tmp_path / "opaque.png", arr)
    read_image(opaque)
    assert capsys.readouterr().err == ""
    arr[0, :2, -1] = full - 1  # 2 of 20 pixels just short of opaque (above 255 for 16-bit)
    cut_out = write(tmp_path / "cutout.png", arr)
    np.testing.assert_array_equal(read_image(cut_out)[..., 0], np.full((4, 5), (full // 3) / full))
    read_image(cut_out)
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"warning: {cut_out}: the alpha channel is not opaque at 2 of 20 pixels (10%)")


def test_transparent_backgrounds_are_read_without_a_warning(tmp_path, capsys):
    """Only a background's colour is used: a folder of thousands of RGBA backgrounds would print
    a line each."""
    from dmpn.backgrounds import BackgroundPool
    arr = np.full((64, 64, 4), 200, dtype=np.uint8)
    arr[..., 3] = 0
    path = write_png8(tmp_path / "bg.png", arr)
    pool = BackgroundPool([str(path)], "a test folder")
    pool.validate()
    assert capsys.readouterr().err == ""
    read_image(path)  # as an image it is warned of
    assert "not opaque" in capsys.readouterr().err


@pytest.mark.parametrize("reader", [read_image, read_alpha, read_trimap])
def test_a_file_that_is_not_an_image_is_named_once_in_plain_words(tmp_path, reader):
    """Was: "...: cannot read image (OSError: Could not find a backend to open `PATH`` with
    iomode `r`.)", the path twice, with imageio's stray backtick."""
    path = tmp_path / "notanimage.png"
    path.write_text("hello\n")
    with pytest.raises(InputError) as err:
        reader(path)
    message = str(err.value)
    assert message == f"{path}: not a readable image (no image format recognises its content)"
    assert message.count(str(path)) == 1 and "`" not in message
