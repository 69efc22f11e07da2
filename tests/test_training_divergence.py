"""A non-finite loss stops training with a message naming the step, the loss
terms, the last intact checkpoint and a hint; nothing saved is overwritten."""

from __future__ import annotations

import math
import os

import pytest
import torch

from fsqkit.cli import main
from fsqkit.tokenizer.train import TokenizerTask
from fsqkit.training import Trainer, TrainerConfig, load_checkpoint
from fsqkit.training.errors import TrainingDiverged
from tests.linear_task import LinearTask
from tests.single_thread import one_thread  # noqa: F401
from tests.tiny_run import train_args


def fit(out: str, task: LinearTask) -> None:
    Trainer(task, TrainerConfig(out, steps=10, ckpt_every=2, progress=False)).fit()


def test_nan_loss_stops_with_step_terms_checkpoint_and_hint(tmp_path):
    out = str(tmp_path / "run")
    with pytest.raises(TrainingDiverged) as err:
        fit(out, LinearTask(nan_at=5))
    msg = str(err.value)
    assert err.value.step == 5 and "diverged at step 5" in msg
    assert "loss=nan" in msg and "mse=" in msg
    assert "last intact checkpoint is " + os.path.join(out, "checkpoints", "step-000004") in msg
    assert "lower --lr (now 0.1)" in msg
    assert load_checkpoint(out).step == 4  # nothing saved after the last good step
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == [
        "latest", "step-000002", "step-000004"
    ]  # fmt: skip


def test_non_finite_weights_are_never_saved(tmp_path):
    out = str(tmp_path / "run")
    # Step 4's loss is finite (computed before the update), its weights are not.
    with pytest.raises(TrainingDiverged, match=r"step 4: non-finite weights \(net.bias\)"):
        fit(out, LinearTask(nan_weights_at=4))
    ck = load_checkpoint(out)
    assert ck.step == 2 and torch.isfinite(ck.weights["net"]["bias"]).all()
    assert not os.path.exists(os.path.join(out, "checkpoints", "step-000004"))


def test_cli_reports_divergence_in_one_line(tmp_path, monkeypatch, capsys):
    real_loss = TokenizerTask.loss

    def nan_at_3(self, update, batch, step):
        loss, metrics = real_loss(self, update, batch, step)
        return loss, ({**metrics, "loss": math.nan} if step == 3 else metrics)

    monkeypatch.setattr(TokenizerTask, "loss", nan_at_3)
    run = str(tmp_path / "run")
    assert main(train_args(run, 6, "--ckpt-every", "2")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "diverged at step 3" in err and "step-000002" in err, err
