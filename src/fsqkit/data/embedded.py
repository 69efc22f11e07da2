"""``embedded``: crops of the photographs that ship inside scikit-image,
scikit-learn and matplotlib (no download, always available).

Training crops come from the 10 colour images bundled with scikit-image (each
crop with a random channel order and horizontal flip). Validation crops come
from three photographs that are never used for training: scikit-learn's two
samples (``china.jpg``, ``flower.jpg``) and matplotlib's ``grace_hopper.jpg``.
The greyscale images of scikit-image (camera, coins, moon, brick, grass,
gravel) and the nearly black Hubble field are left out: they made half of the
training crops colourless, and tokenizers trained on them reproduced the
colours of the held-out photos badly (docs/tokenizer.md). Each crop is cut
from a random position of the photo resized by a random factor in
{1, 1/2, 1/4} (so a crop shows structure, not only texture). Everything is a
pure function of the seed.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fsqkit.data.dataset import ImageDataset, to_uint8_chw

# scikit-image colour images used for training (files bundled with the wheel):
# 8 photographs, the colour wheel and the logo.
TRAIN_PHOTOS: tuple[str, ...] = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "retina.jpg",
    "ihc.png",
    "color.png",
    "logo.png",
)
# Photographs held out for validation: scikit-learn's samples and matplotlib's
# portrait (a third photo with skin tones and a dark uniform, none of which
# the two samples show).
VAL_PHOTOS: tuple[str, ...] = ("china.jpg", "flower.jpg", "grace_hopper.jpg")

SCALES: tuple[float, ...] = (1.0, 0.5, 0.25)
DEFAULT_COUNTS = {"train": 4096, "val": 512}


def _package_dir(package: str) -> str:
    # Locate the package without importing it (importing skimage / sklearn costs seconds).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"embedded data needs the {package!r} package, which is not installed"
        )
    return next(iter(spec.submodule_search_locations))


def _skimage_path(name: str) -> str:
    return os.path.join(_package_dir("skimage"), "data", name)


def _val_path(name: str) -> str:
    if name == "grace_hopper.jpg":
        return os.path.join(_package_dir("matplotlib"), "mpl-data", "sample_data", name)
    return os.path.join(_package_dir("sklearn"), "datasets", "images", name)


@functools.lru_cache(maxsize=4)
def _pyramids(split: str) -> tuple[tuple[Tensor, ...], ...]:
    """For each photo of ``split``: the photo at every scale of ``SCALES`` as
    ``(3, h, w)`` uint8 tensors. Cached: loading takes about a second."""
    from PIL import Image

    if split == "train":
        paths = [_skimage_path(n) for n in TRAIN_PHOTOS]
    else:
        paths = [_val_path(n) for n in VAL_PHOTOS]
    out = []
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"embedded data: bundled photo {path} is missing (is scikit-image / "
                f"scikit-learn / matplotlib installed completely?)"
            )
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
        img = to_uint8_chw(arr, what=path).float()[None]
        levels = []
        for s in SCALES:
            x = img if s == 1.0 else F.interpolate(img, scale_factor=s, mode="area")
            levels.append(x.round().clamp(0, 255).to(torch.uint8)[0])
        out.append(tuple(levels))
    return tuple(out)


def embedded_dataset(
    split: str,
    *,
    image_size: int = 32,
    num_images: int | None = None,
    seed: int = 0,
    permute_channels: bool = True,
) -> ImageDataset:
    """Random ``image_size`` crops of the bundled photographs.

    Args:
        split: ``"train"`` (scikit-image photos) or ``"val"`` (the three held-out photos).
        image_size: crop side in pixels (8 … 128).
        num_images: number of crops (default 4096 train / 512 val).
        seed: crops are a pure function of ``(seed, split)``.
        permute_channels: the training split's colour augmentation (a random
            channel order per crop); colorization turns it off, as it needs the
            true colours.

    Returns:
        :class:`ImageDataset` with ``(num_images, 3, image_size, image_size)`` images.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if not 8 <= image_size <= 128:
        raise ValueError(f"embedded data: image_size must be in [8, 128], got {image_size}")
    n = DEFAULT_COUNTS[split] if num_images is None else int(num_images)
    if n < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    pyramids = _pyramids(split)
    # Different streams for the two splits, so train/val never share a draw.
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    crops = torch.empty((n, 3, image_size, image_size), dtype=torch.uint8)
    for i in range(n):
        photo = pyramids[rng.integers(len(pyramids))]
        usable = [lvl for lvl in photo if min(lvl.shape[1:]) >= image_size]
        lvl = usable[rng.integers(len(usable))]
        top = rng.integers(lvl.shape[1] - image_size + 1)
        left = rng.integers(lvl.shape[2] - image_size + 1)
        crop = lvl[:, top : top + image_size, left : left + image_size]
        if split == "train":
            # Colour augmentation: the training photos are mostly grey or brown, the
            # held-out ones colourful; a random channel order per crop spreads the
            # training colours over the whole RGB cube (and a random flip for free).
            perm = rng.permutation(3)  # drawn either way: the same crops with or without
            if permute_channels:
                crop = crop[torch.from_numpy(perm)]
            if rng.integers(2):
                crop = crop.flip(-1)
        crops[i] = crop
    return ImageDataset(crops, name=f"embedded/{split}")
