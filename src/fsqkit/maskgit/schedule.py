"""Masking schedules of MaskGIT (Chang et al., 2022), as used by the FSQ paper.

Dimension legend: ``B`` batch, ``S`` tokens per image (sequence length),
``T`` decoding steps.

Training masks ``ceil(cos(π/2 · (1 - r)) · S)`` tokens with ``r ~ U[r_min, 1]``.
The paper lower-bounds ``r`` by ``r_min = 1 - arccos(0.45) · 2/π`` so that at
least 45% of the tokens are masked in every training example.

Decoding runs ``T`` steps; after step ``t`` (1-based) ``floor(cos(π/2 · t/T) · S)``
tokens are still masked, clamped so that every step reveals at least one token and
the last step reveals the rest.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def r_min_for_fraction(min_mask_fraction: float) -> float:
    """``r_min`` such that at least ``min_mask_fraction`` of the tokens are masked.

    ``r_min_for_fraction(0.45) = 1 - arccos(0.45) · 2/π ≈ 0.2972`` (the paper's value).
    """
    if not 0.0 < min_mask_fraction <= 1.0:
        raise ValueError(f"min_mask_fraction must be in (0, 1], got {min_mask_fraction}")
    return 1.0 - math.acos(min_mask_fraction) * 2.0 / math.pi


PAPER_R_MIN: float = r_min_for_fraction(0.45)


def num_masked_for_training(r: Tensor, seq_len: int) -> Tensor:
    """``ceil(cos(π/2 · (1 - r)) · S)`` for ``r`` of shape ``[B]``; returns int64 ``[B]``.

    Clamped to ``[1, S]`` (float round-off must neither mask nothing nor overflow).
    """
    n = torch.ceil(torch.cos(math.pi / 2 * (1.0 - r.double())) * seq_len)
    return n.clamp(1, seq_len).long()


def random_training_mask(
    batch: int,
    seq_len: int,
    r_min: float = PAPER_R_MIN,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Boolean mask ``[B, S]`` (True = masked) drawn with the cosine schedule.

    Each row draws its own ``r ~ U[r_min, 1]`` and masks a uniformly random subset of
    ``num_masked_for_training(r, S)`` positions.
    """
    if not 0.0 <= r_min <= 1.0:
        raise ValueError(f"r_min must be in [0, 1], got {r_min}")
    r = r_min + (1.0 - r_min) * torch.rand(batch, generator=generator, device=device)
    n = num_masked_for_training(r, seq_len)  # [B]
    # A random permutation per row: the positions ranked below n are masked.
    scores = torch.rand(batch, seq_len, generator=generator, device=device)
    ranks = scores.argsort(dim=1).argsort(dim=1)  # [B, S], a permutation of 0..S-1
    return ranks < n[:, None]


def decoding_schedule(seq_len: int, num_steps: int) -> list[int]:
    """Number of tokens revealed at each of the ``T`` decoding steps (sums to ``S``).

    After step ``t`` the number still masked is ``floor(cos(π/2 · t/T) · S)``, clamped
    to ``[0, masked_before - 1]`` so that every step reveals at least one token; the
    last step reveals all that remain. Requires ``1 <= T <= S``.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int):
        raise TypeError(f"num_steps must be an int, got {type(num_steps).__name__}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if num_steps > seq_len:
        raise ValueError(
            f"num_steps must be <= the number of tokens per image ({seq_len}), got {num_steps}"
        )
    counts: list[int] = []
    masked = seq_len
    for t in range(1, num_steps + 1):
        target = math.floor(math.cos(math.pi / 2 * t / num_steps) * seq_len)
        # Leave at least one masked token for each remaining step, reveal at least one now.
        remaining_steps = num_steps - t
        target = max(min(target, masked - 1), remaining_steps)
        counts.append(masked - target)
        masked = target
    assert masked == 0 and sum(counts) == seq_len
    return counts
