"""Composited training and test data as Caffe LMDBs, resumable (paper, Sec. 4.1).

The paper composites 81 originals (image + ground-truth alpha), resized to 600 x 800, onto 1000
backgrounds with 3 rotations (243K images), and splits by original: 50 originals (the 8
alphamatting.com test images and 42 random others) with all their composites for training, the
other 31 for testing. :func:`main` (``tools/make_lmdb.py``) builds that, at any scale.

Output folder
-------------
- ``train_lmdb/``, ``test_lmdb/``: one Caffe ``Datum`` per composite (raw, ``encoded`` false,
  ``label`` 0), uint8, 11 channels in this order (C x H x W)::

      0-2   composited image, RGB
      3     trimap (0 background, 128 unknown, 255 foreground)
      4     alpha (0..255)
      5-7   foreground colour, RGB
      8-10  background, RGB

  so a ``Data`` layer (``scale: 0.00392156862745098`` gives [0, 1]) followed by
  ``Slice { axis: 1 slice_point: 3 slice_point: 4 slice_point: 5 slice_point: 8 }`` yields
  image, trimap, alpha, fg, bg. The composite is computed from the stored 8-bit alpha,
  foreground and background (``image = round(a F + (1 - a) B)``).
  Keys: ``f"{index:08d}_{original}_b{bg:04d}_r{rot}"`` (ASCII; ``original`` is the file stem
  with every character other than a letter, digit, '.' or '-' replaced by '-', so a key splits
  unambiguously on '_'; ``index`` counts the items of the
  split from 0, so byte order = index order; ``bg`` is the background number 0..N-1 of that
  original, ``rot`` the rotation number). Test items are ordered original (sorted by name),
  then background, then rotation; training items in a seeded random order
  (``default_rng([seed, 11])``), since Caffe's Data layer reads in key order and batches should
  mix originals.
- ``test/image/``, ``test/trimap/``, ``test/alpha/``: the test composites as 8-bit PNGs named
  ``<key>.png`` (what ``tools/evaluate.py`` / ``tools/predict.py`` read).
- ``manifest.json``: written last, atomically: its presence means the output is complete. It
  records the originals of each split, backgrounds, rotation angles, size, seed, counts, the
  tool version, how each trimap and foreground was obtained, and the channel layout.
- ``.make_lmdb_args.json``: the argument fingerprint, written before anything else; a rerun
  with other arguments is refused. ``.cache/``: preprocessed originals, and the uint8 arrays
  the items are cut from (deleted when complete).
- File names: an original whose test PNGs' names would pass the output file system's NAME_MAX
  (255 bytes: a stem of about 230 characters) is refused before anything is written; temporary
  files keep only the first 32 characters of the final name.

Determinism and resume
----------------------
Every item depends only on the arguments and its (split, index): the background crop / flip
comes from ``numpy.random.default_rng([seed, split, index])``, the background file from a
seeded permutation, the rotation angle from the rotation number, the split from
``default_rng([seed, 1])``. Preprocessed originals (resized, foreground estimated) are cached on
the first run, so a resumed run uses the very same arrays. So are, before any item is made, each
original's uint8 foreground, alpha and trimap at each rotation and each background used, decoded
(``.npy`` files in a folder named by the argument fingerprint, memory-mapped by the workers): an
item then costs the same in any order, where per-worker caches missed nearly always with the
shuffled training order. Cache files and test PNGs are written to a temporary file, flushed to
disk (fsync) and renamed, so that a name, after any crash, holds the whole file. LMDB
transactions are committed in chunks (``--txn-mb``); a run killed at any point (Ctrl-C, kill -9,
full disk) keeps the committed items; the rerun checks that the last committed key is the
expected one and continues from the next index (writing again any test PNG of a committed item
that is missing or empty), so the final database holds exactly the keys and values of an
uninterrupted run.

Choices the paper leaves open (documented here and in the manifest)
-------------------------------------------------------------------
- Rotation angles: 0, +15, -15 degrees (``dmpn.compose.rotation_angles``; ``--max-angle``).
- Originals are resized to ``--size`` whatever their aspect ratio (the paper: "resized to
  600 x 800"), so portraits (alphamatting.com GT03, 800 x 640) are distorted.
- Trimaps: given ones (``--trimap-dir``) are resized (nearest) and rotated with the alpha (one
  with no known pixel, 0 or 255, is refused: the propagation has nothing to start from; one
  marking pixels foreground where the alpha is below 1 or background where it is above 0 is
  stored as given, with a warning naming it and both counts, also in the manifest
  (``originals.per_original[*].trimap_contradicts_alpha``; alphamatting.com GT27's trimap1 has
  58,885 and 15,834);
  otherwise made from the rotated alpha by the Deep-Image-Matting style erosion of
  ``dmpn.compose.trimap_from_alpha`` with radius ``--trimap-radius`` (default 1.5 % of the
  shorter side). Synthetic originals carry their own trimaps. The console (one line) and the
  manifest (``trimaps.source``, ``trimaps.unused_folders``) say which was used, and name a
  trimap folder (alphamatting data: trimap1/, trimap2/) that was not.
- Crops: the Data layer crops each item (``crop_size``: 160 in the main job, 320 in the
  paper-size net), anywhere in TRAIN, in the centre in TEST, and a crop with no known pixel stops
  training (SparseLaplacianSolve). The builder makes every original's trimap at every rotation
  as its items get it and warns (one line on stderr naming the original, its trimap's source and
  the rotations; also ``trimap_crop_check`` in the manifest) where an N x N window (``--check-crop
  N``, default 160; a 320 window without a known pixel holds such a window too) has no known
  pixel: a summed-area table of the known mask, O(H W) per trimap. Given trimaps rarely do
  (alphamatting.com GT04's trimap2, about 2 % of positions at 600 x 800); trimaps made from an
  alpha whose foreground never reaches 255 can (GT27: about half of the positions).
- Foregrounds: ``fg/`` when given, otherwise pymatting's ``estimate_foreground_ml`` on the
  resized image and alpha.
- Backgrounds: background number b of the k-th original (k in sorted order over all originals)
  is file ``perm[(k * N + b) % P]`` of the P backgrounds (``perm`` a seeded permutation), so with
  P = N every original gets all N backgrounds, as in the paper.
- The paper's 8 alphamatting.com test images (doll, donkey, elephant, net, pineapple, plant,
  plasticbag, troll) are forced into training when present; the 27 alphamatting.com images in
  ``shared/data`` are its *training* images, so none is forced there. Names given with
  ``--forced-train`` must each name an original (a typo would silently change the split).
- When fewer originals than the paper's 81 are given and ``--test-originals`` is not, the test
  count is scaled: round(n * 31 / 81).
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import math
import os
import re
import shutil
import signal
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from dmpn import compose
from dmpn.cli import (check_writable, dims, error_text, finite_float, positive_float, positive_int, seed,
                      whole_number)
from dmpn.datum import CHANNEL_ORDER, ITEM_CHANNELS, ITEM_SLICE_POINTS, encode_datum
from dmpn.imageio import InputError, atomic_write, list_images, read_alpha, read_image, read_trimap, write_text

__all__ = [
    "BUILDER_VERSION", "PRESETS", "FORCED_TRAIN_DEFAULT", "CHANNEL_ORDER", "KEY_FORMAT",
    "BuildError", "build", "build_parser", "main", "item_key", "read_lmdb", "estimate_bytes",
]

BUILDER_VERSION = "1.2"  # 1.1: training items in shuffled order; 1.2: opaque parts in glass and net

PRESETS = {
    # the paper, Sec. 4.1
    "paper": dict(size=(600, 800), bg_per_original=1000, rotations=3, test_originals=31,
                  synthetic=81, of_originals=81),
    # seconds on a laptop
    "demo": dict(size=(192, 192), bg_per_original=4, rotations=2, test_originals=4,
                 synthetic=12, of_originals=12),
}

# The 8 alphamatting.com test images, which the paper puts into training.
FORCED_TRAIN_DEFAULT = ("doll", "donkey", "elephant", "net", "pineapple", "plant", "plasticbag",
                        "troll")

KEY_FORMAT = "{index:08d}_{original}_b{bg:04d}_r{rot}"
SLICE_POINTS = list(ITEM_SLICE_POINTS)

ARGS_FILE = ".make_lmdb_args.json"
MANIFEST = "manifest.json"
SPLITS = ("train", "test")

EXIT_OK, EXIT_ERROR, EXIT_INPUT, EXIT_DISK, EXIT_WRITE, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


class BuildError(Exception):
    """A clear, user-facing failure; ``code`` is the exit status."""

    def __init__(self, message, code=EXIT_INPUT):
        super().__init__(message)
        self.code = code


def item_key(index: int, original: str, bg: int, rot: int) -> str:
    return KEY_FORMAT.format(index=index, original=original, bg=bg, rot=rot)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "-", name)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000.0
    return str(n)


# ----------------------------------------------------------------------------------------------
# originals


@dataclass
class Original:
    name: str                      # key-safe name
    source_name: str               # file stem / synthetic name
    image_path: str | None = None
    alpha_path: str | None = None
    trimap_path: str | None = None
    fg_path: str | None = None
    synth_index: int | None = None
    info: dict = field(default_factory=dict)


def _sha_file(h, path):
    with open(path, "rb") as f:
        h.update(hashlib.sha256(f.read()).digest())


def scan_originals(folder, trimap_dir="trimap", trimap_dir_given=False, fg_dir="fg"):
    """Match ``image/``, ``alpha/``, optional ``<trimap_dir>/`` and ``fg/`` by name, read and
    check every file. Returns (originals, content sha256). Raises InputError naming the file."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise InputError(f"{folder}: originals folder not found")
    for sub in ("image", "alpha"):
        if not os.path.isdir(os.path.join(folder, sub)):
            raise InputError(f"{os.path.join(folder, sub)}: missing (originals need image/ and alpha/)")
    images = list_images(os.path.join(folder, "image"))
    alphas = list_images(os.path.join(folder, "alpha"))
    tri_folder = os.path.join(folder, trimap_dir)
    trimaps = None
    if os.path.isdir(tri_folder):
        trimaps = list_images(tri_folder)
    elif trimap_dir_given:
        raise InputError(f"{tri_folder}: trimap folder not found (--trimap-dir {trimap_dir})")
    fg_folder = os.path.join(folder, fg_dir)
    fgs = list_images(fg_folder) if os.path.isdir(fg_folder) else None

    def mismatch(a_name, a, b_name, b):
        only_a = sorted(set(a) - set(b))
        if only_a:
            files = ", ".join(a[n] for n in only_a[:5]) + (" ..." if len(only_a) > 5 else "")
            raise InputError(f"names do not match: {len(only_a)} file(s) in {a_name} have no "
                             f"counterpart in {b_name}: {files}")

    mismatch("image/", images, "alpha/", alphas)
    mismatch("alpha/", alphas, "image/", images)
    for label, other in ((trimap_dir + "/", trimaps), (fg_dir + "/", fgs)):
        if other is not None:
            mismatch("image/", images, label, other)
            mismatch(label, other, "image/", images)

    originals, seen = [], {}
    h = hashlib.sha256()
    for stem in sorted(images):
        safe = _safe_name(stem)
        if safe in seen:
            raise InputError(f"{images[stem]}: name clashes with {images[seen[safe]]} "
                             f"once made key-safe ({safe!r})")
        seen[safe] = stem
        o = Original(safe, stem, images[stem], alphas[stem],
                     trimaps[stem] if trimaps is not None else None,
                     fgs[stem] if fgs is not None else None)
        img = read_image(o.image_path)
        alpha = read_alpha(o.alpha_path)
        if alpha.shape != img.shape[:2]:
            raise InputError(f"{o.alpha_path}: alpha is {alpha.shape[1]} x {alpha.shape[0]} but "
                             f"the image {o.image_path} is {img.shape[1]} x {img.shape[0]}")
        if o.trimap_path:
            tri = read_trimap(o.trimap_path)
            if tri.shape != img.shape[:2]:
                raise InputError(f"{o.trimap_path}: trimap is {tri.shape[1]} x {tri.shape[0]} but "
                                 f"the image {o.image_path} is {img.shape[1]} x {img.shape[0]}")
            if not (tri != 128).any():
                raise InputError(f"{o.trimap_path}: trimap has no known pixel (0 or 255), all "
                                 "unknown; training on it stops in SparseLaplacianSolve")
            wrong_fg = int(((tri == 255) & (alpha < 1)).sum())
            wrong_bg = int(((tri == 0) & (alpha > 0)).sum())
            if wrong_fg or wrong_bg:  # stored as given; build() warns
                o.info["trimap_contradicts_alpha"] = {"foreground_with_alpha_below_1": wrong_fg,
                                                      "background_with_alpha_above_0": wrong_bg}
        if o.fg_path:
            fg = read_image(o.fg_path)
            if fg.shape != img.shape:
                raise InputError(f"{o.fg_path}: foreground is {fg.shape[1]} x {fg.shape[0]} but "
                                 f"the image {o.image_path} is {img.shape[1]} x {img.shape[0]}")
        h.update(safe.encode() + b"\0")
        for p in (o.image_path, o.alpha_path, o.trimap_path, o.fg_path):
            if p:
                _sha_file(h, p)
            else:
                h.update(b"-")
        originals.append(o)
    if not originals:
        raise InputError(f"{folder}: no originals found")
    return originals, h.hexdigest()


