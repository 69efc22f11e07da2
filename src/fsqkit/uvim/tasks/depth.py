"""Metric depth: one channel in metres, linear encoding of ``[0, max_depth]``.

Dimension legend: ``B`` batch, ``H, W`` image size.
"""

from __future__ import annotations

from torch import Tensor

from fsqkit.data.dense import DenseBatch
from fsqkit.metrics.depth import depth_metrics
from fsqkit.uvim.tasks.base import Baseline, DenseTask, TrainingMeans, constant


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
        return depth_metrics(pred, target, valid, self.min_depth)

    def baselines(self, means: TrainingMeans) -> dict[str, Baseline]:
        """The training set's mean depth map (per pixel), and its one mean depth
        (a scalar: much weaker, as every image has a similar layout)."""
        return {
            "per-pixel mean depth": lambda inputs: constant(means.target_map, inputs),
            "scalar mean depth": lambda inputs: constant(means.target_mean, inputs),
        }

    def to_rgb(self, target: Tensor) -> Tensor:
        return (1.0 - target / self.max_depth).clamp(0, 1).expand(-1, 3, -1, -1)
