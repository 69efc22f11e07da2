"""MaskGIT's training objective: predict masked tokens (cross-entropy on masked
positions only, with label smoothing), with class labels dropped at random so
that one model learns both ``p(x | c)`` and ``p(x)`` for classifier-free guidance.

Dimension legend: ``B`` batch, ``S`` tokens per image, ``K`` codebook size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fsqkit.maskgit.model import MaskGITTransformer
from fsqkit.maskgit.schedule import PAPER_R_MIN, random_training_mask


def drop_labels(
    labels: Tensor, null_class: int, prob: float, generator: torch.Generator | None
) -> Tensor:
    """Replace each label ``[B]`` by ``null_class`` with probability ``prob``."""
    drop = torch.rand(labels.shape, generator=generator, device=labels.device) < prob
    return torch.where(drop, torch.full_like(labels, null_class), labels)


def masked_token_loss(
    model: MaskGITTransformer,
    tokens: Tensor,
    labels: Tensor | None = None,
    *,
    r_min: float = PAPER_R_MIN,
    label_smoothing: float = 0.1,
    label_drop: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """One MaskGIT training loss.

    Args:
        model: the transformer (may be wrapped in DDP; its ``config`` is read from
            ``model.module`` then).
        tokens: ground-truth token ids ``[B, S]`` in ``[0, K)``.
        labels: class labels ``[B]`` (``None`` for an unconditional model).
        r_min: lower bound of ``r ~ U[r_min, 1]`` (0.2972 = at least 45% masked).
        label_smoothing: label smoothing of the cross-entropy.
        label_drop: probability of replacing a label by "no class".
        generator: RNG for masks and label drops (seed it per step for exact resume).

    Returns:
        ``(loss, stats)``: the scalar loss and float stats ``{"loss", "masked_acc",
        "mask_frac"}`` (accuracy of the argmax on masked positions).
    """
    config = getattr(model, "module", model).config
    b, s = tokens.shape
    mask = random_training_mask(b, s, r_min, generator=generator)  # CPU RNG: same on every device
    mask = mask.to(tokens.device)
    inputs = torch.where(mask, torch.full_like(tokens, config.mask_id), tokens)
    if labels is not None:
        # Drawn on the CPU generator, like the mask, so a seed means the same on any device.
        labels = drop_labels(labels.cpu(), config.null_class, label_drop, generator)
        labels = labels.to(tokens.device)
    masked_logits = model(inputs, labels, mask)  # [M, K]: masked positions only
    target = tokens.long()[mask]  # [M]
    loss = F.cross_entropy(masked_logits.float(), target, label_smoothing=label_smoothing)
    with torch.no_grad():
        acc = (masked_logits.argmax(-1) == target).float().mean()
    return loss, {
        "loss": float(loss.detach()),
        "masked_acc": float(acc),
        "mask_frac": float(mask.float().mean()),
    }
