"""Sample quality of a set of generated images against real ones: Fréchet
distance plus k-NN precision and recall, in one feature space.

Dimension legend: ``N`` real images, ``M`` samples, ``F`` feature width.
"""

from __future__ import annotations

from torch import Tensor

from fsqkit.metrics.features import FeatureExtractor, RandomConvFeatures
from fsqkit.metrics.frechet import frechet_distance_features
from fsqkit.metrics.precision_recall import precision_recall


def feature_quality(real: Tensor, fake: Tensor, k: int = 3) -> dict[str, float]:
    """``fd``, ``precision`` and ``recall`` of features ``fake [M, F]`` against
    ``real [N, F]`` (compute the real features once and reuse them)."""
    precision, recall = precision_recall(real, fake, k=k)
    return {"fd": frechet_distance_features(real, fake), "precision": precision, "recall": recall}


def sample_quality(
    samples: Tensor, real: Tensor, extractor: FeatureExtractor | None = None, k: int = 3
) -> dict[str, float]:
    """Fréchet distance, precision and recall of ``samples`` against ``real`` images.

    Both ``[N, 3, H, W]`` float in ``[0, 1]``; ``extractor`` defaults to
    :class:`RandomConvFeatures` ("fd" is then *not* an FID; with
    :class:`TorchScriptInceptionFeatures` it is).
    """
    extractor = extractor or RandomConvFeatures()
    return feature_quality(extractor(real), extractor(samples), k=k)
