"""One generic training loop, shared by the tokenizer and stage-II models.

A *task* owns the models, optimizers, data and losses; the :class:`Trainer`
owns everything around them: the step loop, resume, atomic checkpoints, RNG
state, metrics JSONL, the progress bar and periodic evaluation. New models
write a task, never a new loop.

A task implements (see :class:`TrainTask`)::

    modules() -> dict[str, nn.Module]        # unwrapped modules to checkpoint
    optimizers() -> dict[str, Optimizer]     # their optimizers
    config() -> dict                         # JSON config stored in checkpoints
    train_step(step) -> dict[str, float]     # one optimisation step (seeded batch!)
    evaluate(step) -> dict[str, float]       # called on every rank; rank 0 logs
    progress_keys -> tuple[str, ...]         # metrics shown in the progress bar

Order of operations (the resume contract): for ``step`` in ``start+1 .. steps``:
``train_step`` -> log -> (``evaluate``) -> (checkpoint). A checkpoint captures
the state *after* all of that, including every RNG, so resuming from step ``s``
and running to ``N`` gives the same weights as running ``0 .. N`` at once, as
long as ``train_step`` draws its batch from a :class:`StepSampler`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from fsqkit.training.checkpoint import load_checkpoint, save_checkpoint
from fsqkit.training.checkpoint_dirs import (
    checkpoints_dir,
    find_intact,
    list_checkpoints,
    step_name,
    step_of,
)
from fsqkit.training.distributed import DistInfo, all_reduce_max
from fsqkit.training.errors import (
    CheckpointCorrupt,
    CheckpointSaveFailed,
    CheckpointWriteError,
    RunDirectoryInUse,
    TrainingDiverged,
    TrainingInterrupted,
)
from fsqkit.training.metrics_log import MetricsLogger
from fsqkit.training.rng import get_rng_state, set_rng_state
from fsqkit.training.signals import StopSignals


class TrainTask(Protocol):
    progress_keys: tuple[str, ...]

    def modules(self) -> dict[str, nn.Module]: ...

    def optimizers(self) -> dict[str, torch.optim.Optimizer]: ...

    def config(self) -> dict[str, Any]: ...

    def train_step(self, step: int) -> dict[str, float]: ...

    def evaluate(self, step: int) -> dict[str, float]: ...


@dataclass
class TrainerConfig:
    """Loop settings.

    Attributes:
        out_dir: run directory (checkpoints/, metrics.jsonl).
        steps: total number of optimisation steps (steps are numbered 1 … steps).
        eval_every: evaluate every N steps (0: only at the end).
        ckpt_every: checkpoint every N steps (0: off; see ``ckpt_minutes``).
        ckpt_minutes: also checkpoint when this many minutes of wall time have
            passed since the last checkpoint (0: off). A checkpoint is always
            written at the end and when SIGINT / SIGTERM stops the run.
        log_every: write training metrics every N steps.
        keep_checkpoints: number of checkpoints kept on disk (the newest intact
            one is never deleted).
        resume: continue from ``out_dir``'s newest intact checkpoint if there is one.
        overwrite: a new (not resumed) run in an ``out_dir`` that holds an earlier
            run's checkpoints deletes them and its ``metrics.jsonl`` first; without
            it (and without ``resume``) that raises :class:`RunDirectoryInUse`, so
            an earlier run is never mixed with, pruned or lost by accident.
        progress: show a tqdm progress bar (rank 0).
        progress_label, progress_position: the bar's label and terminal line (for
            runs that train side by side in several processes, one bar each).
        stop_after: stop (with a checkpoint) after this step, as if interrupted;
            for tests and time-sliced jobs. ``None``: run to ``steps``.
    """

    out_dir: str
    steps: int
    eval_every: int = 0
    ckpt_every: int = 0
    ckpt_minutes: float = 10.0
    log_every: int = 10
    keep_checkpoints: int = 3
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    progress_label: str | None = None
    progress_position: int | None = None
    stop_after: int | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("eval_every", "ckpt_every", "ckpt_minutes"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def _non_finite(values: dict[str, Any]) -> list[str]:
    return [k for k, v in values.items() if isinstance(v, (int, float)) and not math.isfinite(v)]


@torch.no_grad()
def _non_finite_weights(modules: dict[str, nn.Module]) -> list[str]:
    return [
        f"{name}.{key}"
        for name, m in modules.items()
        for key, p in m.named_parameters()
        if not bool(torch.isfinite(p).all())
    ]


class Trainer:
    """Runs a :class:`TrainTask` (see the module docstring).

    ``fit()`` is safe to interrupt: SIGINT / SIGTERM finish the current step,
    write a checkpoint and raise :class:`TrainingInterrupted` (on every rank at
    the same step); a non-finite loss raises :class:`TrainingDiverged` without
    saving; a failed checkpoint write raises :class:`CheckpointSaveFailed`.
    """

    def __init__(self, task: TrainTask, cfg: TrainerConfig, dist_info: DistInfo | None = None):
        self.task = task
        self.cfg = cfg
        self.dist = dist_info or DistInfo()
        self.step = 0
        self.train_seconds = (
            0.0  # optimisation time only (no eval / checkpoint), summed over resumes
        )
        self.logger = MetricsLogger(os.path.join(cfg.out_dir, "metrics.jsonl"), self.dist.is_main)
        self.last_eval: dict[str, float] = {}
        self._last_save = time.monotonic()

    # -------------------------------------------------------------- state
    def save(self) -> str:
        """Checkpoint the current step (rank 0 writes; all ranks wait and agree
        on the outcome). Refuses to save non-finite weights."""
        path = os.path.join(checkpoints_dir(self.cfg.out_dir), step_name(self.step))
        failure: CheckpointWriteError | None = None
        bad: list[str] = []
        if self.dist.is_main:
            bad = _non_finite_weights(self.task.modules())
            if not bad:
                try:
                    save_checkpoint(
                        self.cfg.out_dir,
                        self.step,
                        self.task.modules(),
                        self.task.config(),
                        optimizers=self.task.optimizers(),
                        rng=get_rng_state(),
                        extra={
                            "train_seconds": self.train_seconds,
                            "last_eval": self.last_eval,
                            "total_steps": self.cfg.steps,
                        },
                        keep=self.cfg.keep_checkpoints,
                    )
                except CheckpointWriteError as err:
                    failure = err
        diverged, failed = all_reduce_max([int(bool(bad)), int(failure is not None)], self.dist)
        if diverged:
            what = f"weights ({', '.join(bad[:3])})" if bad else "weights"
            raise TrainingDiverged(self._diverged_message(what), self.step)
        if failed:
            raise CheckpointSaveFailed(
                str(failure or "rank 0 could not write a checkpoint"), self.step
            ) from failure
        self._last_save = time.monotonic()
        return path

    def restore(self) -> bool:
        """Load the newest intact checkpoint of ``out_dir`` if there is one,
        skipping damaged newer ones with a warning each."""
        found, skipped = find_intact(checkpoints_dir(self.cfg.out_dir))
        if self.dist.is_main:
            for path, problem in skipped:
                print(f"warning: skipping checkpoint {path}: {problem}", file=sys.stderr)
        if found is None:
            if skipped:
                raise CheckpointCorrupt(
                    f"no intact checkpoint to resume from in {checkpoints_dir(self.cfg.out_dir)} "
                    f"(all {len(skipped)} are damaged; see the warnings above)"
                )
            return False
        ckpt = load_checkpoint(found, map_location=str(self.dist.device), verify=False)
        current = json.loads(json.dumps(self.task.config()))  # tuples -> lists, as saved
        changed = sorted(k for k in current if k != "trainer" and ckpt.config.get(k) != current[k])
        if changed:
            raise ValueError(
                f"cannot resume from {ckpt.path}: its config differs in {changed}; "
                f"use the same settings or a new --out directory"
            )
        modules = self.task.modules()
        if set(ckpt.weights) != set(modules):
            raise ValueError(
                f"checkpoint {ckpt.path} holds modules {sorted(ckpt.weights)}, "
                f"the task has {sorted(modules)}"
            )
        for name, m in modules.items():
            m.load_state_dict(ckpt.weights[name])
        for name, opt in self.task.optimizers().items():
            opt.load_state_dict(ckpt.state["optimizers"][name])
        set_rng_state(ckpt.state["rng"])
        if self.dist.rank > 0:
            # Only rank 0's RNG streams are saved; other ranks get a distinct,
            # deterministic stream (exact resume is guaranteed single-process).
            torch.manual_seed(ckpt.step * 1009 + self.dist.rank)
        self.step = ckpt.step
        self.train_seconds = float(ckpt.state["extra"].get("train_seconds", 0.0))
        self.last_eval = dict(ckpt.state["extra"].get("last_eval", {}))
        started = ckpt.state["extra"].get("total_steps")
        if started is not None and int(started) != self.cfg.steps and self.dist.is_main:
            # Schedules (warm-up, cosine decay) depend on the total: say so, once.
            print(
                f"warning: {self.cfg.out_dir} was started with {started} steps and resumes "
                f"with {self.cfg.steps}: the learning-rate schedule changes from step "
                f"{self.step} on, so the result differs from an uninterrupted "
                f"{self.cfg.steps}-step run",
                file=sys.stderr,
            )
        self.logger.truncate_after(self.step)
        return True

    def _diverged_message(self, what: str, metrics: dict[str, Any] | None = None) -> str:
        terms = ", ".join(f"{k}={v:.4g}" for k, v in (metrics or {}).items() if k != "lr")
        last = None
        if self.dist.is_main:
            last, _ = find_intact(checkpoints_dir(self.cfg.out_dir))
        lr = (metrics or {}).get("lr")
        return (
            f"training diverged at step {self.step}: non-finite {what}"
            + (f" ({terms})" if terms else "")
            + (
                f"; the last intact checkpoint is {last}, nothing was saved after it"
                if last
                else "; no checkpoint was saved"
            )
            + "; hint: lower --lr"
            + (f" (now {lr:.3g})" if isinstance(lr, float) else "")
            + " and train again in a new --out directory"
        )

    def _start_fresh(self) -> None:
        """Step 0 in ``out_dir``: refuse to mix with an earlier run's checkpoints
        (unless ``overwrite``, which deletes them) and drop the ``metrics.jsonl``
        records of any earlier run."""
        root = checkpoints_dir(self.cfg.out_dir)
        earlier = list_checkpoints(root)
        if earlier and not (self.cfg.overwrite or self.cfg.resume):
            raise RunDirectoryInUse(
                f"{self.cfg.out_dir} already holds a run (checkpoints up to step "
                f"{step_of(earlier[-1])}); pass --resume to continue it, --overwrite to "
                f"start over (deletes its checkpoints and metrics.jsonl), or choose "
                f"another --out"
            )
        if self.dist.is_main:
            if earlier and self.cfg.overwrite:
                print(
                    f"note: a new run in {self.cfg.out_dir}: deleting the earlier run's "
                    f"{len(earlier)} checkpoint(s)",
                    file=sys.stderr,
                )
                shutil.rmtree(root)
            self.logger.truncate_after(0)  # records of an earlier run that left no checkpoint

    def _ckpt_due(self) -> bool:
        minutes = self.cfg.ckpt_minutes
        return minutes > 0 and time.monotonic() - self._last_save >= minutes * 60

    # --------------------------------------------------------------- loop
    def fit(self) -> dict[str, float]:
        """Train to ``cfg.steps`` (or ``stop_after``); returns the last evaluation."""
        with StopSignals(announce=self.dist.is_main) as signals:
            return self._fit(signals)

    def _fit(self, signals: StopSignals) -> dict[str, float]:
        cfg = self.cfg
        if cfg.resume and self.restore():
            if self.dist.is_main and cfg.progress:
                print(f"resumed from step {self.step} in {cfg.out_dir}")
        else:
            self._start_fresh()
        self._last_save = time.monotonic()
        end = cfg.steps if cfg.stop_after is None else min(cfg.steps, cfg.stop_after)
        bar = None
        if self.dist.is_main and cfg.progress and end > self.step:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=cfg.steps,
                initial=self.step,
                desc=cfg.progress_label,
                position=cfg.progress_position,
                dynamic_ncols=True,
                leave=False,
            )
        try:
            while self.step < end:
                self.step += 1
                t0 = time.perf_counter()
                metrics = self.task.train_step(self.step)
                self.train_seconds += time.perf_counter() - t0
                # One small collective per step: every rank stops, saves or gives up
                # at the same step.
                signum, due, diverged = all_reduce_max(
                    [signals.received or 0, int(self._ckpt_due()), int(bool(_non_finite(metrics)))],
                    self.dist,
                )
                if diverged:
                    raise TrainingDiverged(self._diverged_message("loss", metrics), self.step)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    self.logger.log({"step": self.step, "split": "train", **metrics})
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(
                        {k: f"{metrics[k]:.4g}" for k in self.task.progress_keys if k in metrics},
                        refresh=False,
                    )
                last = self.step == cfg.steps
                if last or (cfg.eval_every and self.step % cfg.eval_every == 0):
                    self.last_eval = self.task.evaluate(self.step)
                    self.logger.log(
                        {
                            "step": self.step,
                            "split": "val",
                            "train_seconds": self.train_seconds,
                            **self.last_eval,
                        }
                    )
                periodic = cfg.ckpt_every and self.step % cfg.ckpt_every == 0
                if last or self.step == end or periodic or due or signum:
                    path = self.save()
                    if signum and not last:
                        raise TrainingInterrupted(signum, self.step, path)
        finally:
            if bar is not None:
                bar.close()
        return self.last_eval
