"""Reconstruction metrics of any image codec over a dataset (one loop for the
tokenizers and the non-learned baseline, so their numbers are comparable), and
codebook usage over a (larger) dataset from the encoder alone."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from fsqkit.data.sources import iter_image_batches
from fsqkit.metrics.image import psnr, ssim
from fsqkit.quantizers.stats import UsageTracker


@torch.no_grad()
def reconstruction_metrics(
    data,
    codec: Callable[[Tensor], tuple[Tensor, Tensor]],
    codebook_size: int,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Mean PSNR / SSIM / MSE over images, and codebook usage over the whole set.

    Args:
        data: an :class:`~fsqkit.data.ImageDataset` (``len`` and ``.batch(slice)``
            giving ``(B, 3, H, W)`` floats in ``[0, 1]``) or a streamed source
            (:func:`~fsqkit.data.iter_image_batches`).
        codec: ``x -> (indices, reconstruction)``; reconstruction in ``[0, 1]``.
        codebook_size: ``K`` of the indices.

    Returns:
        ``{"psnr", "ssim", "mse", "usage", "codes_used", "perplexity"}``; usage is
        the fraction of codes used at least once on ``data``.
    """
    tracker = UsageTracker(codebook_size)
    p_sum = s_sum = mse_sum = 0.0
    n = 0
    for batch in iter_image_batches(data, batch_size):
        x = batch.to(device)
        n += x.shape[0]
        idx, rec = codec(x)
        tracker.update(idx.cpu())
        p_sum += float(psnr(rec, x).clamp(max=100.0).sum())
        s_sum += float(ssim(rec, x).sum())
        mse_sum += float((rec - x).pow(2).flatten(1).mean(1).sum())
    s = tracker.summary()
    return {
        "psnr": p_sum / n,
        "ssim": s_sum / n,
        "mse": mse_sum / n,
        "usage": s["usage"],
        "codes_used": s["used"],
        "perplexity": s["perplexity"],
    }


@torch.no_grad()
def codebook_usage(
    data,
    encode: Callable[[Tensor], Tensor],
    codebook_size: int,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Codebook usage of ``encode`` (``(B, 3, H, W)`` -> indices) over all of ``data``.

    Encoder only, so it can afford the many tokens a usage count needs: a code
    counts once it is seen, and rare codes need many tokens to show up. Small
    batches stay in the CPU caches (128 crops of 32x32: ~2x faster than 512).

    Returns:
        ``{"usage", "codes_used", "usage_images"}``.
    """
    tracker = UsageTracker(codebook_size)
    n = 0
    for batch in iter_image_batches(data, batch_size):
        n += batch.shape[0]
        tracker.update(encode(batch.to(device)))
    return {
        "usage": tracker.fraction_used,
        "codes_used": float(tracker.num_used),
        "usage_images": float(n),
    }
