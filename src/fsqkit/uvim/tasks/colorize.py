"""Colorization: the input is the grayscale image, the target its colours.

Dimension legend: ``B`` batch, ``H, W`` image size.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fsqkit.data.dense import DenseBatch
from fsqkit.metrics import RandomConvFeatures, frechet_distance_features
from fsqkit.metrics.image import colorfulness, psnr, ssim
from fsqkit.uvim.tasks.base import Baseline, DenseTask, TrainingMeans, constant

MIN_FD_IMAGES = 64


def grayscale(images: Tensor) -> Tensor:
    """``(B, 3, H, W)`` RGB -> ``(B, 3, H, W)`` luma (ITU-R 601), replicated."""
    w = images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (images * w).sum(1, keepdim=True).expand(-1, 3, -1, -1)


class ColorizeTask(DenseTask):
    """Colorization: input = the grayscale image, target = its colours (RGB in
    ``[0, 1]``). Metrics: PSNR and SSIM to the true colours, colourfulness of
    the prediction, and (for sets of at least ``MIN_FD_IMAGES``) the Fréchet
    distance ``fd`` of predictions vs the real colour images in
    :class:`~fsqkit.metrics.RandomConvFeatures` space."""

    name = "colorize"
    target_channels = 3
    primary_metric = "fd"
    lower_is_better = True
    needs = ()

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

    def set_statistics(self, pred: Tensor, target: Tensor) -> Tensor:
        """``(B, 2F)``: the random-conv features of each prediction and of its true
        colour image (``F = 736``)."""
        feats = RandomConvFeatures()
        return torch.cat([feats(pred), feats(target)], 1)

    def set_metrics_from(self, stats: Tensor) -> dict[str, float]:
        if stats.shape[0] < MIN_FD_IMAGES:
            return {}  # a Fréchet distance of a handful of images is noise (and eigh costs seconds)
        pred, target = stats.chunk(2, dim=1)
        return {"fd": frechet_distance_features(pred, target)}

    def baselines(self, means: TrainingMeans) -> dict[str, Baseline]:
        """The grayscale copy of the input; and the per-pixel mean colour: the
        input's luma plus the training set's mean colour offset from gray at
        that pixel (a chroma: it leaves the luma as it is)."""
        return {
            "grayscale copy": lambda inputs: inputs.clone(),
            "per-pixel mean colour": lambda inputs: self.decode(
                constant(means.encoded_map, inputs), inputs
            ),
        }

    def to_rgb(self, target: Tensor) -> Tensor:
        return target.clamp(0, 1)
