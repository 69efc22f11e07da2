"""A new run never mixes with, prunes or silently loses an earlier run in the
same directory: without ``resume`` or ``overwrite`` it refuses with one clear
message; ``overwrite`` starts over with a clean directory."""

from __future__ import annotations

import os

import pytest

from fsqkit.cli import main
from fsqkit.training import (
    RunDirectoryInUse,
    Trainer,
    TrainerConfig,
    load_checkpoint,
    read_metrics,
)
from tests.linear_task import LinearTask


def _steps_logged(out: str) -> list[int]:
    records = read_metrics(os.path.join(out, "metrics.jsonl"))
    return [r["step"] for r in records if r["split"] == "train"]


def _ckpts(out: str) -> list[str]:
    return sorted(d for d in os.listdir(os.path.join(out, "checkpoints")) if d != "latest")


def test_new_run_refuses_a_directory_with_checkpoints(tmp_path):
    out = str(tmp_path / "run")
    Trainer(LinearTask(), TrainerConfig(out, steps=6, log_every=1, progress=False)).fit()
    before = (_ckpts(out), _steps_logged(out))
    with pytest.raises(RunDirectoryInUse, match=r"checkpoints up to step 6.*--resume.*--overwrite"):
        Trainer(LinearTask(), TrainerConfig(out, steps=3, log_every=1, progress=False)).fit()
    assert (_ckpts(out), _steps_logged(out)) == before  # nothing touched


def test_overwrite_starts_over_in_a_clean_directory(tmp_path, capsys):
    out = str(tmp_path / "run")
    Trainer(LinearTask(), TrainerConfig(out, steps=6, log_every=1, progress=False)).fit()
    cfg = TrainerConfig(out, steps=3, log_every=1, overwrite=True, progress=False)
    Trainer(LinearTask(), cfg).fit()
    assert "deleting the earlier run's 1 checkpoint(s)" in capsys.readouterr().err
    # Only the new run: its steps logged once, its checkpoint the only (and newest) one.
    assert _steps_logged(out) == [1, 2, 3]
    assert _ckpts(out) == ["step-000003"] and load_checkpoint(out).step == 3
    resumed = LinearTask()
    Trainer(resumed, TrainerConfig(out, steps=4, progress=False, resume=True)).fit()
    assert resumed.steps_run == [4]  # resumes the new run, not the old step 6


def test_leftover_metrics_without_checkpoints_are_dropped(tmp_path):
    out = str(tmp_path / "run")
    os.makedirs(out)
    with open(os.path.join(out, "metrics.jsonl"), "w") as f:
        f.write('{"step": 1, "split": "train", "loss": 9.0}\n')  # a run killed before saving
    Trainer(LinearTask(), TrainerConfig(out, steps=2, log_every=1, progress=False)).fit()
    logged = read_metrics(os.path.join(out, "metrics.jsonl"))
    assert [r["step"] for r in logged if r["split"] == "train"] == [1, 2]
    assert all(r.get("loss") != 9.0 for r in logged)


def test_cli_names_the_way_out(tmp_path, capsys):
    out = str(tmp_path / "tok")
    args = ["train-tokenizer", "--data", "embedded", "--image-size", "16", "--base-channels", "8",
            "--channel-mult", "1,2", "--levels", "5,5", "--steps", "2", "--batch-size", "4",
            "--train-images", "16", "--val-images", "8", "--no-progress", "--out", out]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "already holds a run (checkpoints up to step 2)" in err and "Traceback" not in err
    assert main([*args, "--overwrite"]) == 0
