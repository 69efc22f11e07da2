"""Memory-bounded nearest-neighbour search and the MaskGIT entropy penalty.

Dimension legend: ``N`` vectors, ``K`` codes, ``D`` code dimension, ``n``/``k``
the rows/codes of one chunk.

Neither function ever materialises the full ``N x K`` distance matrix: work is
split into chunks whose ``n x k`` float32 blocks fit ``max_bytes``. Distances are
``||e||^2 - 2 x.e`` (the ``||x||^2`` term is constant per row, so argmin and
softmax ignore it; dropping it also avoids cancellation). Everything runs in
float32; callers disable autocast.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

FLOAT_BYTES = 4
# The entropy path holds about this many n x k temporaries at once (logits,
# log-probs, probs, their product), so its chunks get this share of the budget.
ENTROPY_TEMPORARIES = 4


def search_plan(num_vectors: int, codebook_size: int, max_bytes: int) -> tuple[int, int]:
    """Chunk shape ``(rows, cols)`` with ``rows * cols * 4 <= max_bytes``.

    Whole codebook rows are preferred (``cols = K``); only when a single row of
    ``K`` distances exceeds the budget are the codes split too."""
    if max_bytes < FLOAT_BYTES:
        raise ValueError(f"max_bytes must be >= {FLOAT_BYTES}, got {max_bytes}")
    row_bytes = FLOAT_BYTES * codebook_size
    if row_bytes <= max_bytes:
        return max(1, min(num_vectors, max_bytes // row_bytes)), codebook_size
    return 1, max_bytes // FLOAT_BYTES


@torch.no_grad()
def nearest_codes(x: Tensor, codebook: Tensor, max_bytes: int) -> Tensor:
    """Index of the nearest code (squared Euclidean) for every row of ``x``.

    Args:
        x: ``(N, D)`` float32.
        codebook: ``(K, D)`` float32.
        max_bytes: bound on the size of any distance block.

    Returns:
        ``(N,)`` int64 indices in ``[0, K)``.
    """
    n_vec, k = x.shape[0], codebook.shape[0]
    out = torch.empty(n_vec, dtype=torch.int64, device=x.device)
    rows, cols = search_plan(n_vec, k, max_bytes)
    e_sq = codebook.square().sum(-1)  # (K,)
    for r0 in range(0, n_vec, rows):
        xc = x[r0 : r0 + rows]  # (n, D)
        best_d: Tensor | None = None
        best_i: Tensor | None = None
        for c0 in range(0, k, cols):
            d = torch.addmm(e_sq[c0 : c0 + cols], xc, codebook[c0 : c0 + cols].T, alpha=-2.0)
            d_min, i_min = d.min(dim=-1)  # (n,)
            if best_d is None:
                best_d, best_i = d_min, i_min
            else:
                better = d_min < best_d  # strict: ties keep the lower index
                best_d = torch.where(better, d_min, best_d)
                best_i = torch.where(better, i_min + c0, best_i)
        out[r0 : r0 + rows] = best_i
    return out


def _entropy_chunk(
    xc: Tensor, codebook: Tensor, e_sq: Tensor, inv_t: float
) -> tuple[Tensor, Tensor]:
    """Sum of per-row entropies ``()`` and the column sums of the probabilities ``(K,)``
    of ``softmax(-distance / temperature)`` for one chunk ``xc`` of shape ``(n, D)``."""
    logits = torch.addmm(e_sq, xc, codebook.T, beta=-inv_t, alpha=2.0 * inv_t)  # (n, K)
    log_p = torch.log_softmax(logits, dim=-1)
    p = log_p.exp()
    return -(p * log_p).sum(), p.sum(dim=0)


def entropy_penalty(x: Tensor, codebook: Tensor, temperature: float, max_bytes: int) -> Tensor:
    """MaskGIT VQGAN's entropy penalty: mean per-sample entropy minus the entropy of
    the batch-average distribution, over ``p = softmax(-||x - e||^2 / temperature)``.

    Minimising it makes each assignment confident (low per-sample entropy) while
    spreading the batch over many codes (high average entropy).

    Args:
        x: ``(N, D)`` float32 (gradients flow to it).
        codebook: ``(K, D)`` float32 (gradients flow to it if it requires them).
        temperature: softmax temperature (> 0).
        max_bytes: bound on the bytes of all ``n x K`` temporaries of one chunk.

    Returns:
        Scalar float32 tensor (zero for ``N = 0``). Chunks are recomputed in the
        backward pass (activation checkpointing), so memory stays bounded there too.
    """
    n_vec, k = x.shape[0], codebook.shape[0]
    if n_vec == 0:
        return x.sum() * 0.0 + codebook.sum() * 0.0
    rows, cols = search_plan(n_vec, k, max_bytes // ENTROPY_TEMPORARIES)
    if cols < k:
        raise ValueError(
            f"entropy penalty needs one row of {k} codes ({FLOAT_BYTES * k * ENTROPY_TEMPORARIES} "
            f"bytes) to fit max_distance_bytes={max_bytes}"
        )
    e_sq = codebook.square().sum(-1)  # (K,)
    inv_t = 1.0 / temperature
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or codebook.requires_grad)
    ent_total = x.new_zeros(())
    prob_total = x.new_zeros(k)
    # One chunk: its temporaries already fit the budget, so the backward pass can
    # keep them (checkpointing would only recompute the chunk, ~30% of a small
    # tokenizer's step on CPU). Several chunks: recompute to stay bounded.
    recompute = needs_grad and rows < n_vec
    for r0 in range(0, n_vec, rows):
        xc = x[r0 : r0 + rows]
        if recompute:
            ent, probs = checkpoint(_entropy_chunk, xc, codebook, e_sq, inv_t, use_reentrant=False)
        else:
            ent, probs = _entropy_chunk(xc, codebook, e_sq, inv_t)
        ent_total = ent_total + ent
        prob_total = prob_total + probs
    avg_p = prob_total / n_vec  # (K,)
    avg_entropy = -(avg_p * avg_p.clamp_min(1e-30).log()).sum()
    return ent_total / n_vec - avg_entropy
