"""Mixed precision through the shared trainer: bf16 and fp16 (with its gradient
scaler) runs learn, FSQ indices do not depend on autocast, fp16's scaler state
is checkpointed and resumes exactly."""

from __future__ import annotations

import contextlib

import pytest
import torch

from fsqkit.data import build_dataset
from fsqkit.tokenizer import Tokenizer, TokenizerConfig
from fsqkit.tokenizer.train import evaluate_tokenizer
from fsqkit.training import TrainerConfig, load_checkpoint
from fsqkit.training.precision import autocast, grad_scaler, use_fused

from .train_helpers import TINY_MODEL, tiny_fit, tiny_task, train_records


def _val():
    return build_dataset("embedded", "val", image_size=16, seed=0, num_images=16)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_training_loss_falls(tmp_path, precision):
    out = str(tmp_path / precision)
    start = evaluate_tokenizer(tiny_task(str(tmp_path / "init"), 1).model, _val(), 16)["mse"]
    task, _, metrics = tiny_fit(out, 40, batch_size=16, precision=precision, train={"lr": 1e-2})
    losses = [r["recon"] for r in train_records(out)]
    assert len(losses) == 40 and all(torch.isfinite(torch.tensor(losses)))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    assert metrics["mse"] < 0.7 * start, (start, metrics["mse"])  # held-out error too
    # Weights stay float32 (autocast is not a cast); bf16/fp16 put the convs in NHWC.
    w = task.model.encoder.conv_in.weight
    assert w.dtype == torch.float32
    assert w.is_contiguous(memory_format=torch.channels_last)
    assert task.opt.param_groups[0]["fused"] is True
    if precision == "fp16":
        assert "loss_scale" in train_records(out)[0]


def test_fp32_default_has_no_autocast_scaler_or_fusion(tmp_path):
    task, tr, _ = tiny_fit(str(tmp_path / "fp32"), 2)
    assert tr.scaler is None and "loss_scale" not in train_records(str(tmp_path / "fp32"))[0]
    assert not task.opt.param_groups[0].get("fused")
    assert isinstance(autocast("fp32", torch.device("cpu")), contextlib.nullcontext)
    assert grad_scaler("bf16", torch.device("cpu")) is None


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_fsq_indices_under_autocast_equal_fp32(precision):
    """The tokenizer's FSQ bottleneck under the trainer's autocast gives the same
    indices as fp32 for the same latents (rounding runs in float32 inside)."""
    torch.manual_seed(0)
    model = Tokenizer(TokenizerConfig(**TINY_MODEL))
    z = torch.randn(8, model.cfg.latent_channels, 8, 8) * 3
    ref = model.quantizer(z)
    with autocast(precision, torch.device("cpu")):
        low = model.quantizer(z)
        # Latents that come out of a low-precision conv: same indices as the fp32
        # quantizer on the same (low-precision) values.
        z_low = model.encoder(torch.rand(8, 3, 16, 16) * 2 - 1)
        from_low = model.quantizer(z_low)
    assert torch.equal(low.indices, ref.indices)
    assert z_low.dtype != torch.float32
    assert torch.equal(from_low.indices, model.quantizer(z_low.float()).indices)


def test_fp16_scaler_state_is_saved_and_resume_is_exact(tmp_path):
    straight = str(tmp_path / "straight")
    tiny_fit(straight, 6, precision="fp16")
    split = str(tmp_path / "split")
    tiny_fit(split, 6, precision="fp16", stop_after=3)
    state = load_checkpoint(split).state["extra"]["grad_scaler"]
    assert state["scale"] > 0
    tiny_fit(split, 6, precision="fp16", resume=True)
    a, b = load_checkpoint(straight), load_checkpoint(split)
    for k, v in a.weights["tokenizer"].items():
        assert torch.equal(v, b.weights["tokenizer"][k]), k
    assert a.state["extra"]["grad_scaler"] == b.state["extra"]["grad_scaler"]
    assert a.config["trainer"]["precision"] == "fp16"


def test_resume_with_other_precision_warns(tmp_path, capsys):
    out = str(tmp_path / "run")
    tiny_fit(out, 4, stop_after=2)
    tiny_fit(out, 4, resume=True, precision="bf16")
    assert "resumes with other settings (precision fp32 -> bf16)" in capsys.readouterr().err


def test_use_fused_refuses_unsupported_optimizers():
    p = torch.nn.Parameter(torch.zeros(3))
    assert not use_fused(torch.optim.SGD([p], lr=0.1))
    adam = torch.optim.Adam([p])
    assert use_fused(adam) and adam.param_groups[0]["fused"]


def test_bad_precision_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16"):
        TrainerConfig(out_dir=str(tmp_path), steps=1, precision="fp8")
