"""Panoptic label layout: the category table and the dataset container.

A panoptic label of an image is a pair of integer maps ``[H, W]``:

- ``semantic``: a class in ``[0, num_classes)`` or the void label ``VOID_LABEL``
  (unlabelled pixels, crowd regions, instances dropped by a cap);
- ``instance``: an instance id that tells the segments of one *thing* class
  apart; for *stuff* classes (ground, sky, ...) it carries no meaning, each
  stuff class forms one segment per image.

A segment is the set of pixels sharing ``(class, instance)`` (things) or
``class`` (stuff). :class:`PanopticCategories` says which classes are things;
the metric (:mod:`fsqkit.metrics.panoptic`), the UViM target encoding
(:mod:`fsqkit.uvim.tasks.panoptic_target`) and the loaders all use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

VOID_LABEL = -1
"""Semantic label of void pixels (ignored by the metric and by the losses)."""


@dataclass(frozen=True)
class PanopticCategories:
    """The classes of a panoptic task.

    Attributes:
        names: class names, index = contiguous class id ``0..C-1``.
        is_thing: per class, ``True`` for things (countable objects, one segment
            per instance) and ``False`` for stuff (one segment per image).
        void_label: the semantic label of void pixels; must not be a class id.
        source_ids: optional original category ids (e.g. COCO's), index-aligned.
    """

    names: tuple[str, ...]
    is_thing: tuple[bool, ...]
    void_label: int = VOID_LABEL
    source_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "is_thing", tuple(bool(t) for t in self.is_thing))
        if not self.names:
            raise ValueError("PanopticCategories needs at least one class")
        if len(self.is_thing) != len(self.names):
            raise ValueError(
                f"PanopticCategories: {len(self.names)} names but {len(self.is_thing)} "
                f"is_thing flags"
            )
        if 0 <= self.void_label < len(self.names):
            raise ValueError(
                f"void_label {self.void_label} is a class id (classes are 0..{len(self.names) - 1})"
            )
        if self.source_ids is not None:
            object.__setattr__(self, "source_ids", tuple(int(i) for i in self.source_ids))
            if len(self.source_ids) != len(self.names):
                raise ValueError(
                    f"PanopticCategories: {len(self.names)} names but "
                    f"{len(self.source_ids)} source_ids"
                )

    @classmethod
    def from_things(
        cls, num_classes: int, thing_classes: Sequence[int], void_label: int = VOID_LABEL
    ) -> PanopticCategories:
        """Classes ``0..num_classes-1`` named by their id; ``thing_classes`` are things."""
        things = set(thing_classes)
        if not all(0 <= t < num_classes for t in things):
            raise ValueError(f"thing_classes {sorted(things)} must lie in [0, {num_classes})")
        names = tuple(str(c) for c in range(num_classes))
        return cls(names, tuple(c in things for c in range(num_classes)), void_label)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def thing_mask(self) -> Tensor:
        """``[C]`` bool, ``True`` for thing classes."""
        return torch.tensor(self.is_thing, dtype=torch.bool)

    def check_semantic(self, semantic: Tensor, what: str) -> None:
        """Raise ``ValueError`` naming ``what`` if a label is neither a class nor void."""
        if semantic.dtype.is_floating_point or semantic.dtype == torch.bool:
            raise ValueError(f"{what} must be an integer tensor, got {semantic.dtype}")
        bad = ((semantic < 0) | (semantic >= self.num_classes)) & (semantic != self.void_label)
        if bool(bad.any()):
            value = int(semantic[bad][0])
            raise ValueError(
                f"{what} has label {value} out of range: expected a class in "
                f"[0, {self.num_classes}) or the void label {self.void_label}"
            )


def check_label_pair(semantic: Tensor, instance: Tensor, what: str) -> None:
    """Raise ``ValueError`` unless ``semantic`` and ``instance`` are same-shaped
    integer maps ``[H, W]`` or ``[B, H, W]``."""
    for name, t in (("semantic", semantic), ("instance", instance)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{what} {name} map must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise ValueError(f"{what} {name} map must be an integer tensor, got {t.dtype}")
        if t.ndim not in (2, 3):
            raise ValueError(
                f"{what} {name} map must have shape [H, W] or [B, H, W], got {tuple(t.shape)}"
            )
    if semantic.shape != instance.shape:
        raise ValueError(
            f"{what} semantic and instance maps differ in shape: {tuple(semantic.shape)} vs "
            f"{tuple(instance.shape)}"
        )


def segment_ids(
    semantic: Tensor, instance: Tensor, categories: PanopticCategories
) -> tuple[Tensor, Tensor]:
    """Number the segments of one image.

    Args:
        semantic: ``[H, W]`` int classes or void (checked by the callers with
            :meth:`PanopticCategories.check_semantic`).
        instance: ``[H, W]`` int instance ids (ignored on stuff pixels).
        categories: which classes are things.

    Returns:
        ``ids [H, W]`` int64, the segment of each pixel (``-1`` on void) and
        ``classes [S]`` int64, the class of each segment. Segments are numbered in
        increasing ``(class, instance)`` order.
    """
    valid = semantic != categories.void_label
    sem = semantic[valid].long()
    is_thing = categories.thing_mask.to(semantic.device)[sem]
    inst = torch.where(is_thing, instance[valid].long(), torch.zeros_like(sem))
    # one integer key per (class, instance) pair: 1-D unique is far faster than dim=1
    inst_values, inst = torch.unique(inst, return_inverse=True)
    keys, inverse = torch.unique(sem * len(inst_values) + inst, return_inverse=True)
    ids = torch.full(semantic.shape, -1, dtype=torch.int64, device=semantic.device)
    ids[valid] = inverse
    return ids, keys // max(len(inst_values), 1)


@dataclass
class PanopticDataset:
    """Images with panoptic labels, all of one size.

    Attributes:
        images: ``[N, 3, H, W]`` uint8 RGB.
        semantic: ``[N, H, W]`` int64, classes ``0..C-1`` or ``categories.void_label``.
        instance: ``[N, H, W]`` int64 instance ids (``0`` on stuff and void pixels).
        categories: the class table.
        names: per image, where it came from (e.g. its file name).
        crowd: optional ``[N, H, W]`` int64, the class of each crowd-region pixel
            (void in ``semantic``) and the void label elsewhere; for the metric.
    """

    images: Tensor
    semantic: Tensor
    instance: Tensor
    categories: PanopticCategories
    names: list[str]
    crowd: Tensor | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(
                f"PanopticDataset.images must be uint8 [N, 3, H, W], got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        n, _, h, w = self.images.shape
        maps = {"semantic": self.semantic, "instance": self.instance, "crowd": self.crowd}
        for name, t in maps.items():
            if t is not None and t.shape != (n, h, w):
                raise ValueError(
                    f"PanopticDataset.{name} must have shape {(n, h, w)}, got {tuple(t.shape)}"
                )
        if len(self.names) != n:
            raise ValueError(f"PanopticDataset: {n} images but {len(self.names)} names")
        self.categories.check_semantic(self.semantic, "PanopticDataset.semantic")
        if self.crowd is not None:
            self.categories.check_semantic(self.crowd, "PanopticDataset.crowd")

    def __len__(self) -> int:
        return int(self.images.shape[0])
