"""What a dense prediction task is: how a batch becomes the model input, the
target in its own units and a validity mask, how targets map to and from the
``[-1, 1]`` scale the networks work in, its loss, its metrics and its trivial
baseline. One subclass per task (:mod:`~fsqkit.uvim.tasks.depth`,
:mod:`~fsqkit.uvim.tasks.colorize`, :mod:`~fsqkit.uvim.tasks.panoptic`), in the
registry of :mod:`fsqkit.uvim.tasks`.

Dimension legend: ``B`` batch, ``C`` target channels, ``H, W`` image size.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from fsqkit.data.dense import DenseBatch


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

    def set_metrics(self, pred: Tensor, target: Tensor) -> dict[str, float]:
        """Metrics of a whole prediction set (e.g. a Fréchet distance); default none."""
        return {}

    def trivial(self, inputs: Tensor, train_mean: Tensor) -> Tensor:
        """The trivial predictor the models must beat, in task units.
        ``train_mean``: ``(C,)`` mean target of the training set."""
        b, _, h, w = inputs.shape
        return train_mean.to(inputs)[None, :, None, None].expand(b, -1, h, w)

    def to_rgb(self, target: Tensor) -> Tensor:
        """Target in task units -> ``(B, 3, H, W)`` image in ``[0, 1]`` for grids."""
        raise NotImplementedError
