"""Codebook statistics shared by every quantizer.

All functions take integer ``indices`` of any shape (flattened internally) and
the codebook size ``K``. ``UsageTracker`` accumulates counts over many batches,
e.g. over a whole validation set ("codebook usage" in the paper is the fraction
of codewords used at least once on the validation set).
"""

from __future__ import annotations

from collections import deque

import torch
from torch import Tensor


def code_counts(indices: Tensor, codebook_size: int) -> Tensor:
    """Histogram of code indices.

    Args:
        indices: integer tensor of any shape, values in ``[0, codebook_size)``.
        codebook_size: ``K``.

    Returns:
        ``(K,)`` int64 counts.
    """
    if indices.dtype.is_floating_point or indices.dtype == torch.bool:
        raise TypeError(f"indices must be an integer tensor, got dtype {indices.dtype}")
    flat = indices.reshape(-1).long()
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= codebook_size):
        raise ValueError(
            f"indices out of range: expected values in [0, {codebook_size}), "
            f"got min {int(flat.min())}, max {int(flat.max())}"
        )
    return torch.bincount(flat, minlength=codebook_size)


def usage_fraction(counts: Tensor) -> float:
    """Fraction of codes used at least once. ``counts``: ``(K,)``."""
    return float((counts > 0).sum().item()) / counts.numel()


def entropy_bits(counts: Tensor) -> float:
    """Entropy of the empirical code distribution, in bits. ``counts``: ``(K,)``."""
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts[counts > 0].double() / total.double()
    return float(-(p * torch.log2(p)).sum().item())


def perplexity(counts: Tensor) -> float:
    """``2 ** entropy_bits``: the effective number of codes in use (1 … K)."""
    return float(2.0 ** entropy_bits(counts))


def batch_stats(indices: Tensor, codebook_size: int) -> dict[str, float]:
    """The cheap per-batch stats every quantizer puts in ``QuantizerOutput.stats``.

    For codebooks larger than ``2**24`` codes only ``"unique"`` is computed, to
    avoid allocating a huge histogram.
    """
    if codebook_size > 2**24:
        return {"unique": float(torch.unique(indices).numel())}
    counts = code_counts(indices.detach(), codebook_size)
    return {"usage": usage_fraction(counts), "perplexity": perplexity(counts)}


class UsageTracker:
    """Running code histogram over many batches.

    Example::

        tracker = UsageTracker(fsq.codebook_size)
        for x in loader:
            tracker.update(fsq(x).indices)
        print(tracker.fraction_used, tracker.perplexity)

    Under ``torch.distributed``, call :meth:`all_reduce` on every rank before
    reading the global numbers.
    """

    def __init__(self, codebook_size: int, device: torch.device | str = "cpu") -> None:
        if codebook_size < 1:
            raise ValueError(f"codebook_size must be >= 1, got {codebook_size}")
        if codebook_size > 2**28:
            raise ValueError(
                f"codebook_size {codebook_size} is too large to track a full histogram "
                f"(limit 2**28 codes)"
            )
        self.codebook_size = codebook_size
        self.counts = torch.zeros(codebook_size, dtype=torch.int64, device=device)

    def update(self, indices: Tensor) -> None:
        """Add a batch of indices (any shape)."""
        self.counts += code_counts(indices.detach().to(self.counts.device), self.codebook_size)

    def reset(self) -> None:
        self.counts.zero_()

    def all_reduce(self) -> None:
        """Sum the histograms of all ranks (a collective: call it on every rank)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.counts)

    @property
    def total(self) -> int:
        return int(self.counts.sum().item())

    @property
    def fraction_used(self) -> float:
        return usage_fraction(self.counts)

    @property
    def num_used(self) -> int:
        return int((self.counts > 0).sum().item())

    @property
    def entropy_bits(self) -> float:
        return entropy_bits(self.counts)

    @property
    def perplexity(self) -> float:
        return perplexity(self.counts)

    def summary(self) -> dict[str, float]:
        """``{"usage", "used", "perplexity", "entropy_bits", "total"}`` as floats."""
        return {
            "usage": self.fraction_used,
            "used": float(self.num_used),
            "perplexity": self.perplexity,
            "entropy_bits": self.entropy_bits,
            "total": float(self.total),
        }

    def __repr__(self) -> str:
        return (
            f"UsageTracker(K={self.codebook_size}, used={self.num_used}, "
            f"usage={self.fraction_used:.3f}, perplexity={self.perplexity:.1f})"
        )


class WindowUsage:
    """Fraction of the codebook used in the last ``window`` batches: the "live"
    usage a training progress bar shows (validation usage is :class:`UsageTracker`'s).

    Example::

        live = WindowUsage(fsq.codebook_size, window=20)
        usage = live.update(out.indices)   # float in [0, 1]
    """

    def __init__(self, codebook_size: int, window: int = 20) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.codebook_size = codebook_size
        self._recent: deque[Tensor] = deque(maxlen=window)

    def update(self, indices: Tensor) -> float:
        """Add a batch of indices (any shape); returns the windowed usage."""
        self._recent.append(code_counts(indices.detach().cpu(), self.codebook_size))
        return float((torch.stack(tuple(self._recent)).sum(0) > 0).float().mean())
