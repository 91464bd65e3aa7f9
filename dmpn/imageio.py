"""Image reading and writing for matting data: alphas, trimaps, RGB images, PNG output.

Every reader accepts what real matting data looks like (8- and 16-bit PNGs, grey values stored
as RGB/RGBA with equal channels, palette PNGs) and refuses anything else with an
:class:`InputError` whose message names the file.

Precision: 8- and 16-bit files are read exactly (16-bit values / 65535; see _full_scale for
8-bit values stored in a wider container). 16-bit PNGs with colour or an alpha channel (RGB, RGBA,
grey + alpha) are decoded by pypng, since Pillow (imageio's PNG reader) keeps only their high 8
bits; every other file by imageio. As viewers show them: CMYK (and other non-RGB colour) files
are converted to RGB, palette and grey PNGs with a transparent colour (tRNS) get their alpha
channel, and an EXIF orientation (a camera's JPEG) is applied.

A matte or trimap stored in a file with an alpha channel (grey + alpha, RGBA) is read from the
channel that holds it: the grey / colour channels when the alpha channel is opaque everywhere or
only marks where they were drawn (transparent pixels 0, as a trimap drawn on a transparent layer);
the alpha channel when the colour is one flat value wherever it is not fully transparent (a
cut-out, the matte as its transparency); any other file whose grey and alpha channels both vary
is refused as ambiguous.

- :func:`read_alpha`  -> float64 HxW in [0, 1]
- :func:`read_trimap` -> uint8 HxW with values exactly {0, 128, 255} (for prediction), or with
  ``scoring=True`` the scored region of Deep Image Matting's evaluation code: 128 only where the
  file holds exactly 128 (on the 8-bit scale), :data:`TRIMAP_NOT_SCORED` for other unknown values
- :func:`read_image`  -> float64 HxWx3 in [0, 1]
- :func:`write_png`   writes an 8-bit PNG atomically (temp file + ``os.replace``)
- :func:`write_json`  writes JSON atomically
- :func:`write_text`  writes a text file atomically
- :func:`list_images` -> {name without extension: path}
- :func:`file_sha256` the SHA-256 of a file's content (what resumed predictions are keyed on)
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import sys
import tempfile
import warnings

import numpy as np

from dmpn.cli import InputError, existing_folder

__all__ = ["InputError", "read_alpha", "read_trimap", "read_image", "write_png", "write_json", "write_text",
           "list_images", "file_sha256", "IMAGE_EXTENSIONS", "TRIMAP_NOT_SCORED"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

# read_trimap(scoring=True): an unknown pixel whose value is not exactly 128 (e.g. 100). Deep Image
# Matting's MATLAB code scores trimap == 128 only; such pixels are neither scored nor known.
TRIMAP_NOT_SCORED = 127


# PNG colour types (IHDR) whose 16-bit samples Pillow truncates to 8 bits: RGB, grey + alpha, RGBA.
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_TRUNCATED_16_BIT_TYPES = (2, 4, 6)


def _is_16_bit_colour_png(path) -> bool:
    """Whether ``path`` is a PNG whose IHDR says 16 bits per sample with colour or alpha."""
    with open(path, "rb") as f:
        head = f.read(26)  # signature (8), IHDR length + type (8), width, height, depth, type
    return (len(head) == 26 and head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR"
            and head[24] == 16 and head[25] in _PNG_TRUNCATED_16_BIT_TYPES)


def _read_16_bit_png(path) -> np.ndarray:
    """All 16 bits of every sample (pypng's read(): no sBIT rescaling, no gamma)."""
    import png
    width, height, rows, info = png.Reader(filename=path).read()
    arr = np.array([np.asarray(row, dtype=np.uint16) for row in rows], dtype=np.uint16)
    return arr.reshape(height, width, info["planes"])


# Pillow modes whose channels are not RGB: converted as Pillow does (an Adobe CMYK JPEG's
# inverted channels included); imageio would hand over the raw channels, read as RGB.
_CONVERT_TO_RGB = ("CMYK", "YCbCr", "LAB", "HSV")
# Modes whose transparent colour (a PNG's tRNS) Pillow turns into an alpha channel on conversion;
# imageio drops it (a palette cut-out read as opaque). 16-bit grey keeps its tRNS unread: Pillow's
# conversion would cut the samples to 8 bits.
_WITH_TRANSPARENCY = {"P": "RGBA", "PA": "RGBA", "RGB": "RGBA", "L": "LA", "1": "LA"}

# EXIF orientation (tag 0x0112) -> the array as it is meant to be seen (Pillow's exif_transpose).
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: a.swapaxes(0, 1)[:, ::-1],
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: a.swapaxes(0, 1)[::-1],
}


