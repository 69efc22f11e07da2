"""A trivial :class:`~fsqkit.training.TrainTask` (a 1-D linear fit) for trainer
tests that need no real model, with switches that make it diverge."""

from __future__ import annotations

import math

import torch
from torch import nn


class LinearTask:
    """Fits y = 2x; the loss turns NaN at ``nan_at`` (or the weights at ``nan_weights_at``)."""

    progress_keys = ("loss",)

    def __init__(self, nan_at: int = 0, nan_weights_at: int = 0) -> None:
        torch.manual_seed(0)
        self.net = nn.Linear(1, 1)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=0.1)
        self.nan_at, self.nan_weights_at = nan_at, nan_weights_at
        self.steps_run: list[int] = []

    def modules(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"net": self.opt}

    def config(self) -> dict:
        return {}

    def train_step(self, step: int) -> dict[str, float]:
        self.steps_run.append(step)
        x = torch.randn(8, 1)
        mse = ((self.net(x) - 2 * x) ** 2).mean()
        self.opt.zero_grad()
        mse.backward()
        self.opt.step()
        if step == self.nan_weights_at:
            with torch.no_grad():
                self.net.bias.fill_(math.inf)
        loss = math.nan if step == self.nan_at else mse.item()
        return {"loss": loss, "mse": mse.item(), "lr": 0.1}

    def evaluate(self, step: int) -> dict[str, float]:
        return {}
