"""Shared trainer infrastructure: atomic checkpoints, exact resume, sampling, logs."""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

from fsqkit.tokenizer import TokenizerConfig, TokenizerTrainConfig, train_tokenizer
from fsqkit.training import (
    MetricsLogger,
    StepSampler,
    TrainerConfig,
    load_checkpoint,
    read_metrics,
    resolve_checkpoint,
    save_checkpoint,
)
from fsqkit.training import checkpoint as ckpt_mod
from tests.single_thread import one_thread  # noqa: F401

TINY_MODEL = dict(image_size=16, base_channels=8, channel_mult=(1, 2), norm_groups=4)


def tiny_train_cfg(**kw) -> TokenizerTrainConfig:
    base = dict(num_train_images=64, num_val_images=16, batch_size=4, warmup_steps=2, grid_images=2)
    return TokenizerTrainConfig(**{**base, **kw})


def test_step_sampler_is_a_pure_function_of_seed_and_step():
    s = StepSampler(100, 8, seed=1)
    assert torch.equal(s.indices(5), StepSampler(100, 8, seed=1).indices(5))
    assert not torch.equal(s.indices(5), s.indices(6))
    assert len(set(s.indices(5).tolist())) == 8
    # Ranks take disjoint slices of one global batch.
    r0, r1 = StepSampler(100, 8, 1, 0, 2).indices(3), StepSampler(100, 8, 1, 1, 2).indices(3)
    assert not set(r0.tolist()) & set(r1.tolist())
    assert torch.equal(torch.cat([r0, r1]), StepSampler(100, 8, 1, 0, 2).global_indices(3))
    with pytest.raises(ValueError, match="rank"):
        StepSampler(10, 2, 0, rank=2, world_size=2)


def test_checkpoint_roundtrip(tmp_path):
    m = nn.Linear(3, 2)
    opt = torch.optim.Adam(m.parameters())
    m(torch.randn(4, 3)).sum().backward()
    opt.step()
    path = save_checkpoint(str(tmp_path), 7, {"net": m}, {"hello": [1, 2]}, optimizers={"net": opt})
    assert os.path.basename(path) == "step-000007"
    ck = load_checkpoint(str(tmp_path))
    assert ck.step == 7 and ck.config == {"hello": [1, 2]}
    assert torch.equal(ck.weights["net"]["weight"], m.weight.detach())
    assert ck.state["optimizers"]["net"]["state"][0]["step"] == 1
    # Only the weights: no state file read.
    assert load_checkpoint(path, weights_only=True).state == {}


