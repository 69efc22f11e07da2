"""Two gloo processes: synced VQ codebooks stay bit-identical on both ranks (EMA,
k-means init, reseeding, splitting), with an empty batch on one rank, a
``no_grad`` step, and an eval call on one rank only (which must not communicate).
Synced EMA on two half-batches equals single-process EMA on the whole batch."""

from __future__ import annotations

import datetime
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fsqkit import VectorQuantizer
from fsqkit.training import cleanup_distributed

CONFIGS = {
    "ema": {},
    "kmeans_reseed": {"kmeans_init": True, "reseed_dead": True, "dead_threshold": 1.0},
    "split": {"split_codes": True, "split_threshold": 1.0, "ema_decay": 0.5},
    "loss_reseed": {"learning": "loss", "reseed_dead": True, "dead_threshold": 1.0},
}
STEPS = 6


def _batch(step: int, rank: int) -> torch.Tensor:
    if rank == 1 and step == 2:
        return torch.zeros(0, 4)  # an empty local batch must still join every collective
    g = torch.Generator().manual_seed(1000 * step + rank)
    return torch.randn(24, 4, generator=g) + 3.0 * rank


def _train(vq: VectorQuantizer, rank: int, ranks: list[int]) -> None:
    for step in range(STEPS):
        x = torch.cat([_batch(step, r) for r in ranks])
        if step == 3:
            with torch.no_grad():
                vq(x)
        else:
            vq(x)


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=30)
    )
    torch.manual_seed(100 + rank)  # local randomness differs between ranks on purpose
    result = {}
    for name, kwargs in CONFIGS.items():
        vq = VectorQuantizer(4, 16, **kwargs)
        with torch.no_grad():  # identical initial codebooks (as DDP would broadcast)
            vq.embed.copy_(torch.randn(16, 4, generator=torch.Generator().manual_seed(5)))
            if hasattr(vq, "embed_sum"):
                vq.embed_sum.copy_(vq.embed)
        _train(vq, rank, [rank])
        if rank == 0:  # eval on one rank only: would hang if it communicated
            vq.eval()
            vq(torch.randn(3, 4))
        result[name] = (vq.embed.detach().clone(), vq.cluster_size.clone())
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    cleanup_distributed()  # leaves together: a bare destroy can abort a rank


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.distributed
def test_two_gloo_ranks_keep_identical_codebooks(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    init = torch.randn(16, 4, generator=torch.Generator().manual_seed(5))
    for name in CONFIGS:
        assert torch.equal(r0[name][0], r1[name][0]), name
        assert torch.equal(r0[name][1], r1[name][1]), name
        assert not torch.allclose(r0[name][0], init), f"{name}: codebook never changed"
    # Synced EMA over two ranks == one process seeing both halves of every batch.
    ref = VectorQuantizer(4, 16)
    with torch.no_grad():
        ref.embed.copy_(init)
        ref.embed_sum.copy_(init)
    _train(ref, 0, [0, 1])
    torch.testing.assert_close(r0["ema"][0], ref.embed, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(r0["ema"][1], ref.cluster_size, rtol=1e-5, atol=1e-5)
