"""MaskGIT training through the shared trainer, checkpoints, CLIs and bad input."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from fsqkit.cli import main
from fsqkit.maskgit.tokens import cached_tokens, encode_dataset
from fsqkit.maskgit.train import MaskGITTrainConfig, load_maskgit, load_pipeline, train_maskgit
from fsqkit.tokenizer import Tokenizer, TokenizerConfig
from fsqkit.training import TrainerConfig, read_metrics
from tests.single_thread import one_thread  # noqa: F401  (autouse)

ARCH = {"dim": 16, "depth": 1, "heads": 2}


def _tokenizer(path: str, levels: list[int], image_size: int = 16) -> str:
    # Untrained is enough here: these tests check plumbing, not sample quality.
    torch.manual_seed(0)
    cfg = TokenizerConfig(
        quantizer="fsq",
        quantizer_kwargs={"levels": levels},
        image_size=image_size,
        base_channels=8,
        channel_mult=(1, 2, 2),
        norm_groups=4,
    )
    Tokenizer(cfg).save(path)
    return path


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> str:
    return _tokenizer(str(tmp_path_factory.mktemp("tok") / "tok"), [5, 3])


def _train(tok: str, out: str, steps: int, **trainer_kw):
    cfg = MaskGITTrainConfig(data="digits", tokenizer=tok, batch_size=16, warmup_steps=2)
    return train_maskgit(
        ARCH,
        cfg,
        TrainerConfig(out_dir=out, steps=steps, log_every=1, progress=False, **trainer_kw),
    )


def test_vocabulary_and_grid_come_from_tokenizer(tok_dir, tmp_path) -> None:
    res = _train(tok_dir, str(tmp_path / "mg"), 2)
    c = res.model.config
    assert (c.codebook_size, c.grid, c.num_classes) == (15, (4, 4), 10)  # [5,3]; 16/f=4; digits
    model, config = load_maskgit(str(tmp_path / "mg"))
    assert model.config == c and config["tokenizer"]["codebook_size"] == 15
    assert os.path.isfile(tmp_path / "mg" / "tokens" / "train" / "manifest.json")
    with pytest.raises(ValueError, match="derived from the tokenizer"):
        train_maskgit(
            {"codebook_size": 3},
            MaskGITTrainConfig(tokenizer=tok_dir),
            TrainerConfig(str(tmp_path / "x"), 1),
        )


def test_resume_is_exact(tok_dir, tmp_path) -> None:
    full = _train(tok_dir, str(tmp_path / "full"), 6)
    _train(tok_dir, str(tmp_path / "cut"), 6, stop_after=3)
    cache = tmp_path / "cut" / "tokens" / "train" / "tokens-00000.npy"
    mtime = cache.stat().st_mtime_ns
    resumed = _train(tok_dir, str(tmp_path / "cut"), 6, resume=True)
    assert cache.stat().st_mtime_ns == mtime  # the token cache was reused, not re-encoded
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    steps = [
        r["step"]
        for r in read_metrics(str(tmp_path / "cut" / "metrics.jsonl"))
        if r["split"] == "train"
    ]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_cache_invalidated_by_other_tokenizer(tok_dir, tmp_path) -> None:
    out = str(tmp_path / "mg")
    _train(tok_dir, out, 1)  # writes tokens of the [5, 3] tokenizer
    tok2 = Tokenizer.load(_tokenizer(str(tmp_path / "tok2"), [5, 5], image_size=16))
    cached = cached_tokens(tok2, "digits", "train", out)  # must not reuse the stale cache
    fresh = encode_dataset(tok2, "digits", "train")
    assert torch.equal(cached.tokens, fresh.tokens) and int(fresh.tokens.max()) >= 15
    assert torch.equal(cached_tokens(tok2, "digits", "train", out).tokens, fresh.tokens)


def test_tokenizer_model_mismatch(tok_dir, tmp_path) -> None:
    _train(tok_dir, str(tmp_path / "mg"), 1)
    other = _tokenizer(str(tmp_path / "tok2"), [5, 5])
    with pytest.raises(
        ValueError, match=r"tokenizer/model mismatch.*codebook size 15 on a 4x4 grid.*25 codes"
    ):
        load_pipeline(str(tmp_path / "mg"), other)
    bigger = _tokenizer(str(tmp_path / "tok3"), [5, 3], image_size=32)
    with pytest.raises(ValueError, match=r"mismatch.*4x4 grid.*8x8 grid"):
        load_pipeline(str(tmp_path / "mg"), bigger)
    with pytest.raises(ValueError, match="not a MaskGIT checkpoint"):
        load_maskgit(tok_dir)


def test_cli_train_sample_end_to_end(tok_dir, tmp_path, capsys) -> None:
    out = str(tmp_path / "mg")
    args = [
        "train-maskgit",
        "--tokenizer",
        tok_dir,
        "--data",
        "digits",
        "--steps",
        "2",
        "--out",
        out,
    ]
    args += ["--dim", "16", "--depth", "1", "--heads", "2", "--batch-size", "8", "--no-progress"]
    assert main(args) == 0
    assert "MaskGIT K=15 grid=4x4 10 classes" in capsys.readouterr().out
    png, npy = str(tmp_path / "s.png"), str(tmp_path / "t.npy")
    sample = [
        "sample",
        "--maskgit",
        out,
        "--num",
        "5",
        "--class",
        "3",
        "--steps",
        "4",
        "--guidance",
        "0.2",
    ]
    assert main([*sample, "--out", png, "--save-tokens", npy]) == 0
    tokens = np.load(npy)
    assert tokens.shape == (5, 4, 4) and tokens.min() >= 0 and tokens.max() < 15
    from PIL import Image

    assert Image.open(png).size[0] > 3 * 16  # a 3x2 grid of 16x16 images
    # Same seed, same tokens.
    assert main([*sample, "--out", png, "--save-tokens", str(tmp_path / "u.npy")]) == 0
    assert np.array_equal(tokens, np.load(tmp_path / "u.npy"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--class", "10"], "unknown class 10: this model knows classes 0..9"),
        (["--steps", "0"], "num_steps must be >= 1, got 0"),
        (["--steps", "17"], "<= the number of tokens per image (16)"),
        (["--num", "0"], "--num must be >= 1"),
        (["--save-tokens", "x.txt"], "--save-tokens must end in .npy"),
    ],
)
def test_cli_sample_bad_input(tok_dir, tmp_path_factory, capsys, extra, message) -> None:
    out = tmp_path_factory.getbasetemp() / "mg_bad"
    if not (out / "checkpoints").exists():
        _train(tok_dir, str(out), 1)
    assert main(["sample", "--maskgit", str(out), "--out", str(out / "s.png"), *extra]) == 2
    assert message in capsys.readouterr().err


def test_cli_bad_tokenizer_path(tmp_path, capsys) -> None:
    args = [
        "train-maskgit",
        "--tokenizer",
        str(tmp_path / "none"),
        "--steps",
        "1",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(args) == 2
    assert "does not exist" in capsys.readouterr().err


def test_unconditional_on_labelled_data(tok_dir, tmp_path) -> None:
    cfg = MaskGITTrainConfig(
        data="digits", tokenizer=tok_dir, class_conditional=False, batch_size=8
    )
    res = train_maskgit(ARCH, cfg, TrainerConfig(str(tmp_path / "u"), 1, progress=False))
    assert res.model.config.num_classes == 0
