"""At the demo budget (minutes): the paper's UViM claim on panoptic segmentation
(COCO PQ: VQ 43.4, FSQ 43.2) on scenes. FSQ's full-model PQ is within 10% of the
best VQ's (with or without code splitting)."""

from __future__ import annotations

import pytest

from fsqkit.experiments.report import Report
from fsqkit.experiments.uvim_demo import run_task, uvim_demo_config


@pytest.mark.slow
def test_fsq_matches_vq_on_panoptic_at_demo_budget(tmp_path):
    cfg = uvim_demo_config("default", out=str(tmp_path), tasks=("panoptic",), progress=False)
    rows = {r["model"]: r for r in run_task(cfg, "panoptic", Report("slow"))}
    best_vq = max(rows["UViM vq"]["full"], rows["UViM vq_split"]["full"])
    assert rows["UViM fsq"]["full"] >= 0.90 * best_vq, rows
    assert rows["UViM fsq"]["full"] > rows["trivial (all ground)"]["full"], rows
