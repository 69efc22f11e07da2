"""Seeded per-step batch sampling.

The batch of step ``s`` is a pure function of ``(seed, s)``: no iterator state,
so a resumed run draws exactly the batches an uninterrupted run would. Under
``world_size`` processes, the step draws one global batch of
``batch_size * world_size`` distinct items and each rank takes its slice.

Two samplers with the same interface (``indices(step)``, ``global_indices(step)``):

- :class:`StepSampler`: a fresh seeded permutation of the whole set every step
  (the small in-memory sources; their published numbers depend on it);
- :class:`EpochSampler`: one seeded permutation per epoch, walked in order, so
  every item is seen once per epoch and a step costs ``O(batch)``, not ``O(N)``
  (the streamed sources).
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


class EpochSampler(StepSampler):
    """Epochs of a data set of ``num_items``, one seeded permutation each.

    Position ``p = (step - 1) * G + j`` of the endless stream (``G`` = global
    batch ``batch_size * world_size``) is item ``perm_e[p % num_items]`` of epoch
    ``e = p // num_items``; rank ``r`` takes slots ``[r * batch_size, (r + 1) *
    batch_size)`` of each global batch. A batch may straddle two epochs. The
    arguments are :class:`StepSampler`'s.
    """

    def __init__(
        self, num_items: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        super().__init__(num_items, batch_size, seed, rank, world_size)
        self._perms: dict[int, Tensor] = {}

    def permutation(self, epoch: int) -> Tensor:
        """``(num_items,)`` int64: the order of epoch ``epoch`` (two kept cached)."""
        perm = self._perms.get(epoch)
        if perm is None:
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % 2**63 ^ 0x5EED)
            perm = torch.randperm(self.num_items, generator=g)
            self._perms = {e: p for e, p in self._perms.items() if e == epoch - 1}
            self._perms[epoch] = perm
        return perm

    def epoch_of(self, step: int) -> int:
        """The epoch the first item of ``step``'s global batch belongs to."""
        return (step - 1) * self.batch_size * self.world_size // self.num_items

    def _positions(self, start: int, count: int) -> Tensor:
        n = self.num_items
        out = torch.empty(count, dtype=torch.int64)
        done = 0
        while done < count:
            p = start + done
            epoch, offset = divmod(p, n)
            take = min(count - done, n - offset)
            out[done : done + take] = self.permutation(epoch)[offset : offset + take]
            done += take
        return out

    def global_indices(self, step: int) -> Tensor:
        """``(batch_size * world_size,)`` int64 indices of step ``step``."""
        total = self.batch_size * self.world_size
        return self._positions((step - 1) * total, total)

    def indices(self, step: int) -> Tensor:
        """``(batch_size,)`` int64 indices of this rank for step ``step``."""
        b = self.batch_size
        start = (step - 1) * b * self.world_size + self.rank * b
        return self._positions(start, b)
