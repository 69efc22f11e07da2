"""Tiny tokenizer runs through the Python API for the trainer's step tests
(precision, accumulation, EMA, compile): seconds each on one CPU thread."""

from __future__ import annotations

import os
from typing import Any

from fsqkit.tokenizer import TokenizerConfig, TokenizerTrainConfig
from fsqkit.tokenizer.train import TokenizerTask
from fsqkit.training import Trainer, TrainerConfig, read_metrics

TINY_MODEL = dict(image_size=16, base_channels=8, channel_mult=(1, 2))


def tiny_task(out: str, steps: int, batch_size: int = 4, **train: Any) -> TokenizerTask:
    """A tokenizer task on 64 embedded 16x16 crops (FSQ [8,5,5,5])."""
    cfg = TokenizerTrainConfig(
        data="embedded",
        num_train_images=64,
        num_val_images=16,
        batch_size=batch_size,
        grid_images=0,
        eval_batch_size=16,
        **{"lr": 3e-3, "warmup_steps": 2, **train},
    )
    os.makedirs(out, exist_ok=True)
    return TokenizerTask(TokenizerConfig(**TINY_MODEL), cfg, steps, out, verbose=False)


def tiny_fit(out: str, steps: int, batch_size: int = 4, train: dict | None = None, **trainer: Any):
    """Train the tiny tokenizer; returns ``(task, trainer, last eval)``."""
    task = tiny_task(out, steps, batch_size, **(train or {}))
    tr = Trainer(
        task, TrainerConfig(out_dir=out, steps=steps, progress=False, log_every=1, **trainer)
    )
    return task, tr, tr.fit()


def train_records(out: str) -> list[dict]:
    return [r for r in read_metrics(os.path.join(out, "metrics.jsonl")) if r["split"] == "train"]