def synthetic_originals(count):
    from dmpn.synth import KINDS

    return [Original(_safe_name(f"synth{i:04d}_{KINDS[i % len(KINDS)]}"),
                     f"synth{i:04d}_{KINDS[i % len(KINDS)]}", synth_index=i) for i in range(count)]


def _prepare_original(o: Original, cfg: dict, cache_dir: str) -> dict:
    """Resize / generate one original and estimate its foreground if needed; cached as .npz so
    that a resumed run uses exactly the same arrays. Returns its manifest info."""
    path = os.path.join(cache_dir, o.name + ".npz")
    if os.path.exists(path):
        with np.load(path) as z:
            return json.loads(str(z["info"]))
    size = tuple(cfg["size"])
    if o.synth_index is not None:
        from dmpn.synth import make_original

        s = make_original(cfg["seed"], o.synth_index, size)
        image, alpha, fg, trimap = s.image, s.alpha, s.fg, s.trimap
        info = {"source": "synthetic", "kind": s.kind, "trimap": "generated with the original "
                "(dmpn.synth.trimap_from_alpha)", "foreground": "generated (exact)"}
    else:
        image = read_image(o.image_path)
        alpha = read_alpha(o.alpha_path)
        trimap = read_trimap(o.trimap_path) if o.trimap_path else None
        fg = read_image(o.fg_path) if o.fg_path else None
        orig_size = image.shape[:2]
        image, alpha, fg, trimap = compose.resize_original(image, alpha, fg, trimap, size)
        info = {"source": o.image_path, "original_size": list(orig_size),
                "trimap": (f"given ({o.trimap_path}), resized nearest, rotated with the alpha"
                           if o.trimap_path else
                           f"made from the rotated alpha (erosion radius {cfg['trimap_radius']} px)"),
                "foreground": f"given ({o.fg_path})" if o.fg_path else None}
        if fg is None:
            import pymatting

            fg = np.clip(pymatting.estimate_foreground_ml(image, alpha), 0.0, 1.0)
            info["foreground"] = (f"estimated with pymatting {pymatting.__version__} "
                                  "estimate_foreground_ml (image, alpha at the stored size)")
    arrays = {"image": image.astype(np.float32), "alpha": alpha.astype(np.float32),
              "fg": fg.astype(np.float32), "info": np.array(json.dumps(info))}
    if trimap is not None:
        arrays["trimap"] = trimap.astype(np.uint8)
    _write_atomic(path, lambda f: np.savez(f, **arrays))
    return info


