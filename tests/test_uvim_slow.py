"""At the demo budget (minutes): the paper's UViM claims on scene depth. FSQ's
full-model RMSE is within 10% of the best VQ's, VQ without code splitting
collapses while FSQ does not, and FSQ uses >= 90% of its codes (not yet: a
strict xfail)."""

from __future__ import annotations

import pytest
import torch

from fsqkit.experiments.report import Report
from fsqkit.experiments.uvim_demo import run_task, uvim_demo_config


@pytest.fixture(scope="module")
def depth_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("uvim_slow")
    cfg = uvim_demo_config("default", out=str(out), tasks=("depth",), progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads or threads)  # as the demo runs
    try:
        return {r["model"]: r for r in run_task(cfg, "depth", Report("slow"))}
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_fsq_full_model_depth_within_10_percent_of_best_vq(depth_rows):
    best_vq = min(depth_rows["UViM vq"]["full"], depth_rows["UViM vq_split"]["full"])
    assert depth_rows["UViM fsq"]["full"] <= 1.10 * best_vq, depth_rows


@pytest.mark.slow
def test_vq_without_splitting_collapses_and_fsq_does_not(depth_rows):
    # The paper: VQ without code splitting uses 0.78% of its codes; FSQ needs no splitting.
    vq, fsq = depth_rows["UViM vq"]["usage"], depth_rows["UViM fsq"]["usage"]
    assert vq < 0.01 and fsq > 10 * vq, depth_rows


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="at the demo budget (100 steps) FSQ's oracle uses 8.7% of its 4375 codes "
    "(19% / 39% after 400 / 1600 steps, docs/uvim.md), not the paper's ~100%; strict, "
    "so a fix shows up as XPASS",
)
def test_fsq_usage_at_least_90_percent(depth_rows):
    assert depth_rows["UViM fsq"]["usage"] >= 0.90, depth_rows
