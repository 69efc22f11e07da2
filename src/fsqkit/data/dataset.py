"""The in-memory image dataset every fsqkit data source produces.

Images are kept as one ``uint8`` tensor ``(N, 3, H, W)`` (cheap to hold, cheap to
index) and converted to float ``[0, 1]`` per batch. Batches are drawn by index,
so a training loop can make sampling a pure function of ``(seed, step)`` and
resume exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class ImageDataset:
    """Images ``(N, 3, H, W)`` uint8 and optional labels ``(N,)`` int64.

    Attributes:
        images: ``(N, 3, H, W)`` uint8 RGB.
        labels: ``(N,)`` int64 class labels, or ``None``.
        num_classes: number of classes (0 without labels).
        name: human-readable description (e.g. ``"embedded/train"``).
        class_names: optional names of the classes, index-aligned with labels.
    """

    images: Tensor
    labels: Tensor | None = None
    num_classes: int = 0
    name: str = ""
    class_names: list[str] | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(
                f"ImageDataset.images must be uint8 of shape (N, 3, H, W), got "
                f"{self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels is not None and self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must have shape ({self.images.shape[0]},), got {tuple(self.labels.shape)}"
            )
        if len(self) == 0:
            raise ValueError(f"dataset {self.name!r} is empty")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def batch(self, index: Tensor | slice) -> Tensor:
        """Float images ``(B, 3, H, W)`` in ``[0, 1]`` for an index tensor or slice."""
        return self.images[index].float().div_(255.0)

    def head(self, n: int) -> ImageDataset:
        """The first ``n`` items (all of them if there are fewer), sharing storage."""
        if n >= len(self):
            return self
        labels = None if self.labels is None else self.labels[:n]
        return ImageDataset(
            self.images[:n], labels, self.num_classes, f"{self.name}[:{n}]", self.class_names
        )

    def batch_labels(self, index: Tensor | slice) -> Tensor | None:
        return None if self.labels is None else self.labels[index]

    def num_parts(self, part_size: int) -> int:
        """Parts of ``part_size`` consecutive items (the last may be shorter)."""
        return -(-len(self) // part_size)

    def iter_part(
        self, k: int, part_size: int, batch_size: int
    ) -> Iterator[tuple[Tensor, Tensor | None]]:
        """Images ``(B, 3, H, W)`` float and labels ``(B,)`` (or ``None``) of part ``k``."""
        stop = min(len(self), (k + 1) * part_size)
        for start in range(k * part_size, stop, batch_size):
            index = slice(start, min(stop, start + batch_size))
            yield self.batch(index), self.batch_labels(index)

    def __repr__(self) -> str:
        n, _, h, w = self.images.shape
        lab = f", {self.num_classes} classes" if self.labels is not None else ""
        return f"ImageDataset({self.name!r}, {n} images {h}x{w}{lab})"


def to_uint8_chw(array, *, what: str) -> Tensor:
    """Convert one image array (H, W), (H, W, 3) or (H, W, 4), uint8 or float in
    [0, 1], to a ``(3, H, W)`` uint8 tensor (gray is replicated, alpha dropped)."""
    import numpy as np

    a = np.asarray(array)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{what}: expected an image of shape (H, W[, 1|3|4]), got {a.shape}")
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    a = a[..., :3]
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating):
            a = np.clip(np.round(a * 255.0), 0, 255).astype(np.uint8)
        elif a.dtype == np.uint16:
            a = (a >> 8).astype(np.uint8)
        elif a.dtype == np.bool_:
            a = a.astype(np.uint8) * 255
        else:
            raise ValueError(f"{what}: unsupported pixel dtype {a.dtype}")
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))


def resize_center_crop(img: Tensor, size: int) -> Tensor:
    """``(3, H, W)`` uint8 -> ``(3, size, size)`` uint8: resize the short side to
    ``size`` (antialiased bilinear), then center-crop."""
    import torch.nn.functional as F

    _, h, w = img.shape
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = img[None].float()
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[..., top : top + size, left : left + size]
    return x.round().clamp(0, 255).to(torch.uint8)[0]


VAL_FRACTION = 0.1


def held_out_split(n: int, split: str, seed: int) -> Tensor:
    """Indices of ``split`` among ``n`` items: a seeded shuffle, the first ``VAL_FRACTION`` (10%, at least one) val."""
    if n < 2:
        raise ValueError(f"need at least 2 images to hold out a validation split, got {n}")
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    n_val = max(1, round(n * VAL_FRACTION))
    return perm[:n_val] if split == "val" else perm[n_val:]
