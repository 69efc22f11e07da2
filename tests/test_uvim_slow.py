"""At the demo budget (minutes): the paper's UViM claims on scene depth. FSQ's
full-model RMSE is within 10% of the best VQ's, and FSQ uses >= 90% of its codes."""

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
@pytest.mark.xfail(
    strict=True,
    reason="at the demo budget (100 steps) FSQ's oracle uses 4-9% of its 4375 codes, "
    "not the paper's ~100%; strict, so a fix shows up as XPASS",
)
def test_fsq_usage_at_least_90_percent(depth_rows):
    assert depth_rows["UViM fsq"]["usage"] >= 0.90, depth_rows
