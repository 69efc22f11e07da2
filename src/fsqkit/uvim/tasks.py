"""Dense prediction tasks: what a target is, how it is encoded for the
networks, its loss and its metrics. One small object per task, in a registry.

Dimension legend: ``B`` batch, ``C`` target channels, ``H, W`` image size.

A :class:`DenseBatch` carries everything a data source knows about a batch
(image, depth, semantic and instance maps); a :class:`DenseTask` turns it into
the model input (``(B, 3, H, W)`` in ``[0, 1]``), the target in its own units
(``(B, C, H, W)``: metres, colours in ``[0, 1]``) and a validity mask, maps
targets to and from the ``[-1, 1]`` scale the networks work in, and scores
predictions. New tasks subclass :class:`DenseTask` and call :func:`register_task`;
panoptic segmentation is in :mod:`fsqkit.uvim.panoptic_task`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from fsqkit.metrics.image import psnr, ssim


@dataclass
class DenseBatch:
    """A batch from a dense data source: ``image (B, 3, H, W)`` float in ``[0, 1]``;
    optional ``depth (B, 1, H, W)`` metres (0 = unknown), ``semantic`` and
    ``instance`` ``(B, H, W)`` int64."""

    image: Tensor
    depth: Tensor | None = None
    semantic: Tensor | None = None
    instance: Tensor | None = None

    def to(self, device: torch.device | str) -> DenseBatch:
        def mv(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return DenseBatch(mv(self.image), mv(self.depth), mv(self.semantic), mv(self.instance))


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


class DepthTask(DenseTask):
    """Metric depth (one channel, metres); linear encoding of ``[0, max_depth]``.
    Metrics over valid pixels (depth > 0): RMSE, absolute relative error and the
    fraction of pixels with ``max(p/t, t/p) < 1.25`` (NYU conventions, per image)."""

    name = "depth"
    target_channels = 1
    primary_metric = "rmse"
    lower_is_better = True
    needs = ("depth",)
    max_depth = 12.5
    min_depth = 1e-3

    def target(self, batch: DenseBatch) -> Tensor:
        assert batch.depth is not None
        return batch.depth

    def valid(self, batch: DenseBatch) -> Tensor:
        assert batch.depth is not None
        return batch.depth > 0

    def encode(self, target: Tensor, inputs: Tensor) -> Tensor:
        return target.clamp(0, self.max_depth) * (2.0 / self.max_depth) - 1.0

    def decode(self, net: Tensor, inputs: Tensor) -> Tensor:
        return ((net + 1.0) * (self.max_depth / 2.0)).clamp(self.min_depth, self.max_depth)

    def metrics(self, pred: Tensor, target: Tensor, valid: Tensor) -> dict[str, Tensor]:
        v = valid.float()
        n = v.flatten(1).sum(1).clamp_min(1)
        t = target.clamp_min(self.min_depth)
        p = pred.clamp_min(self.min_depth)

        def mean(x: Tensor) -> Tensor:
            return (x * v).flatten(1).sum(1) / n

        return {
            "rmse": mean((p - t).pow(2)).sqrt(),
            "absrel": mean((p - t).abs() / t),
            "delta1": mean((torch.maximum(p / t, t / p) < 1.25).float()),
        }

    def to_rgb(self, target: Tensor) -> Tensor:
        return (1.0 - target / self.max_depth).clamp(0, 1).expand(-1, 3, -1, -1)


def grayscale(images: Tensor) -> Tensor:
    """``(B, 3, H, W)`` RGB -> ``(B, 3, H, W)`` luma (ITU-R 601), replicated."""
    w = images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (images * w).sum(1, keepdim=True).expand(-1, 3, -1, -1)


def colorfulness(images: Tensor) -> Tensor:
    """Hasler & Süsstrunk's colourfulness ``(B,)`` of ``(B, 3, H, W)`` images in
    ``[0, 1]``, on the 0-255 scale (0 for gray images)."""
    r, g, b = (images * 255.0).unbind(1)
    rg, yb = (r - g).flatten(1), (0.5 * (r + g) - b).flatten(1)
    std = (rg.var(1, unbiased=False) + yb.var(1, unbiased=False)).sqrt()
    mean = (rg.mean(1).pow(2) + yb.mean(1).pow(2)).sqrt()
    return std + 0.3 * mean


MIN_FD_IMAGES = 64


class ColorizeTask(DenseTask):
    """Colorization: input = the grayscale image, target = its colours (RGB in
    ``[0, 1]``). Metrics: PSNR and SSIM to the true colours, colourfulness of
    the prediction, and (for sets of at least ``MIN_FD_IMAGES``) the Fréchet
    distance ``fd`` of predictions vs the real colour images in
    :class:`~fsqkit.evaluation.RandomConvFeatures` space."""

    name = "colorize"
    target_channels = 3
    primary_metric = "fd"
    lower_is_better = True
    needs = ()

    def check_categories(self, categories: Any, source: str) -> None:
        """Raise ``ValueError`` if the class table of a data source (``None``: it
        has none) does not fit this task; the base ignores it."""

    def inputs(self, batch: DenseBatch) -> Tensor:
        return grayscale(batch.image)

    def target(self, batch: DenseBatch) -> Tensor:
        return batch.image

    def encode(self, target: Tensor, inputs: Tensor) -> Tensor:
        """The colour's offset from the gray input, ``2 (rgb - gray)``: a network
        output of 0 is the grayscale copy, so training starts at the trivial answer."""
        return (target - inputs) * 2.0

    def decode(self, net: Tensor, inputs: Tensor) -> Tensor:
        return (inputs + net / 2.0).clamp(0, 1)

    def metrics(self, pred: Tensor, target: Tensor, valid: Tensor) -> dict[str, Tensor]:
        return {
            "psnr": psnr(pred, target).clamp_max(100.0),
            "ssim": ssim(pred, target),
            "colorfulness": colorfulness(pred),
        }

    def set_metrics(self, pred: Tensor, target: Tensor) -> dict[str, float]:
        from fsqkit.evaluation import RandomConvFeatures, frechet_distance_features

        if pred.shape[0] < MIN_FD_IMAGES:
            return {}  # a Fréchet distance of a handful of images is noise (and eigh costs seconds)
        feats = RandomConvFeatures()
        return {"fd": frechet_distance_features(feats(pred), feats(target))}

    def trivial(self, inputs: Tensor, train_mean: Tensor) -> Tensor:
        """The grayscale copy of the input."""
        return inputs

    def to_rgb(self, target: Tensor) -> Tensor:
        return target.clamp(0, 1)


_TASKS: dict[str, DenseTask] = {}


def register_task(task: DenseTask) -> DenseTask:
    """Add ``task`` to the registry under ``task.name``."""
    if not task.name or task.name in _TASKS:
        raise ValueError(f"task name {task.name!r} is empty or already registered")
    _TASKS[task.name] = task
    return task


def available_tasks() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str, options: dict[str, Any] | None = None) -> DenseTask:
    """The registered task ``name`` (configured by ``options``, see
    :meth:`DenseTask.with_options`); ``ValueError`` naming the known ones otherwise."""
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; available: {', '.join(available_tasks())}")
    return _TASKS[name].with_options(options) if options else _TASKS[name]


register_task(DepthTask())
register_task(ColorizeTask())

from fsqkit.uvim.panoptic_task import scenes_panoptic_task  # noqa: E402 (it subclasses DenseTask)

register_task(scenes_panoptic_task())
