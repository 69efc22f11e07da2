"""Compression cost of a MaskGIT model (the FSQ paper's Fig. 3 metric).

The model's negative log-likelihood, in bits per image, when tokens are revealed
in a *deterministic* masking schedule: a fixed pseudo-random order of the ``S``
positions (seeded) cut into ``T`` steps of :func:`decoding_schedule` sizes. At
each step the model sees the tokens revealed so far and pays ``-log2 p`` for each
token of this step. Encoder and decoder can both compute these distributions,
so an entropy coder reaches this size (within a few bits); it is an upper bound
on what the model can compress to.

Dimension legend: ``N`` images, ``S`` tokens per image, ``K`` codebook size.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from fsqkit.maskgit.schedule import decoding_schedule


@torch.no_grad()
def compression_cost(
    model: torch.nn.Module,
    tokens: Tensor,
    labels: Tensor | None = None,
    *,
    num_steps: int = 12,
    order_seed: int = 0,
    batch_size: int = 128,
) -> dict[str, float]:
    """Bits per image of ``tokens [N, h, w]`` (or ``[N, S]``) under the model.

    Args:
        model: a :class:`~fsqkit.maskgit.model.MaskGITTransformer`.
        tokens: token ids in ``[0, K)``.
        labels: class labels ``[N]`` to condition on (``None``: "no class").
        num_steps: ``T`` of the deterministic schedule.
        order_seed: seed of the fixed reveal order.

    Returns:
        ``{"bits_per_image", "bits_per_token", "raw_bits_per_image"}`` where the raw
        size is ``S · log2 K`` (no model).
    """
    config = model.config
    tokens = tokens.reshape(tokens.shape[0], -1)
    s = config.seq_len
    if tokens.shape[1] != s:
        raise ValueError(
            f"tokens must have {s} positions per image (grid {config.grid}), got {tokens.shape[1]}"
        )
    schedule = decoding_schedule(s, num_steps)
    order = torch.randperm(s, generator=torch.Generator().manual_seed(order_seed))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        for start in range(0, len(tokens), batch_size):
            x = tokens[start : start + batch_size].to(device).long()
            lab = labels[start : start + batch_size].to(device) if labels is not None else None
            inputs = torch.full_like(x, config.mask_id)
            pos = 0
            for count in schedule:
                # Only this step's positions need logits (the output head is the
                # largest product); ascending, as boolean selection returns them.
                step_pos = order[pos : pos + count].sort().values.to(device)
                select = torch.zeros(s, dtype=torch.bool, device=device)
                select[step_pos] = True
                logits = model(inputs, lab, select=select.expand(len(x), s))  # [b * count, K]
                logp = torch.log_softmax(logits.float(), dim=-1)
                target = x[:, step_pos]  # [b, count]
                total -= logp.gather(-1, target.reshape(-1, 1)).sum().item()
                inputs[:, step_pos] = target
                pos += count
    finally:
        model.train(was_training)
    bits = total / math.log(2) / len(tokens)
    return {
        "bits_per_image": bits,
        "bits_per_token": bits / s,
        "raw_bits_per_image": s * math.log2(config.codebook_size),
    }