def _pillow_view(path):
    """(the mode imageio is to convert ``path`` to or None, its EXIF orientation) as Pillow
    opens it (headers only); (None, 1) where Pillow cannot open it (imageio may still read it)."""
    try:
        from PIL import Image
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                convert = "RGB" if im.mode in _CONVERT_TO_RGB else None
                if convert is None and "transparency" in im.info:
                    convert = _WITH_TRANSPARENCY.get(im.mode)
                # A PNG's eXIf after its pixels is only found by decoding them: not looked for.
                orientation = 1
                if im.format != "PNG" or "exif" in im.info:
                    orientation = im.getexif().get(0x0112, 1)
    except Exception:
        return None, 1
    return convert, orientation if orientation in _ORIENT else 1


def _unreadable_reason(exc: BaseException, path: str) -> str:
    """Why a file could not be decoded, without the path (the message names it first):
    imageio's "Could not find a backend to open `PATH`` ..." means no format recognised it."""
    detail = (str(exc).strip().splitlines() or [""])[0]
    if "Could not find a backend" in detail or type(exc).__name__ == "UnidentifiedImageError":
        return "no image format recognises its content"
    for quoted in (f"`{path}``", f"`{path}`", f"'{path}'", path):
        detail = detail.replace(quoted, "the file")
    return f"{type(exc).__name__}: {detail[:200]}"


