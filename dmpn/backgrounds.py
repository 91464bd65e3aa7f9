"""Background images for compositing: a folder of images, or a default set needing no download.

The paper composites onto 1000 backgrounds (500 indoor scenes, 500 Places images). Those are not
shipped; without ``--backgrounds`` the builder uses the photographs bundled inside the installed
scikit-image package (``skimage/data/*.png|jpg``: astronaut, coffee, chelsea, rocket, the
motorcycle pair, camera, coins, moon, brick, grass, gravel, ...), which exist on any machine
that has our dependencies and need no network. Grey ones are expanded to RGB. Variety comes
from :meth:`BackgroundPool.sample`: a random crop (60 to 100 % of the largest crop of the target
aspect ratio, anywhere in the image) and a random horizontal flip, then a resize to the target
size (Pillow bilinear, anti-aliased); the randomness comes from the caller's generator, so a
composite is reproducible.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict

import numpy as np

from dmpn.imageio import InputError, list_images, read_image, to_uint8

__all__ = ["BackgroundPool", "default_backgrounds", "folder_backgrounds", "DEFAULT_NAMES"]

# Bundled with scikit-image (no pooch download needed); missing ones are skipped.
DEFAULT_NAMES = (
    "astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png",
    "motorcycle_right.png", "hubble_deep_field.jpg", "ihc.png", "retina.jpg", "camera.png",
    "coins.png", "moon.png", "brick.png", "grass.png", "gravel.png", "cell.png",
    "clock_motion.png",
)


MIN_SIDE = 2  # pixels: a background must be at least this wide and high


class BackgroundPool:
    """An ordered list of background images, read lazily and kept in a small LRU cache.

    ``source`` describes where they come from (recorded in the manifest); ``names`` are the file
    names; ``paths`` the files.
    """

    def __init__(self, paths, source: str, cache_size: int = 48):
        self.paths = list(paths)
        self.names = [os.path.basename(p) for p in self.paths]
        self.source = source
        self._cache: OrderedDict = OrderedDict()
        self._cache_size = cache_size

    def __len__(self):
        return len(self.paths)

    def image(self, i: int) -> np.ndarray:
        """Background ``i`` as uint8 H x W x 3."""
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        img = to_uint8(self._read(i))
        self._cache[i] = img
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return img

    def _read(self, i: int) -> np.ndarray:
        """Background ``i`` as read_image gives it; InputError naming the file when it cannot be
        read or is too small to crop. A background's transparency is not warned of: only its
        colour is ever used, and a folder of thousands would print a line each."""
        img = read_image(self.paths[i], warn_transparent=False)
        if img.shape[0] < MIN_SIDE or img.shape[1] < MIN_SIDE:
            raise InputError(f"{self.paths[i]}: background too small ({img.shape[1]} x {img.shape[0]}; "
                             f"at least {MIN_SIDE} x {MIN_SIDE})")
        return img

    def validate(self, progress=None) -> str:
        """Read every background (InputError naming a bad file: unreadable, truncated, too small),
        before anything is written; return a sha256 over names and file contents, for the
        builder's argument fingerprint."""
        h = hashlib.sha256()
        it = range(len(self))
        if progress is not None:
            it = progress(it)
        for i in it:
            with open(self.paths[i], "rb") as f:
                data = f.read()
            h.update(self.names[i].encode() + b"\0" + hashlib.sha256(data).digest())
            self._read(i)  # decodes: raises InputError when unreadable, truncated or too small
        return h.hexdigest()

    def sample(self, i: int, size, rng: np.random.Generator) -> np.ndarray:
        """Random crop (aspect of ``size``), random horizontal flip, resize: uint8 H x W x 3."""
        return random_crop_resize(self.image(i), size, rng)


def random_crop_resize(img: np.ndarray, size, rng: np.random.Generator) -> np.ndarray:
    """Crop 60-100 % of the largest ``size``-aspect window at a random place, flip with
    probability 1/2, resize to ``size`` (Pillow's bilinear filter, which widens its support
    when shrinking, i.e. anti-aliased). uint8 in, uint8 out. Draws exactly 4 numbers."""
    th, tw = int(size[0]), int(size[1])
    h, w = img.shape[:2]
    scale, fy, fx, flip = rng.random(4)
    aspect = tw / th
    ch, cw = (h, h * aspect) if h * aspect <= w else (w / aspect, w)
    s = 0.6 + 0.4 * scale
    ch, cw = min(max(int(round(ch * s)), 1), h), min(max(int(round(cw * s)), 1), w)
    y0 = int(fy * (h - ch + 1)) if h > ch else 0
    x0 = int(fx * (w - cw + 1)) if w > cw else 0
    crop = np.ascontiguousarray(img[y0:y0 + ch, x0:x0 + cw])
    if flip < 0.5:
        crop = np.ascontiguousarray(crop[:, ::-1])
    if crop.shape[:2] == (th, tw):
        return crop
    from PIL import Image

    return np.asarray(Image.fromarray(crop).resize((tw, th), Image.BILINEAR))


def default_backgrounds() -> BackgroundPool:
    """The photographs bundled with scikit-image (no download)."""
    import skimage.data

    folder = os.path.dirname(skimage.data.__file__)
    paths = [os.path.join(folder, n) for n in DEFAULT_NAMES if os.path.isfile(os.path.join(folder, n))]
    if not paths:
        raise InputError(f"{folder}: none of scikit-image's bundled photographs found; "
                         "give --backgrounds DIR")
    return BackgroundPool(paths, source=f"scikit-image {_skimage_version()} bundled data")


def folder_backgrounds(folder) -> BackgroundPool:
    """Every image file in ``folder`` (sorted by name). InputError when the folder is empty."""
    found = list_images(folder)
    return BackgroundPool([found[k] for k in sorted(found)], source=os.path.abspath(folder))


def _skimage_version():
    import skimage

    return skimage.__version__
