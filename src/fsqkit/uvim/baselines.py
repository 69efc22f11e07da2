"""Trivial baselines, fitted on training data only: the per-pixel mean depth
map and the scalar mean depth, the grayscale copy and the per-pixel mean
colour, all-ground and the per-pixel majority class (each task names its own,
:meth:`~fsqkit.uvim.tasks.DenseTask.baselines`).

Dimension legend: ``N`` items, ``C`` target channels, ``E`` channels of the
encoded target, ``H, W`` image size.

Example::

    train = build_dense_dataset("scenes", "train")
    baselines = fit_baselines(task, train)          # {name: inputs -> prediction}
    test = build_dense_dataset("scenes", "test")
    scores = {n: evaluate_dense(task, baseline_predictor(b), test) for n, b in baselines.items()}
"""

from __future__ import annotations

import torch
from torch import Tensor

from fsqkit.data.dense import DenseDataset
from fsqkit.uvim.tasks import DenseTask
from fsqkit.uvim.tasks.base import Baseline, TrainingMeans

HELD_OUT = ("/val", "/test")


@torch.no_grad()
def training_means(task: DenseTask, data: DenseDataset, batch_size: int = 512) -> TrainingMeans:
    """The means a task's baselines use (:class:`TrainingMeans`), over the valid
    pixels of ``data``: the training split. A data set named as a held-out
    split (``.../val``, ``.../test``) is refused: a baseline fitted there would
    have seen the answers."""
    if data.name.endswith(HELD_OUT):
        raise ValueError(
            f"baselines are fitted on training data only, got {data.name!r} (a held-out split)"
        )
    sums: list[Tensor] = []  # target (C, H, W), encoded (E, H, W), count (1, H, W)
    for i in range(0, len(data), batch_size):
        batch = data.batch(slice(i, i + batch_size))
        task.check_batch(batch, data.name)
        inputs, target = task.inputs(batch), task.target(batch)
        valid = task.valid(batch).double()  # (B, 1, H, W)
        parts = [
            (target.double() * valid).sum(0),
            (task.encode(target, inputs).double() * valid).sum(0),
            valid.sum(0),
        ]
        sums = parts if not sums else [a + b for a, b in zip(sums, parts)]
    target_sum, encoded_sum, count = sums
    mean = target_sum.sum((1, 2)) / count.sum().clamp_min(1)  # (C,)
    seen = count > 0
    per_pixel = target_sum / count.clamp_min(1)
    target_map = torch.where(seen, per_pixel, mean[:, None, None])
    encoded_map = torch.where(seen, encoded_sum / count.clamp_min(1), 0.0)
    return TrainingMeans(mean.float(), target_map.float(), encoded_map.float(), data.name)


def fit_baselines(task: DenseTask, data: DenseDataset) -> dict[str, Baseline]:
    """The task's trivial baselines by name, fitted on the training set ``data``."""
    return task.baselines(training_means(task, data))
