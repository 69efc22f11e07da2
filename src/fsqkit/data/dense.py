"""Dense data: images with per-pixel targets (depth, semantic and instance maps),
for UViM-style dense prediction. Sources: ``scenes``, ``embedded``, ``nyu:PATH``, ``pairs:PATH``,
``coco-panoptic:JSON,LABEL_DIR,IMAGE_DIR``.

Dimension legend: ``N`` items, ``H = W = image_size``.

- ``scenes``: the procedural renderer (:mod:`fsqkit.data.scenes`): image, exact
  depth, semantic and instance maps; train/val/test are disjoint seed ranges
  (``test``: for final tables only; the other sources have no ``test`` split).
- ``embedded``: the bundled photographs (:func:`fsqkit.data.build_dataset`),
  images only (colorization).
- ``nyu:PATH``: NYU Depth v2's labelled ``.mat``; ``pairs:PATH``: a folder of
  ``images/`` + 16-bit ``depth/`` PNGs. Both hold out a seeded 10% for ``val``.
- ``coco-panoptic:JSON,LABEL_DIR,IMAGE_DIR``: a COCO-panoptic-format data set
  (:func:`fsqkit.data.coco_panoptic.load_coco_panoptic`): images, semantic and
  instance maps and the JSON's class table (``categories``); crowd regions are
  void. A seeded 10% is held out for ``val``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fsqkit.data.dataset import held_out_split
from fsqkit.data.panoptic import PanopticCategories

DENSE_DATA_SPECS = (
    "scenes",
    "embedded",
    "nyu:PATH",
    "pairs:PATH",
    "coco-panoptic:JSON,LABEL_DIR,IMAGE_DIR",
)
DEFAULT_COUNTS = {"train": 2048, "val": 256, "test": 2048}
SPLITS = ("train", "val", "test")


@dataclass
class DenseBatch:
    """A batch from a dense data source: ``image (B, 3, H, W)`` float in ``[0, 1]``;
    optional ``depth (B, 1, H, W)`` metres (0 = unknown), ``semantic`` and
    ``instance`` ``(B, H, W)`` int64."""

    image: Tensor
    depth: Tensor | None = None
    semantic: Tensor | None = None
    instance: Tensor | None = None

    def to(self, device: torch.device | str) -> DenseBatch:
        def mv(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return DenseBatch(mv(self.image), mv(self.depth), mv(self.semantic), mv(self.instance))


@dataclass
class DenseDataset:
    """Images ``(N, 3, H, W)`` uint8 and optional ``depth (N, 1, H, W)`` float32
    metres, ``semantic`` / ``instance`` ``(N, H, W)`` int64; ``categories``: the
    panoptic class table of data with their own (COCO panoptic), else ``None``."""

    images: Tensor
    depth: Tensor | None = None
    semantic: Tensor | None = None
    instance: Tensor | None = None
    name: str = ""
    categories: PanopticCategories | None = None

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or n == 0:
            raise ValueError(f"{self.name}: images must be a non-empty uint8 (N, 3, H, W) tensor")
        for f in ("depth", "semantic", "instance"):
            t = getattr(self, f)
            if t is not None and (t.shape[0] != n or t.shape[-2:] != self.images.shape[-2:]):
                raise ValueError(
                    f"{self.name}: {f} of shape {tuple(t.shape)} does not match images "
                    f"{tuple(self.images.shape)}"
                )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def batch(self, index: Tensor | slice) -> DenseBatch:
        def take(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[index]

        return DenseBatch(
            self.images[index].float().div_(255.0),
            take(self.depth),
            take(self.semantic),
            take(self.instance),
        )


def build_dense_dataset(
    spec: str, split: str, *, image_size: int = 32, num: int | None = None, seed: int = 0
) -> DenseDataset:
    """The ``split`` (``train``/``val``; ``test`` for ``scenes``) of data source
    ``spec`` (see the module docstring). ``num`` sets the item count of the
    generated sources (``scenes``, ``embedded``; default 2048 train / 256 val /
    2048 test) and is ignored for files."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    kind, _, path = spec.partition(":")
    if split == "test" and not (kind == "scenes" and not path):
        raise ValueError(
            f"data {spec!r} has no 'test' split (only the scenes renderer has one); "
            f"use its held-out 'val' split"
        )
    n = DEFAULT_COUNTS[split] if num is None else int(num)
    name = f"{spec}/{split}"
    if kind == "scenes" and not path:
        from fsqkit.data.scenes import render_split

        r = render_split(split, n, image_size, seed)
        images = (r.image * 255).round().to(torch.uint8)
        return DenseDataset(images, r.depth, r.semantic, r.instance, name=name)
    if kind == "embedded" and not path:
        from fsqkit.data.embedded import embedded_dataset

        # True colours: no channel-permutation augmentation (colorization needs them).
        ds = embedded_dataset(
            split, image_size=image_size, num_images=n, seed=seed, permute_channels=False
        )
        return DenseDataset(ds.images, name=name)
    if kind in ("nyu", "pairs"):
        if not path:
            raise ValueError(f"data spec {spec!r} needs a path, e.g. '{kind}:/data/nyu'")
        from fsqkit.data.depth_files import load_depth_pairs, load_nyu_mat

        loader = load_nyu_mat if kind == "nyu" else load_depth_pairs
        images, depth = loader(path, image_size)
        idx = held_out_split(images.shape[0], split, seed)
        return DenseDataset(images[idx], depth[idx], name=name)
    if kind == "coco-panoptic":
        from fsqkit.data.coco_panoptic import load_coco_panoptic

        ds = load_coco_panoptic(*coco_panoptic_paths(spec), image_size=image_size)
        idx = held_out_split(len(ds), split, seed)
        return DenseDataset(
            ds.images[idx], None, ds.semantic[idx], ds.instance[idx], name, ds.categories
        )
    raise ValueError(f"unknown data spec {spec!r}; expected one of {', '.join(DENSE_DATA_SPECS)}")


def coco_panoptic_paths(spec: str) -> tuple[str, str, str]:
    parts = spec.partition(":")[2].split(",")
    if len(parts) != 3 or not all(parts):
        raise ValueError(
            f"data spec {spec!r} needs three comma-separated paths, e.g. "
            f"'coco-panoptic:panoptic_val2017.json,panoptic_val2017,val2017'"
        )
    return parts[0], parts[1], parts[2]