def _write_atomic(path, write):
    """Create ``path`` through ``write(binary file)``, flushed to disk before it takes its name
    (imageio.atomic_write with fsync): after a crash, even a power loss, a name the LMDB's commit
    covers holds the whole file or is absent."""
    def to_file(tmp):
        with open(tmp, "wb") as f:
            write(f)
    atomic_write(path, to_file, suffix=".tmp", fsync=True)


def _remove_temp_files(folder):
    """Delete the hidden temporary files of writes a kill cut short (see _write_atomic)."""
    if os.path.isdir(folder):
        for entry in os.listdir(folder):
            if entry.startswith(".") and os.path.isfile(os.path.join(folder, entry)):
                os.unlink(os.path.join(folder, entry))


# ----------------------------------------------------------------------------------------------
# item generation (runs in worker processes too)

_CTX: dict = {}


def _die_with_parent():
    """Linux: worker processes get SIGKILL when the builder dies (e.g. kill -9), instead of
    lingering as orphans."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # pragma: no cover - not Linux
        pass


def _init_worker(ctx, in_child=False):
    if in_child:
        _die_with_parent()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _CTX.clear()
    _CTX.update(ctx)
    _CTX["mapped"] = OrderedDict()


# Training items come in a seeded random order, so a small cache of rotated originals or decoded
# backgrounds in each worker would miss nearly always (about 4x slower at paper scale). Instead
# every (original, rotation) and every background used is made once, before the items, as a uint8
# .npy in the cache folder (_prepare_rotations, _prepare_backgrounds), and items map these files.
MAPPED_FILES = 128  # files each process keeps mapped (each mapping holds a file descriptor)


def _rotation_path(name, rot):
    return os.path.join(_CTX["arrays_dir"], f"{name}.r{rot}.npy")


def _background_path(i):
    return os.path.join(_CTX["arrays_dir"], f"bg{i:06d}.npy")


def _mapped(path):
    """The array of the .npy file ``path``, memory-mapped read only (the page cache holds one copy
    for all workers); the last MAPPED_FILES files stay mapped."""
    maps = _CTX["mapped"]
    arr = maps.pop(path, None)
    if arr is None:
        arr = np.asarray(np.load(path, mmap_mode="r"))
    maps[path] = arr
    if len(maps) > MAPPED_FILES:
        maps.popitem(last=False)
    return arr


def _prepare_rotations(name, rotations):
    """Rotate an original's foreground and alpha (from its .npz) by each rotation angle and make
    its trimap (the given one rotated, or one from the rotated alpha): uint8 foreground, alpha and
    trimap, flattened one after the other into one .npy per rotation. Files already there (a
    resumed run) are kept: they hold the same bytes."""
    todo = [rot for rot in range(rotations) if not os.path.exists(_rotation_path(name, rot))]
    if not todo:
        return
    with np.load(os.path.join(_CTX["cache_dir"], name + ".npz")) as z:
        fg = z["fg"].astype(np.float64)
        alpha = z["alpha"].astype(np.float64)
        trimap = z["trimap"] if "trimap" in z.files else None
    for rot in todo:
        fg_r, alpha_r, tri_r = compose.rotate_original(fg, alpha, trimap, _CTX["angles"][rot])
        alpha8 = compose.to_uint8(alpha_r)
        fg8 = compose.to_uint8(fg_r)
        if tri_r is None:
            tri_r = compose.trimap_from_alpha(alpha8 / 255.0, _CTX["trimap_radius"])
        flat = np.concatenate([fg8.ravel(), alpha8.ravel(), tri_r.astype(np.uint8).ravel()])
        _write_atomic(_rotation_path(name, rot), lambda f: np.save(f, flat))


def _rotated(name, rot):
    """(fg, alpha, trimap), uint8, of an original at rotation ``rot``: read-only views of its
    file from _prepare_rotations."""
    h, w = _CTX["size"]
    flat = _mapped(_rotation_path(name, rot))
    return (flat[:3 * h * w].reshape(h, w, 3), flat[3 * h * w:4 * h * w].reshape(h, w),
            flat[4 * h * w:].reshape(h, w))


def _prepare_backgrounds(pool, used, progress=None):
    """Decode each background number in ``used`` to uint8 RGB (as BackgroundPool.image does) into
    its .npy, where not already there."""
    from dmpn.backgrounds import BackgroundPool

    decoder = BackgroundPool(pool.paths, pool.source, cache_size=0)  # each is read once
    todo = [i for i in used if not os.path.exists(_background_path(i))]
    for i in (progress(todo) if progress and todo else todo):
        image = decoder.image(i)
        _write_atomic(_background_path(i), lambda f: np.save(f, image))


def _write_png_fast(path, arr8):
    """8-bit PNG, atomically and flushed to disk (before the LMDB commit that covers it), zlib
    level 1: about 4x faster than the default level for ~20 % larger files, which matters for
    93K test composites."""
    from PIL import Image

    _write_atomic(path, lambda f: Image.fromarray(arr8).save(f, format="PNG", compress_level=1))


def _make_item(job):
    """job = (split_code, index, key, name, k, b, rot, bg_file) -> (key, datum bytes)."""
    from dmpn.backgrounds import random_crop_resize

    split_code, index, key, name, k, b, rot, bg_file = job
    fg8, alpha8, tri8 = _rotated(name, rot)
    rng = np.random.default_rng([_CTX["seed"], split_code, index])
    bg8 = random_crop_resize(_mapped(_background_path(bg_file)), _CTX["size"], rng)
    image8 = compose.composite_uint8(alpha8, fg8, bg8)
    if split_code == 1:
        root = os.path.join(_CTX["out"], "test")
        # alpha and trimap first, image last: an image PNG implies the other two exist
        _write_png_fast(os.path.join(root, "alpha", key + ".png"), alpha8)
        _write_png_fast(os.path.join(root, "trimap", key + ".png"), tri8)
        _write_png_fast(os.path.join(root, "image", key + ".png"), image8)
    return key, encode_datum(compose.pack_item(image8, tri8, alpha8, fg8, bg8))


# ----------------------------------------------------------------------------------------------
# training crops without a known pixel


def unknown_windows(trimap, crop):
    """Boolean map over the top-left corners of the ``min(crop, H) x min(crop, W)`` windows of
    ``trimap``: True where the window holds no known pixel (0 or 255). A summed-area table of the
    known mask, O(H W) whatever the crop."""
    h, w = trimap.shape
    ch, cw = min(int(crop), h), min(int(crop), w)
    table = np.zeros((h + 1, w + 1), np.int64)
    table[1:, 1:] = (trimap != 128).cumsum(0).cumsum(1)
    return (table[ch:, cw:] - table[:-ch, cw:] - table[ch:, :-cw] + table[:-ch, :-cw]) == 0


def _crop_check(name, split, crop, rotations):
    """Where crops of an original's items (one trimap per rotation, as ``_rotated`` gives it)
    hold no known pixel: Caffe's Data layer takes a crop anywhere in TRAIN, the centre one,
    offset (H - crop) / 2, in TEST. None, or a dict for the manifest and the warning."""
    found = {}
    for rot in range(rotations):
        tri = _rotated(name, rot)[2]
        bad = unknown_windows(tri, crop)
        if split == "test":
            y, x = (bad.shape[0] - 1) // 2, (bad.shape[1] - 1) // 2
            bad = bad[y:y + 1, x:x + 1]
        if bad.any():
            if split == "train":
                y, x = (int(v[0]) for v in np.nonzero(bad))
            found[rot] = {"fraction": round(float(bad.mean()), 4), "positions": int(bad.sum()), "first": [x, y],
                          "no_known_pixel": bool(not (tri != 128).any())}
    if not found:
        return None
    h, w = tri.shape
    return {"split": split, "window": [min(crop, w), min(crop, h)], "rotations": found}


def _contradiction_warning(o):
    """One line naming a given trimap that marks pixels known where its alpha says otherwise."""
    c = o.info["trimap_contradicts_alpha"]
    fg, bg = c["foreground_with_alpha_below_1"], c["background_with_alpha_above_0"]
    return (f"make_lmdb: warning: {o.trimap_path}: {fg:,} pixel{'s' * (fg != 1)} marked foreground "
            f"(255) with alpha below 1 and {bg:,} marked background (0) with alpha above 0 in "
            f"{o.alpha_path}; stored as given")


def _crop_warning(o, r, angles):
    """One line naming the original, its trimap's source and the rotations (item keys end _r<k>)."""
    src = (f"trimap {o.trimap_path}" if o.trimap_path else f"trimap made from {o.alpha_path}"
           if o.alpha_path else "generated trimap")
    rots = ", ".join(f"r{k} ({angles[k]:+g} deg)" for k in r["rotations"])
    where = ("crop positions" if r["split"] == "train" else "the centre crop (Caffe's TEST phase)")
    worst = max(r["rotations"].values(), key=lambda v: v["positions"])
    share = (f"up to {100 * worst['fraction']:.1f} %" if worst["fraction"] >= 0.001 else "under 0.1 %")
    x, y = next(iter(r["rotations"].values()))["first"]
    what = ("no known pixel at all"
            if any(v["no_known_pixel"] for v in r["rotations"].values()) else
            f"{r['window'][0]} x {r['window'][1]} windows with no known pixel (0 or 255)")
    return (f"make_lmdb: warning: {o.name} ({r['split']}, {src}): {what} at rotation {rots}: "
            f"{share} of {where} ({worst['positions']}), the first at x {x}, y {y}; a crop there stops "
            "training (SparseLaplacianSolve: no known pixel)")


