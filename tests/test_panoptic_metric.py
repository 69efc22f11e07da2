"""Panoptic quality against hand-computed cases and a transcription of the COCO
panoptic evaluation loop (panopticapi ``pq_compute_single_core``)."""

from __future__ import annotations

import math
from collections import defaultdict

import pytest
import torch

from fsqkit.data.panoptic import PanopticCategories
from fsqkit.metrics.panoptic import PanopticQuality, panoptic_quality, result_from_counts

GROUND, SKY, BALL, BOX = 0, 1, 2, 3
VOID = -1
CATS = PanopticCategories(("ground", "sky", "ball", "box"), (False, False, True, True))


def scene(size: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """All-ground semantic map and a zero instance map, ``[size, size]``."""
    return torch.full((size, size), GROUND), torch.zeros(size, size, dtype=torch.int64)


def put(sem: torch.Tensor, inst: torch.Tensor, rows: slice, cols: slice, cls: int, ident: int = 0):
    sem[rows, cols] = cls
    inst[rows, cols] = ident


def per_class(result, name: str):
    return next(c for c in result.per_class if c.name == name)


def test_perfect_prediction_is_one() -> None:
    sem, inst = scene()
    put(sem, inst, slice(0, 2), slice(0, 6), SKY)
    put(sem, inst, slice(3, 5), slice(0, 2), BALL, 1)
    put(sem, inst, slice(3, 5), slice(3, 5), BALL, 2)
    put(sem, inst, slice(5, 6), slice(5, 6), BOX, 7)
    r = panoptic_quality(sem, inst, sem, inst, CATS)
    for s in (r.all, r.things, r.stuff):
        assert (s.pq, s.sq, s.rq) == (1.0, 1.0, 1.0)
    assert (r.all.n, r.things.n, r.stuff.n) == (4, 2, 2)
    assert per_class(r, "ball").tp == 2


def test_one_missed_instance() -> None:
    gs, gi = scene()
    put(gs, gi, slice(0, 2), slice(0, 2), BALL, 1)
    put(gs, gi, slice(2, 4), slice(2, 4), BALL, 2)
    ps, pi = gs.clone(), gi.clone()
    put(ps, pi, slice(2, 4), slice(2, 4), GROUND)  # ball 2 predicted as ground
    r = panoptic_quality(ps, pi, gs, gi, CATS)
    ball, ground = per_class(r, "ball"), per_class(r, "ground")
    assert (ball.tp, ball.fp, ball.fn) == (1, 0, 1)
    assert ball.pq == pytest.approx(1 / 1.5) and ball.sq == 1.0
    assert ball.rq == pytest.approx(2 / 3)
    # ground: 28 ground-truth pixels inside 32 predicted ones
    assert ground.pq == pytest.approx(28 / 32) and ground.rq == 1.0
    assert r.things.pq == pytest.approx(2 / 3)
    assert r.stuff.pq == pytest.approx(0.875)
    assert r.all.pq == pytest.approx((2 / 3 + 0.875) / 2)
    assert r.all.n == 2  # sky and box: no ground truth, no prediction -> skipped


def test_one_false_positive() -> None:
    gs, gi = scene()
    put(gs, gi, slice(0, 2), slice(0, 2), BALL, 1)
    ps, pi = gs.clone(), gi.clone()
    put(ps, pi, slice(4, 6), slice(4, 6), BALL, 9)
    r = panoptic_quality(ps, pi, gs, gi, CATS)
    ball = per_class(r, "ball")
    assert (ball.tp, ball.fp, ball.fn) == (1, 1, 0)
    assert ball.pq == pytest.approx(2 / 3) and ball.sq == 1.0
    assert per_class(r, "ground").pq == pytest.approx(28 / 32)


def test_even_split_matches_nothing() -> None:
    gs, gi = scene()
    put(gs, gi, slice(0, 2), slice(0, 4), BALL, 1)  # 8 pixels
    ps, pi = gs.clone(), gi.clone()
    put(ps, pi, slice(0, 2), slice(2, 4), BALL, 2)  # two halves: IoU 0.5 each, not > 0.5
    r = panoptic_quality(ps, pi, gs, gi, CATS)
    ball = per_class(r, "ball")
    assert (ball.tp, ball.fp, ball.fn) == (0, 2, 1)
    assert (ball.pq, ball.sq, ball.rq) == (0.0, 0.0, 0.0)


def test_uneven_split_keeps_the_larger_part() -> None:
    gs, gi = scene()
    put(gs, gi, slice(0, 2), slice(0, 4), BALL, 1)
    ps, pi = gs.clone(), gi.clone()
    put(ps, pi, slice(0, 2), slice(3, 4), BALL, 2)  # 6 + 2 pixels
    r = panoptic_quality(ps, pi, gs, gi, CATS)
    ball = per_class(r, "ball")
    assert (ball.tp, ball.fp, ball.fn) == (1, 1, 0)
    assert ball.sq == pytest.approx(0.75)
    assert ball.pq == pytest.approx(0.75 / 1.5)


def test_void_pixels_leave_the_union() -> None:
    gs, gi = scene()
    gs[0] = VOID  # row 0: 6 void pixels
    put(gs, gi, slice(2, 4), slice(2, 4), BALL, 1)  # 4 pixels
    ps, pi = scene()
    put(ps, pi, slice(0, 4), slice(2, 4), BALL, 1)  # 8 pixels, 2 on void
    r = panoptic_quality(ps, pi, gs, gi, CATS)
    ball, ground = per_class(r, "ball"), per_class(r, "ground")
    # union = 4 + 8 - 4 (intersection) - 2 (on void) = 6; without the rule 4/8 = 0.5, no match
    assert (ball.tp, ball.fp, ball.fn) == (1, 0, 0)
    assert ball.pq == pytest.approx(4 / 6)
    # ground: gt 26, pred 28 (4 on void), intersection 24 -> 24 / (26 + 28 - 24 - 4)
    assert ground.pq == pytest.approx(24 / 26)


def test_prediction_mostly_on_void_is_no_false_positive() -> None:
    gs, gi = scene()
    gs[0] = VOID
    ps, pi = scene()
    put(ps, pi, slice(0, 1), slice(0, 2), BOX, 1)  # 2 pixels, all on void
    put(ps, pi, slice(0, 2), slice(4, 5), BOX, 2)  # 2 pixels, 1 on void: exactly half -> FP
    r = panoptic_quality(ps, pi, gs, gi, CATS)
    box = per_class(r, "box")
    assert (box.tp, box.fp, box.fn) == (0, 1, 0)


def test_void_in_prediction_belongs_to_no_segment() -> None:
    gs, gi = scene()
    put(gs, gi, slice(0, 2), slice(0, 2), BALL, 1)
    ps, pi = gs.clone(), gi.clone()
    ps[0, 0] = VOID
    r = panoptic_quality(ps, pi, gs, gi, CATS)
    assert per_class(r, "ball").pq == pytest.approx(3 / 4)
    assert per_class(r, "ground").pq == 1.0


def test_stuff_is_one_segment_per_class_per_image() -> None:
    gs, gi = scene()
    put(gs, gi, slice(0, 2), slice(0, 6), SKY)
    ps, pi = gs.clone(), gi.clone()
    pi[:, :3] = 5  # instance ids on stuff pixels mean nothing
    pi[:, 3:] = 7
    metric = PanopticQuality(CATS)
    metric.update(ps, pi, gs, gi)
    # second image: the sky is predicted as ground -> sky FN, ground IoU 24/36
    metric.update(torch.full((6, 6), GROUND), torch.zeros(6, 6, dtype=torch.int64), gs, gi)
    r = metric.compute()
    sky, ground = per_class(r, "sky"), per_class(r, "ground")
    assert (sky.tp, sky.fp, sky.fn) == (1, 0, 1) and sky.pq == pytest.approx(1 / 1.5)
    assert (ground.tp, ground.fp, ground.fn) == (2, 0, 0)
    assert ground.pq == pytest.approx((1 + 24 / 36) / 2)


def test_things_and_stuff_averages() -> None:
    gs, gi = scene()
    put(gs, gi, slice(0, 1), slice(0, 6), SKY)
    put(gs, gi, slice(2, 4), slice(0, 2), BALL, 1)
    put(gs, gi, slice(2, 4), slice(4, 6), BOX, 1)
    ps, pi = gs.clone(), gi.clone()
    put(ps, pi, slice(2, 4), slice(4, 6), GROUND)  # box missed
    r = panoptic_quality(ps, pi, gs, gi, CATS)
    ground = 22 / 26  # gt 22 ground pixels, predicted 26
    assert r.things.pq == pytest.approx((1.0 + 0.0) / 2) and r.things.n == 2
    assert r.stuff.pq == pytest.approx((ground + 1.0) / 2) and r.stuff.n == 2
    assert r.all.pq == pytest.approx((1.0 + 0.0 + ground + 1.0) / 4)
    assert r.all.sq == pytest.approx((1.0 + 0.0 + ground + 1.0) / 4)  # box SQ = 0 (no TP)
    assert r.all.rq == pytest.approx((1.0 + 0.0 + 1.0 + 1.0) / 4)
    # PQ (0.5 + (22/26 + 1) / 2) / 2 = 0.7115..., SQ the same, RQ 0.75
    assert r.summary() == "PQ 71.2 SQ 71.2 RQ 75.0 | things PQ 50.0 (2) | stuff PQ 92.3 (2)"


def random_maps(seed: int, n: int, wrong_rows: int) -> tuple[torch.Tensor, ...]:
    """``n`` random 8x8 ground-truth maps (void included) and predictions equal to
    them except for random classes in the first ``wrong_rows`` rows."""
    g = torch.Generator().manual_seed(seed)
    gs, gi = (
        torch.randint(-1, 4, (n, 8, 8), generator=g),
        torch.randint(0, 3, (n, 8, 8), generator=g),
    )
    ps, pi = gs.clone(), gi.clone()
    ps[:, :wrong_rows] = torch.randint(-1, 4, (n, wrong_rows, 8), generator=g)
    return ps, pi, gs, gi


def test_batches_equal_image_by_image_reset_and_merge() -> None:
    ps, pi, gs, gi = random_maps(1, 3, 3)
    one = PanopticQuality(CATS)
    for i in range(3):
        one.update(ps[i], pi[i], gs[i], gi[i])
    batched = PanopticQuality(CATS)
    batched.update(torch.zeros(8, 8, dtype=torch.int64), gi[0], gs[0], gi[0])
    batched.reset()
    batched.update(ps, pi, gs, gi)
    assert one.compute() == batched.compute()
    halves = PanopticQuality(CATS)
    halves.update(ps[:1], pi[:1], gs[:1], gi[:1])
    rest = PanopticQuality(CATS)
    rest.update(ps[1:], pi[1:], gs[1:], gi[1:])
    halves.merge(rest)
    for name in ("tp", "fp", "fn"):
        assert torch.equal(getattr(halves, name), getattr(batched, name))
    torch.testing.assert_close(halves.iou_sum, batched.iou_sum)  # summed in another order
    with pytest.raises(ValueError, match="same categories"):
        halves.merge(PanopticQuality(PanopticCategories.from_things(4, [3])))


@pytest.mark.parametrize("seed", range(3))
def test_relabelled_instances_score_the_same(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    gs, gi = (
        torch.randint(-1, 4, (2, 6, 6), generator=g),
        torch.randint(0, 3, (2, 6, 6), generator=g),
    )
    assert panoptic_quality(gs, gi, gs, gi, CATS).all.pq == 1.0
    ps = gs.clone()
    ps[:, :2] = torch.randint(-1, 4, (2, 2, 6), generator=g)
    relabel = torch.tensor([17, 4, 9])  # a permutation of instance ids to new values
    base = panoptic_quality(ps, gi, gs, gi, CATS)
    for other in (
        panoptic_quality(ps, relabel[gi], gs, gi, CATS),
        panoptic_quality(ps, gi, gs, relabel[gi], CATS),
    ):
        for a, b in zip(other.per_class, base.per_class):
            assert (a.tp, a.fp, a.fn) == (b.tp, b.fp, b.fn)
            assert a.pq == pytest.approx(b.pq, nan_ok=True)


def test_empty_data_gives_nan() -> None:
    void = torch.full((3, 3), VOID)
    r = panoptic_quality(void, void, void, void, CATS)
    assert r.all.n == 0 and math.isnan(r.all.pq)
    assert all(math.isnan(c.pq) for c in r.per_class)


def _panopticapi_reference(ps, pi, gs, gi, crowd, cats: PanopticCategories) -> dict:
    """Per class [iou, tp, fp, fn]: panopticapi's ``pq_compute_single_core`` on one
    image. Segments are keyed by (class, instance); void is its VOID id; each
    class's crowd pixels are one crowd segment ("crowd", class)."""

    def key(s: int, i: int, c: int):
        if c != VOID:
            return ("crowd", c)
        return None if s == VOID else (s, i if cats.is_thing[s] else 0)

    flat = [t.flatten().tolist() for t in (gs, gi, ps, pi, crowd)]
    gt_area: dict = defaultdict(int)
    pred_area: dict = defaultdict(int)
    pairs: dict = defaultdict(int)
    for a, b, c, d, e in zip(*flat):
        g_key, p_key = key(a, b, e), key(c, d, VOID)
        if g_key is not None:
            gt_area[g_key] += 1
        if p_key is not None:
            pred_area[p_key] += 1
        pairs[(g_key, p_key)] += 1
    stats = defaultdict(lambda: [0.0, 0, 0, 0])
    gt_matched, pred_matched = set(), set()
    for (g_key, p_key), inter in pairs.items():
        if g_key is None or p_key is None or g_key[0] == "crowd" or g_key[0] != p_key[0]:
            continue
        union = pred_area[p_key] + gt_area[g_key] - inter - pairs.get((None, p_key), 0)
        iou = inter / union
        if iou > 0.5:
            stats[g_key[0]][1] += 1
            stats[g_key[0]][0] += iou
            gt_matched.add(g_key)
            pred_matched.add(p_key)
    for g_key in gt_area:
        if g_key[0] != "crowd" and g_key not in gt_matched:
            stats[g_key[0]][3] += 1
    for p_key, area in pred_area.items():
        if p_key in pred_matched:
            continue
        ignored = pairs.get((None, p_key), 0) + pairs.get((("crowd", p_key[0]), p_key), 0)
        if ignored / area <= 0.5:
            stats[p_key[0]][2] += 1
    return stats


@pytest.mark.parametrize("seed", range(6))
def test_matches_the_coco_evaluation_loop(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    gs = torch.randint(0, 4, (4, 4), generator=g).repeat_interleave(3, 0).repeat_interleave(3, 1)
    gi = torch.randint(0, 2, (4, 4), generator=g).repeat_interleave(3, 0).repeat_interleave(3, 1)
    gs[torch.rand(12, 12, generator=g) < 0.1] = VOID
    crowd = torch.full_like(gs, VOID)
    if seed % 2:  # crowd regions: 3x3 blocks of a random class, void in gs
        blocks = torch.rand(4, 4, generator=g) < 0.2
        blocks = blocks.repeat_interleave(3, 0).repeat_interleave(3, 1)
        crowd[blocks] = torch.randint(0, 4, (int(blocks.sum()),), generator=g)
        gs[blocks] = VOID
    ps, pi = gs.clone(), gi.clone()
    ps[ps == VOID] = torch.randint(0, 4, (int((ps == VOID).sum()),), generator=g)
    noise = torch.rand(12, 12, generator=g) < 0.3
    ps[noise] = torch.randint(-1, 4, (int(noise.sum()),), generator=g)
    pi[noise] = torch.randint(0, 3, (int(noise.sum()),), generator=g)
    metric = PanopticQuality(CATS)
    metric.update(ps, pi, gs, gi, crowd)
    ref = _panopticapi_reference(ps, pi, gs, gi, crowd, CATS)
    for k in range(CATS.num_classes):
        iou, tp, fp, fn = ref[k]
        assert (int(metric.tp[k]), int(metric.fp[k]), int(metric.fn[k])) == (tp, fp, fn)
        assert float(metric.iou_sum[k]) == pytest.approx(iou)


def test_crowd_regions_as_in_coco() -> None:
    gs, gi = scene()
    crowd = torch.full_like(gs, VOID)
    crowd[0:2, 0:4] = BALL  # a crowd of balls, 8 pixels
    gs[0:2, 0:4] = VOID
    ps, pi = scene()
    put(ps, pi, slice(0, 3), slice(0, 2), BALL, 1)  # 6 px, 4 on the ball crowd: no FP
    put(ps, pi, slice(0, 2), slice(2, 4), BOX, 1)  # 4 px on the ball crowd
    ps[1, 3] = GROUND  # box: 3 px on the ball crowd (another class) + ...
    put(ps, pi, slice(2, 3), slice(3, 4), BOX, 1)  # ... 1 on ground: an FP in COCO
    r = panoptic_quality(ps, pi, gs, gi, CATS, gt_crowd=crowd)
    assert [(c.tp, c.fp, c.fn) for c in r.per_class[2:]] == [(0, 0, 0), (0, 1, 0)]
    # ground: gt 28, pred 26 (1 on the crowd: stays in the union), intersection 25
    assert per_class(r, "ground").pq == pytest.approx(25 / 29)
    # crowd as plain void: the box is mostly void (no FP), ground's union loses 1 pixel
    r = panoptic_quality(ps, pi, gs, gi, CATS)
    assert per_class(r, "box").fp == 0
    assert per_class(r, "ground").pq == pytest.approx(25 / 28)
    with pytest.raises(ValueError, match="crowd map marks pixels that are not void"):
        panoptic_quality(ps, pi, torch.zeros_like(gs), gi, CATS, gt_crowd=crowd)
    with pytest.raises(ValueError, match=r"crowd map must have the shape of gt_sem \(6, 6\)"):
        panoptic_quality(ps, pi, gs, gi, CATS, gt_crowd=crowd[:3])
    with pytest.raises(ValueError, match="crowd map has label 7 out of range"):
        panoptic_quality(ps, pi, gs, gi, CATS, gt_crowd=torch.full_like(gs, 7))


def test_bad_input_is_named() -> None:
    m = PanopticQuality(CATS)
    a = torch.zeros(4, 4, dtype=torch.int64)
    with pytest.raises(ValueError, match="differ in shape"):
        m.update(a, a, torch.zeros(4, 5, dtype=torch.int64), torch.zeros(4, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="prediction semantic and instance maps differ"):
        m.update(a, a[:3], a, a)
    with pytest.raises(ValueError, match="ground-truth semantic map has label 4 out of range"):
        m.update(a, a, torch.full((4, 4), 4), a)
    with pytest.raises(ValueError, match="label -2 out of range"):
        m.update(torch.full((4, 4), -2), a, a, a)
    with pytest.raises(ValueError, match="integer tensor"):
        m.update(a.float(), a, a, a)
    with pytest.raises(ValueError, match=r"\[H, W\] or \[B, H, W\]"):
        m.update(a[0], a[0], a[0], a[0])
    with pytest.raises(TypeError, match="PanopticCategories"):
        PanopticQuality(4)  # type: ignore[arg-type]


def test_categories_are_checked() -> None:
    with pytest.raises(ValueError, match="void_label 1 is a class id"):
        PanopticCategories(("a", "b"), (False, True), void_label=1)
    with pytest.raises(ValueError, match="2 names but 1 is_thing"):
        PanopticCategories(("a", "b"), (False,))
    cats = PanopticCategories.from_things(3, [2])
    assert cats.is_thing == (False, False, True) and cats.names == ("0", "1", "2")


def test_image_counts_sum_to_the_accumulated_counts() -> None:
    """Per-image counts (what a bootstrap resamples) add up to the set's result."""
    ps, pi, gs, gi = random_maps(2, 5, 4)
    metric = PanopticQuality(CATS)
    counts = metric.image_counts(ps, pi, gs, gi)
    assert counts.shape == (5, 4, 4) and counts.dtype == torch.float64
    assert int(metric.tp.sum()) == 0  # nothing accumulated
    metric.update(ps, pi, gs, gi)
    torch.testing.assert_close(counts.sum(0), metric.counts())
    assert result_from_counts(counts.sum(0), CATS) == metric.compute()
    # a resample with repeats is the set with those images repeated
    twice = PanopticQuality(CATS)
    for i in (0, 0, 3):
        twice.update(ps[i], pi[i], gs[i], gi[i])
    assert result_from_counts(counts[[0, 0, 3]].sum(0), CATS) == twice.compute()
    with pytest.raises(ValueError, match=r"\[4, 4\]"):
        result_from_counts(counts, CATS)


def test_task_reports_things_and_stuff_by_hand() -> None:
    """The panoptic task's set metrics on hand-built maps: every stuff pixel right,
    one thing found exactly, one missed, one hallucinated."""
    from fsqkit.uvim.tasks.panoptic import PanopticTask

    task = PanopticTask(CATS, max_instances=4, background=GROUND)
    gs, gi = scene()
    put(gs, gi, slice(0, 2), slice(0, 6), SKY)
    put(gs, gi, slice(3, 5), slice(0, 2), BALL, 1)  # found
    put(gs, gi, slice(3, 5), slice(3, 5), BOX, 2)  # missed: predicted as ground
    ps, pi = gs.clone(), gi.clone()
    put(ps, pi, slice(3, 5), slice(3, 5), GROUND)
    put(ps, pi, slice(5, 6), slice(5, 6), BALL, 3)  # hallucinated 1-pixel ball on ground
    target = torch.stack([gs, gi])[None]
    pred = torch.stack([ps, pi])[None]
    m = task.set_metrics(pred, target)
    ball_pq = 1.0 / (1 + 0.5)  # TP (IoU 1) and one FP
    # ground: 16 true pixels; predicted 19 (those, the box's 4, less the fake ball's 1)
    ground_iou = 15 / (16 + 19 - 15)
    assert m["pq_things"] == pytest.approx((ball_pq + 0.0) / 2)  # box: one FN, PQ 0
    assert m["sq_things"] == pytest.approx((1.0 + 0.0) / 2)
    assert m["rq_things"] == pytest.approx((1 / 1.5 + 0.0) / 2)
    assert m["pq_stuff"] == pytest.approx((ground_iou + 1.0) / 2)
    assert m["sq_stuff"] == pytest.approx((ground_iou + 1.0) / 2) and m["rq_stuff"] == 1.0
    assert m["pq"] == pytest.approx((ball_pq + 0.0 + ground_iou + 1.0) / 4)
    # the per-image statistics give the same numbers for the set and for resamples
    stats = task.set_statistics(torch.cat([pred, target]), torch.cat([target, target]))
    assert task.set_metrics_from(stats[:1]) == m
    assert task.set_metrics_from(stats[1:])["pq_things"] == 1.0  # the perfect copy
    assert task.set_metrics_from(stats[[0, 0]]) == m  # a repeat changes no ratio
