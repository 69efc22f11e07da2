"""The DDP column of docs/deployment.md: every quantizer trains under
DistributedDataParallel on two gloo ranks, with gradients averaged over the ranks
and (VQ) codebooks kept identical by the quantizers' own all-reduce."""

from __future__ import annotations

import datetime
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from fsqkit import FSQ, ResidualFSQ, ResidualVQ, VectorQuantizer
from fsqkit.quantizers import GroupedResidualFSQ
from fsqkit.training import cleanup_distributed

QUANTIZERS = {
    "FSQ": lambda: FSQ([8, 5, 5, 5], dim=8, channel_first=True),
    "VQ": lambda: VectorQuantizer(8, 32, codebook_dim=4, channel_first=True),
    "ResidualFSQ": lambda: ResidualFSQ([8, 5, 5, 5], num_stages=3, dim=8, channel_first=True),
    "ResidualVQ": lambda: ResidualVQ(8, 32, num_stages=2, codebook_dim=4, channel_first=True),
    "GroupedResidualFSQ": lambda: GroupedResidualFSQ(
        [5, 5, 3], num_stages=2, groups=2, dim=8, channel_first=True
    ),
}


class Step(nn.Module):
    """An encoder layer and a quantizer; forward returns the training loss."""

    def __init__(self, quantizer: nn.Module) -> None:
        super().__init__()
        self.encoder = nn.Conv2d(8, 8, 1)
        self.quantizer = quantizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)
        out = self.quantizer(h)
        return (out.quantized - h).square().mean() + out.quantized.square().mean() + out.aux_loss


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60)
    )
    result = {}
    for name, build in QUANTIZERS.items():
        torch.manual_seed(0)  # identical initial weights on both ranks
        model = DistributedDataParallel(Step(build()))
        x = torch.randn(2, 8, 5, 6, generator=torch.Generator().manual_seed(10 + rank)) * 2
        for _ in range(2):
            model.zero_grad()
            model(x).backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        buffers = [b.clone() for b in model.buffers()]
        result[name] = (grads, buffers)
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    cleanup_distributed()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.distributed
def test_ddp(tmp_path) -> None:
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    for name in QUANTIZERS:
        grads0, buffers0 = r0[name]
        grads1, buffers1 = r1[name]
        assert grads0 and len(grads0) == len(grads1), name
        for a, b in zip(grads0, grads1):
            assert torch.equal(a, b), name  # averaged by DDP
        for a, b in zip(buffers0, buffers1):
            assert torch.equal(a, b), name  # VQ statistics all-reduced
