"""How sure a table's numbers are: bootstrap standard errors of every metric,
and of the difference between two models scored on the same images.

Dimension legend: ``N`` images, ``R`` bootstrap resamples.

A resample draws ``N`` of the evaluation's images with replacement; a metric's
standard error is the standard deviation of its value over ``R`` resamples
(per-image metrics: their mean; set metrics such as PQ or a Fréchet distance:
recomputed from the resampled images' statistics). The resamples are a pure
function of ``(N, R, seed)``, so models scored on the same images share them
and a *paired* difference (:meth:`Scores.minus`) is as sure as the models
differ image by image, not as noisy as each score alone.

Example::

    a = score(task, evaluate_images(task, predict_a, test))
    b = score(task, evaluate_images(task, predict_b, test))
    a.standard_errors()                  # {metric: SE}
    a.minus(b, "rmse")                   # (difference, its SE)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from fsqkit.uvim.evaluate import DenseEvaluation
from fsqkit.uvim.tasks import DenseTask

RESAMPLES = 200
"""Default ``R``: a standard error to about 5% of itself."""


def bootstrap_indices(n: int, resamples: int = RESAMPLES, seed: int = 0) -> Tensor:
    """``(R, N)`` int64 image indices drawn with replacement (seeded)."""
    if n < 2 or resamples < 2:
        raise ValueError(f"a bootstrap needs >= 2 images and resamples, got {n} and {resamples}")
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, n, (resamples, n), generator=gen)


def bootstrap(task: DenseTask, ev: DenseEvaluation, indices: Tensor) -> dict[str, Tensor]:
    """``{metric: (R,)}``: every per-image and set metric of ``ev`` on each
    resample ``indices[r]`` (``extra`` numbers such as usage are not resampled)."""
    if indices.ndim != 2 or (indices.numel() and int(indices.max()) >= len(ev)):
        raise ValueError(
            f"bootstrap indices must be (R, N) with N = {len(ev)} images, "
            f"got {tuple(indices.shape)}"
        )
    out = {k: v[indices].mean(1) for k, v in ev.per_image.items()}
    if ev.set_stats is not None:
        rows = [task.set_metrics_from(ev.set_stats[idx]) for idx in indices]
        for k in rows[0] if rows else ():
            out[k] = torch.tensor([r[k] for r in rows], dtype=torch.float64)
    return out


def standard_errors(replicates: dict[str, Tensor]) -> dict[str, float]:
    """``{metric: standard deviation over the resamples}`` (``nan`` resamples
    are left out; ``nan`` if fewer than two remain)."""
    out = {}
    for k, v in replicates.items():
        v = v[~v.isnan()]
        out[k] = float(v.std()) if len(v) > 1 else math.nan
    return out


@dataclass
class Scores:
    """A model's metrics on a data set with their bootstrap replicates (plain
    tensors: worker processes return it).

    Attributes:
        data: the data set's name (e.g. ``scenes/test``).
        images: how many images were scored.
        metrics: every metric (:meth:`DenseEvaluation.metrics`).
        replicates: ``{metric: (R,)}`` from :func:`bootstrap`.
        seed: the resamples' seed (scores are paired only on the same resamples).
    """

    data: str
    images: int
    metrics: dict[str, float]
    replicates: dict[str, Tensor]
    seed: int = 0

    def standard_errors(self) -> dict[str, float]:
        return standard_errors(self.replicates)

    def minus(self, other: Scores, metric: str) -> tuple[float, float]:
        """``(self - other, standard error)`` of ``metric``, paired: both models
        scored on the same images with the same resamples."""
        same = (self.data, self.images, self.seed) == (other.data, other.images, other.seed)
        if not same or len(self.replicates[metric]) != len(other.replicates[metric]):
            raise ValueError(
                f"paired differences need the same images and resamples, got "
                f"{self.data!r} ({self.images}) and {other.data!r} ({other.images})"
            )
        diff = self.metrics[metric] - other.metrics[metric]
        paired = {metric: self.replicates[metric] - other.replicates[metric]}
        return diff, standard_errors(paired)[metric]


def score(
    task: DenseTask, ev: DenseEvaluation, resamples: int = RESAMPLES, seed: int = 0
) -> Scores:
    """The :class:`Scores` of an evaluation: its metrics and bootstrap replicates
    (none with ``resamples=0`` or fewer than two images: no standard errors)."""
    reps = {}
    if resamples and len(ev) >= 2:
        reps = bootstrap(task, ev, bootstrap_indices(len(ev), resamples, seed))
    return Scores(ev.data, len(ev), ev.metrics(task), reps, seed)