def _load(path) -> np.ndarray:
    """Raw pixel array of ``path`` (palette applied, converted and oriented as a viewer shows it:
    see the module's docstring), or InputError naming the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    try:
        convert, orientation = _pillow_view(path)
        if _is_16_bit_colour_png(path):
            arr = _read_16_bit_png(path)
        else:
            import imageio.v3 as iio
            kwargs = {"plugin": "pillow", "mode": convert} if convert else {}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                arr = iio.imread(path, **kwargs)
    except Exception as exc:  # truncated, corrupt, unsupported: all the same to the caller
        raise InputError(f"{path}: not a readable image ({_unreadable_reason(exc, path)})") from None
    arr = np.asarray(arr)
    if arr.size == 0:
        raise InputError(f"{path}: empty image")
    if orientation in _ORIENT and arr.ndim in (2, 3):
        arr = np.ascontiguousarray(_ORIENT[orientation](arr))
    return arr


def _full_scale(arr: np.ndarray, path, what: str = "pixel") -> int:
    """The integer value of 1 (opaque, foreground, full intensity) in ``arr``: 255 or 65535.

    The one rule of every reader (alpha, trimap, image): uint8 is 8-bit; a wider container
    (uint16, or the int32 of Pillow's 'I' mode, which says nothing of the depth) holds 8-bit data
    when no value exceeds 255, else 16-bit data. Why: a matte or trimap saved as 16 bits without
    rescaling (``a.astype(np.uint16)``) is common, while a true 16-bit matte whose brightest pixel
    is under 0.4 % opacity, or a 16-bit trimap with no value above 255, means nothing; the two
    readings of such a file differ 257-fold, and the alpha and trimap readers agree on it."""
    if arr.dtype == np.uint8:
        return 255
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi > 65535:
        raise InputError(f"{path}: {what} values outside 0..65535 ({arr.dtype})")
    return 255 if hi <= 255 else 65535


# How far outside [0, 1] a float image or matte may stray by rounding before it is refused.
FLOAT_SLACK = 1e-6


def _scale(arr: np.ndarray, path) -> np.ndarray:
    """Integer/bool/float pixel values -> float64 in [0, 1]."""
    if arr.dtype == np.bool_:
        return arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.float64) / float(_full_scale(arr, path))
    if np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float64)
        bad = np.count_nonzero(~np.isfinite(out))
        if bad:
            raise InputError(f"{path}: {bad} floating-point pixels are not finite (NaN or inf)")
        lo, hi = float(out.min()), float(out.max())
        # Rounding of float code (a -1e-9, a 1 + 1e-9) is clipped, as a predictor's matte is.
        if lo < -FLOAT_SLACK or hi > 1 + FLOAT_SLACK:
            hint = " (a 0-255 image saved as float?)" if hi > 1.5 else ""
            raise InputError(f"{path}: floating-point pixels span {lo:g} to {hi:g}, outside "
                             f"[0, 1]{hint}")
        return np.clip(out, 0.0, 1.0)
    raise InputError(f"{path}: unsupported pixel type {arr.dtype}")


def _opaque_value(arr: np.ndarray):
    """The alpha value meaning opaque for ``arr``'s sample type (None: no such convention)."""
    if arr.dtype == np.uint8:
        return 255
    if arr.dtype == np.uint16:
        return 65535
    return None


def _single_channel(arr: np.ndarray, path, what: str) -> np.ndarray:
    """HxW, HxWx1, grey (equal colour channels) and grey + alpha / RGBA files -> HxW.

    With an alpha channel (see the module's docstring): the grey values where the alpha channel is
    opaque everywhere, equal to them, or only 0 / opaque with grey 0 where it is 0 (drawn on a
    transparent layer: the grey composited over black); the alpha channel where the grey value is
    flat over the pixels that are not fully transparent (a cut-out). Otherwise ambiguous."""
    if arr.ndim == 2:
        return arr
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise InputError(f"{path}: {what} has unsupported shape {arr.shape}")
    c = arr.shape[2]
    grey = arr[..., 0]
    if c >= 3 and not (np.array_equal(grey, arr[..., 1]) and np.array_equal(grey, arr[..., 2])):
        raise InputError(f"{path}: {what} must be grey, but its colour channels differ")
    if c in (1, 3):
        return grey
    alpha = arr[..., -1]
    opaque = _opaque_value(arr)
    if (opaque is not None and np.all(alpha == opaque)) or np.array_equal(alpha, grey):
        return grey
    visible = grey[alpha > 0]
    if visible.size == 0 or np.all(visible == visible[0]):
        return alpha
    if opaque is not None and np.all((alpha == opaque) | ((alpha == 0) & (grey == 0))):
        return grey
    raise InputError(f"{path}: the {what} could be its grey values or its alpha channel (both vary "
                     "and differ); save it as a single-channel greyscale PNG")


def read_alpha(path) -> np.ndarray:
    """Alpha matte as float64 HxW in [0, 1] (8-bit /255, 16-bit /65535: see _full_scale)."""
    arr = _single_channel(_load(path), path, "alpha matte")
    return np.ascontiguousarray(_scale(arr, path))


def read_trimap(path, scoring: bool = False) -> np.ndarray:
    """Trimap as uint8 HxW with values exactly {0, 128, 255}.

    0 stays background, the full-scale value (255, or 65535 for 16-bit: see _full_scale) is
    foreground, and every
    value in between is unknown (128). Label-style trimaps (values only 0/1/2) and colour
    trimaps are refused because their meaning cannot be read unambiguously.

    ``scoring=True`` gives the region Deep Image Matting's evaluation code scores: 128 only where
    the file's value is 128 on the 8-bit scale, :data:`TRIMAP_NOT_SCORED` at the other unknown
    values. That code reads 8-bit PNGs; 16-bit and float data are taken to 8 bits as MATLAB's
    im2uint8 does (x / 257 or x * 255, rounded half up), so 32768 to 33024 count in 16-bit data
    and [0.5, 128.5 / 255) as a float: both "half" conventions, 0.5 and 128/255, are scored.
    """
    arr = _single_channel(_load(path), path, "trimap")
    if arr.dtype == np.bool_:
        return np.where(arr, 255, 0).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
            raise InputError(f"{path}: floating-point trimap values outside [0, 1]")
        full = 1.0
        exact = np.floor(arr.astype(np.float64) * 255 + 0.5) == 128
    elif np.issubdtype(arr.dtype, np.integer):
        full = _full_scale(arr, path, "trimap")  # the alpha matte's rule (8-bit data in 16 bits)
        if 0 < int(arr.max()) <= 2:
            raise InputError(f"{path}: trimap values {sorted(np.unique(arr).tolist())} look like "
                             "labels; expected 0 (background), 255 (foreground), other = unknown")
        exact = (arr == 128) if full == 255 else (np.floor(arr / 257 + 0.5) == 128)
    else:
        raise InputError(f"{path}: unsupported trimap pixel type {arr.dtype}")
    out = np.full(arr.shape, 128, dtype=np.uint8)
    if scoring:
        out[~exact] = TRIMAP_NOT_SCORED
    out[arr == 0] = 0
    out[arr == full] = 255
    return out


# Warnings said once per (kind, file) and process: a build or a scoring reads a file more than
# once.
_warned = set()


def warn_once(kind: str, path, text: str) -> None:
    """``text`` (a warning naming ``path``) on stderr, unless one of this ``kind`` was said of
    that file before in this process."""
    key = (kind, os.path.abspath(os.fspath(path)))
    if key not in _warned:
        _warned.add(key)
        print(text, file=sys.stderr, flush=True)


def _warn_transparent(arr: np.ndarray, path) -> None:
    """One line on stderr naming an image (grey + alpha, RGBA) whose alpha channel is not opaque
    everywhere: read_image keeps only its colour, so a cut-out would be run on the colour its
    transparent pixels hide. Fully opaque files are silent."""
    alpha = arr[..., -1]
    opaque = _opaque_value(arr) or (1.0 if np.issubdtype(arr.dtype, np.floating) else None)
    if opaque is None:
        return
    count = int(np.count_nonzero(alpha < opaque))
    if count:
        warn_once("transparent image", path,
                  f"warning: {path}: the alpha channel is not opaque at {count:,} of {alpha.size:,} "
                  f"pixels ({100 * count / alpha.size:.3g}%); the image is read as its colour "
                  "channels alone, what the transparent pixels hide (composite it onto a "
                  "background first if that is not meant)")


def read_image(path, warn_transparent: bool = True) -> np.ndarray:
    """Colour image as float64 HxWx3 in [0, 1]; grey is expanded, an alpha channel dropped (with
    a warning where it is not opaque everywhere, unless ``warn_transparent`` is False)."""
    arr = _load(path)
    if warn_transparent and arr.ndim == 3 and arr.shape[2] in (2, 4):
        _warn_transparent(arr, path)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] in (1, 2):
        arr = np.repeat(arr[..., :1], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] in (3, 4):
        arr = arr[..., :3]
    else:
        raise InputError(f"{path}: image has unsupported shape {arr.shape}")
    return np.ascontiguousarray(_scale(arr, path))


