"""Codebook learning and maintenance for the VQ baseline: EMA statistics,
k-means initialisation, dead-code reseeding and UViM's code splitting.

Dimension legend: ``N`` vectors in the local batch, ``K`` codes, ``D`` code dimension.

Distributed contract (see :mod:`fsqkit.quantizers.vq_distributed`): every
function here that calls a collective does so unconditionally or behind a
branch on all-reduced state, so all ranks call the same collectives in the same
order and end with bit-identical codebooks. Ranks with an empty batch take part
with zero statistics.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fsqkit.quantizers.vq_distributed import all_reduce_sum_, broadcast_, first_rank_with_data
from fsqkit.quantizers.vq_search import nearest_codes

# Laplace smoothing of the EMA cluster sizes: keeps the division finite for
# codes whose discounted count has decayed towards zero.
LAPLACE_EPS = 1e-5


@torch.no_grad()
def synced_counts_and_sums(
    x: Tensor, indices: Tensor, codebook_size: int, with_sums: bool, sync: bool
) -> tuple[Tensor, Tensor | None]:
    """Per-code assignment counts ``(K,)`` and, if ``with_sums``, vector sums ``(K, D)``,
    summed over all ranks with a single all-reduce. ``x``: ``(N, D)`` float32,
    ``indices``: ``(N,)`` int64."""
    k, d = codebook_size, x.shape[1]
    width = 1 + d if with_sums else 1
    stats = torch.zeros(k, width, dtype=torch.float32, device=x.device)  # (K, 1 [+ D])
    stats[:, 0].index_add_(0, indices, torch.ones_like(indices, dtype=torch.float32))
    if with_sums:
        stats[:, 1:].index_add_(0, indices, x)
    all_reduce_sum_(stats, sync)
    return stats[:, 0], (stats[:, 1:] if with_sums else None)


def ema_codebook(cluster_size: Tensor, embed_sum: Tensor) -> Tensor:
    """Codebook from EMA statistics: ``embed_sum / smoothed(cluster_size)``.

    ``cluster_size``: ``(K,)`` discounted counts; ``embed_sum``: ``(K, D)``
    discounted sums. Laplace smoothing keeps the total count unchanged."""
    k = cluster_size.shape[0]
    total = cluster_size.sum()
    smoothed = (cluster_size + LAPLACE_EPS) / (total + k * LAPLACE_EPS) * total
    return embed_sum / smoothed.unsqueeze(-1)


@torch.no_grad()
def kmeans(
    x: Tensor, codebook_size: int, iters: int, cosine: bool, max_bytes: int, sync: bool
) -> Tensor | None:
    """Lloyd's k-means over the union of all ranks' batches.

    Initial centroids are ``K`` random vectors (with replacement) of the lowest
    rank that has data, broadcast to all; each iteration all-reduces the cluster
    sums and counts, so every rank computes the same centroids. A cluster that
    receives no vector keeps its previous centroid.

    Args:
        x: ``(N, D)`` float32 local vectors (``N`` may be 0 on some ranks).

    Returns:
        ``(K, D)`` float32 centroids, or ``None`` if every rank's batch is empty.
    """
    n, d = x.shape
    src = first_rank_with_data(n, x.device, sync)
    if src is None:
        return None
    centroids = torch.zeros(codebook_size, d, dtype=torch.float32, device=x.device)
    if n > 0:
        centroids = x[torch.randint(n, (codebook_size,), device=x.device)].clone()
    broadcast_(centroids, src, sync)
    for _ in range(iters):
        idx = nearest_codes(x, centroids, max_bytes)
        counts, sums = synced_counts_and_sums(x, idx, codebook_size, with_sums=True, sync=sync)
        assert sums is not None
        means = sums / counts.clamp_min(1.0).unsqueeze(-1)
        centroids = torch.where((counts > 0).unsqueeze(-1), means, centroids)
        if cosine:
            centroids = torch.nn.functional.normalize(centroids, dim=-1)
    return centroids


@torch.no_grad()
def reseed_dead_(
    embed: Tensor,
    cluster_size: Tensor,
    embed_sum: Tensor | None,
    x: Tensor,
    threshold: float,
    sync: bool,
) -> int:
    """Replace every code whose discounted count is below ``threshold`` by a random
    vector of the batch (the same vectors on every rank: drawn by the lowest rank
    with data and broadcast). The new code gets the mean count (at least
    ``threshold``) so it has time to attract vectors.

    Modifies ``embed`` ``(K, D)``, ``cluster_size`` ``(K,)`` and ``embed_sum``
    ``(K, D)`` in place; returns the number of codes reseeded."""
    dead = cluster_size < threshold  # identical on all ranks: cluster_size is synced
    num_dead = int(dead.sum())
    if num_dead == 0:
        return 0
    n = x.shape[0]
    src = first_rank_with_data(n, x.device, sync)
    if src is None:
        return 0
    candidates = torch.zeros(num_dead, x.shape[1], dtype=embed.dtype, device=x.device)
    if n > 0:
        candidates = x[torch.randint(n, (num_dead,), device=x.device)].to(embed.dtype)
    broadcast_(candidates, src, sync)
    reset = max(float(cluster_size.mean()), threshold)
    dead_idx = torch.nonzero(dead).flatten()
    embed[dead_idx] = candidates
    cluster_size[dead_idx] = reset
    if embed_sum is not None:
        embed_sum[dead_idx] = candidates * reset
    return num_dead


@torch.no_grad()
def split_codes_(
    embed: Tensor,
    cluster_size: Tensor,
    embed_sum: Tensor | None,
    threshold: float,
    perturbation: float,
    generator: torch.Generator,
) -> int:
    """UViM's code splitting: each code whose discounted count is below
    ``threshold`` is replaced by one of the most used codes, split in two.

    The ``m`` dead codes with the smallest counts are paired with the ``m`` most
    used codes (only donors with count >= ``2 * threshold``, so both halves are
    alive); donor ``e`` becomes ``e * (1 - noise)`` and the dead code
    ``e * (1 + noise)`` with ``noise ~ perturbation * N(0, 1)`` per component,
    and each gets half the donor's count. Needs no collective: the counts are
    synced and ``generator`` is seeded identically on all ranks.

    Modifies ``embed``, ``cluster_size`` and ``embed_sum`` in place; returns the
    number of codes split."""
    dead = cluster_size < threshold
    num_dead = int(dead.sum())
    if num_dead == 0:
        return 0
    donor_ok = cluster_size >= 2 * threshold
    m = min(num_dead, int(donor_ok.sum()))
    if m == 0:
        return 0
    donors = cluster_size.masked_fill(~donor_ok, float("-inf")).topk(m).indices
    targets = cluster_size.masked_fill(~dead, float("inf")).topk(m, largest=False).indices
    noise = torch.randn(m, embed.shape[1], generator=generator).to(embed) * perturbation
    base = embed[donors]
    half = cluster_size[donors] / 2
    embed[targets] = base * (1 + noise)
    embed[donors] = base * (1 - noise)
    cluster_size[targets] = half
    cluster_size[donors] = half
    if embed_sum is not None:
        embed_sum[targets] = embed[targets] * half.unsqueeze(-1)
        embed_sum[donors] = embed[donors] * half.unsqueeze(-1)
    return m
