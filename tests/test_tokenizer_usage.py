"""Stage-I claims of ``fsqkit demo`` for the FSQ [8,5,5,5] tokenizer on the
built-in photos, against the non-learned baseline (same token grid,
1000-colour palette), on the held-out validation crops.

* At the demo's own budget (``demo_config("default")``: 1700 steps x batch 16)
  the FSQ tokenizer comes within 0.25 dB of the baseline's PSNR and beats its
  SSIM; it does not reach the paper's >= 95% usage there (docs/tokenizer.md,
  "Choosing the demo's stage-I recipe"), so this test guards the measured level.
* A 4x longer run with twice the batch reaches >= 95% usage and beats the
  baseline's PSNR (the paper's claim).

On our 2-core CPU both need minutes, so they are marked ``slow`` (run them with
``pytest -m slow tests/test_tokenizer_usage.py``). The default suite runs a
short version that checks the same pipeline learns (PSNR rises well above the
untrained model, usage grows) without the thresholds.
"""

from __future__ import annotations

import pytest
import torch

from fsqkit.data import build_dataset
from fsqkit.experiments.baseline import BicubicPaletteBaseline, evaluate_baseline, palette_levels
from fsqkit.experiments.demo import demo_config, tokenizer_configs, train_config
from fsqkit.tokenizer import (
    Tokenizer,
    TokenizerConfig,
    TokenizerTrainConfig,
    evaluate_tokenizer,
    train_tokenizer,
)
from fsqkit.training import TrainerConfig


@pytest.fixture
def one_thread():
    # The suite shares 2 cores; one intra-op thread avoids oversubscription.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _train(tmp_path, steps: int, image_size: int, val_images: int, batch_size: int = 16):
    cfg = TokenizerConfig(image_size=image_size, base_channels=16, channel_mult=(1, 2, 4))
    train_cfg = TokenizerTrainConfig(
        lr=2e-3, betas=(0.9, 0.99), batch_size=batch_size, num_val_images=val_images, grid_images=0
    )
    res = train_tokenizer(
        cfg, train_cfg, TrainerConfig(str(tmp_path / "run"), steps=steps, progress=False)
    )
    val = build_dataset("embedded", "val", image_size=image_size, num_images=val_images)
    return cfg, res, val


def test_fsq_tokenizer_learns_short(tmp_path, one_thread):
    cfg, res, val = _train(tmp_path, steps=150, image_size=16, val_images=256)
    torch.manual_seed(0)
    untrained = evaluate_tokenizer(Tokenizer(cfg), val)
    assert res.metrics["psnr"] > untrained["psnr"] + 3.0, (res.metrics, untrained)
    assert res.metrics["usage"] > 0.1, res.metrics
    assert res.metrics["codes_used"] <= 1000


@pytest.mark.slow
def test_fsq_tokenizer_at_the_demo_budget(tmp_path, one_thread):
    cfg = demo_config("default", progress=False)
    model_cfg = tokenizer_configs(cfg)["fsq"]
    res = train_tokenizer(
        model_cfg,
        train_config(cfg),
        TrainerConfig(str(tmp_path / "run"), steps=cfg.steps, progress=False),
    )
    val = build_dataset(
        "embedded", "val", image_size=cfg.image_size, seed=cfg.seed, num_images=cfg.val_images
    )
    base = evaluate_baseline(
        BicubicPaletteBaseline(model_cfg.downsample_factor, palette_levels(1000)), val
    )
    # Measured (one thread): 25.13 dB / SSIM 0.685 / 65.5% vs the baseline's 25.36 / 0.664.
    assert res.metrics["psnr"] > base["psnr"] - 0.5, (res.metrics, base)
    assert res.metrics["ssim"] > base["ssim"], (res.metrics, base)
    assert res.metrics["usage"] >= 0.6, res.metrics


@pytest.mark.slow
def test_fsq_tokenizer_usage_and_baseline(tmp_path, one_thread):
    cfg, res, val = _train(tmp_path, steps=6000, image_size=32, val_images=2048, batch_size=32)
    base = evaluate_baseline(BicubicPaletteBaseline(cfg.downsample_factor, 10), val)
    assert res.metrics["usage"] >= 0.95, res.metrics
    assert res.metrics["psnr"] > base["psnr"], (res.metrics, base)
