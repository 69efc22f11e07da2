"""The model's side of UViM's panoptic target (:mod:`fsqkit.uvim.tasks.panoptic_target`).

A model predicts per pixel ``C = categories.num_classes`` class logits and
``K + 1`` instance logits (instance ids ``0..K``, ``K = max_instances``).

- :func:`panoptic_onehot`: the target as a float map ``[B, C + K + 1, H, W]``
  (one-hot class, one-hot instance; all zeros on void), the stage-I oracle's input;
- :func:`panoptic_loss`: a cross-entropy per channel, void pixels ignored;
- :func:`decode_panoptic_logits`: logits to semantic and instance maps. As in
  UViM, each predicted instance ``k >= 1`` takes one class, the argmax of its
  class logits summed over its pixels (``vote=True``), so a thing is not split
  into several segments (each an FP) when its pixels disagree; pixels of
  instance ``0`` keep their own argmax class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fsqkit.data.panoptic import PanopticCategories
from fsqkit.uvim.tasks.panoptic_target import decode_panoptic, split_target


def _check_logits(
    class_logits: Tensor, instance_logits: Tensor, categories: PanopticCategories
) -> None:
    if class_logits.ndim != 4 or class_logits.shape[1] != categories.num_classes:
        raise ValueError(
            f"class logits must have shape [B, {categories.num_classes}, H, W], got "
            f"{tuple(class_logits.shape)}"
        )
    if instance_logits.ndim != 4 or (
        instance_logits.shape[0] != class_logits.shape[0]
        or instance_logits.shape[2:] != class_logits.shape[2:]
    ):
        raise ValueError(
            f"instance logits must have shape [B, K + 1, H, W] matching the class logits "
            f"{tuple(class_logits.shape)}, got {tuple(instance_logits.shape)}"
        )


def _check_instances(instance: Tensor, num_ids: int) -> None:
    if instance.numel() and int(instance.max()) >= num_ids:
        raise ValueError(
            f"panoptic target has instance id {int(instance.max())}, but only ids "
            f"0..{num_ids - 1} (max_instances={num_ids - 1}) are predicted"
        )


def panoptic_onehot(target: Tensor, categories: PanopticCategories, max_instances: int) -> Tensor:
    """``[B, 2, H, W]`` int target -> ``[B, C + K + 1, H, W]`` float32: channels
    ``0..C-1`` the one-hot class, ``C..C+K`` the one-hot instance id; void pixels
    are all zeros."""
    semantic, instance = split_target(target, categories)
    if semantic.ndim != 3:
        raise ValueError(f"panoptic_onehot needs a batch [B, 2, H, W], got {tuple(target.shape)}")
    _check_instances(instance, max_instances + 1)
    valid = semantic != categories.void_label
    sem = F.one_hot(torch.where(valid, semantic, 0).long(), categories.num_classes)
    inst = F.one_hot(instance.long(), max_instances + 1)
    out = torch.cat([sem, inst], dim=-1).float() * valid[..., None]
    return out.permute(0, 3, 1, 2).contiguous()


def panoptic_loss(
    class_logits: Tensor, instance_logits: Tensor, target: Tensor, categories: PanopticCategories
) -> tuple[Tensor, dict[str, Tensor]]:
    """Cross-entropy of the class channel plus that of the instance channel, each
    a mean over the non-void pixels (0 when all are void).

    Args:
        class_logits: ``[B, C, H, W]``.
        instance_logits: ``[B, K + 1, H, W]``.
        target: ``[B, 2, H, W]`` int, as made by ``encode_panoptic``.

    Returns:
        The total (a scalar) and its parts ``{"loss_semantic", "loss_instance"}``.
    """
    _check_logits(class_logits, instance_logits, categories)
    semantic, instance = split_target(target, categories)
    if semantic.shape != (class_logits.shape[0], *class_logits.shape[2:]):
        raise ValueError(
            f"panoptic target {tuple(target.shape)} does not match the logits "
            f"{tuple(class_logits.shape)}"
        )
    _check_instances(instance, instance_logits.shape[1])
    valid = semantic != categories.void_label
    count = valid.sum().clamp(min=1)
    parts = {}
    for name, logits, labels in (
        ("loss_semantic", class_logits, semantic),
        ("loss_instance", instance_logits, instance),
    ):
        labels = labels.long().masked_fill(~valid, -100)
        parts[name] = F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum") / count
    return parts["loss_semantic"] + parts["loss_instance"], parts


def decode_panoptic_logits(
    class_logits: Tensor,
    instance_logits: Tensor,
    categories: PanopticCategories,
    *,
    vote: bool = True,
) -> tuple[Tensor, Tensor]:
    """Semantic and instance maps ``[B, H, W]`` int64 from logits ``[B, C, H, W]``
    and ``[B, K + 1, H, W]``: the per-pixel argmax of the instance logits; the
    class per instance by vote (or per pixel with ``vote=False``); then
    :func:`~fsqkit.uvim.tasks.panoptic_target.decode_panoptic`."""
    _check_logits(class_logits, instance_logits, categories)
    instance = instance_logits.argmax(1)
    semantic = class_logits.argmax(1)
    if vote:
        b, c = class_logits.shape[:2]
        sums = class_logits.new_zeros(b, instance_logits.shape[1], c)
        index = instance.flatten(1)[:, :, None].expand(-1, -1, c)
        sums.scatter_add_(1, index, class_logits.flatten(2).transpose(1, 2))
        voted = sums.argmax(-1).gather(1, instance.flatten(1)).view_as(instance)
        semantic = torch.where(instance > 0, voted, semantic)
    return decode_panoptic(torch.stack([semantic, instance], dim=1), categories)
