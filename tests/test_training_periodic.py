"""Checkpoints without any flag: by wall time (``ckpt_minutes``) and at the end,
pruned to ``keep_checkpoints``."""

from __future__ import annotations

import os

from fsqkit.training import Trainer, TrainerConfig, load_checkpoint
from tests.linear_task import LinearTask


def ckpts(out: str) -> list[str]:
    return sorted(d for d in os.listdir(os.path.join(out, "checkpoints")) if d != "latest")


def test_default_is_a_checkpoint_at_the_end(tmp_path):
    out = str(tmp_path / "run")
    cfg = TrainerConfig(out, steps=5, progress=False)
    assert cfg.ckpt_minutes == 10 and cfg.keep_checkpoints == 3
    Trainer(LinearTask(), cfg).fit()
    assert ckpts(out) == ["step-000005"]


def test_wall_time_checkpoints_are_pruned_to_keep(tmp_path):
    out = str(tmp_path / "run")
    # A (near) zero interval: every step is due.
    cfg = TrainerConfig(out, steps=6, ckpt_minutes=1e-9, keep_checkpoints=2, progress=False)
    Trainer(LinearTask(), cfg).fit()
    assert ckpts(out) == ["step-000005", "step-000006"]
    assert load_checkpoint(out).step == 6


def test_resume_from_a_wall_time_checkpoint_is_exact(tmp_path):
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    Trainer(LinearTask(), TrainerConfig(full, steps=6, progress=False)).fit()
    cfg = TrainerConfig(part, steps=6, ckpt_minutes=1e-9, stop_after=4, progress=False)
    Trainer(LinearTask(), cfg).fit()
    resumed = LinearTask()
    Trainer(resumed, TrainerConfig(part, steps=6, resume=True, progress=False)).fit()
    assert resumed.steps_run == [5, 6]
    a, b = load_checkpoint(full).weights["net"], load_checkpoint(part).weights["net"]
    assert all(a[k].equal(b[k]) for k in a)
