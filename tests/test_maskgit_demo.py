"""Stage II of the demo: MaskGIT on FSQ and VQ tokens, reported side by side."""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

import pytest
import torch

from fsqkit.data import build_dataset
from fsqkit.experiments.demo import demo_config
from fsqkit.experiments.report import Report
from fsqkit.experiments.stage2 import MaskGITBudget, maskgit_budget, run_stage2
from fsqkit.tokenizer import Tokenizer, TokenizerConfig
from tests.single_thread import one_thread  # noqa: F401  (autouse)


def test_stage2_reports_fsq_and_vq_side_by_side(tmp_path, capsys) -> None:
    common = {"image_size": 16, "base_channels": 8, "channel_mult": (1, 2, 2), "norm_groups": 4}
    runs = {}
    for name, cfg in {
        "fsq": TokenizerConfig(quantizer="fsq", quantizer_kwargs={"levels": [5, 3]}, **common),
        "vq": TokenizerConfig(
            quantizer="vq", quantizer_kwargs={"codebook_size": 16}, latent_channels=4, **common
        ),
    }.items():
        torch.manual_seed(0)
        Tokenizer(cfg).save(str(tmp_path / name))  # untrained: this test checks the plumbing
        runs[name] = str(tmp_path / name)
    demo_cfg = SimpleNamespace(
        out=str(tmp_path / "demo"), seed=0, train_images=32, val_images=16, progress=False, steps=2
    )
    val = build_dataset("embedded", "val", image_size=16, num_images=16)
    report = Report("t")
    small = MaskGITBudget(
        steps=2, dim=16, depth=1, heads=2, batch_size=8, num_samples=16, decode_steps=4
    )
    metrics = run_stage2(demo_cfg, report, runs, val, small)
    assert set(metrics) == {"fsq", "vq"}
    for m in metrics.values():
        assert m["fd"] >= 0 and 0 <= m["precision"] <= 1 and 0 <= m["recall"] <= 1
        assert m["bits_per_image"] > 0 and 0 < m["sample_usage"] <= 1
    assert metrics["fsq"]["raw_bits_per_image"] == pytest.approx(16 * math.log2(15))
    (table,) = [s["table"] for s in report.sections if s["kind"] == "table"]
    methods = [r["method"] for r in table.rows]
    assert (
        methods[0] == "MaskGIT on FSQ tokens (15 codes)"
        and methods[3] == "MaskGIT on VQ tokens (16 codes)"
    )
    assert "reference: random FSQ tokens" in methods[2]
    assert os.path.isfile(tmp_path / "demo" / "samples.png")
    assert "Stage II: MaskGIT samples" in capsys.readouterr().out


def test_stage2_preset_follows_the_demo_preset_not_the_steps() -> None:
    assert maskgit_budget("quick").steps < maskgit_budget().steps < maskgit_budget("full").steps
    assert demo_config("quick").stage2 == "quick" and demo_config("full").stage2 == "full"
    assert demo_config("default", steps=5000).stage2 == "default"  # --steps: stage I only
    with pytest.raises(ValueError, match="unknown stage-II preset 'huge'"):
        maskgit_budget("huge")
    with pytest.raises(ValueError, match="unknown stage-II preset 'big'"):
        demo_config("default", stage2="big")  # before any training
