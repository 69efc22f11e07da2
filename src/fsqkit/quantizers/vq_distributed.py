"""The few collectives the VQ codebook needs under ``torch.distributed``.

Rule every caller follows: a collective is called on every rank or on none.
Callers only branch on values that are already identical on all ranks (module
mode, constructor options, or all-reduced statistics), never on local data.
Every helper is a no-op when ``sync`` is false, ``torch.distributed`` is not
initialised, or the world has a single process.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_synced(sync: bool) -> bool:
    """Whether collectives should run: ``sync`` and an initialised multi-process group."""
    return (
        bool(sync) and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    )


def all_reduce_sum_(tensor: Tensor, sync: bool) -> Tensor:
    """Sum ``tensor`` over ranks in place (identity when not synced)."""
    if is_synced(sync):
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_(tensor: Tensor, src: int, sync: bool) -> Tensor:
    """Overwrite ``tensor`` with rank ``src``'s copy in place (identity when not synced)."""
    if is_synced(sync):
        dist.broadcast(tensor, src=src)
    return tensor


def first_rank_with_data(num_local: int, device: torch.device, sync: bool) -> int | None:
    """Lowest rank whose local batch is non-empty, identical on every rank.

    One all-reduce of a ``(world_size,)`` vector. Returns ``None`` when every rank
    is empty (or, unsynced, when the local batch is empty)."""
    if not is_synced(sync):
        return 0 if num_local > 0 else None
    counts = torch.zeros(dist.get_world_size(), dtype=torch.int64, device=device)
    counts[dist.get_rank()] = num_local
    dist.all_reduce(counts, op=dist.ReduceOp.SUM)
    nonzero = torch.nonzero(counts > 0).flatten()
    return int(nonzero[0]) if nonzero.numel() else None
