"""At the demo budget (minutes): the paper's UViM claims on scene depth. FSQ's
full-model RMSE is within 10% of the best VQ's, and FSQ uses >= 90% of its codes."""

from __future__ import annotations

import pytest

from fsqkit.experiments.report import Report
from fsqkit.experiments.uvim_demo import run_task, uvim_demo_config


@pytest.mark.slow
def test_fsq_matches_vq_on_depth_at_demo_budget(tmp_path):
    cfg = uvim_demo_config("default", out=str(tmp_path), tasks=("depth",), progress=False)
    rows = {r["model"]: r for r in run_task(cfg, "depth", Report("slow"))}
    fsq = rows["UViM fsq"]
    best_vq = min(rows["UViM vq"]["full"], rows["UViM vq_split"]["full"])
    assert fsq["full"] <= 1.10 * best_vq, rows
    assert fsq["usage"] >= 0.90, rows
