"""What a dense prediction task is: how a batch becomes the model input, the
target in its own units and a validity mask, how targets map to and from the
``[-1, 1]`` scale the networks work in, its loss, its metrics and its trivial
baselines. One subclass per task (:mod:`~fsqkit.uvim.tasks.depth`,
:mod:`~fsqkit.uvim.tasks.colorize`, :mod:`~fsqkit.uvim.tasks.panoptic`), in the
registry of :mod:`fsqkit.uvim.tasks`.

Dimension legend: ``B`` batch, ``C`` target channels, ``H, W`` image size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from fsqkit.data.dense import DenseBatch

Baseline = Callable[[Tensor], Tensor]
"""A trivial predictor: model inputs ``(B, 3, H, W)`` -> prediction ``(B, C, H, W)``
in task units, fitted on training data only."""


@dataclass(frozen=True)
class TrainingMeans:
    """What the trivial baselines know of the training set (``E``: channels of
    the encoded target, ``task.encode``; ``C`` those of the target).

    Attributes:
        target_mean: ``(C,)`` mean target over all valid pixels (task units).
        target_map: ``(C, H, W)`` mean target per pixel over the images where
            it is valid (``target_mean`` where it never is).
        encoded_map: ``(E, H, W)`` the same for the encoded target (e.g. class
            frequencies of a one-hot panoptic target; colour offsets from gray).
        source: name of the data they come from (a ``.../train`` split).
    """

    target_mean: Tensor
    target_map: Tensor
    encoded_map: Tensor
    source: str = ""


class DenseTask:
    """Base class of a task. Subclasses set ``name``, ``target_channels``,
    ``primary_metric`` (with ``lower_is_better``) and ``needs`` (the
    :class:`DenseBatch` fields they read), and implement the methods below."""

    name: str = ""
    target_channels: int = 0
    primary_metric: str = ""
    lower_is_better: bool = True
    needs: tuple[str, ...] = ()

    def with_options(self, options: dict[str, Any]) -> DenseTask:
        """This task configured by ``options`` (saved in the model config as
        ``task_options``, e.g. a panoptic class table); the base takes none."""
        if options:
            raise ValueError(f"task {self.name!r} takes no options, got {sorted(options)}")
        return self

    def check_batch(self, batch: DenseBatch, source: str = "the data") -> None:
        """Raise ``ValueError`` if ``batch`` lacks a field this task needs."""
        for f in self.needs:
            if getattr(batch, f) is None:
                raise ValueError(f"task {self.name!r} needs {f} maps, which {source} has none of")

    def check_categories(self, categories: Any, source: str) -> None:
        """Raise ``ValueError`` if the class table of a data source (``None``: it
        has none) does not fit this task; the base ignores it."""

    def inputs(self, batch: DenseBatch) -> Tensor:
        """Model input ``(B, 3, H, W)`` in ``[0, 1]`` (default: the image)."""
        return batch.image

    def target(self, batch: DenseBatch) -> Tensor:
        """Target ``(B, C, H, W)`` in task units."""
        raise NotImplementedError

    def valid(self, batch: DenseBatch) -> Tensor:
        """``(B, 1, H, W)`` bool: pixels with a known target (default: all)."""
        b, _, h, w = batch.image.shape
        return torch.ones(b, 1, h, w, dtype=torch.bool, device=batch.image.device)

    def encode(self, target: Tensor, inputs: Tensor) -> Tensor:
        """Task units -> the networks' ``[-1, 1]`` scale (``inputs``: the model input,
        for encodings relative to it)."""
        raise NotImplementedError

    def decode(self, net: Tensor, inputs: Tensor) -> Tensor:
        """Network output (``[-1, 1]`` scale, unclamped) -> task units (clamped to range)."""
        raise NotImplementedError

    def loss(self, net: Tensor, target: Tensor, valid: Tensor, inputs: Tensor) -> Tensor:
        """Mean squared error on the ``[-1, 1]`` scale over valid pixels."""
        err = (net - self.encode(target, inputs)).pow(2) * valid
        return err.sum() / (valid.sum() * net.shape[1]).clamp_min(1)

    def metrics(self, pred: Tensor, target: Tensor, valid: Tensor) -> dict[str, Tensor]:
        """Per-image metrics ``{name: (B,)}`` of predictions in task units."""
        raise NotImplementedError

    def set_statistics(self, pred: Tensor, target: Tensor) -> Tensor | None:
        """Per-image statistics ``(B, ...)`` from which :meth:`set_metrics_from`
        computes the metrics of a whole set (e.g. a Fréchet distance, panoptic
        quality); ``None`` (the default): the task has no set metrics. A set's
        statistics are its images' rows, so a bootstrap resamples rows."""
        return None

    def set_metrics_from(self, stats: Tensor) -> dict[str, float]:
        """Set metrics from the stacked :meth:`set_statistics` of a set's images."""
        return {}

    def set_metrics(self, pred: Tensor, target: Tensor) -> dict[str, float]:
        """Metrics of a whole prediction set ``(N, C, H, W)`` (default: none)."""
        stats = self.set_statistics(pred, target)
        return {} if stats is None else self.set_metrics_from(stats)

    def baselines(self, means: TrainingMeans) -> dict[str, Baseline]:
        """The trivial predictors every model must beat, by name, from statistics
        of the training set (:func:`fsqkit.uvim.baselines.training_means`).
        Default: the mean target, one value per channel everywhere."""
        return {"mean target": lambda inputs: constant(means.target_mean, inputs)}

    def to_rgb(self, target: Tensor) -> Tensor:
        """Target in task units -> ``(B, 3, H, W)`` image in ``[0, 1]`` for grids."""
        raise NotImplementedError


def constant(value: Tensor, inputs: Tensor) -> Tensor:
    """``(C,)`` or ``(C, H, W)`` ``value`` repeated for each image of ``inputs``
    ``(B, 3, H, W)``: ``(B, C, H, W)``."""
    b, _, h, w = inputs.shape
    v = value.to(inputs.device)
    v = v[:, None, None] if v.ndim == 1 else v
    return v[None].expand(b, -1, h, w).clone()