def to_uint8(array) -> np.ndarray:
    """uint8 as is, bool -> 0/255, float in [0, 1] -> round(x * 255) (clipped)."""
    a = np.asarray(array)
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return np.where(a, 255, 0).astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        a = np.nan_to_num(a.astype(np.float64), nan=0.0)
        return np.rint(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        if a.min() < 0 or a.max() > 255:
            raise ValueError("integer array outside 0..255 cannot be written as 8-bit")
        return a.astype(np.uint8)
    raise ValueError(f"cannot write array of type {a.dtype} as PNG")


def atomic_write(path, write, suffix: str = "", fsync: bool = False) -> None:
    """Create ``path`` through ``write(tmp_path)`` on a temporary file in the same folder, renamed
    into place only once it is complete: no half-written file ever carries the final name, and
    the temporary file is removed whatever stops the write. Parent folders are created; the file
    gets the usual 0644 mode. An OSError that names no file, or the temporary one (a full disk:
    ENOSPC), is raised again naming ``path``. ``fsync``: the file reaches the disk before the
    rename, so that after a crash, even a power loss, the name holds the whole file or nothing."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", path)
    folder = os.path.dirname(os.path.abspath(path))
    existing_folder(path, folder)  # a file where a parent folder should be: named
    os.makedirs(folder, exist_ok=True)
    tmp = None
    try:
        # Hidden (list_images skips it) and short: the whole name + 8 random characters + suffix
        # would pass NAME_MAX (255 bytes) for a long name that is itself valid.
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path)[:32] + ".", suffix=suffix,
                                   dir=folder)
        os.close(fd)
        write(tmp)
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        if exc.filename is None or exc.filename == tmp or exc.filename == folder:
            raise OSError(exc.errno, f"{exc.strerror or exc} (nothing written)", path) from None
        raise
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _copy_file(src, dst) -> None:
    """Copy the open binary file ``src`` into ``dst`` (a write error is an OSError)."""
    import shutil
    shutil.copyfileobj(src, dst, 1 << 20)


def save_caffemodel(net, path) -> None:
    """Save a pycaffe net's weights to ``path`` atomically and durably (see atomic_write).

    Caffe's own writer aborts the process when a write fails (CHECK(SerializeToOstream)) and
    does not check the final flush: the model is serialised into an in-memory file (Linux
    memfd) and copied to disk by Python, where a full disk is an OSError naming ``path``."""
    def write(tmp):
        if not hasattr(os, "memfd_create"):
            net.save(os.fspath(tmp))
            return
        mem = os.memfd_create("caffemodel", getattr(os, "MFD_CLOEXEC", 0))
        try:
            net.save(f"/proc/self/fd/{mem}")
            with os.fdopen(os.dup(mem), "rb") as src, open(tmp, "wb") as dst:
                src.seek(0)
                _copy_file(src, dst)
                dst.flush()
                os.fsync(dst.fileno())
        finally:
            os.close(mem)
    atomic_write(path, write, suffix=".caffemodel")


def write_png(path, array) -> str:
    """Write ``array`` (HxW or HxWx3/4) as an 8-bit PNG, atomically (see atomic_write); returns
    the SHA-256 of the file written (hashed before it takes its name, so that another writer of
    the same path cannot slip in between).

    Floats are taken as [0, 1] and written as round(x * 255); parent folders are created.
    """
    import imageio.v3 as iio
    path = os.fspath(path)
    data = to_uint8(array)
    if data.ndim not in (2, 3):
        raise ValueError(f"{path}: cannot write array of shape {data.shape} as PNG")
    digest = []

    def write(tmp):
        iio.imwrite(tmp, data, extension=".png")
        digest.append(file_sha256(tmp))
    atomic_write(path, write, suffix=".png")
    return digest[0]


def write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see atomic_write) and durably: flushed to the disk
    before the rename, since these are the manifests, records and prototxts a rerun reads back
    (after a power loss a renamed but unflushed file can be empty)."""
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    atomic_write(path, write)


def write_json(path, data, allow_nan: bool = False) -> None:
    """Write JSON atomically and durably (see write_text); NaN and infinities are refused unless
    ``allow_nan`` (they are not standard JSON)."""
    write_text(path, json.dumps(data, indent=2, allow_nan=allow_nan) + "\n")


def file_sha256(path) -> str:
    """The hex SHA-256 of the file's content, read in 1 MiB blocks (a 100 MB caffemodel takes
    a fraction of a second). Not remembered between calls: a file rewritten in place within the
    file system's time resolution would fool a cache keyed on size and mtime."""
    h = hashlib.sha256()
    with open(os.fspath(path), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def list_images(folder) -> dict:
    """{file name without extension: path} for the image files in ``folder`` (sorted by name).

    InputError (naming the folder) when it is missing, not a folder, or holds no image; also when
    two files share a name with different extensions (which one would be meant is unclear).
    """
    folder = os.fspath(folder)
    if not os.path.exists(folder):
        raise InputError(f"{folder}: no such folder")
    if not os.path.isdir(folder):
        raise InputError(f"{folder}: not a folder")
    try:
        entries = sorted(os.listdir(folder))
    except OSError as exc:
        raise InputError(f"{folder}: cannot read the folder ({exc.strerror or exc})") from None
    found = {}
    for entry in entries:
        stem, ext = os.path.splitext(entry)
        full = os.path.join(folder, entry)
        if entry.startswith(".") or ext.lower() not in IMAGE_EXTENSIONS or not os.path.isfile(full):
            continue
        if stem in found:
            raise InputError(f"{full}: another image named {stem!r} is in the same folder "
                             f"({found[stem]})")
        found[stem] = full
    if not found:
        raise InputError(f"{folder}: folder holds no image ({', '.join(IMAGE_EXTENSIONS)})")
    return found
