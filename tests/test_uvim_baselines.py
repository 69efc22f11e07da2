"""Trivial baselines come from training data only, and compute what they say:
per-pixel and scalar mean depth, the grayscale copy and the per-pixel mean
colour, all-ground and the per-pixel majority class, checked on hand-built
data sets."""

from __future__ import annotations

import pytest
import torch

from fsqkit.data.dense import DenseDataset, build_dense_dataset
from fsqkit.uvim import get_task
from fsqkit.uvim.baselines import fit_baselines, training_means
from fsqkit.uvim.evaluate import baseline_predictor, evaluate_dense
from fsqkit.uvim.tasks import grayscale
from fsqkit.uvim.tasks.panoptic_target import decode_panoptic


def images(n: int, size: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


def test_depth_baselines_by_hand():
    depth = torch.tensor([2.0, 4.0, 9.0]).view(3, 1, 1, 1).repeat(1, 1, 2, 2)
    depth[0, 0, 0, 0] = 0.0  # unknown: left out of that pixel's mean
    depth[:, 0, 1, 1] = 0.0  # never known: the scalar mean there
    train = DenseDataset(images(3, 2), depth, name="hand/train")
    task = get_task("depth")
    means = training_means(task, train)
    scalar = (4 + 9 + 2 * (2 + 4 + 9)) / 8  # over the 8 known pixels
    assert means.target_mean.item() == pytest.approx(scalar)
    expected = torch.tensor([[(4 + 9) / 2, 5.0], [5.0, scalar]])
    torch.testing.assert_close(means.target_map[0], expected)
    base = task.baselines(means)
    x = torch.rand(5, 3, 2, 2)
    torch.testing.assert_close(base["per-pixel mean depth"](x), expected.expand(5, 1, 2, 2))
    assert torch.all(base["scalar mean depth"](x) == means.target_mean)


def test_baselines_see_training_data_only():
    """Fitted on the training split (a held-out split is refused); predictions are
    a function of the input alone, so changing the held-out targets changes the
    scores, never the predictions."""
    task = get_task("depth")
    train = build_dense_dataset("scenes", "train", image_size=16, num=64)
    for split in ("val", "test"):
        with pytest.raises(ValueError, match="training data only"):
            fit_baselines(task, build_dense_dataset("scenes", split, image_size=16, num=4))
    test = build_dense_dataset("scenes", "test", image_size=16, num=32)
    base = fit_baselines(task, train)
    # the same means whatever the held-out data are
    again = fit_baselines(task, build_dense_dataset("scenes", "train", image_size=16, num=64))
    x = test.batch(slice(None)).image
    assert torch.equal(base["per-pixel mean depth"](x), again["per-pixel mean depth"](x))
    shifted = DenseDataset(test.images, test.depth * 1.5, name="scenes/test")
    a = evaluate_dense(task, baseline_predictor(base["per-pixel mean depth"]), test)
    b = evaluate_dense(task, baseline_predictor(base["per-pixel mean depth"]), shifted)
    assert a["rmse"] != b["rmse"]
    # the per-pixel map is much stronger than the scalar on held-out scenes
    scalar = evaluate_dense(task, baseline_predictor(base["scalar mean depth"]), test)
    assert a["rmse"] < 0.6 * scalar["rmse"]
    # it is the training set's, not the test set's: fitting on the test scenes
    # (as a training set) gives another map
    cheat = training_means(task, DenseDataset(test.images, test.depth, name="scenes/train"))
    assert not torch.allclose(cheat.target_map, training_means(task, train).target_map)


def test_colorize_baselines_by_hand():
    task = get_task("colorize")
    train = DenseDataset(images(6, seed=1), name="hand/train")
    rgb = train.images.float() / 255
    offset = (rgb - grayscale(rgb)).mean(0)  # (3, H, W) mean colour offset from gray
    base = fit_baselines(task, train)
    x = grayscale(images(2, seed=2).float() / 255)
    torch.testing.assert_close(base["grayscale copy"](x), x)
    torch.testing.assert_close(
        base["per-pixel mean colour"](x), (x + offset).clamp(0, 1), rtol=0, atol=1e-6
    )
    # a chroma: the luma of the prediction is the input's (where nothing clamps)
    out = base["per-pixel mean colour"](x)
    inside = ((x + offset) > 0).all(1) & ((x + offset) < 1).all(1)
    torch.testing.assert_close(grayscale(out)[:, 0][inside], x[:, 0][inside], atol=1e-5, rtol=0)


def test_panoptic_baselines_by_hand():
    task = get_task("panoptic")  # scenes classes: wall 0, ground 1, sphere 2, box 3, cylinder 4
    sem = torch.tensor(
        [[[0, 0], [1, 2]], [[0, 1], [1, 2]], [[0, 1], [3, 4]]], dtype=torch.int64
    )  # per pixel: wall x3 | ground x2, wall | ground x2, box | sphere x2, cylinder
    inst = torch.where(sem >= 2, torch.ones_like(sem), torch.zeros_like(sem))
    train = DenseDataset(images(3, 2), None, sem, inst, name="hand/train")
    base = fit_baselines(task, train)
    x = torch.rand(4, 3, 2, 2)
    majority = base["per-pixel majority class"](x)
    assert majority.shape == (4, 2, 2, 2)
    assert torch.equal(majority[:, 0], torch.tensor([[0, 1], [1, 2]]).expand(4, 2, 2))
    # a canonical target: the majority sphere pixel is one instance, the stuff none
    assert torch.equal(majority[:, 1], torch.tensor([[0, 0], [0, 1]]).expand(4, 2, 2))
    assert torch.equal(torch.stack(decode_panoptic(majority, task.categories), 1), majority)
    ground = base["all ground"](x)
    assert torch.all(ground[:, 0] == 1) and torch.all(ground[:, 1] == 0)