def test_checkpoint_write_is_atomic_under_a_crash(tmp_path, monkeypatch):
    m = nn.Linear(3, 2)
    save_checkpoint(str(tmp_path), 1, {"net": m}, {})
    good = m.weight.detach().clone()
    with torch.no_grad():
        m.weight.add_(1.0)

    # Crash in the middle of the write (after the weights file, before the state file).
    def crash(*a, **k):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(ckpt_mod.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(str(tmp_path), 2, {"net": m}, {})
    monkeypatch.undo()
    ck = load_checkpoint(str(tmp_path))
    assert ck.step == 1 and torch.equal(ck.weights["net"]["weight"], good)

    # Crash after the directory is in place but before `latest` moves.
    monkeypatch.setattr(ckpt_mod, "atomic_write_text", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(str(tmp_path), 3, {"net": m}, {})
    monkeypatch.undo()
    assert load_checkpoint(str(tmp_path)).step == 1

    # A torn leftover from a killed process is ignored, then cleaned by the next save.
    os.makedirs(tmp_path / "checkpoints" / ".tmp-step-000009-x")
    save_checkpoint(str(tmp_path), 4, {"net": m}, {}, keep=1)
    assert load_checkpoint(str(tmp_path)).step == 4
    left = sorted(os.listdir(tmp_path / "checkpoints"))
    assert left == ["latest", "step-000004"]


def test_resolve_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_checkpoint(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="no checkpoint found"):
        resolve_checkpoint(str(tmp_path))


def test_metrics_logger_truncates_after_resume_step(tmp_path):
    log = MetricsLogger(str(tmp_path / "m.jsonl"))
    for s in range(1, 6):
        log.log({"step": s, "loss": 1.0 / s})
    with open(tmp_path / "m.jsonl", "a") as f:
        f.write('{"step": 6, "lo')  # torn line of a killed run
    log.truncate_after(3)
    assert [r["step"] for r in read_metrics(str(tmp_path / "m.jsonl"))] == [1, 2, 3]


def _final_weights(run_dir: str) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir).weights["tokenizer"]


def test_resume_is_bit_exact(tmp_path):
    """Interrupted at step 3 and resumed to 6 == 6 steps at once (CPU, same seed)."""
    model_cfg = TokenizerConfig(**TINY_MODEL)
    train_cfg = tiny_train_cfg(disc_weight=0.1, disc_start=2)  # exercises the GAN state too

    full = str(tmp_path / "full")
    train_tokenizer(model_cfg, train_cfg, TrainerConfig(full, steps=6, progress=False, log_every=1))
    part = str(tmp_path / "part")
    cfg = TrainerConfig(part, steps=6, progress=False, log_every=1, stop_after=3)
    train_tokenizer(model_cfg, train_cfg, cfg)
    assert load_checkpoint(part).step == 3
    cfg = TrainerConfig(part, steps=6, progress=False, log_every=1, resume=True)
    train_tokenizer(model_cfg, train_cfg, cfg)

    a, b = load_checkpoint(full), load_checkpoint(part)
    assert a.step == b.step == 6
    for module in ("tokenizer", "discriminator"):
        for k, v in a.weights[module].items():
            assert torch.equal(v, b.weights[module][k]), f"{module}.{k} differs after resume"
    # The metrics file reads as one run.
    steps = [
        r["step"]
        for r in read_metrics(os.path.join(part, "metrics.jsonl"))
        if r["split"] == "train"
    ]
    assert steps == [1, 2, 3, 4, 5, 6]
    la = [
        r["loss"]
        for r in read_metrics(os.path.join(full, "metrics.jsonl"))
        if r["split"] == "train"
    ]
    lb = [
        r["loss"]
        for r in read_metrics(os.path.join(part, "metrics.jsonl"))
        if r["split"] == "train"
    ]
    assert la == lb


def test_resume_refuses_a_different_config(tmp_path):
    run = str(tmp_path / "run")
    model_cfg = TokenizerConfig(**TINY_MODEL)
    train_tokenizer(model_cfg, tiny_train_cfg(), TrainerConfig(run, steps=1, progress=False))
    with pytest.raises(ValueError, match="config differs"):
        train_tokenizer(
            model_cfg,
            tiny_train_cfg(lr=5e-4),
            TrainerConfig(run, steps=2, progress=False, resume=True),
        )


def test_checkpoint_config_is_json(tmp_path):
    run = str(tmp_path / "run")
    train_tokenizer(
        TokenizerConfig(**TINY_MODEL), tiny_train_cfg(), TrainerConfig(run, steps=1, progress=False)
    )
    with open(os.path.join(resolve_checkpoint(run), "config.json")) as f:
        meta = json.load(f)
    assert meta["config"]["tokenizer"]["quantizer"] == "fsq"
    assert meta["config"]["train"]["batch_size"] == 4


def test_resume_with_other_total_steps_warns_once(tmp_path, capsys):
    """The schedule depends on the total step count: resuming a run with another
    --steps works (extending a run is legitimate) but says what changes."""
    run = str(tmp_path / "run")
    model_cfg = TokenizerConfig(**TINY_MODEL)
    train_tokenizer(model_cfg, tiny_train_cfg(), TrainerConfig(run, steps=2, progress=False))
    capsys.readouterr()
    train_tokenizer(
        model_cfg, tiny_train_cfg(), TrainerConfig(run, steps=3, progress=False, resume=True)
    )
    err = capsys.readouterr().err
    assert err.count("warning:") == 1
    assert "started with 2 steps and resumes with 3" in err and "from step 2 on" in err
    train_tokenizer(
        model_cfg, tiny_train_cfg(), TrainerConfig(run, steps=3, progress=False, resume=True)
    )
    assert "warning" not in capsys.readouterr().err
