"""At the demo budget (minutes), on 2048 held-out test scenes with bootstrap
standard errors: UViM panoptic segmentation (the paper's COCO PQ: VQ 43.4, FSQ
43.2). Every full model beats both trivial baselines and finds some objects
(things PQ > 0, which no baseline has). Not yet at this budget (strict xfail,
so a fix shows up as XPASS): FSQ's PQ within the noise of the best VQ's."""

from __future__ import annotations

import pytest

from tests.test_uvim_slow import run_demo_task


@pytest.fixture(scope="module")
def panoptic(tmp_path_factory):
    return run_demo_task(tmp_path_factory.mktemp("uvim_panoptic_slow"), "panoptic")


@pytest.mark.slow
def test_every_model_beats_the_baselines_and_finds_objects(panoptic):
    rows, _ = panoptic
    assert {(r["data"], r["images"]) for r in rows.values()} == {("scenes/test", 2048)}
    best = max((m for m in rows if m.startswith("trivial")), key=lambda m: rows[m]["pq"])
    assert best == "trivial: per-pixel majority class" and rows[best]["pq_things"] == 0
    b = rows[best]
    for name in ("direct (no tokens)", "UViM fsq", "UViM vq", "UViM vq_split"):
        r = rows[name]
        assert r["pq"] - 2 * r["pq_se"] > b["pq"] + 2 * b["pq_se"], (name, r)
        assert r["pq_things"] > 0, (name, r)  # VQ with splitting: barely (0.001)
        if name != "UViM vq_split":
            assert r["pq_things"] > 2 * r["pq_things_se"], (name, r)
        # stuff (wall, ground) is nearly solved; things are where the gap is
        assert r["pq_stuff"] > 0.85 and r["pq_things"] < r["pq_stuff"] - 0.5, (name, r)


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="at 100 + 100 steps FSQ's full-model PQ trails plain VQ's by 0.016 ± 0.002 "
    "(paired, 2048 test scenes; docs/uvim.md)",
)
def test_fsq_matches_the_best_vq_on_panoptic(panoptic):
    rows, pairs = panoptic
    best = max(("UViM vq", "UViM vq_split"), key=lambda m: rows[m]["pq"])
    c = pairs[("UViM fsq", best)]
    assert c["a - b"] > -2 * c["se"], c
