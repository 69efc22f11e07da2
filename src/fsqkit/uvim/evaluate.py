"""Scoring dense predictions: the task's per-image metrics (averaged), its
set-level metrics and, when tokens are given, codebook usage; kept image by
image (:class:`DenseEvaluation`) for standard errors.

Dimension legend: ``B`` batch, ``C`` target channels, ``H, W`` image size,
``h, w`` token grid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from fsqkit.data.dense import DenseDataset
from fsqkit.data.io import save_image_grid
from fsqkit.quantizers.stats import UsageTracker
from fsqkit.uvim.tasks import DenseBatch, DenseTask
from fsqkit.uvim.tasks.base import Baseline

PredictFn = Callable[[Tensor, DenseBatch], tuple[Tensor, Tensor | None]]
"""``(inputs (B, 3, H, W), batch) -> (prediction (B, C, H, W) in task units,
tokens (B, h, w) or None)``."""


@dataclass
class DenseEvaluation:
    """One model's results on one data set, image by image, so that a bootstrap
    can resample the images (:mod:`fsqkit.uvim.intervals`). Plain tensors:
    worker processes return it.

    Attributes:
        data: the data set's name (e.g. ``scenes/test``).
        per_image: ``{metric: (N,)}`` float64, the task's per-image metrics.
        set_stats: ``(N, ...)`` the task's :meth:`~DenseTask.set_statistics`
            (``None``: the task has no set metrics).
        extra: numbers of the whole set that are not resampled (codebook
            ``usage`` and ``perplexity`` of the tokens).
    """

    data: str
    per_image: dict[str, Tensor]
    set_stats: Tensor | None = None
    extra: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.per_image.values())))

    def metrics(self, task: DenseTask) -> dict[str, float]:
        """Per-image metrics averaged, the set metrics and ``extra``."""
        out = {k: float(v.mean()) for k, v in self.per_image.items()}
        if self.set_stats is not None:
            out.update(task.set_metrics_from(self.set_stats))
        out.update(self.extra)
        return out


@torch.no_grad()
def evaluate_images(
    task: DenseTask,
    predict: PredictFn,
    data: DenseDataset,
    *,
    batch_size: int = 128,
    codebook_size: int = 0,
    device: torch.device | str = "cpu",
) -> DenseEvaluation:
    """``predict`` on every item of ``data``: per-image metrics, the statistics
    of the task's set metrics and, with ``codebook_size``, ``usage`` (fraction of
    codes used at least once) and ``perplexity`` of the returned tokens."""
    per_image: dict[str, list[Tensor]] = {}
    preds, targets = [], []
    tracker = UsageTracker(codebook_size) if codebook_size else None
    for i in range(0, len(data), batch_size):
        batch = data.batch(slice(i, i + batch_size)).to(device)
        task.check_batch(batch, data.name)
        inputs, target, valid = task.inputs(batch), task.target(batch), task.valid(batch)
        pred, tokens = predict(inputs, batch)
        for k, v in task.metrics(pred, target, valid).items():
            per_image.setdefault(k, []).append(v.detach().double().cpu())
        if tracker is not None and tokens is not None:
            tracker.update(tokens.cpu())
        preds.append(pred.cpu())
        targets.append(target.cpu())
    extra = {}
    if tracker is not None and tracker.total:
        extra = {"usage": tracker.fraction_used, "perplexity": tracker.perplexity}
    return DenseEvaluation(
        data.name,
        {k: torch.cat(v) for k, v in per_image.items()},
        task.set_statistics(torch.cat(preds), torch.cat(targets)),
        extra,
    )


def evaluate_dense(
    task: DenseTask, predict: PredictFn, data: DenseDataset, **kwargs: Any
) -> dict[str, float]:
    """Mean per-image metrics of ``predict`` on ``data``, plus the task's set
    metrics and, with ``codebook_size``, ``usage`` and ``perplexity`` of the
    returned tokens: :func:`evaluate_images` (same keyword arguments), summed up."""
    return evaluate_images(task, predict, data, **kwargs).metrics(task)


def baseline_predictor(baseline: Baseline) -> PredictFn:
    """A trivial baseline (:meth:`DenseTask.baselines`) as a ``PredictFn``."""
    return lambda inputs, batch: (baseline(inputs), None)


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
