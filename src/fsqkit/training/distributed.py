"""``torch.distributed`` setup for runs launched with ``torchrun``.

``torchrun --nproc_per_node=N`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
:func:`setup_distributed` reads them and initialises the process group with
NCCL on GPUs and gloo on CPU. Without those variables it is a no-op (world
size 1), so the same command runs single-process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

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


def cleanup_distributed() -> None:
    """Tear the process group down on every rank.

    The barrier first makes every rank arrive together: otherwise a rank that
    finishes early (rank 1, while rank 0 still evaluates and writes files) tears
    down its gloo pairs under a peer that is still connected, and gloo aborts the
    process ("terminate called without an active exception")."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


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


def all_reduce_mean(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Average scalar metrics over ranks (a collective: call on every rank with
    the same keys in the same order)."""
    if not info.distributed or not values:
        return values
    keys = list(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    t /= info.world_size
    return dict(zip(keys, t.tolist()))


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
