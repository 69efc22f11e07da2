"""The weights' EMA: its update rule, saved in checkpoints beside the raw
weights, used for evaluation and by the loaders (raw weights on request), and
resumed exactly, also together with gradient accumulation."""

from __future__ import annotations

import pytest
import torch

from fsqkit.tokenizer import Tokenizer
from fsqkit.tokenizer.train import evaluate_tokenizer
from fsqkit.training import WeightEMA, load_checkpoint, module_weights

from .train_helpers import tiny_fit


def test_ema_update_rule_and_swap_are_exact():
    net = torch.nn.Linear(3, 2)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    ema = WeightEMA({"net": net}, 0.9)
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update()
    expected = start["weight"] + 0.1 * 1.0
    torch.testing.assert_close(ema.shadow["net"]["weight"], expected, rtol=0, atol=1e-7)
    raw = net.weight.detach().clone()
    with ema.applied():
        torch.testing.assert_close(net.weight.detach(), expected, rtol=0, atol=1e-7)
    assert torch.equal(net.weight.detach(), raw)  # raw weights back, bit for bit
    with pytest.raises(ValueError, match="decay must be in"):
        WeightEMA({"net": net}, 1.0)


def test_ema_is_saved_used_for_evaluation_and_by_loading(tmp_path):
    out = str(tmp_path / "run")
    task, _, metrics = tiny_fit(out, 6, ema_decay=0.9)
    ck = load_checkpoint(out)
    assert set(ck.weights) == {"tokenizer", "tokenizer@ema"}
    assert ck.config["trainer"]["ema_decay"] == 0.9
    raw, avg = ck.weights["tokenizer"], ck.weights["tokenizer@ema"]
    key = "encoder.conv_in.weight"
    assert not torch.equal(raw[key], avg[key])
    assert module_weights(ck.weights, "tokenizer") is avg
    assert module_weights(ck.weights, "tokenizer", ema=False) is raw
    # Loading picks the EMA by default, the raw weights on request.
    assert torch.equal(Tokenizer.load(out).state_dict()[key], avg[key])
    assert torch.equal(Tokenizer.load(out, ema=False).state_dict()[key], raw[key])
    # After fit() the task's model is the average, and the final evaluation used it.
    assert torch.equal(task.model.state_dict()[key].contiguous(), avg[key])
    again = evaluate_tokenizer(Tokenizer.load(out), task.val_data, 16)
    assert again["mse"] == pytest.approx(metrics["mse"], rel=1e-5)
    assert again["mse"] != pytest.approx(
        evaluate_tokenizer(Tokenizer.load(out, ema=False), task.val_data, 16)["mse"], rel=1e-5
    )


def test_resume_with_ema_and_accumulation_is_exact(tmp_path):
    opts = {"ema_decay": 0.8, "grad_accum": 2}
    straight = str(tmp_path / "straight")
    tiny_fit(straight, 6, **opts)
    split = str(tmp_path / "split")
    tiny_fit(split, 6, stop_after=3, **opts)
    tiny_fit(split, 6, resume=True, **opts)
    a, b = load_checkpoint(straight), load_checkpoint(split)
    assert a.step == b.step == 6
    for module in ("tokenizer", "tokenizer@ema"):
        for k, v in a.weights[module].items():
            assert torch.equal(v, b.weights[module][k]), f"{module}.{k}"


def test_ema_switched_on_at_resume_starts_from_the_current_weights(tmp_path, capsys):
    out = str(tmp_path / "run")
    tiny_fit(out, 4, stop_after=2)
    tiny_fit(out, 4, resume=True, ema_decay=0.5)
    err = capsys.readouterr().err
    assert "no EMA of ['tokenizer']" in err and "step-2 weights" in err
    assert "tokenizer@ema" in load_checkpoint(out).weights


def test_maskgit_and_uvim_loaders_use_the_ema(tmp_path):
    from fsqkit.maskgit.train import MaskGITTrainConfig, load_maskgit, train_maskgit
    from fsqkit.training import TrainerConfig
    from fsqkit.uvim import OracleConfig, load_uvim_model, train_oracle
    from fsqkit.uvim.train import UViMTrainConfig

    tok = str(tmp_path / "tok")
    tiny_fit(tok, 2)
    mg = str(tmp_path / "mg")
    train_cfg = MaskGITTrainConfig(
        data="embedded", num_train_images=64, num_val_images=16, tokenizer=tok, batch_size=8,
        eval_steps=2,
    )  # fmt: skip
    trainer = TrainerConfig(out_dir=mg, steps=3, progress=False, ema_decay=0.5)
    train_maskgit({"dim": 32, "depth": 1, "heads": 2}, train_cfg, trainer)
    ck = load_checkpoint(mg)
    key = "tok_emb.weight"
    assert not torch.equal(ck.weights["maskgit"][key], ck.weights["maskgit@ema"][key])
    assert torch.equal(load_maskgit(mg)[0].state_dict()[key], ck.weights["maskgit@ema"][key])
    assert torch.equal(load_maskgit(mg, ema=False)[0].state_dict()[key], ck.weights["maskgit"][key])

    oracle = str(tmp_path / "oracle")
    cfg = OracleConfig(
        task="depth", quantizer="fsq", quantizer_kwargs={"levels": [5, 5, 5]}, image_size=16,
        base_channels=8, channel_mult=(1, 2),
    )  # fmt: skip
    data = UViMTrainConfig(num_train=16, num_val=8, batch_size=4, grid_images=0)
    train_oracle(cfg, data, TrainerConfig(out_dir=oracle, steps=2, progress=False, ema_decay=0.5))
    ck = load_checkpoint(oracle)
    key = "decoder.conv_out.weight"
    assert not torch.equal(ck.weights["oracle"][key], ck.weights["oracle@ema"][key])
    loaded = load_uvim_model(oracle).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in ck.weights["oracle@ema"].items())
