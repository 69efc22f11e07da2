"""UViM end to end on tiny settings: depth on the scene renderer and
colorization of the bundled photos; resume; the CLI; decoding invariants."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from fsqkit.cli import main
from fsqkit.training import TrainerConfig, load_checkpoint
from fsqkit.uvim import (
    OracleConfig,
    Stage2Config,
    TokenPredictor,
    UViM,
    UViMTrainConfig,
    get_task,
    load_uvim_model,
    train_direct,
    train_oracle,
    train_stage2,
)
from fsqkit.uvim.baselines import fit_baselines
from fsqkit.uvim.evaluate import baseline_predictor, evaluate_dense
from fsqkit.uvim.train import load_data
from tests.single_thread import one_thread  # noqa: F401

LAYOUT = dict(image_size=16, base_channels=8, channel_mult=(1, 2))  # 8x8 tokens
S2 = dict(dim=32, depth=1, heads=2)


def tiny_cfg(data: str, num_val: int = 32) -> UViMTrainConfig:
    return UViMTrainConfig(
        data=data, num_train=256, num_val=num_val, batch_size=16, lr=2e-3, warmup_steps=5,
        grid_images=4,
    )  # fmt: skip


def trainer(out, steps: int, **kw) -> TrainerConfig:
    return TrainerConfig(out_dir=str(out), steps=steps, progress=False, log_every=5, **kw)


def train_all(root, task: str, data: str, steps: int, num_val: int):
    cfg = tiny_cfg(data, num_val)
    ocfg = OracleConfig(task=task, quantizer_kwargs={"levels": [5, 5, 5]}, **LAYOUT)
    oracle = train_oracle(ocfg, cfg, trainer(root / "oracle", steps))
    full = train_stage2(str(root / "oracle"), cfg, trainer(root / "full", steps), **S2)
    direct = train_direct(OracleConfig(task=task, **LAYOUT), cfg, trainer(root / "direct", steps))
    train, val = load_data(cfg, task, LAYOUT["image_size"])
    t = get_task(task)
    trivial = {
        name: evaluate_dense(t, baseline_predictor(b), val)
        for name, b in fit_baselines(t, train).items()
    }
    return oracle, full, direct, trivial


@pytest.fixture(scope="module")
def depth_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("depth")
    return root, *train_all(root, "depth", "scenes", 40, 32)


@pytest.fixture(scope="module")
def color_runs(tmp_path_factory):
    return train_all(tmp_path_factory.mktemp("color"), "colorize", "embedded", 60, 64)


def test_depth_end_to_end(depth_runs):
    _, oracle, full, direct, baselines = depth_runs
    # The full model beats predicting the mean training depth; the oracle (which
    # sees the true depth) beats the full model. The per-pixel mean depth map is
    # a much stronger baseline than the scalar mean.
    trivial = baselines["scalar mean depth"]
    assert baselines["per-pixel mean depth"]["rmse"] < 0.5 * trivial["rmse"]
    assert full.metrics["rmse"] < 0.6 * trivial["rmse"]
    assert full.metrics["delta1"] > trivial["delta1"] + 0.3
    assert oracle.metrics["rmse"] < full.metrics["rmse"]
    assert direct.metrics["rmse"] < 0.6 * trivial["rmse"]
    assert 0 < oracle.metrics["train_usage"] <= 1 and 0 < full.metrics["usage"] <= 1
    assert isinstance(full.model, UViM)
    assert os.path.isfile(os.path.join(full.out_dir, "pred.png"))


def test_colorize_end_to_end(color_runs):
    oracle, full, _direct, baselines = color_runs
    # Fréchet distance to the real colour crops: the colorizer beats the grayscale
    # copy; the oracle beats the full model on PSNR to the true colours.
    trivial = baselines["grayscale copy"]
    assert full.metrics["fd"] < trivial["fd"]
    assert trivial["colorfulness"] == 0 < full.metrics["colorfulness"]
    assert baselines["per-pixel mean colour"]["colorfulness"] > 0
    assert oracle.metrics["psnr"] > full.metrics["psnr"]


def test_load_predict_matches_training_model(depth_runs, tmp_path):
    _, _, full, _, _ = depth_runs
    model = UViM.load(full.out_dir)
    images = torch.rand(3, 3, 16, 16)
    a, b = model.predict(images), full.model.predict(images)
    assert torch.equal(a, b) and a.shape == (3, 1, 16, 16)
    assert a.min() > 0 and a.max() <= get_task("depth").max_depth
    with pytest.raises(ValueError, match="shape"):
        model.predict(torch.rand(2, 3, 20, 20))
    with pytest.raises(ValueError, match="not a full UViM"):
        UViM.load(os.path.join(os.path.dirname(full.out_dir), "oracle"))


@pytest.mark.parametrize("stage", ["oracle", "stage2"])
def test_resume_is_exact(depth_runs, tmp_path, stage):
    root = depth_runs[0]
    cfg = tiny_cfg("scenes")
    ocfg = OracleConfig(task="depth", quantizer_kwargs={"levels": [5, 5, 5]}, **LAYOUT)
    if not (root / "base").exists():
        train_oracle(ocfg, cfg, trainer(root / "base", 4))

    def run(out, **kw):
        if stage == "oracle":
            return train_oracle(ocfg, cfg, trainer(out, 8, **kw))
        return train_stage2(str(root / "base"), cfg, trainer(out, 8, **kw), **S2)

    straight = run(tmp_path / "a")
    run(tmp_path / "b", stop_after=3)
    resumed = run(tmp_path / "b", resume=True)
    sa, sb = straight.model.state_dict(), resumed.model.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_stage2_decoders():
    for decoder in ("masked", "autoregressive"):
        torch.manual_seed(0)
        cfg = Stage2Config(codebook_size=11, grid=(4, 4), decoder=decoder, image_size=16,
                           base_channels=8, channel_mult=(1, 2, 2), dim=16, depth=1, heads=2)  # fmt: skip
        model = TokenPredictor(cfg).eval()
        images = torch.rand(2, 3, 16, 16)
        t1 = model.predict_tokens(images, temperature=1.0, seed=3)
        assert torch.equal(t1, model.predict_tokens(images, temperature=1.0, seed=3))
        assert t1.shape == (2, 4, 4) and int(t1.min()) >= 0 and int(t1.max()) < 11
        loss, stats = model(images, t1)
        loss.backward()
        assert torch.isfinite(loss) and 0 <= stats["token_acc"] <= 1
        assert all(p.grad is not None for p in model.parameters())
    # Causality of the autoregressive decoder: a later token never changes an
    # earlier position's logits.
    feats = model.image_features(images)
    ids = torch.randint(0, 11, (2, 16))
    changed = ids.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 11
    a, b = model.logits(feats, ids), model.logits(feats, changed)
    assert torch.allclose(a[:, :10], b[:, :10], atol=1e-6)
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_cli_train_predict_eval(tmp_path, capsys):
    tiny = ["--image-size", "16", "--base-channels", "8", "--channel-mult", "1,2",
            "--num-train", "32", "--num-val", "8", "--batch-size", "4", "--steps", "3",
            "--no-progress"]  # fmt: skip
    o, u, d = tmp_path / "o", tmp_path / "u", tmp_path / "d"
    assert (
        main(
            ["uvim", "train-oracle", "--task", "depth", "--levels", "5,5,5", "--out", str(o), *tiny]
        )
        == 0
    )
    s2 = [
        "--num-train",
        "32",
        "--num-val",
        "8",
        "--batch-size",
        "4",
        "--steps",
        "3",
        "--no-progress",
    ]
    assert (
        main(
            [
                "uvim",
                "train",
                "--oracle",
                str(o),
                "--dim",
                "16",
                "--depth",
                "1",
                "--heads",
                "2",
                "--out",
                str(u),
                *s2,
            ]
        )
        == 0
    )
    assert main(["uvim", "train-direct", "--task", "depth", "--out", str(d), *tiny]) == 0
    assert "full model val: " in capsys.readouterr().out
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(
        imgs / "a.png"
    )
    out = tmp_path / "pred"
    assert (
        main(["uvim", "predict", "--model", str(u), "--images", str(imgs), "--out", str(out)]) == 0
    )
    assert sorted(os.listdir(out)) == ["a_depth.npy", "a_depth.png"]
    depth = np.load(out / "a_depth.npy")
    png = np.asarray(Image.open(out / "a_depth.png"))
    assert depth.shape == (16, 16) and png.dtype == np.uint16
    assert np.abs(png / 1000.0 - depth).max() <= 0.0005 + 1e-6
    # The same prediction in Python.
    from fsqkit.data.io import load_image

    ref = UViM.load(str(u)).predict(load_image(str(imgs / "a.png"), 16)[None])
    assert np.allclose(ref[0, 0].numpy(), depth)
    capsys.readouterr()
    assert main(["uvim", "eval", "--model", str(u)]) == 0
    text = capsys.readouterr().out
    assert '"rmse"' in text and '"usage"' in text
    # The held-out test split of the scenes, with bootstrap standard errors.
    import json

    test_args = ["uvim", "eval", "--split", "test", "--num", "12", "--bootstrap", "50"]
    assert main([*test_args, "--model", str(u)]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["images"] == 12 and m["rmse_se"] > 0 and m["delta1_se"] >= 0 and "usage" in m
    assert main([*test_args, "--model", str(d), "--data", "embedded"]) == 2
    assert "no 'test' split" in capsys.readouterr().err
    # Errors: an oracle cannot predict from images alone; an unknown task.
    assert (
        main(["uvim", "predict", "--model", str(o), "--images", str(imgs), "--out", str(out)]) == 2
    )
    assert "oracle" in capsys.readouterr().err
    assert (
        main(["uvim", "train-oracle", "--task", "nope", "--out", str(tmp_path / "x"), *tiny]) == 2
    )
    assert "unknown task 'nope'" in capsys.readouterr().err
    assert (
        main(
            [
                "uvim",
                "train-oracle",
                "--task",
                "depth",
                "--data",
                "embedded",
                "--out",
                str(tmp_path / "y"),
                *tiny,
            ]
        )
        == 2
    )
    assert "needs depth" in capsys.readouterr().err
    assert load_checkpoint(str(u), weights_only=True).config["stage2"]["codebook_size"] == 125
    assert isinstance(load_uvim_model(str(d)), torch.nn.Module)


def test_uvim_demo_quick(tmp_path):
    out = tmp_path / "demo"
    torch.set_num_threads(2)  # the demo runs with one; the caller's setting must survive
    assert main(["uvim", "demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    assert torch.get_num_threads() == 2
    files = set(os.listdir(out))
    assert {
        "report.md",
        "report.json",
        "predictions_depth.png",
        "predictions_colorize.png",
    } <= files
    import json

    report = json.loads((out / "report.json").read_text())
    assert len(report["tables"]) == 5  # a table per task, paired differences for two
    rows = report["data"]["rows"]
    models = {
        task: [r["model"] for r in rows if r["task"] == task]
        for task in report["data"]["config"]["tasks"]
    }
    quantizers = ["UViM fsq", "UViM vq", "UViM vq_split"]
    assert models == {
        "depth": ["trivial: per-pixel mean depth", "trivial: scalar mean depth",
                  "direct (no tokens)", *quantizers],
        "colorize": ["trivial: grayscale copy", "trivial: per-pixel mean colour",
                     "direct (no tokens)", *quantizers],
        "panoptic": ["trivial: all ground", "trivial: per-pixel majority class",
                     "direct (no tokens)", *quantizers],
    }  # fmt: skip
    # scored on held-out data: the scenes' test split, embedded's val photos
    data = {"depth": "scenes/test", "colorize": "embedded/val", "panoptic": "scenes/test"}
    for r in rows:
        assert r["data"] == data[r["task"]] and r["images"] == {"embedded/val": 8}.get(
            r["data"], 16
        )
        if r["model"].startswith("trivial"):
            assert r["fitted_on"] == data[r["task"]].split("/")[0] + "/train"
        metrics = {"depth": ["rmse", "absrel", "delta1"], "colorize": ["psnr", "colorfulness"],
                   "panoptic": ["pq", "pq_things", "pq_stuff", "sq", "rq", "pixel_acc"]}  # fmt: skip
        for m in metrics[r["task"]]:
            assert isinstance(r[m], float) and r[f"{m}_se"] >= 0, (r, m)
    assert {c["a"] for c in report["data"]["comparisons"]["depth"]} >= {"UViM fsq"}
