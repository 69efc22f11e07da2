"""Sample-quality evaluation: Fréchet distance, k-NN precision/recall, pluggable
feature extractors, a class-accuracy classifier, and MaskGIT compression cost."""

from __future__ import annotations

from torch import Tensor

from fsqkit.evaluation.classifier import PixelClassifier
from fsqkit.evaluation.compression import compression_cost
from fsqkit.evaluation.features import (
    FeatureExtractor,
    RandomConvFeatures,
    TorchScriptInceptionFeatures,
    build_feature_extractor,
)
from fsqkit.evaluation.frechet import frechet_distance, frechet_distance_features, gaussian_stats
from fsqkit.evaluation.generation import GenerationEval, evaluate_generation
from fsqkit.evaluation.precision_recall import precision_recall


def sample_quality(
    samples: Tensor, real: Tensor, extractor: FeatureExtractor | None = None, k: int = 3
) -> dict[str, float]:
    """Fréchet distance, precision and recall of ``samples`` against ``real`` images.

    Both ``[N, 3, H, W]`` float in ``[0, 1]``; ``extractor`` defaults to
    :class:`RandomConvFeatures` ("fd" is then *not* an FID; with
    :class:`TorchScriptInceptionFeatures` it is).
    """
    extractor = extractor or RandomConvFeatures()
    fake_f, real_f = extractor(samples), extractor(real)
    precision, recall = precision_recall(real_f, fake_f, k=k)
    return {
        "fd": frechet_distance_features(real_f, fake_f),
        "precision": precision,
        "recall": recall,
    }


__all__ = [
    "FeatureExtractor",
    "GenerationEval",
    "PixelClassifier",
    "RandomConvFeatures",
    "TorchScriptInceptionFeatures",
    "build_feature_extractor",
    "compression_cost",
    "evaluate_generation",
    "frechet_distance",
    "frechet_distance_features",
    "gaussian_stats",
    "precision_recall",
    "sample_quality",
]
