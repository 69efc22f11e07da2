"""``torch.distributed`` setup for runs launched with ``torchrun``.

``torchrun --nproc_per_node=N`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
:func:`setup_distributed` reads them and initialises the process group with
NCCL on GPUs and gloo on CPU. Without those variables it is a no-op (world
size 1), so the same command runs single-process.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from fsqkit.training.errors import TrainingStopped

log = logging.getLogger(__name__)

_CPU = torch.device("cpu")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = _CPU
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that logs, prints and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: str | None = None) -> DistInfo:
    """Initialise the process group from ``torchrun``'s environment variables.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA if available). Under CUDA
            each process uses ``cuda:LOCAL_RANK``.
    """
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(f"cuda:{local}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world <= 1:
        return DistInfo(device=dev)
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local, dev, backend)


def cleanup_distributed(timeout_s: float = 60.0, *, failed: bool = False) -> None:
    """Tear the process group down on every rank, and leave only together.

    ``failed=True`` (this rank is leaving with an exception) skips every
    collective: the peers may be waiting in another one, and a barrier here
    would hang them until the backend's timeout. The launcher stops them.

    Two races, each of which made gloo abort a rank ("terminate called without
    an active exception", SIGABRT) in about one run of ten under load:

    * a rank that finishes early (rank 1, while rank 0 still evaluates and
      writes files) tears its gloo pairs down under a peer that is still
      connected. The barrier makes every rank arrive first.
    * a rank whose process exits while a peer is still inside
      ``destroy_process_group`` (or still holds the group, e.g. through a DDP
      wrapper freed only at interpreter exit) closes sockets under that peer's
      teardown. So the group is destroyed after a garbage collection has freed
      any wrapper that holds it, and then every rank checks in at the launcher's
      key-value store and waits (at most ``timeout_s``) until all have done so.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    if failed:
        dist.destroy_process_group()
        return
    world = dist.get_world_size()
    try:
        store = dist.distributed_c10d._get_default_store()
    except Exception:  # private API; without it we skip the check-in
        store = None
    dist.barrier()
    gc.collect()
    dist.destroy_process_group()
    if store is not None and world > 1:
        _check_in(store, "fsqkit/teardown", world, timeout_s)


def _check_in(store: dist.Store, key: str, world: int, timeout_s: float) -> None:
    """Wait until all ``world`` ranks have added to ``key``. Counts from earlier
    runs against the same store (an elastic restart) round up to whole groups.
    Errors (a store hosted by a rank that has already left) end the wait."""
    try:
        arrived = store.add(key, 1)
        target = -(-arrived // world) * world
        deadline = time.monotonic() + timeout_s
        while store.add(key, 0) < target:
            if time.monotonic() > deadline:
                log.warning("teardown: not every rank checked in within %.0f s", timeout_s)
                return
            time.sleep(0.01)
    except Exception:  # the store may be gone once a peer exits
        return


@contextmanager
def distributed_session(device: str | None = None) -> Iterator[DistInfo]:
    """``with distributed_session("cpu") as info:`` sets up like
    :func:`setup_distributed` and tears down with :func:`cleanup_distributed`:
    synchronised on success and when the trainer stopped every rank at the same
    step (:class:`~fsqkit.training.errors.TrainingStopped`), without collectives
    when any other exception leaves."""
    info = setup_distributed(device)
    try:
        yield info
    except TrainingStopped:
        cleanup_distributed()
        raise
    except BaseException:
        cleanup_distributed(failed=True)
        raise
    cleanup_distributed()


def wrap_ddp(module: nn.Module, info: DistInfo) -> nn.Module:
    """``DistributedDataParallel(module)`` when distributed, else ``module``."""
    if not info.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [info.device.index] if info.device.type == "cuda" else None
    return DDP(module, device_ids=ids)


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or the module itself)."""
    return getattr(module, "module", module)


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_reduce_max(values: list[int], info: DistInfo) -> list[int]:
    """Element-wise maximum of small integers over ranks (a collective: call on
    every rank with the same length); e.g. flags every rank must agree on."""
    if not info.distributed:
        return values
    t = torch.tensor(values, dtype=torch.int64, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [int(v) for v in t.tolist()]


@torch.no_grad()
def replicas_in_sync(module: nn.Module, info: DistInfo) -> bool:
    """True when every rank holds bit-identical parameters (a collective: call it
    on every rank). Compares a float64 checksum of all parameters across ranks."""
    if not info.distributed:
        return True
    flat = torch.cat([p.detach().double().flatten() for p in unwrap(module).parameters()])
    weights = torch.arange(1, flat.numel() + 1, dtype=torch.float64, device=flat.device)
    local = torch.stack([flat.sum(), (flat * weights).sum()])  # position-sensitive
    gathered = [torch.empty_like(local) for _ in range(info.world_size)]
    dist.all_gather(gathered, local)
    return all(torch.equal(g, gathered[0]) for g in gathered)
