"""Two gloo ranks each measure half of a set (every second image): the merged
FID statistics and the gathered precision/recall features equal one process
measuring the whole set."""

from __future__ import annotations

import datetime
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fsqkit.data import build_dataset
from fsqkit.metrics import RandomConvFeatures
from fsqkit.metrics.fid import reconstruction_fid
from fsqkit.training import DistInfo, cleanup_distributed

pytestmark = pytest.mark.distributed


def _data():
    return build_dataset("embedded", "val", image_size=16, seed=0, num_images=21)


def _darker(x: torch.Tensor) -> torch.Tensor:
    return x * 0.8


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60)
    )
    try:
        info = DistInfo(rank, world, rank, torch.device("cpu"), "gloo")
        m = reconstruction_fid(_data(), _darker, RandomConvFeatures(), info, batch_size=4)
        torch.save(m, os.path.join(out, f"rank{rank}.pt"))
    finally:
        cleanup_distributed()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_share_the_evaluation_set(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    single = reconstruction_fid(_data(), _darker, RandomConvFeatures(), batch_size=4)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got["recon_fd"] == pytest.approx(single["recon_fd"], rel=1e-5)  # float32 features
        # k-NN sets are the same images (in another order): same fractions.
        assert got["recon_precision"] == pytest.approx(single["recon_precision"])
        assert got["recon_recall"] == pytest.approx(single["recon_recall"])
