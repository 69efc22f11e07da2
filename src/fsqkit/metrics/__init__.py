"""Evaluation metrics."""

from fsqkit.metrics.image import psnr, ssim
from fsqkit.metrics.panoptic import PanopticQuality, PanopticResult, panoptic_quality

__all__ = ["PanopticQuality", "PanopticResult", "panoptic_quality", "psnr", "ssim"]
