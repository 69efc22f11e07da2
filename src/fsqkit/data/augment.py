"""Training augmentation of decoded images, and the evaluation crop.

Every mode picks a crop box in the original image and resizes it to
``size x size`` in one antialiased bilinear step (PIL), then maybe flips it:

- ``"none"``: the centre square (the evaluation transform: short side resized
  to ``size``, centre crop); no flip.
- ``"crop"``: a random square of side ``min(h, w)`` (= a random ``size x size``
  crop of the image resized to short side ``size``), as MaskGIT's VQGAN trains.
- ``"resized-crop"``: Inception's random resized crop: a box of ``scale`` of the
  area and aspect ratio in ``ratio``, resized to the square.

Both random modes flip horizontally with probability 1/2 when ``flip``. The
random draws come from a ``numpy`` generator the caller seeds per item, so an
item's augmentation is a pure function of that seed (exact resume).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from fsqkit.data.decode import open_rgb

AUGMENT_MODES = ("none", "crop", "resized-crop")

Box = tuple[float, float, float, float]  # left, top, right, bottom as fractions of w, h


@dataclass(frozen=True)
class Augment:
    """How training images are cropped (see the module docstring).

    Attributes:
        mode: ``"none"``, ``"crop"`` or ``"resized-crop"``.
        flip: random horizontal flips (random modes only).
        scale: area fraction range of ``"resized-crop"``.
        ratio: aspect ratio range of ``"resized-crop"``.
    """

    mode: str = "crop"
    flip: bool = True
    scale: tuple[float, float] = (0.35, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __post_init__(self) -> None:
        if self.mode not in AUGMENT_MODES:
            raise ValueError(f"augmentation must be one of {AUGMENT_MODES}, got {self.mode!r}")
        lo, hi = self.scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"scale must satisfy 0 < lo <= hi <= 1, got {self.scale}")

    @property
    def random(self) -> bool:
        return self.mode != "none"


EVAL = Augment("none", flip=False)


def crop_box(w: int, h: int, aug: Augment, rng: np.random.Generator | None) -> tuple[Box, bool]:
    """The crop box (fractions of ``w``, ``h``) and whether to flip, for an image of
    ``w x h`` pixels; ``rng=None`` or mode ``"none"`` give the centre square."""
    side = min(w, h)
    if rng is None or not aug.random:
        left, top = (w - side) / 2, (h - side) / 2
        return (left / w, top / h, (left + side) / w, (top + side) / h), False
    if aug.mode == "crop":
        left, top = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        box = (left / w, top / h, (left + side) / w, (top + side) / h)
    else:
        box = _resized_crop_box(w, h, aug, rng)
    return box, bool(aug.flip and rng.random() < 0.5)


def _resized_crop_box(w: int, h: int, aug: Augment, rng: np.random.Generator) -> Box:
    area = w * h
    log_lo, log_hi = math.log(aug.ratio[0]), math.log(aug.ratio[1])
    for _ in range(10):
        target = area * rng.uniform(*aug.scale)
        ratio = math.exp(rng.uniform(log_lo, log_hi))
        cw, ch = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            return left / w, top / h, (left + cw) / w, (top + ch) / h
    side = min(w, h)  # fallback: the centre square
    left, top = (w - side) / 2, (h - side) / 2
    return left / w, top / h, (left + side) / w, (top + side) / h


def load_crop(
    source: str | bytes,
    size: int,
    aug: Augment = EVAL,
    seed: int | None = None,
    name: str | None = None,
) -> tuple[Tensor, str | None]:
    """Decode one image file and crop it: ``(3, size, size)`` uint8 and a
    conversion note (see :func:`~fsqkit.data.decode.open_rgb`).

    ``seed`` seeds the item's augmentation (``None``: the evaluation crop).
    Raises :class:`~fsqkit.data.decode.BadImage` for an unusable file.
    """
    from PIL import Image

    rng = None if seed is None or not aug.random else np.random.default_rng(seed)
    plan: dict[str, object] = {}

    def draft(w: int, h: int) -> tuple[int, int]:
        box, flip = crop_box(w, h, aug, rng)
        plan.update(box=box, flip=flip)
        bw, bh = box[2] - box[0], box[3] - box[1]
        return math.ceil(size / bw), math.ceil(size / bh)

    img, note = open_rgb(source, name, draft)
    box, flip = plan["box"], plan["flip"]  # type: ignore[misc]
    w, h = img.size
    pixels = (box[0] * w, box[1] * h, box[2] * w, box[3] * h)  # type: ignore[index]
    out = img.resize((size, size), Image.Resampling.BILINEAR, box=pixels)
    a = np.asarray(out, dtype=np.uint8)
    if flip:
        a = a[:, ::-1]
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))), note
