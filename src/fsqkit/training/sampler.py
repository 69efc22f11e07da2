"""Seeded per-step batch sampling.

The batch of step ``s`` is a pure function of ``(seed, s)``: no iterator state,
so a resumed run draws exactly the batches an uninterrupted run would. Under
``world_size`` processes, the step draws one global batch of
``batch_size * world_size`` distinct items and each rank takes its slice.
"""

from __future__ import annotations

import torch
from torch import Tensor


class StepSampler:
    """Indices into a dataset of ``num_items`` for any step.

    Args:
        num_items: dataset size.
        batch_size: per-process batch size.
        seed: run seed.
        rank, world_size: this process's slice of the global batch.
    """

    def __init__(
        self, num_items: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        if num_items < 1:
            raise ValueError(f"num_items must be >= 1, got {num_items}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size

    def global_indices(self, step: int) -> Tensor:
        """``(batch_size * world_size,)`` int64 indices of step ``step``: distinct
        items when the dataset is large enough, else drawn with replacement."""
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + step) % 2**63)
        total = self.batch_size * self.world_size
        if total <= self.num_items:
            return torch.randperm(self.num_items, generator=g)[:total]
        return torch.randint(self.num_items, (total,), generator=g)

    def indices(self, step: int) -> Tensor:
        """``(batch_size,)`` int64 indices of this rank for step ``step``."""
        b = self.batch_size
        return self.global_indices(step)[self.rank * b : (self.rank + 1) * b]
