"""Scoring dense predictions: the task's per-image metrics (averaged), its
set-level metrics and, when tokens are given, codebook usage.

Dimension legend: ``B`` batch, ``C`` target channels, ``H, W`` image size,
``h, w`` token grid.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from fsqkit.data.dense import DenseDataset
from fsqkit.data.io import save_image_grid
from fsqkit.quantizers.stats import UsageTracker
from fsqkit.uvim.tasks import DenseBatch, DenseTask

PredictFn = Callable[[Tensor, DenseBatch], tuple[Tensor, Tensor | None]]
"""``(inputs (B, 3, H, W), batch) -> (prediction (B, C, H, W) in task units,
tokens (B, h, w) or None)``."""


@torch.no_grad()
def evaluate_dense(
    task: DenseTask,
    predict: PredictFn,
    data: DenseDataset,
    *,
    batch_size: int = 128,
    codebook_size: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Mean per-image metrics of ``predict`` on ``data``, plus the task's set
    metrics and, with ``codebook_size``, ``usage`` (fraction of codes used at least
    once) and ``perplexity`` of the returned tokens."""
    sums: dict[str, float] = {}
    preds, targets = [], []
    tracker = UsageTracker(codebook_size) if codebook_size else None
    for i in range(0, len(data), batch_size):
        batch = data.batch(slice(i, i + batch_size)).to(device)
        task.check_batch(batch, data.name)
        inputs, target, valid = task.inputs(batch), task.target(batch), task.valid(batch)
        pred, tokens = predict(inputs, batch)
        for k, v in task.metrics(pred, target, valid).items():
            sums[k] = sums.get(k, 0.0) + float(v.double().sum())
        if tracker is not None and tokens is not None:
            tracker.update(tokens.cpu())
        preds.append(pred.cpu())
        targets.append(target.cpu())
    out = {k: v / len(data) for k, v in sums.items()}
    out.update(task.set_metrics(torch.cat(preds), torch.cat(targets)))
    if tracker is not None and tracker.total:
        out["usage"] = tracker.fraction_used
        out["perplexity"] = tracker.perplexity
    return out


def train_target_mean(task: DenseTask, data: DenseDataset) -> Tensor:
    """``(C,)`` mean target over the valid pixels of ``data`` (the trivial predictor)."""
    total, count = 0.0, 0.0
    for i in range(0, len(data), 512):
        batch = data.batch(slice(i, i + 512))
        t, v = task.target(batch), task.valid(batch).float()
        total = total + (t * v).sum((0, 2, 3))
        count = count + v.sum()
    return torch.as_tensor(total / max(float(count), 1.0)).float()


def trivial_predictor(task: DenseTask, train_mean: Tensor) -> PredictFn:
    """The task's trivial predictor (mean depth, grayscale copy) as a ``PredictFn``."""
    return lambda inputs, batch: (task.trivial(inputs, train_mean), None)


@torch.no_grad()
def save_prediction_grid(
    task: DenseTask, predict: PredictFn, data: DenseDataset, path: str, n: int = 8
) -> None:
    """Rows: input, truth, prediction of the first ``n`` items of ``data``."""
    batch = data.batch(slice(0, n))
    inputs = task.inputs(batch)
    pred, _ = predict(inputs, batch)
    save_image_grid(
        [inputs.cpu(), task.to_rgb(task.target(batch)).cpu(), task.to_rgb(pred.cpu())], path
    )
