"""One optimisation step of a loss-returning task: the part of the loop that
the :class:`~fsqkit.training.Trainer` owns.

A task describes a step with three methods (see :class:`LossTask`):

- ``micro_batches(step, n)``: the ``n`` micro-batches of step ``step`` (any
  objects; a mutable dict lets one update leave tensors for the next, e.g. a
  GAN's generated images for the discriminator). Micro-batch ``i`` of step ``s``
  should be the batch a run without accumulation draws at step
  ``(s - 1) * n + i + 1`` (:func:`micro_steps`), so every batch stays a pure
  function of ``(seed, step)`` and resume stays exact.
- ``updates(step)``: the optimizer updates of the step, in order
  (:class:`Update`); one for most models, two for a GAN (generator, then
  discriminator).
- ``loss(update, batch, step) -> (loss, metrics)``: the scalar loss of one
  micro-batch for the update named ``update``, and float metrics.

Per update, :func:`run_updates` sets the learning rate from the update's
schedule, zeroes the gradients, runs ``loss`` on every micro-batch under
autocast and back-propagates ``loss / n`` (scaled for fp16; DDP gradient sync
only on the last micro-batch), then unscales, clips and steps. Metrics are
averaged over micro-batches. With ``n = 1`` in fp32 the ops are exactly those
of ``zero_grad(); loss.backward(); clip; step()``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from fsqkit.training.optim import OptimConfig, lr_at, set_lr
from fsqkit.training.precision import autocast


@dataclass
class Update:
    """One optimizer update within a step.

    Attributes:
        optimizer: key of the task's ``optimizers()``.
        schedule: learning-rate schedule and gradient clipping (:func:`lr_at`,
            ``grad_clip``); ``None``: the optimizer's learning rate is left as it
            is and nothing is clipped.
        params: the parameters whose gradient norm is clipped (``None``: the
            optimizer's, in its order).
        sync: DDP wrappers whose gradient all-reduce is deferred to the last
            micro-batch (``no_sync``) when accumulating.
    """

    optimizer: str
    schedule: OptimConfig | None = None
    params: Sequence[Tensor] | None = None
    sync: Sequence[nn.Module] = ()


class LossTask(Protocol):
    """The step methods of a loss-returning task (see the module docstring)."""

    def micro_batches(self, step: int, n: int) -> Sequence[Any]: ...

    def updates(self, step: int) -> Sequence[Update]: ...

    def loss(self, update: str, batch: Any, step: int) -> tuple[Tensor, dict[str, float]]: ...


def micro_steps(step: int, n: int) -> range:
    """The sampler steps of step ``step``'s ``n`` micro-batches: ``(step-1)*n+1 … step*n``
    (just ``step`` when ``n = 1``)."""
    return range((step - 1) * n + 1, step * n + 1)


_CPU = torch.device("cpu")


@dataclass
class StepSettings:
    """How :func:`run_updates` runs (from :class:`~fsqkit.training.TrainerConfig`)."""

    total_steps: int
    precision: str = "fp32"
    grad_accum: int = 1
    device: torch.device = _CPU
    scaler: torch.amp.GradScaler | None = None


@contextmanager
def _no_sync(wrappers: Sequence[nn.Module], active: bool) -> Iterator[None]:
    with ExitStack() as stack:
        if active:
            for w in wrappers:
                if hasattr(w, "no_sync"):
                    stack.enter_context(w.no_sync())
        yield


def run_updates(
    task: Any, optimizers: dict[str, torch.optim.Optimizer], step: int, s: StepSettings
) -> dict[str, float]:
    """Run step ``step`` of ``task`` (a :class:`LossTask`); returns its metrics
    (plus ``lr``: the first scheduled update's learning rate, and ``loss_scale``
    under fp16)."""
    n = s.grad_accum
    batches = list(task.micro_batches(step, n))
    if len(batches) != n:
        raise ValueError(f"micro_batches({step}, {n}) returned {len(batches)} batches")
    metrics: dict[str, float] = {}
    for update in task.updates(step):
        opt = optimizers[update.optimizer]
        lr = None
        if update.schedule is not None:
            lr = lr_at(step, s.total_steps, update.schedule)
            set_lr(opt, lr)
            metrics.setdefault("lr", lr)
        opt.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for i, batch in enumerate(batches):
            with _no_sync(update.sync, i < n - 1):
                with autocast(s.precision, s.device):
                    loss, m = task.loss(update.optimizer, batch, step)
                if n > 1:
                    loss = loss / n
                if s.scaler is not None:
                    loss = s.scaler.scale(loss)
                loss.backward()
            if n == 1:
                sums = dict(m)
            else:
                for k, v in m.items():
                    sums[k] = sums.get(k, 0.0) + v / n
        metrics.update(sums)
        clip = update.schedule.grad_clip if update.schedule is not None else 0.0
        if s.scaler is not None:
            s.scaler.unscale_(opt)
        if clip:
            params = update.params
            if params is None:
                params = [p for g in opt.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, clip)
        if s.scaler is not None:
            s.scaler.step(opt)
        else:
            opt.step()
    if s.scaler is not None:
        metrics["loss_scale"] = float(s.scaler.get_scale())
        s.scaler.update()
    return metrics
