"""Depth prediction metrics (NYU Depth v2 conventions), per image.

Dimension legend: ``B`` batch, ``H, W`` image size. Depths in metres.
"""

from __future__ import annotations

import torch
from torch import Tensor


def depth_metrics(
    pred: Tensor, target: Tensor, valid: Tensor, min_depth: float = 1e-3
) -> dict[str, Tensor]:
    """Per-image ``rmse``, absolute relative error ``absrel`` and ``delta1``, the
    fraction of pixels with ``max(p/t, t/p) < 1.25``, each ``(B,)``, over the
    ``valid`` pixels of ``pred`` and ``target`` ``(B, 1, H, W)``. Depths below
    ``min_depth`` are raised to it (so the ratios stay finite)."""
    if pred.shape != target.shape or valid.shape != target.shape:
        raise ValueError(
            f"pred, target and valid must have the same shape, got {tuple(pred.shape)}, "
            f"{tuple(target.shape)} and {tuple(valid.shape)}"
        )
    v = valid.float()
    n = v.flatten(1).sum(1).clamp_min(1)
    t = target.clamp_min(min_depth)
    p = pred.clamp_min(min_depth)

    def mean(x: Tensor) -> Tensor:
        return (x * v).flatten(1).sum(1) / n

    return {
        "rmse": mean((p - t).pow(2)).sqrt(),
        "absrel": mean((p - t).abs() / t),
        "delta1": mean((torch.maximum(p / t, t / p) < 1.25).float()),
    }
