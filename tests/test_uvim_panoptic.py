"""UViM panoptic segmentation end to end on tiny settings: scenes (oracle, full
model, direct baseline vs the all-background prediction), the task's pieces,
the CLI (train, predict, eval) and the ``coco-panoptic:`` data spec on a tiny
COCO-format data set the test writes from rendered scenes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from fsqkit.cli import main
from fsqkit.data.scenes import render_split
from fsqkit.training import load_checkpoint
from fsqkit.uvim import OracleConfig, build_dense_dataset, get_task, load_uvim_model
from fsqkit.uvim.baselines import fit_baselines
from fsqkit.uvim.evaluate import baseline_predictor, evaluate_dense
from fsqkit.uvim.tasks import dense_task_options
from fsqkit.uvim.tasks.panoptic import PanopticTask, scene_categories
from fsqkit.uvim.train import load_data
from tests.single_thread import one_thread  # noqa: F401
from tests.test_uvim import LAYOUT, S2, tiny_cfg, trainer


@pytest.fixture(scope="module")
def panoptic_runs(tmp_path_factory):
    from fsqkit.uvim import train_direct, train_oracle, train_stage2

    root = tmp_path_factory.mktemp("panoptic")
    cfg = tiny_cfg("scenes", 32)
    ocfg = OracleConfig(task="panoptic", quantizer_kwargs={"levels": [5, 5, 5]}, **LAYOUT)
    oracle = train_oracle(ocfg, cfg, trainer(root / "oracle", 60))
    full = train_stage2(str(root / "oracle"), cfg, trainer(root / "full", 60), **S2)
    direct = train_direct(OracleConfig(task="panoptic", **LAYOUT), cfg, trainer(root / "d", 60))
    train, val = load_data(cfg, "panoptic", LAYOUT["image_size"])
    t = get_task("panoptic")
    trivial = evaluate_dense(t, baseline_predictor(fit_baselines(t, train)["all ground"]), val)
    return root, oracle, full, direct, trivial


def test_panoptic_end_to_end(panoptic_runs):
    _, oracle, full, direct, trivial = panoptic_runs
    # Everything beats painting every pixel "ground" (the trivial prediction).
    assert 0 <= trivial["pq"] < 0.15 and trivial["pq_things"] == 0
    assert full.metrics["pq"] > trivial["pq"] + 0.15, (full.metrics, trivial)
    assert direct.metrics["pq"] > trivial["pq"] + 0.15
    assert oracle.metrics["pq"] >= full.metrics["pq"] - 0.05
    assert oracle.metrics["pixel_acc"] > trivial["pixel_acc"]
    assert 0 < oracle.metrics["train_usage"] <= 1 and 0 < full.metrics["usage"] <= 1
    assert os.path.isfile(os.path.join(full.out_dir, "pred.png"))


def test_task_pieces():
    task = get_task("panoptic")
    assert isinstance(task, PanopticTask) and task.categories == scene_categories()
    assert [task.categories.names[k] for k, t in enumerate(task.categories.is_thing) if t] == [
        "sphere",
        "box",
        "cylinder",
    ]
    assert task.target_channels == 5 + task.max_instances + 1
    batch = build_dense_dataset("scenes", "val", image_size=16, num=8).batch(slice(0, 8))
    target = task.target(batch)
    assert target.shape == (8, 2, 16, 16) and target.dtype == torch.int64
    # The target decodes to itself and scores PQ 1; its one-hot is the oracle's input.
    assert task.set_metrics(target, target)["pq"] == 1.0
    onehot = task.encode(target, batch.image)
    assert onehot.shape == (8, task.target_channels, 16, 16)
    assert torch.equal(task.decode(onehot * 10.0, batch.image), target)
    assert task.loss(onehot * 10.0, target, task.valid(batch), batch.image) < 1e-3
    assert task.to_rgb(target).shape == (8, 3, 16, 16)
    # Options: another class table (saved in the config) and max_instances.
    other = task.with_options({"max_instances": 2})
    assert other.max_instances == 2 and other.categories == task.categories
    with pytest.raises(ValueError, match="unknown panoptic task options"):
        task.with_options({"levels": 3})
    with pytest.raises(ValueError, match="takes no options"):
        get_task("depth", {"max_instances": 2})
    cfg = OracleConfig(task="panoptic", task_options={"max_instances": 2}, **LAYOUT)
    assert OracleConfig.from_dict(cfg.to_dict()).task_options == {"max_instances": 2}


def write_coco_scenes(root, n: int = 12, size: int = 16) -> str:
    """Rendered scenes written in COCO panoptic format; returns the data spec."""
    r = render_split("train", n, size, seed=5)
    cats = [{"id": 10 + k, "name": name, "isthing": int(thing)}
            for k, (name, thing) in enumerate(zip(*(scene_categories().names,
                                                     scene_categories().is_thing)))]  # fmt: skip
    (root / "labels").mkdir()
    (root / "images").mkdir()
    images, annotations = [], []
    for i in range(n):
        sem, inst = r.semantic[i].numpy(), r.instance[i].numpy()
        ids = 1 + sem * 16 + inst  # one segment id per (class, instance)
        rgb = np.stack([ids % 256, ids // 256, np.zeros_like(ids)], -1).astype(np.uint8)
        Image.fromarray(rgb).save(root / "labels" / f"{i}.png")
        pixels = (r.image[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"{i}.png")
        segs = [{"id": int(s), "category_id": 10 + (int(s) - 1) // 16} for s in np.unique(ids)]
        images.append({"id": i, "file_name": f"{i}.png"})
        annotations.append({"image_id": i, "file_name": f"{i}.png", "segments_info": segs})
    (root / "pan.json").write_text(
        json.dumps({"categories": cats, "images": images, "annotations": annotations})
    )
    return f"coco-panoptic:{root / 'pan.json'},{root / 'labels'},{root / 'images'}"


def test_coco_panoptic_spec(tmp_path):
    spec = write_coco_scenes(tmp_path)
    train = build_dense_dataset(spec, "train", image_size=16)
    val = build_dense_dataset(spec, "val", image_size=16)
    assert len(train) + len(val) == 12 and train.categories is not None
    assert train.categories.names == scene_categories().names
    assert train.categories.source_ids == (10, 11, 12, 13, 14)
    # Same maps (up to instance numbering) as the renderer's: the canonical target agrees.
    task = get_task("panoptic", dense_task_options(spec))
    r = render_split("train", 12, 16, seed=5)
    both = torch.cat([train.semantic, val.semantic])
    assert sorted(both.sum((1, 2)).tolist()) == sorted(r.semantic.sum((1, 2)).tolist())
    assert task.set_metrics(task.target(val.batch(slice(None))), task.target(val.batch(
        slice(None))))["pq"] == 1.0  # fmt: skip
    with pytest.raises(ValueError, match="three comma-separated paths"):
        build_dense_dataset("coco-panoptic:a.json,labels", "train")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dense_task_options("coco-panoptic:nope.json,l,i")
    # The scenes task's class table differs from the COCO JSON's (source ids): an error.
    with pytest.raises(ValueError, match="set the task options from the data"):
        load_data(tiny_cfg(spec), "panoptic", 16)


def test_cli_panoptic(tmp_path, capsys):
    (tmp_path / "coco").mkdir()
    spec = write_coco_scenes(tmp_path / "coco")
    tiny = ["--image-size", "16", "--base-channels", "8", "--channel-mult", "1,2",
            "--batch-size", "4", "--steps", "3", "--no-progress"]  # fmt: skip
    o, u, d = tmp_path / "o", tmp_path / "u", tmp_path / "d"
    scenes = ["--num-train", "32", "--num-val", "8"]
    assert main(["uvim", "train-oracle", "--task", "panoptic", "--levels", "5,5,5",
                 "--out", str(o), *scenes, *tiny]) == 0  # fmt: skip
    assert main(["uvim", "train", "--oracle", str(o), "--dim", "16", "--depth", "1",
                 "--heads", "2", "--out", str(u), *scenes, *tiny[6:]]) == 0  # fmt: skip
    assert "full model val: " in capsys.readouterr().out
    out = tmp_path / "pred"
    imgs = str(tmp_path / "coco" / "images")  # 12 rendered scenes as PNG files
    assert main(["uvim", "predict", "--model", str(u), "--images", imgs, "--out", str(out)]) == 0
    assert len(os.listdir(out)) == 24 and {"0_panoptic.npy", "0_panoptic.png"} <= set(
        os.listdir(out)
    )
    maps = np.load(out / "0_panoptic.npy")
    assert maps.shape == (16, 16, 2) and maps.dtype == np.int32
    assert maps[..., 0].min() >= 0 and maps[..., 0].max() < 5
    assert np.asarray(Image.open(out / "0_panoptic.png")).shape == (16, 16, 3)
    capsys.readouterr()
    assert main(["uvim", "eval", "--model", str(u)]) == 0
    assert '"pq"' in capsys.readouterr().out
    # A scenes model on COCO-format data with another class table: a clear error.
    assert main(["uvim", "eval", "--model", str(u), "--data", spec]) == 2
    assert "set the task options from the data" in capsys.readouterr().err
    # COCO-format data: the classes come from the JSON into the saved config.
    assert main(["uvim", "train-direct", "--task", "panoptic", "--data", spec,
                 "--max-instances", "3", "--out", str(d), *tiny]) == 0  # fmt: skip
    saved = load_checkpoint(str(d), weights_only=True).config["direct"]["task_options"]
    assert saved["max_instances"] == 3 and saved["categories"]["source_ids"] == [10, 11, 12, 13, 14]
    model = load_uvim_model(str(d))
    assert model.task.max_instances == 3 and model.task.categories.source_ids[0] == 10
    capsys.readouterr()
    assert main(["uvim", "eval", "--model", str(d)]) == 0
    assert '"pq"' in capsys.readouterr().out
    # Oracle + stage II on COCO-format data: stage II reads the data and the class
    # table from the oracle's run (K = 16 by default for such data).
    co, cu = tmp_path / "co", tmp_path / "cu"
    assert main(["uvim", "train-oracle", "--task", "panoptic", "--data", spec, "--levels",
                 "5,5,5", "--out", str(co), *tiny]) == 0  # fmt: skip
    assert main(["uvim", "train", "--oracle", str(co), "--dim", "16", "--depth", "1",
                 "--heads", "2", "--out", str(cu), *tiny[6:]]) == 0  # fmt: skip
    full = load_uvim_model(str(cu))
    assert full.task.max_instances == 16 and full.task.categories.source_ids[-1] == 14
    assert full.predict(torch.rand(2, 3, 16, 16)).shape == (2, 2, 16, 16)
