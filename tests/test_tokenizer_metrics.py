"""PSNR / SSIM against known values and scikit-image; the non-learned baseline."""

from __future__ import annotations

import math

import pytest
import torch
from skimage.metrics import structural_similarity

from fsqkit.experiments.baseline import BicubicPaletteBaseline, palette_levels
from fsqkit.metrics import psnr, ssim


def test_psnr_known_value():
    x = torch.zeros(1, 3, 8, 8)
    y = torch.full((1, 3, 8, 8), 0.1)  # MSE 0.01 -> 20 dB
    assert abs(float(psnr(x, y)) - 20.0) < 1e-5
    assert math.isinf(float(psnr(x, x)))
    with pytest.raises(ValueError, match="same shape"):
        psnr(x, y[..., :4])


def test_ssim_matches_scikit_image():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 32, 32, generator=g)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    ours = ssim(x, y)
    for i in range(3):
        ref = structural_similarity(
            x[i].numpy(),
            y[i].numpy(),
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            channel_axis=0,
        )
        assert abs(float(ours[i]) - float(ref)) < 1e-4
    assert torch.allclose(ssim(x, x), torch.ones(3))


def test_baseline_roundtrip_and_grid():
    assert palette_levels(1000) == 10 and palette_levels(1024) == 10
    b = BicubicPaletteBaseline(4, 10)
    # A constant image whose colour is on the palette is reproduced exactly.
    x = torch.full((1, 3, 16, 16), 5 / 9)
    idx = b.encode(x)
    assert idx.shape == (1, 4, 4) and int(idx.max()) < 1000
    assert torch.allclose(b.decode(idx), x, atol=1e-6)
