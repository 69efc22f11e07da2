"""Image metrics: PSNR and SSIM (reconstruction), colourfulness (torch, batched).

Images are ``(B, C, H, W)`` floats in ``[0, data_range]``. SSIM follows Wang et
al. 2004 with an 11x11 Gaussian window (sigma 1.5), ``K1 = 0.01``, ``K2 = 0.03``,
"valid" filtering (no padding) and per-channel averaging -- the same settings
as ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, channel_axis=0)``; a test compares them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_pair(x: Tensor, y: Tensor) -> None:
    if x.shape != y.shape:
        raise ValueError(
            f"images must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.ndim != 4:
        raise ValueError(f"expected (B, C, H, W) images, got shape {tuple(x.shape)}")


def psnr(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    """Per-image PSNR in dB, ``(B,)``. Identical images give ``inf``."""
    _check_pair(x, y)
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1)
    return (10.0 * torch.log10(data_range**2 / mse)).float()


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device) -> Tensor:
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(
    x: Tensor, y: Tensor, data_range: float = 1.0, window_size: int = 11, sigma: float = 1.5
) -> Tensor:
    """Per-image SSIM ``(B,)`` (mean over channels and valid window positions).

    Images smaller than the window use a window of the image's smaller side
    (made odd)."""
    _check_pair(x, y)
    win = min(window_size, x.shape[-1], x.shape[-2])
    win -= 1 - win % 2  # odd window
    c = x.shape[1]
    xd, yd = x.double(), y.double()
    g = _gaussian_window(win, sigma, xd.dtype, x.device)
    kh = g.view(1, 1, win, 1).expand(c, 1, win, 1)
    kw = g.view(1, 1, 1, win).expand(c, 1, 1, win)

    def blur(t: Tensor) -> Tensor:  # separable Gaussian, valid region only
        return F.conv2d(F.conv2d(t, kh, groups=c), kw, groups=c)

    mu_x, mu_y = blur(xd), blur(yd)
    sxx = blur(xd * xd) - mu_x**2
    syy = blur(yd * yd) - mu_y**2
    sxy = blur(xd * yd) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1).float()


def colorfulness(images: Tensor) -> Tensor:
    """Hasler & Süsstrunk's colourfulness ``(B,)`` of ``(B, 3, H, W)`` images in
    ``[0, 1]``, on the 0-255 scale (0 for gray images)."""
    r, g, b = (images * 255.0).unbind(1)
    rg, yb = (r - g).flatten(1), (0.5 * (r + g) - b).flatten(1)
    std = (rg.var(1, unbiased=False) + yb.var(1, unbiased=False)).sqrt()
    mean = (rg.mean(1).pow(2) + yb.mean(1).pow(2)).sqrt()
    return std + 0.3 * mean
