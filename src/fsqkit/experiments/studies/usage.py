"""The synthetic usage study (``fsqkit study usage``):
codebook usage of VQ without tricks, VQ with tricks and FSQ on clustered
synthetic data with more codes than clusters.

Setup (all seeded, CPU, a few seconds): ``clusters`` Gaussian clusters in ``dim``
dimensions (centres uniform in [-1.2, 1.2]^dim, isotropic ``spread``). Each VQ
quantizes the data directly (codebook_dim = dim) and learns its codebook online
with EMA for ``steps`` batches. FSQ has nothing to learn; its encoder is a fitted
linear map (PCA to ``len(levels)`` dimensions, whitened), a closed-form stand-in
for the learned encoder in front of FSQ in a real model. Usage is the fraction of
codes used at least once on a held-out set (the paper's definition).
"""

from __future__ import annotations

import torch
from torch import Tensor

from fsqkit.quantizers import FSQ, UsageTracker, VectorQuantizer, levels_for


def clustered_data(n: int, dim: int, clusters: int, spread: float, seed: int) -> Tensor:
    """``(n, dim)`` points: fixed cluster centres (seed 123), samples drawn with ``seed``."""
    centres = torch.rand(clusters, dim, generator=torch.Generator().manual_seed(123)) * 2.4 - 1.2
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(clusters, (n,), generator=gen)
    return centres[labels] + spread * torch.randn(n, dim, generator=gen)


@torch.no_grad()
def _vq_usage(vq: VectorQuantizer, data: dict[str, object], held_out: Tensor) -> float:
    vq.train()
    for step in range(int(data["steps"])):  # type: ignore[call-overload]
        vq(
            clustered_data(
                int(data["batch"]),
                vq.dim,
                int(data["clusters"]),
                float(data["spread"]),
                1000 + step,
            )
        )  # type: ignore[call-overload,arg-type]
    vq.eval()
    tracker = UsageTracker(vq.codebook_size)
    tracker.update(vq(held_out).indices)
    return tracker.fraction_used


@torch.no_grad()
def _fsq_usage(fsq: FSQ, dim: int, clusters: int, spread: float, held_out: Tensor) -> float:
    fit = clustered_data(8192, dim, clusters, spread, seed=7)
    mean = fit.mean(0)
    _, _, v = torch.pca_lowrank(fit - mean, q=fsq.dim, center=False)  # (dim, d)
    std = ((fit - mean) @ v).std(0)
    tracker = UsageTracker(fsq.codebook_size)
    tracker.update(fsq((held_out - mean) @ v / std).indices)
    return tracker.fraction_used


def run_usage_study(
    codebook_size: int = 125,
    dim: int = 16,
    clusters: int = 8,
    spread: float = 0.5,
    steps: int = 100,
    batch: int = 512,
    held_out: int = 16384,
    seed: int = 0,
) -> dict[str, float]:
    """Usage fractions ``{"vq_plain", "vq_reseed", "vq_split", "fsq"}``. FSQ uses
    ``levels_for(codebook_size)`` (its exact size may differ slightly from ``K``)."""
    if codebook_size <= clusters:
        raise ValueError(
            f"the study needs more codes than clusters, got codebook_size={codebook_size} "
            f"<= clusters={clusters}"
        )
    torch.manual_seed(seed)
    data = {"steps": steps, "batch": batch, "clusters": clusters, "spread": spread}
    test = clustered_data(held_out, dim, clusters, spread, seed=99)
    k = codebook_size
    return {
        "vq_plain": _vq_usage(VectorQuantizer.plain(dim, k), data, test),
        "vq_reseed": _vq_usage(VectorQuantizer.with_tricks(dim, k, dead_threshold=1.0), data, test),
        "vq_split": _vq_usage(
            VectorQuantizer.with_tricks(dim, k, dead_codes="split", split_threshold=1.0), data, test
        ),
        "fsq": _fsq_usage(FSQ(levels_for(k)), dim, clusters, spread, test),
    }
