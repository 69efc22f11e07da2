"""UViM's panoptic target: a 2-channel integer map per pixel, (semantic class,
instance id), with instance ids in a canonical order so the target of an image
is well defined whatever ids its source used.

Encoding (:func:`encode_panoptic`), per image:

- a *thing* segment is the set of pixels sharing (class, instance id); thing
  segments get ids ``1..K`` in the raster-scan order of their first pixel
  (top-left first), across all thing classes;
- stuff and void pixels get instance id ``0``; void keeps the void label in the
  semantic channel (the losses ignore it);
- at most ``max_instances`` things: with more, the ``max_instances`` largest are
  kept (equal areas: the earlier first pixel wins) and numbered as above, the
  others become void (``overflow="void"``), or an error is raised
  (``overflow="error"``).

Decoding (:func:`decode_panoptic`) turns per-pixel labels -- e.g. a model's
predicted classes and instance ids -- back into semantic and instance maps with
the same canonical numbering; it is the identity on encoded targets. The model's
side (one-hot input, losses, decoding logits) is in
:mod:`fsqkit.uvim.tasks.panoptic_logits`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fsqkit.data.panoptic import PanopticCategories, check_label_pair, segment_ids

OVERFLOW_RULES = ("void", "error")


def _canonical(
    semantic: Tensor,
    instance: Tensor,
    categories: PanopticCategories,
    max_instances: int | None,
    overflow: str,
) -> Tensor:
    """``[H, W]`` maps -> ``[2, H, W]`` int64 canonical target (``[B, ...]``: per image)."""
    if semantic.ndim == 3:
        return torch.stack(
            [
                _canonical(s, i, categories, max_instances, overflow)
                for s, i in zip(semantic, instance)
            ]
        )
    ids, classes = segment_ids(semantic, instance, categories)
    flat = ids.flatten()
    valid = flat >= 0
    n_seg = len(classes)
    pixel = torch.arange(flat.numel(), device=flat.device)
    first = torch.full((n_seg,), flat.numel(), dtype=torch.int64, device=flat.device)
    first = first.scatter_reduce(0, flat[valid], pixel[valid], reduce="amin")
    area = torch.bincount(flat[valid], minlength=n_seg)
    things = torch.nonzero(categories.thing_mask.to(classes.device)[classes]).flatten()

    sem = semantic.flatten().long().clone()
    if max_instances is not None and len(things) > max_instances:
        if overflow == "error":
            raise ValueError(
                f"image has {len(things)} thing instances, more than max_instances="
                f"{max_instances} (use overflow='void' to drop the smallest)"
            )
        # largest first; stable sort on raster order keeps equal areas in raster order
        by_first = things[torch.argsort(first[things])]
        by_area = by_first[torch.argsort(area[by_first], descending=True, stable=True)]
        dropped = torch.zeros(n_seg, dtype=torch.bool, device=flat.device)
        dropped[by_area[max_instances:]] = True
        sem[valid & dropped[flat.clamp(min=0)]] = categories.void_label
        things = by_area[:max_instances]

    new_id = torch.zeros(n_seg + 1, dtype=torch.int64, device=flat.device)  # last: void
    new_id[things[torch.argsort(first[things])]] = torch.arange(
        1, len(things) + 1, device=flat.device
    )
    inst = new_id[torch.where(valid, flat, n_seg)]
    inst[sem == categories.void_label] = 0
    return torch.stack([sem, inst]).view(2, *semantic.shape)


def encode_panoptic(
    semantic: Tensor,
    instance: Tensor,
    categories: PanopticCategories,
    *,
    max_instances: int,
    overflow: str = "void",
) -> Tensor:
    """Canonical UViM target of panoptic labels.

    Args:
        semantic: ``[H, W]`` or ``[B, H, W]`` int, classes or the void label.
        instance: same shape, int instance ids (any values; ignored on stuff).
        categories: which classes are things, and the void label.
        max_instances: the most thing instances per image (ids ``1..max_instances``).
        overflow: ``"void"`` (drop the smallest extra instances to void) or ``"error"``.

    Returns:
        ``[2, H, W]`` or ``[B, 2, H, W]`` int64: channel 0 the semantic class
        (void label on void), channel 1 the instance id (``0`` on stuff and void).
    """
    check_label_pair(semantic, instance, "panoptic target")
    categories.check_semantic(semantic, "panoptic target semantic map")
    if not isinstance(max_instances, int) or max_instances < 1:
        raise ValueError(f"max_instances must be a positive integer, got {max_instances!r}")
    if overflow not in OVERFLOW_RULES:
        raise ValueError(f"overflow must be one of {OVERFLOW_RULES}, got {overflow!r}")
    return _canonical(semantic, instance, categories, max_instances, overflow)


def split_target(target: Tensor, categories: PanopticCategories) -> tuple[Tensor, Tensor]:
    """Check a target ``[(B,) 2, H, W]`` (classes or void; instance ids ``>= 0``)
    and return its semantic and instance channels ``[(B,) H, W]``."""
    if not isinstance(target, Tensor) or target.ndim not in (3, 4) or target.shape[-3] != 2:
        shape = tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__
        raise ValueError(f"panoptic target must have shape [2, H, W] or [B, 2, H, W], got {shape}")
    semantic, instance = target.unbind(-3)
    check_label_pair(semantic, instance, "panoptic target")
    categories.check_semantic(semantic, "panoptic target semantic channel")
    if bool((instance < 0).any()):
        raise ValueError(f"panoptic target instance channel has negative id {int(instance.min())}")
    return semantic, instance


def decode_panoptic(target: Tensor, categories: PanopticCategories) -> tuple[Tensor, Tensor]:
    """Semantic and instance maps from per-pixel (class, instance) labels.

    Args:
        target: ``[2, H, W]`` or ``[B, 2, H, W]`` int: channel 0 classes (or the
            void label), channel 1 instance ids (``>= 0``).
        categories: which classes are things.

    Returns:
        ``semantic`` and ``instance``, ``[H, W]`` or ``[B, H, W]`` int64. Stuff and
        void pixels get instance ``0``; the thing segments (pixels sharing class
        and instance label, an instance label ``0`` included) are numbered
        ``1..K`` in raster order of their first pixel.
    """
    semantic, instance = split_target(target, categories)
    out = _canonical(semantic, instance, categories, None, "void")
    return out[..., 0, :, :], out[..., 1, :, :]
