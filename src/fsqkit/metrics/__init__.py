"""Evaluation metrics."""

from fsqkit.metrics.image import psnr, ssim

__all__ = ["psnr", "ssim"]
