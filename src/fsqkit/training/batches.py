"""The batch source a task draws its training batches from, whatever the data.

A task asks ``source.batch(step)`` for the batch of each step; the source is a
pure function of ``(seed, step)``, so resumed runs draw what an uninterrupted
run would. Two kinds plug in (chosen by :func:`batch_source`):

- data held in memory (anything with ``len`` and ``batch(index)``: images,
  dense data, token grids, memory-mapped token shards): :class:`InMemoryBatches`
  indexes it with a :class:`~fsqkit.training.sampler.StepSampler` (a fresh
  permutation per step, the behaviour the built-in sources' numbers rest on) or
  an :class:`~fsqkit.training.sampler.EpochSampler`;
- streamed data (anything with ``loader(sampler, workers=...)``: image folders,
  tar shards): the data's own loader decodes each step's slice in worker
  processes, ordered by an :class:`~fsqkit.training.sampler.EpochSampler`.
"""

from __future__ import annotations

from typing import Any, Protocol

from fsqkit.training.distributed import DistInfo
from fsqkit.training.sampler import EpochSampler, StepSampler

ORDERS = ("step", "epoch")


class BatchSource(Protocol):
    def batch(self, step: int) -> Any: ...

    def close(self) -> None: ...


class InMemoryBatches:
    """``data.batch(sampler.indices(step))`` for data held in memory."""

    def __init__(self, data: Any, sampler: StepSampler | EpochSampler) -> None:
        self.data, self.sampler = data, sampler

    def batch(self, step: int) -> Any:
        return self.data.batch(self.sampler.indices(step))

    def close(self) -> None:
        pass


def batch_source(
    data: Any,
    batch_size: int,
    seed: int,
    dist: DistInfo | None = None,
    *,
    order: str | None = None,
    workers: int | None = None,
) -> BatchSource:
    """The batch source of ``data`` for this rank (see the module docstring).

    Args:
        data: in-memory data (``len``, ``batch(index)``) or a streamed source
            (``loader(sampler, workers=...)``).
        batch_size: per-process batch size.
        seed: run seed.
        dist: this process's rank and world size.
        order: ``"step"`` (a permutation per step) or ``"epoch"``; default
            ``"epoch"`` for streamed data and ``"step"`` for data in memory.
        workers: decoding processes of a streamed source (default: its own).
    """
    d = dist or DistInfo()
    streamed = hasattr(data, "loader")
    order = order or ("epoch" if streamed else "step")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if streamed and order != "epoch":
        raise ValueError("streamed data is read in epochs (order='epoch')")
    cls = EpochSampler if order == "epoch" else StepSampler
    # A stream of unknown length (tar shards) orders itself: its loader uses
    # only the sampler's batch size, seed, rank and world size.
    n = len(data) if hasattr(data, "__len__") else 1
    sampler = cls(n, batch_size, seed, d.rank, d.world_size)
    if streamed:
        return data.loader(sampler, workers=workers)
    return InMemoryBatches(data, sampler)
