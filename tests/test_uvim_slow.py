"""At the demo budget (minutes), on 2048 held-out test scenes with bootstrap
standard errors: the paper's UViM claims on scene depth. Every model beats the
per-pixel mean depth map by far; FSQ's full model is not worse than the best
VQ's (beyond the noise); VQ without code splitting collapses while FSQ does
not. Not yet at this budget (strict xfails, so a fix shows up as XPASS): FSQ
using >= 90% of its codes, and the token language beating a direct regression."""

from __future__ import annotations

import pytest
import torch

from fsqkit.experiments.report import Report
from fsqkit.experiments.uvim_demo import run_task, uvim_demo_config


def run_demo_task(out, task: str) -> tuple[dict, dict]:
    """The default demo's rows for ``task`` by model, and its paired differences
    by ``(a, b)``."""
    cfg = uvim_demo_config("default", out=str(out), tasks=(task,), progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads or threads)  # as the demo runs
    report = Report("slow")
    try:
        rows = {r["model"]: r for r in run_task(cfg, task, report)}
    finally:
        torch.set_num_threads(threads)
    pairs = {(c["a"], c["b"]): c for c in report.data["comparisons"][task]}
    return rows, pairs


@pytest.fixture(scope="module")
def depth(tmp_path_factory):
    return run_demo_task(tmp_path_factory.mktemp("uvim_slow"), "depth")


@pytest.mark.slow
def test_scored_on_the_test_split(depth):
    rows, _ = depth
    assert {(r["data"], r["images"]) for r in rows.values()} == {("scenes/test", 2048)}
    assert rows["trivial: per-pixel mean depth"]["fitted_on"] == "scenes/train"


@pytest.mark.slow
def test_every_model_beats_the_per_pixel_mean_depth_map(depth):
    rows, pairs = depth
    base = rows["trivial: per-pixel mean depth"]
    assert base["rmse"] < 0.5 * rows["trivial: scalar mean depth"]["rmse"]
    for name in ("direct (no tokens)", "UViM fsq", "UViM vq", "UViM vq_split"):
        r = rows[name]
        assert r["rmse"] + 2 * r["rmse_se"] < base["rmse"] - 2 * base["rmse_se"], (name, r)
    c = pairs[("direct (no tokens)", "trivial: per-pixel mean depth")]
    assert c["a - b"] < -2 * c["se"], c


@pytest.mark.slow
def test_fsq_full_model_is_not_worse_than_the_best_vq(depth):
    """The paper: FSQ matches VQ (NYU RMSE 0.473 vs 0.468). At the demo's budget,
    FSQ's RMSE minus the best VQ's, paired on the same scenes, is below two
    standard errors. (Not with 4x the training: at 400 + 400 steps plain VQ
    leads by 0.053 ± 0.006 m, docs/uvim.md.)"""
    rows, pairs = depth
    best = min(("UViM vq", "UViM vq_split"), key=lambda m: rows[m]["rmse"])
    c = pairs[("UViM fsq", best)]
    assert c["a - b"] < 2 * c["se"], c


@pytest.mark.slow
def test_vq_without_splitting_collapses_and_fsq_does_not(depth):
    # The paper: VQ without code splitting uses 0.78% of its codes; FSQ needs no splitting.
    rows, _ = depth
    vq, fsq = rows["UViM vq"]["usage"], rows["UViM fsq"]["usage"]
    assert vq < 0.01 and fsq > 10 * vq, rows


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="at the demo budget (100 steps) FSQ's oracle uses 8.7% of its 4375 codes "
    "(19% / 39% after 400 / 1600 steps, docs/uvim.md), not the paper's ~100%",
)
def test_fsq_usage_at_least_90_percent(depth):
    rows, _ = depth
    assert rows["UViM fsq"]["usage"] >= 0.90, rows


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="at 100 + 100 steps every full model trails the direct regression on depth "
    "(FSQ 0.912 vs 0.775 m RMSE, +0.137 ± 0.003 paired, docs/uvim.md)",
)
def test_the_token_language_pays_on_depth(depth):
    _, pairs = depth
    c = pairs[("UViM fsq", "direct (no tokens)")]
    assert c["a - b"] < -2 * c["se"], c
