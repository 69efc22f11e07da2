"""The COCO-panoptic-format loader on a tiny data set written by the tests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fsqkit.data.coco_panoptic import load_coco_panoptic, resize_center_crop_labels

H, W = 8, 12
CAR, PERSON, GRASS, VOID = 0, 1, 2, -1  # contiguous ids: categories sorted by COCO id
GRASS_ID, PERSON_ID, CAR_ID, CROWD_ID = 1 + 256 * 2, 5 + 256**2 * 3, 7, 8


def first_ids() -> np.ndarray:
    """Segment ids of image ``a``: grass, a person, a car, a crowd, one unlabelled pixel."""
    ids = np.full((H, W), GRASS_ID)
    ids[0:4, 0:6] = PERSON_ID
    ids[4:8, 6:12] = CAR_ID
    ids[0:2, 8:12] = CROWD_ID
    ids[7, 0] = 0
    return ids


def second_ids() -> np.ndarray:
    ids = np.full((H, W), GRASS_ID)
    ids[2:6, 1:3] = 10
    ids[2:6, 8:10] = 11
    return ids


def write_png(path: Path, ids: np.ndarray) -> None:
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 256**2], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(path)


def image_pixels(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_dataset(root: Path) -> dict:
    """Two images with labels under ``root``; returns the JSON dict (also written)."""
    (root / "labels").mkdir()
    (root / "images").mkdir()
    data = {
        "categories": [
            {"id": 100, "name": "grass", "isthing": 0},
            {"id": 7, "name": "person", "isthing": 1},
            {"id": 3, "name": "car", "isthing": 1},
        ],
        "images": [
            {"id": 1, "file_name": "a.png", "height": H, "width": W},
            {"id": 2, "file_name": "b.png", "height": H, "width": W},
        ],
        "annotations": [
            {
                "image_id": 1,
                "file_name": "a_label.png",
                "segments_info": [
                    {"id": CAR_ID, "category_id": 3, "iscrowd": 0, "area": 24},
                    {"id": GRASS_ID, "category_id": 100, "iscrowd": 0},
                    {"id": PERSON_ID, "category_id": 7, "iscrowd": 0},
                    {"id": CROWD_ID, "category_id": 7, "iscrowd": 1},
                ],
            },
            {
                "image_id": 2,
                "file_name": "b_label.png",
                "segments_info": [
                    {"id": 11, "category_id": 7},
                    {"id": 10, "category_id": 7},
                    {"id": GRASS_ID, "category_id": 100},
                ],
            },
        ],
    }
    write_png(root / "labels" / "a_label.png", first_ids())
    write_png(root / "labels" / "b_label.png", second_ids())
    Image.fromarray(image_pixels(1)).save(root / "images" / "a.png")
    Image.fromarray(image_pixels(2)).save(root / "images" / "b.png")
    write_json(root, data)
    return data


def write_json(root: Path, data: dict) -> None:
    (root / "panoptic.json").write_text(json.dumps(data))


def load(root: Path, **kwargs):
    return load_coco_panoptic(root / "panoptic.json", root / "labels", root / "images", **kwargs)


def test_loads_images_classes_and_instances(tmp_path: Path) -> None:
    write_dataset(tmp_path)
    ds = load(tmp_path)
    assert len(ds) == 2 and ds.names == ["a_label.png", "b_label.png"]
    assert ds.categories.names == ("car", "person", "grass")
    assert ds.categories.is_thing == (True, True, False)
    assert ds.categories.source_ids == (3, 7, 100)
    assert torch.equal(ds.images[0], torch.from_numpy(image_pixels(1)).permute(2, 0, 1))
    sem = torch.full((H, W), GRASS)
    sem[0:4, 0:6] = PERSON
    sem[4:8, 6:12] = CAR
    sem[0:2, 8:12] = VOID  # crowd
    sem[7, 0] = VOID  # unlabelled
    inst = torch.zeros(H, W, dtype=torch.int64)
    inst[0:4, 0:6] = 2  # things numbered in segments_info order: car 1, person 2
    inst[4:8, 6:12] = 1
    inst[7, 0] = 0
    assert torch.equal(ds.semantic[0], sem) and torch.equal(ds.instance[0], inst)
    crowd = torch.full((H, W), VOID)
    crowd[0:2, 8:12] = PERSON  # the crowd keeps its class apart
    assert ds.crowd is not None and torch.equal(ds.crowd[0], crowd)
    assert ds.instance[1, 3, 2] == 2 and ds.instance[1, 3, 9] == 1  # ids 10, 11 -> 2, 1
    assert set(ds.semantic[1].unique().tolist()) == {PERSON, GRASS}


def test_resize_center_crop_keeps_labels_exact(tmp_path: Path) -> None:
    write_dataset(tmp_path)
    ds = load(tmp_path, image_size=4, max_images=1)
    assert ds.images.shape == (1, 3, 4, 4) and ds.semantic.shape == (1, 4, 4)
    # 8x12 -> 4x6, crop columns 1..4: source rows 1,3,5,7 and columns 3,5,7,9
    assert ds.semantic[0].tolist() == [
        [PERSON, PERSON, GRASS, VOID],
        [PERSON, PERSON, GRASS, GRASS],
        [GRASS, GRASS, CAR, CAR],
        [GRASS, GRASS, CAR, CAR],
    ]
    assert ds.instance[0].tolist() == [[2, 2, 0, 0], [2, 2, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]


def test_resize_labels_helper() -> None:
    labels = torch.arange(12).view(2, 6)
    assert resize_center_crop_labels(labels, 2).tolist() == [[2, 3], [8, 9]]  # crop only
    assert resize_center_crop_labels(labels, 1).tolist() == [
        [9]
    ]  # 1x3, middle column: centre of source pixel 3


def test_images_of_different_sizes_need_image_size(tmp_path: Path) -> None:
    data = write_dataset(tmp_path)
    ids = np.full((10, 10), GRASS_ID)
    ids[0, 0], ids[9, 9] = 10, 11
    write_png(tmp_path / "labels" / "b_label.png", ids)
    Image.fromarray(image_pixels(2, 10, 10)).save(tmp_path / "images" / "b.png")
    data["images"][1].update(height=10, width=10)
    write_json(tmp_path, data)
    with pytest.raises(ValueError, match=r"different sizes.*pass image_size"):
        load(tmp_path)
    assert load(tmp_path, image_size=6).semantic.shape == (2, 6, 6)


def expect_error(root: Path, error: type, pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        load(root)


def test_missing_segment_id_names_the_png(tmp_path: Path) -> None:
    data = write_dataset(tmp_path)
    del data["annotations"][0]["segments_info"][1]  # grass
    write_json(tmp_path, data)
    expect_error(
        tmp_path, ValueError, r"a_label\.png'.*\(1, 2, 0\) is segment id 513.*annotations\[0\]"
    )


def test_segment_absent_from_the_png(tmp_path: Path) -> None:
    data = write_dataset(tmp_path)
    data["annotations"][1]["segments_info"].append({"id": 99, "category_id": 7})
    write_json(tmp_path, data)
    expect_error(
        tmp_path,
        ValueError,
        r"annotations\[1\] \(b_label\.png\): segments \[99\] are in segments_info but not",
    )


def test_unknown_category(tmp_path: Path) -> None:
    data = write_dataset(tmp_path)
    data["annotations"][1]["segments_info"][0]["category_id"] = 42
    write_json(tmp_path, data)
    expect_error(
        tmp_path,
        ValueError,
        r"annotations\[1\] \(b_label\.png\) segments_info\[0\]: unknown category_id 42",
    )


def test_mismatched_image_and_label_sizes(tmp_path: Path) -> None:
    write_dataset(tmp_path)
    Image.fromarray(image_pixels(2, H, W + 1)).save(tmp_path / "images" / "b.png")
    expect_error(tmp_path, ValueError, r"b\.png' is 8x13 but its labels .*b_label\.png' are 8x12")


def test_declared_size_must_match(tmp_path: Path) -> None:
    data = write_dataset(tmp_path)
    data["images"][0]["height"] = 9
    write_json(tmp_path, data)
    expect_error(tmp_path, ValueError, r"a\.png' is 8x12 but .*declares height x width 9x12")


@pytest.mark.parametrize(
    ("remove", "pattern"),
    [
        ("labels/a_label.png", r"panoptic label PNG .*a_label\.png' does not exist"),
        ("images/b.png", r"image .*b\.png' does not exist"),
        ("panoptic.json", r"JSON .*panoptic\.json' does not exist"),
    ],
)
def test_missing_file(tmp_path: Path, remove: str, pattern: str) -> None:
    write_dataset(tmp_path)
    os.remove(tmp_path / remove)
    expect_error(tmp_path, FileNotFoundError, pattern)


def test_missing_keys(tmp_path: Path) -> None:
    data = write_dataset(tmp_path)
    del data["annotations"][1]["segments_info"]
    write_json(tmp_path, data)
    expect_error(tmp_path, ValueError, r"annotations\[1\]: missing key 'segments_info'")
    data["annotations"][1]["segments_info"] = [{"id": "10", "category_id": 7}]
    write_json(tmp_path, data)
    expect_error(tmp_path, ValueError, r"segments_info\[0\]: 'id' must be an integer, got '10'")
    del data["categories"]
    write_json(tmp_path, data)
    expect_error(tmp_path, ValueError, r"panoptic\.json: missing key 'categories'")
    (tmp_path / "panoptic.json").write_text("{not json")
    expect_error(tmp_path, ValueError, "is not valid JSON")
    with pytest.raises(ValueError, match="max_images must be a positive integer"):
        load(tmp_path, max_images=0)
    with pytest.raises(ValueError, match="image_size must be a positive integer"):
        load(tmp_path, image_size=0)


def test_corrupt_png(tmp_path: Path) -> None:
    write_dataset(tmp_path)
    (tmp_path / "labels" / "b_label.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    expect_error(tmp_path, ValueError, r"cannot read panoptic label PNG .*b_label\.png'")
