"""The paper's usage claim on synthetic data: VQ without tricks leaves codes dead,
VQ with reseeding/splitting and FSQ use nearly all of theirs."""

from __future__ import annotations

import pytest

from fsqkit.cli import main
from fsqkit.experiments.studies import run_usage_study


def test_usage_study_vq_plain_vs_tricks_vs_fsq():
    usage = run_usage_study(codebook_size=125, steps=60)
    assert usage["vq_plain"] < 0.6, usage
    assert usage["vq_reseed"] > 0.9 and usage["vq_split"] > 0.9, usage
    assert usage["fsq"] > 0.9, usage


def test_usage_study_cli_rejects_too_few_codes(capsys):
    assert main(["study", "usage", "--codebook-size", "8", "--clusters", "8"]) == 2
    assert "more codes than clusters" in capsys.readouterr().err


@pytest.mark.slow
def test_usage_study_cli_prints_all_quantizers(capsys):
    assert main(["study", "usage"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("vq_plain", "vq_reseed", "vq_split", "fsq"))
