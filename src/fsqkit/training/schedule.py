"""Learning-rate schedule shared by every trainer task."""

from __future__ import annotations

import math
from typing import Protocol


class ScheduleConfig(Protocol):
    """Any config with these fields (tokenizer and MaskGIT training configs)."""

    lr: float
    warmup_steps: int
    min_lr_ratio: float


def lr_at(step: int, total: int, cfg: ScheduleConfig) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to ``min_lr_ratio * lr``
    at step ``total`` (steps are numbered 1 … total)."""
    if cfg.warmup_steps and step <= cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps
    span = max(1, total - cfg.warmup_steps)
    t = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))
