"""The CLIs in-process (train-tokenizer, encode, decode, demo) on tiny settings."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from fsqkit.cli import main
from fsqkit.experiments import demo as demo_mod
from fsqkit.tokenizer import Tokenizer
from tests.single_thread import one_thread  # noqa: F401

TINY_ARGS = [
    "--image-size", "16", "--base-channels", "8", "--channel-mult", "1,2",
    "--train-images", "64", "--val-images", "16", "--batch-size", "4", "--no-progress",
]  # fmt: skip


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train-tokenizer", "--steps", "3", "--out", str(out), *TINY_ARGS]) == 0
    return out


def test_train_tokenizer_cli_writes_run(trained_run, capsys):
    files = set(os.listdir(trained_run))
    assert {"checkpoints", "metrics.jsonl", "recon.png"} <= files
    tok = Tokenizer.load(str(trained_run))
    assert tok.cfg.image_size == 16 and tok.codebook_size == 1000
    # --resume on a finished run is a no-op that still reports.
    assert (
        main(["train-tokenizer", "--steps", "3", "--resume", "--out", str(trained_run), *TINY_ARGS])
        == 0
    )
    assert "val: PSNR" in capsys.readouterr().out


def test_encode_decode_cli_roundtrip(trained_run, tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(imgs / f"{i}.png")
    tokens = tmp_path / "t.npy"
    assert main(["encode", str(imgs), "--checkpoint", str(trained_run), "--out", str(tokens)]) == 0
    arr = np.load(tokens)
    assert arr.shape == (3, 8, 8) and arr.min() >= 0 and arr.max() < 1000
    assert json.loads((tmp_path / "t.npy.json").read_text())["inputs"][0].endswith("0.png")
    out = tmp_path / "dec"
    assert main(["decode", str(tokens), "--checkpoint", str(trained_run), "--out", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["000000.png", "000001.png", "000002.png"]
    # Decoding by CLI equals decoding in Python.
    tok = Tokenizer.load(str(trained_run))
    ref = tok.decode(torch.from_numpy(arr.astype(np.int64))[:1])[0]
    got = torch.from_numpy(np.array(Image.open(out / "000000.png"))).permute(2, 0, 1).float() / 255
    assert (got - ref).abs().max() <= 1 / 255 + 1e-6


def test_cli_errors_are_clean(trained_run, tmp_path, capsys):
    assert (
        main(
            [
                "train-tokenizer",
                "--data",
                f"folder:{tmp_path / 'missing'}",
                "--out",
                str(tmp_path / "r"),
                *TINY_ARGS,
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "error:" in err and "missing" in err and "Traceback" not in err
    assert (
        main(
            [
                "encode",
                str(tmp_path / "nope.png"),
                "--checkpoint",
                str(trained_run),
                "--out",
                str(tmp_path / "t.npy"),
            ]
        )
        == 2
    )
    assert "nope.png" in capsys.readouterr().err
    assert (
        main(
            [
                "decode",
                str(tmp_path / "t.npy"),
                "--checkpoint",
                str(tmp_path),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    np.save(tmp_path / "f.npy", np.zeros((1, 8, 8), dtype=np.float32))
    assert (
        main(
            [
                "decode",
                str(tmp_path / "f.npy"),
                "--checkpoint",
                str(trained_run),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "integer" in capsys.readouterr().err


def test_demo_quick_writes_report(tmp_path, monkeypatch, capsys):
    tiny = {
        "steps": 2,
        "train_images": 64,
        "val_images": 16,
        "usage_images": 48,
        "base_channels": 8,
        "channel_mult": (1, 2, 4),
        "batch_size": 4,
    }
    monkeypatch.setitem(demo_mod.PRESETS, "quick", tiny)
    # Stage II has its own tests (tests/test_maskgit*); here only stage I's report.
    monkeypatch.setattr(demo_mod, "run_stage2", lambda *a, **k: None)
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    for label in (
        "baseline (no learning)",
        "FSQ [8, 5, 5, 5]",
        "VQ 1024 codes",
        "PSNR dB",
        "usage",
    ):
        assert label in printed
    files = set(os.listdir(out))
    assert {
        "report.md",
        "report.json",
        "reconstructions.png",
        "training_curves.png",
        "runs",
    } <= files
    rep = json.loads((out / "report.json").read_text())
    table = next(t for title, t in rep["tables"].items() if title.startswith("Stage I:"))
    methods = [r["method"] for r in table["rows"]]
    assert methods == ["baseline (no learning)", "FSQ [8, 5, 5, 5]", "VQ 1024 codes"]
    params = {r["method"]: r["quantizer params"] for r in table["rows"]}
    assert params["FSQ [8, 5, 5, 5]"] == 0 and params["VQ 1024 codes"] == 1024 * 32
    m = rep["data"]["stage1"]["metrics"]
    assert set(m) == {"baseline", "fsq", "vq"} and all(0 <= v["usage"] <= 1 for v in m.values())
    # Usage is counted on usage_images crops (a superset of the evaluation crops),
    # and that is the number the table shows.
    usage = {r["method"]: r["usage"] for r in table["rows"]}
    assert (
        usage["FSQ [8, 5, 5, 5]"] == m["fsq"]["usage"]
        and usage["VQ 1024 codes"] == m["vq"]["usage"]
    )
    assert usage["baseline (no learning)"] == m["baseline"]["usage"]
    for v in m.values():
        assert v["usage_crops"] == 48 and v["usage"] >= v["usage_eval_crops"]
    # The trained tokenizers are loadable for a stage II.
    assert Tokenizer.load(rep["data"]["stage1"]["runs"]["fsq"]).cfg.quantizer == "fsq"


@pytest.mark.parametrize("content", [b"", b"\x93NUMPY\x01\x00v\x00{'descr'"])
def test_decode_of_an_empty_or_truncated_token_file_is_one_line(
    trained_run, tmp_path, capsys, content
):
    bad = tmp_path / "bad.npy"
    bad.write_bytes(content)
    out = str(tmp_path / "o")
    assert main(["decode", str(bad), "--checkpoint", str(trained_run), "--out", out]) == 2
    err = capsys.readouterr().err
    assert "cannot read" in err and "bad.npy" in err and "Traceback" not in err