# ----------------------------------------------------------------------------------------------
# planning


def _plan_split(split_code, names, global_index, cfg, n_bg):
    perm = np.random.default_rng([cfg["seed"], 7]).permutation(n_bg)
    items = []
    n = cfg["bg_per_original"]
    for name in names:
        k = global_index[name]
        for b in range(n):
            bg_file = int(perm[(k * n + b) % n_bg])
            for r in range(cfg["rotations"]):
                items.append((name, k, b, r, bg_file))
    if split_code == 0:
        # Caffe's Data layer reads in key order: training items are stored in a seeded random
        # order so that a batch mixes originals (as convert_imageset --shuffle does); items in
        # the order of their originals make every batch one original and SGD oscillate.
        order = np.random.default_rng([cfg["seed"], 11]).permutation(len(items))
        items = [items[j] for j in order]
    return [(split_code, i, item_key(i, name, b, r), name, k, b, r, bg_file)
            for i, (name, k, b, r, bg_file) in enumerate(items)]


def _name_max(path):
    """Bytes a file name may have (NAME_MAX) on the file system of ``path`` or, where it does not
    exist yet, of its nearest existing parent; 255 where the system does not say."""
    p = os.path.abspath(path)
    while not os.path.exists(p):
        p = os.path.dirname(p)
    try:
        return int(os.pathconf(p, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


def _check_name_lengths(originals, cfg, out):
    """Refuse, before anything is written, an original whose test PNGs' names (``<key>.png``
    with the largest numbers these arguments give; its cache files' names are shorter) would pass
    the output's NAME_MAX. Every original: another seed may hold any of them out."""
    limit = _name_max(out)
    n_items = len(originals) * cfg["bg_per_original"] * cfg["rotations"]
    for o in originals:
        key = item_key(max(n_items - 1, 0), o.name, cfg["bg_per_original"] - 1, cfg["rotations"] - 1)
        longest = len(key + ".png")  # bytes: key-safe names are ASCII
        if longest > limit:
            raise BuildError(f"{o.image_path or o.source_name}: name too long: its test PNGs' names "
                             f"(<index>_<name>_b<bg>_r<rot>.png) would take {longest} bytes, over "
                             f"the file name limit of {limit} bytes at {out}; rename it to at most "
                             f"{limit - (longest - len(o.name))} characters before the extension")


def _forced_set(forced):
    """--forced-train names as they match original names: key-safe (a file stem works too),
    lower case."""
    return {_safe_name(f).lower() for f in forced}


def choose_split(names, test_count, forced, seed):
    """(train names, test names), sorted. Forced names always train; test originals drawn from
    the rest with ``default_rng([seed, 1])``."""
    forced_present = sorted(n for n in names if n.lower() in _forced_set(forced))
    free = sorted(n for n in names if n not in forced_present)
    order = np.random.default_rng([seed, 1]).permutation(len(free))
    test = sorted(free[i] for i in order[:test_count])
    train = sorted(n for n in names if n not in test)
    return train, test, forced_present


def estimate_bytes(size, n_train, n_test, n_originals, rotations=1, background_bytes=0):
    """Disk bytes the output will take (LMDB overflow pages, test PNGs upper bound, cache: each
    original's .npz, its uint8 arrays per rotation, and ``background_bytes`` of decoded
    backgrounds)."""
    h, w = size
    value = ITEM_CHANNELS * h * w + 40
    per_item = math.ceil((value + 16) / 4096) * 4096 + 128
    lmdb_bytes = (n_train + n_test) * per_item + 2 * 1024 * 1024
    png_bytes = n_test * int(4.2 * h * w + 3000)  # image + trimap + alpha, generous
    cache_bytes = (n_originals * (h * w * 7 * 4 + h * w + 1024)
                   + n_originals * rotations * (h * w * 5 + 4096) + background_bytes)
    return {"lmdb": lmdb_bytes, "png": png_bytes, "cache": cache_bytes,
            "total": lmdb_bytes + png_bytes + cache_bytes, "per_item": per_item}


def _decoded_bytes(path, size):
    """Disk bytes of a background decoded to uint8 RGB in the cache, from its header (the item
    size where Pillow cannot tell)."""
    h, w = size
    try:
        from PIL import Image

        with Image.open(path) as im:
            w, h = im.size
    except Exception:
        pass
    return 3 * h * w + 4096


def _has_content(path):
    try:
        return os.stat(path).st_size > 0
    except OSError:
        return False


def _du(path):
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
            except OSError:
                pass
    return total


def _free_bytes(path):
    p = os.path.abspath(path)
    while not os.path.exists(p):
        p = os.path.dirname(p)
    override = os.environ.get("DMPN_MAKE_LMDB_FREE_BYTES")  # tests only
    return int(override) if override else shutil.disk_usage(p).free


# ----------------------------------------------------------------------------------------------
# command line


MAX_ANGLE_LIMIT = 90.0  # degrees; --max-angle 0 gives unrotated copies


crop_value = whole_number(0, note=" (0: no check)")


def max_angle_value(text) -> float:
    """The largest rotation, degrees: finite, 0 <= DEG <= 90 (the angles are 0, +a, -a, ...; a
    negative value only swaps their signs, and beyond 90 a same-size rotation loses most of the
    foreground)."""
    v = finite_float(text)
    if not 0 <= v <= MAX_ANGLE_LIMIT:
        raise argparse.ArgumentTypeError(f"must be from 0 to {MAX_ANGLE_LIMIT:g} degrees, got {text}")
    return v


def build_parser():
    p = argparse.ArgumentParser(
        prog="make_lmdb.py",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Build the paper's composited training and test data (Sec. 4.1) as Caffe LMDBs for the "
            "stock Data layer, resumably.\n\n"
            "Each item is a raw uint8 Datum of 11 channels: 0-2 composited image RGB, 3 trimap "
            "(0/128/255), 4 alpha, 5-7 foreground RGB, 8-10 background RGB; keys "
            "'{index:08d}_{original}_b{bg:04d}_r{rot}'. Output: DIR/train_lmdb, DIR/test_lmdb, "
            "DIR/test/{image,trimap,alpha}/<key>.png, DIR/manifest.json (written last: its presence "
            "means complete).\n\n"
            "Rerun the same command after an interruption (Ctrl-C, kill, full disk) to resume; it "
            "ends with the same database as an uninterrupted run. Other arguments on an existing "
            "output are refused."),
        epilog=(
            "Presets (explicit options override them):\n"
            "  paper: --size 600x800 --bg-per-original 1000 --rotations 3 --test-originals 31 "
            "(of 81; scaled for fewer originals), 81 synthetic originals without --originals. "
            "With 81 originals that is 243,000 items, about 1.3 TB as raw Datums (1.5 TB with "
            "the test PNGs): use fewer "
            "backgrounds (e.g. --bg-per-original 50, ~70 GB) or a smaller --size "
            "(300x400 is 4x smaller).\n"
            "  demo:  --size 192x192 --bg-per-original 4 --rotations 2 --test-originals 4, 12 "
            "synthetic originals (96 items, a few seconds).\n\n"
            "Exit status: 0 complete; 1 another failure, named (a file that cannot be read or "
            "written, or an unfinished database that these arguments do not produce); 2 bad input "
            "or arguments (or an output folder made with other arguments, or one that cannot be "
            "written); 3 not enough disk space; 4 write failed (e.g. disk full: free space and "
            "rerun to resume); 130 interrupted (rerun to resume)."),
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created; resumed if "
                   "it holds an unfinished build with the same arguments)")
    p.add_argument("--originals", metavar="DIR", help="folder with image/ and alpha/ (optional "
                   "trimap/ and fg/ foreground colour), files matched by name; images of any size "
                   "are resized to --size (paper: 81 originals, all resized to 600 x 800). Without "
                   "it: synthetic originals (dmpn.synth: hair, fur, motion blur, glass with holes, "
                   "net, low contrast) with their trimaps")
    p.add_argument("--synthetic", type=positive_int, metavar="N", help="number of synthetic originals "
                   "when --originals is not given (paper preset 81, demo 12)")
    p.add_argument("--trimap-dir", metavar="NAME", help="name of the trimap subfolder of "
                   "--originals (default 'trimap'; e.g. 'trimap1' for alphamatting data); its "
                   "trimaps are resized and rotated with the alpha, and one that marks pixels "
                   "foreground where the alpha is below 1 or background where it is above 0 is "
                   "stored as given, with a warning. Where no trimap folder exists, each trimap is "
                   "made from the rotated alpha by a fixed erosion of radius --trimap-radius (Deep "
                   "Image Matting dilates by a random amount; the paper used hand-drawn "
                   "low-resolution trimaps)")
    p.add_argument("--trimap-radius", type=positive_int, metavar="PX", help="erosion radius for "
                   "trimaps made from alpha (default 1.5%% of the shorter side: 9 px at 600x800)")
    p.add_argument("--backgrounds", metavar="DIR", help="folder of background images (paper: 1000, "
                   "500 indoor scenes + 500 Places, resized to 600 x 800). Default: the photographs "
                   "bundled with scikit-image (no download), random crops and flips")
    p.add_argument("--preset", choices=sorted(PRESETS), default="paper", help="values for the "
                   "options below (default: paper)")
    p.add_argument("--bg-per-original", type=positive_int, metavar="N", help="backgrounds each "
                   "original is composited onto (paper: 1000; demo: 4)")
    p.add_argument("--rotations", type=positive_int, metavar="K", help="rotations of foreground and "
                   "alpha per background (paper: 3, angles not given; we use 0, +15, -15 deg; demo: 2)")
    p.add_argument("--max-angle", type=max_angle_value, default=15.0, metavar="DEG",
                   help="largest rotation angle, 0 to 90 degrees (default 15): angles 0, +a, -a, "
                   "+2a, ... up to this")
    p.add_argument("--size", type=dims(2, minimum=16), metavar="HxW", help="stored size of every item "
                   "(paper: 600x800; demo: 192x192). Originals are resized to it whatever their "
                   "aspect ratio, as the paper's 'resized to 600 x 800' says, not cropped or "
                   "padded: at 600x800 an 800 x 640 (H x W) portrait comes out 1.67x wider for its "
                   "height")
    p.add_argument("--test-originals", type=positive_int, metavar="N", help="originals held out for "
                   "testing, with all their composites (paper: 31 of 81; demo: 4 of 12). The split "
                   "is by original, reproducible from --seed")
    p.add_argument("--forced-train", metavar="NAMES", help="comma-separated original names "
                   "(case-insensitive; file stems work too) always put in training; each must name an "
                   "original. "
                   "Default: the paper's 8 alphamatting.com test images, where present: "
                   + ",".join(FORCED_TRAIN_DEFAULT))
    p.add_argument("--check-crop", type=crop_value, default=160, metavar="N", help="warn, naming "
                   "the original and rotation, where an item's trimap has an N x N window with no "
                   "known pixel (0 or 255): a training crop there stops SparseLaplacianSolve. "
                   "Default 160, the main job's crop (a 320 crop, the paper net's, without a known "
                   "pixel holds such a window too); test items: the centre crop only. 0: no check. "
                   "Does not change the output")
    p.add_argument("--seed", type=seed, default=0, metavar="S", help="seed of the split, "
                   "background choice, crops and flips, synthetic originals: 0 to 4294967295 "
                   "(default 0)")
    p.add_argument("--workers", type=positive_int, default=min(os.cpu_count() or 1, 8), metavar="N",
                   help="worker processes for compositing (default: CPU count, at most 8); does "
                   "not change the output")
    p.add_argument("--txn-mb", type=positive_float, default=256.0, metavar="MB", help="LMDB transaction "
                   "size in MB (default 256); does not change the output")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def resolve_config(args) -> dict:
    preset = PRESETS[args.preset]
    cfg = {
        "preset": args.preset,
        "size": list(args.size or preset["size"]),
        "bg_per_original": args.bg_per_original or preset["bg_per_original"],
        "rotations": args.rotations or preset["rotations"],
        "max_angle": float(args.max_angle),
        "seed": int(args.seed),
        "forced_train": (list(FORCED_TRAIN_DEFAULT) if args.forced_train is None else
                         [s.strip() for s in args.forced_train.split(",") if s.strip()]),
    }
    cfg["angles"] = compose.rotation_angles(cfg["rotations"], cfg["max_angle"])
    cfg["trimap_radius"] = args.trimap_radius or compose.default_trimap_radius(cfg["size"])
    return cfg


def trimap_source(originals_folder, trimap_dir, radius):
    """Where the items' trimaps (training and test) come from: (one console line, manifest
    dict). With --originals, the folder ``trimap_dir`` when it exists, else the alpha eroded; the
    other trimap folders there (trimap*/: alphamatting data has trimap1/ and trimap2/, no
    trimap/) are named as not used, with the option that uses one, since a default build would
    otherwise pass them by without a word."""
    made = (f"made from the alpha by erosion of radius {radius} px "
            "(dmpn.compose.trimap_from_alpha)")
    if originals_folder is None:
        source = "generated with the synthetic originals (dmpn.synth)"
        return f"trimaps: {source}", {"source": source}
    folder = os.path.abspath(originals_folder)
    used = os.path.normpath(os.path.join(folder, trimap_dir))  # "trimap1/", "./trimap1" alike
    if not os.path.isdir(used):
        used = None
    unused = sorted(os.path.join(folder, d) for d in os.listdir(folder)
                    if d.lower().startswith("trimap") and os.path.isdir(os.path.join(folder, d))
                    and os.path.join(folder, d) != used)
    source = f"given, from {used}/" if used else made
    line = f"trimaps (training and test items): {source}"
    if unused:
        names = ", ".join(d + "/" for d in unused)
        line += (f"; not used: {names} (--trimap-dir {os.path.basename(unused[0])} uses "
                 f"{unused[0]}/)")
    return line, {"source": source, "folder": used, "unused_folders": unused}


def _print(*a):
    print(*a, flush=True)


def build(args) -> dict:
    """Run the builder for parsed ``args``; returns the manifest. Raises BuildError."""
    cfg = resolve_config(args)
    preset = PRESETS[args.preset]
    out = os.path.abspath(args.out)

    # ---- inputs (read and checked before anything is written) --------------------------------
    if args.originals:
        if args.synthetic:
            raise BuildError("--synthetic only applies without --originals")
        trimap_dir = args.trimap_dir or "trimap"
        originals, orig_sha = scan_originals(args.originals, trimap_dir, bool(args.trimap_dir))
        cfg["originals"] = {"source": os.path.abspath(args.originals), "trimap_dir": trimap_dir,
                            "sha256": orig_sha}
    else:
        if args.trimap_dir:
            raise BuildError("--trimap-dir only applies with --originals")
        count = args.synthetic or preset["synthetic"]
        originals = synthetic_originals(count)
        cfg["originals"] = {"source": "synthetic (dmpn.synth)", "count": count,
                            "seed": cfg["seed"], "size": cfg["size"]}
    trimap_line, trimaps_used = trimap_source(args.originals, args.trimap_dir or "trimap",
                                              cfg["trimap_radius"])
    names = [o.name for o in originals]
    n = len(names)
    if args.forced_train is not None:  # given names must exist; the default applies where present
        lower = {x.lower() for x in names}
        unknown = [f for f in cfg["forced_train"] if _forced_set([f]).isdisjoint(lower)]
        if unknown:
            shown = ", ".join(names[:8]) + (f", ... ({n} in all)" if n > 8 else "")
            raise BuildError(f"--forced-train: no original named {', '.join(unknown)}; the "
                             f"originals are {shown}")
    forced_present = [x for x in names if x.lower() in _forced_set(cfg["forced_train"])]
    may_test = n - len(forced_present)  # originals that may be held out
    if args.test_originals:
        test_count = args.test_originals
        if test_count > may_test or test_count >= n:
            raise BuildError(f"--test-originals {test_count}: only {n} originals "
                             f"({len(forced_present)} forced into training); at least one must train")
    else:
        test_count = preset["test_originals"]
        scaled = n != preset["of_originals"]
        if scaled:  # at least one, where one is free to test
            test_count = max(1, int(round(n * preset["test_originals"] / preset["of_originals"])))
        test_count = min(test_count, may_test)
        if test_count >= n:
            raise BuildError(f"{n} original(s) with --preset {args.preset}: testing on {test_count} "
                             f"(the preset's {preset['test_originals']} of {preset['of_originals']}"
                             f"{', scaled' if scaled else ''}) leaves none for training; give more "
                             "originals (--synthetic N, --originals DIR)")
        if test_count != preset["test_originals"]:
            _print(f"note: {n} originals ({len(forced_present)} forced into training): testing on "
                   f"{test_count} (the preset's {preset['test_originals']} of "
                   f"{preset['of_originals']}{', scaled' if scaled else ''})")
    cfg["test_originals"] = test_count
    train, test, forced_present = choose_split(names, test_count, cfg["forced_train"], cfg["seed"])
    _check_name_lengths(originals, cfg, out)

    from dmpn.backgrounds import default_backgrounds, folder_backgrounds

    pool = folder_backgrounds(args.backgrounds) if args.backgrounds else default_backgrounds()
    if len(pool) > 50:
        _print(f"checking {len(pool)} backgrounds ...")
    bg_sha = pool.validate()
    cfg["backgrounds"] = {"source": pool.source, "count": len(pool), "sha256": bg_sha}

    fingerprint = hashlib.sha256(json.dumps(
        {"builder": BUILDER_VERSION, **cfg}, sort_keys=True).encode()).hexdigest()

    # ---- output folder state -----------------------------------------------------------------
    args_path = os.path.join(out, ARGS_FILE)
    manifest_path = os.path.join(out, MANIFEST)
    if os.path.exists(out) and not os.path.isdir(out):
        raise BuildError(f"{out}: exists and is not a folder")
    existing = os.path.isdir(out) and os.listdir(out)
    if existing:
        if not os.path.exists(args_path):
            raise BuildError(f"{out}: folder is not empty and was not made by make_lmdb.py; "
                             "choose another --out")
        with open(args_path) as f:
            old = json.load(f)
        if old.get("fingerprint") != fingerprint:
            diff = sorted(k for k in set(old.get("config", {})) | set(cfg)
                          if old.get("config", {}).get(k) != cfg.get(k))
            raise BuildError(f"{out}: holds a build made with other arguments (differs in: "
                             f"{', '.join(diff) or 'tool version'}); refusing to mix them. Use the "
                             "same arguments to resume, or another --out")
        if os.path.exists(manifest_path):
            with open(manifest_path) as f:
                manifest = json.load(f)
            _print(f"{out}: already complete ({manifest['counts']['train']} training, "
                   f"{manifest['counts']['test']} test items); nothing to do")
            return manifest

    jobs_all = {}
    global_index = {nm: i for i, nm in enumerate(names)}
    jobs_all["train"] = _plan_split(0, train, global_index, cfg, len(pool))
    jobs_all["test"] = _plan_split(1, test, global_index, cfg, len(pool))
    n_train, n_test = len(jobs_all["train"]), len(jobs_all["test"])
    try:  # a folder that cannot be written is no full disk
        check_writable(out)
    except OSError as e:
        raise BuildError(f"--out {error_text(e)}", EXIT_INPUT) from None
    used_bg = sorted({job[7] for split in SPLITS for job in jobs_all[split]})
    est = estimate_bytes(cfg["size"], n_train, n_test, n, cfg["rotations"],
                         sum(_decoded_bytes(pool.paths[i], cfg["size"]) for i in used_bg))
    used = _du(out) if existing else 0
    need = max(est["total"] - used, 0)
    free = _free_bytes(out)
    h, w = cfg["size"]
    _print(f"{n} originals ({len(train)} training, {len(test)} test), "
           f"{cfg['bg_per_original']} backgrounds x {cfg['rotations']} rotations each, {h} x {w}: "
           f"{n_train + n_test:,} items ({n_train:,} training, {n_test:,} test)")
    _print(trimap_line)
    _print(f"disk: about {_human(est['total'])} in all (LMDB {_human(est['lmdb'])}, test PNGs "
           f"{_human(est['png'])}, cache {_human(est['cache'])}); "
           f"{_human(need)} still to write, {_human(free)} free at {out}")
    if need > free - 64 * 1024 * 1024:
        per_bg = (est["per_item"] * cfg["rotations"] * n
                  + int(4.2 * h * w + 3000) * cfg["rotations"] * len(test))
        fit_bg = max(int((free - 64 * 1024 * 1024 - est["cache"] - used) // max(per_bg, 1)), 0)
        fewer = (f"fewer backgrounds per original (--bg-per-original {fit_bg} would fit here), "
                 if 1 <= fit_bg < cfg["bg_per_original"] else "")
        smaller = (f"a smaller stored size (--size {h // 2}x{w // 2} takes a quarter), "
                   if min(h, w) // 2 >= 16 else "")
        raise BuildError(
            f"not enough disk space at {out}: needs about {_human(need)}, {_human(free)} free. "
            f"(The paper's full set, 81 originals x 1000 backgrounds x 3 rotations at 600 x 800, "
            f"is about 1.3 TB as raw Datums, 1.5 TB with the test PNGs.) To make it practical: "
            f"{fewer}{smaller}{'or ' if fewer or smaller else ''}another --out on a bigger disk.",
            EXIT_DISK)

    # ---- write -------------------------------------------------------------------------------
    os.makedirs(out, exist_ok=True)
    if not os.path.exists(args_path):
        write_text(args_path, json.dumps({"fingerprint": fingerprint, "config": cfg},
                                                 indent=1, sort_keys=True))
    cache_dir = os.path.join(out, ".cache")
    # the items' uint8 arrays, in a folder named by the arguments: never taken for other ones
    arrays_dir = os.path.join(cache_dir, "uint8-" + fingerprint[:16])
    os.makedirs(arrays_dir, exist_ok=True)
    for folder in (cache_dir, arrays_dir):
        _remove_temp_files(folder)
    for o in originals:  # before the progress bar
        if "trimap_contradicts_alpha" in o.info:
            print(_contradiction_warning(o), file=sys.stderr, flush=True)
    infos = {}
    t0 = time.time()
    from tqdm import tqdm

    needs_fg = args.originals and any(o.fg_path is None for o in originals)
    it = originals
    if needs_fg or n > 40:
        it = tqdm(originals, desc="originals", unit="orig", dynamic_ncols=True,
                  disable=args.no_progress)
    ctx = {"seed": cfg["seed"], "size": tuple(cfg["size"]), "angles": cfg["angles"],
           "trimap_radius": cfg["trimap_radius"], "cache_dir": cache_dir,
           "arrays_dir": arrays_dir, "out": out}
    _init_worker(ctx)  # the main process prepares the arrays the workers read
    test_set = set(test)
    crop_found = {}
    for o in it:
        infos[o.name] = {**_prepare_original(o, cfg, cache_dir), **o.info}
        _prepare_rotations(o.name, cfg["rotations"])
        if args.check_crop:
            r = _crop_check(o.name, "test" if o.name in test_set else "train", args.check_crop,
                            cfg["rotations"])
            if r:
                crop_found[o.name] = r
    for o in originals:  # after the progress bar
        if o.name in crop_found:
            print(_crop_warning(o, crop_found[o.name], cfg["angles"]), file=sys.stderr, flush=True)
    _prepare_backgrounds(pool, used_bg, None if len(used_bg) <= 50 else
                         lambda todo: tqdm(todo, desc="backgrounds", unit="image", dynamic_ncols=True,
                                           disable=args.no_progress))
    counts, rates = {}, {}
    for split in SPLITS:
        counts[split], rates[split] = _write_split(out, split, jobs_all[split], ctx, est, args)

    manifest = {
        "tool": "tools/make_lmdb.py (dmpn.lmdb_builder)",
        "tool_version": BUILDER_VERSION,
        "dmpn_version": _dmpn_version(),
        "fingerprint": fingerprint,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "preset": cfg["preset"],
        "size": {"height": h, "width": w},
        "seed": cfg["seed"],
        "bg_per_original": cfg["bg_per_original"],
        "rotations": {"count": cfg["rotations"], "angles_deg": cfg["angles"],
                      "how": "foreground, alpha and trimap rotated together about the centre "
                             "(bilinear, same size), composited onto an unrotated background"},
        "split": {"by": "original", "train": train, "test": test,
                  "forced_train_requested": cfg["forced_train"],
                  "forced_train_present": forced_present,
                  "test_originals": len(test)},
        "counts": {"originals": n, "train": counts["train"], "test": counts["test"]},
        "items_per_second": rates,
        "originals": {"input": cfg["originals"], "per_original": infos},
        "backgrounds": {"source": pool.source, "files": pool.names, "sha256": bg_sha,
                        "choice": "background b of the k-th original (sorted, over all originals) "
                                  "is file perm[(k*N + b) % P], perm = "
                                  "default_rng([seed, 7]).permutation(P)",
                        "augmentation": "random crop 60-100% of the largest window of the target "
                                        "aspect, random horizontal flip, resize "
                                        "(default_rng([seed, split(0 train, 1 test), index]))"},
        "trimaps": {**trimaps_used,
                    "given": "resized nearest, rotated bilinearly with the alpha; pixels not purely "
                             "0 or 255 after rotation become unknown (128)",
                    "made_from_alpha": f"Deep Image Matting style: foreground = alpha 255 eroded, "
                                       f"background = alpha 0 eroded by a disk of radius "
                                       f"{cfg['trimap_radius']} px, rest 128 "
                                       "(dmpn.compose.trimap_from_alpha)"},
        "trimap_crop_check": {
            "crop": args.check_crop,
            "how": "per original and rotation number, the windows of crop x crop (at most the "
                   "item size) with no known pixel (0 or 255) in the item's trimap: any position "
                   "for training originals, the centre one for test originals (Caffe's Data "
                   "layer in TRAIN / TEST); fraction and count of positions, first (x, y); crop 0: not "
                   "checked",
            "originals": crop_found},
        "foregrounds": "see originals.per_original[*].foreground",
        "lmdb": {
            "train": "train_lmdb", "test": "test_lmdb",
            "datum": "raw uint8 Caffe Datum, encoded false, label 0, C x H x W",
            "channels": ITEM_CHANNELS, "channel_order": CHANNEL_ORDER,
            "slice_points": SLICE_POINTS,
            "composite": "image = round(a*F + (1-a)*B) from the stored 8-bit alpha, fg, bg",
            "key_format": KEY_FORMAT,
            "order": {"train": "seeded random order (numpy default_rng([seed, 11]).permutation of "
                               "the items listed original by original, then background, then "
                               "rotation), so that a batch mixes originals",
                      "test": "original (sorted by name), then background, then rotation"},
        },
        "test_png": {"folder": "test", "subfolders": ["image", "trimap", "alpha"],
                     "names": "<key>.png"},
        "disk_bytes": _du(out),
        "seconds": round(time.time() - t0, 2),
    }
    write_text(manifest_path, json.dumps(manifest, indent=1))
    shutil.rmtree(cache_dir, ignore_errors=True)
    return manifest


def _dmpn_version():
    try:
        import dmpn

        return dmpn.__version__
    except Exception:  # pragma: no cover
        return "unknown"


def _write_split(out, split, jobs, ctx, est, args):
    import lmdb
    from tqdm import tqdm

    path = os.path.join(out, f"{split}_lmdb")
    map_size = max(int(est["lmdb"] * 1.5) + (256 << 20), 1 << 30)
    # tests only: a small map makes LMDB run out of space as on a full disk
    map_size = int(os.environ.get("DMPN_MAKE_LMDB_MAP_BYTES") or map_size)
    env = lmdb.open(path, map_size=map_size, subdir=True, meminit=False, max_dbs=0)
    try:
        with env.begin() as txn:
            done = txn.stat()["entries"]
            last = None
            if done:
                with txn.cursor() as cur:
                    cur.last()
                    last = bytes(cur.key()).decode("ascii", "replace")
        if done > len(jobs) or (done and last != jobs[done - 1][2]):
            raise BuildError(f"{path}: holds {done} items ending with key {last!r}, which is not "
                             "what these arguments produce; delete the folder and rerun",
                             EXIT_ERROR)
        if split == "test":
            for sub in ("image", "trimap", "alpha"):  # PNG writes cut short by a kill
                _remove_temp_files(os.path.join(out, "test", sub))
            # committed test items whose PNGs are missing (e.g. deleted) or empty (a power loss
            # before this version flushed them): write them again
            missing = [j for j in jobs[:done]
                       if not all(_has_content(os.path.join(out, "test", sub, j[2] + ".png"))
                                  for sub in ("image", "alpha", "trimap"))]
            if missing:
                _init_worker(ctx)
                for j in missing:
                    _make_item(j)
        if done:
            _print(f"{split}: resuming after {done:,} committed items")
        todo = jobs[done:]
        # tests only: "K" or "split:K" makes the process SIGKILL itself after K new items of the
        # split were put (before their transaction is committed)
        kill_spec = os.environ.get("DMPN_MAKE_LMDB_KILL_AFTER", "")
        kill_split, _, kill_n = kill_spec.rpartition(":")
        kill_after = int(kill_n) if kill_n and kill_split in ("", split) else 0
        txn_bytes = max(int(args.txn_mb * 1e6), 1)
        t0 = time.time()
        bar = tqdm(total=len(jobs), initial=done, desc=split, unit="item", dynamic_ncols=True,
                   smoothing=0.1, disable=args.no_progress)
        pool = None
        try:
            workers = max(int(args.workers), 1)
            if workers > 1 and len(todo) >= 4 * workers:
                import multiprocessing as mp

                pool = mp.get_context("fork").Pool(workers, _init_worker, (ctx, True))
                chunk = max(1, min(16, len(todo) // (workers * 4)))
                results = pool.imap(_make_item, todo, chunksize=chunk)
            else:
                _init_worker(ctx)
                results = map(_make_item, todo)
            txn = env.begin(write=True)
            pending = 0
            made = 0
            try:
                for key, value in results:
                    txn.put(key.encode("ascii"), value, overwrite=True, append=True)
                    pending += len(value)
                    made += 1
                    bar.update(1)
                    if kill_after and made >= kill_after:
                        os.kill(os.getpid(), signal.SIGKILL)
                    if pending >= txn_bytes:
                        txn.commit()
                        txn = env.begin(write=True)
                        pending = 0
                txn.commit()
            except BaseException:
                txn.abort()
                raise
        finally:
            bar.close()
            if pool is not None:
                pool.terminate()
                pool.join()
        rate = len(todo) / max(time.time() - t0, 1e-9)
        _print(f"{split}: {len(jobs):,} items in {path} ({len(todo):,} written now, "
               f"{rate:.1f} items/s)")
        return len(jobs), round(rate, 1)
    finally:
        env.close()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    old_term = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        build(args)
        _print(f"done: {os.path.abspath(args.out)}")
        return EXIT_OK
    except BuildError as e:
        print(f"make_lmdb: error: {e}", file=sys.stderr, flush=True)
        return e.code
    except InputError as e:
        print(f"make_lmdb: bad input: {e}", file=sys.stderr, flush=True)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("\nmake_lmdb: interrupted; committed items are kept. Rerun the same command to "
              "resume.", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            print(f"make_lmdb: disk full ({e}); free space and rerun the same command to resume.",
                  file=sys.stderr, flush=True)
            return EXIT_WRITE
        print(f"make_lmdb: error: {error_text(e)}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    except Exception as e:
        import lmdb

        if isinstance(e, lmdb.Error):
            print(f"make_lmdb: LMDB write failed ({type(e).__name__}: {e}). If the disk is full, "
                  "free space and rerun the same command to resume.", file=sys.stderr, flush=True)
            return EXIT_WRITE
        raise
    finally:
        signal.signal(signal.SIGTERM, old_term)


def read_lmdb(path, keys_only=False):
    """Yield (key str, value bytes) of an LMDB in key order (for checks and tests)."""
    import lmdb

    env = lmdb.open(path, readonly=True, lock=False, subdir=True)
    try:
        with env.begin() as txn, txn.cursor() as cur:
            for k, v in cur:
                yield bytes(k).decode("ascii"), (None if keys_only else bytes(v))
    finally:
        env.close()
