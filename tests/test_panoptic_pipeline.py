"""Loader -> UViM target -> decoding -> PQ on the tiny COCO-format data set: the
path a panoptic oracle's reconstructions take."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fsqkit.data.panoptic import PanopticDataset
from fsqkit.metrics.panoptic import PanopticResult, panoptic_quality
from fsqkit.uvim.tasks.panoptic_target import decode_panoptic, encode_panoptic
from tests.test_coco_panoptic import GRASS, load, write_dataset


def round_trip(root: Path, max_instances: int) -> tuple[PanopticDataset, PanopticResult]:
    """The tiny data set and the PQ of its encoded-then-decoded targets."""
    write_dataset(root)
    ds = load(root)
    target = encode_panoptic(ds.semantic, ds.instance, ds.categories, max_instances=max_instances)
    sem, inst = decode_panoptic(target, ds.categories)
    return ds, panoptic_quality(sem, inst, ds.semantic, ds.instance, ds.categories, ds.crowd)


def test_encoded_targets_decode_to_pq_one(tmp_path: Path) -> None:
    _, r = round_trip(tmp_path, max_instances=4)
    assert (r.all.pq, r.things.pq, r.stuff.pq) == (1.0, 1.0, 1.0)
    # 2 images: grass twice; person once in a, twice in b; car once
    assert [(c.name, c.tp) for c in r.per_class] == [("car", 1), ("person", 3), ("grass", 2)]


def test_capped_instances_and_all_background_score_lower(tmp_path: Path) -> None:
    ds, r = round_trip(tmp_path, max_instances=1)
    # image a keeps the person (24 px) over the car (24 px): equal areas, the person
    # starts first; image b keeps the first of its two equal persons. Dropped
    # instances are void in the prediction: 2 FN, no FP.
    person, car = r.per_class[1], r.per_class[0]
    assert (person.tp, person.fn, car.tp, car.fn) == (2, 1, 0, 1)
    assert r.things.pq == pytest.approx((2 / 2.5 + 0.0) / 2)
    background = torch.full_like(ds.semantic, GRASS)
    trivial = panoptic_quality(background, background, ds.semantic, ds.instance, ds.categories)
    assert trivial.things.pq == 0.0 and trivial.all.pq < r.all.pq
