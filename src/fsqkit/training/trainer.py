"""One generic training loop, shared by the tokenizer and stage-II models.

A *task* owns the models, optimizers, data and losses; the :class:`Trainer`
owns everything around them: the step loop, resume, atomic checkpoints, RNG
state, metrics JSONL, the progress bar and periodic evaluation. New models
write a task, never a new loop.

A task implements (see :class:`TrainTask`)::

    modules() -> dict[str, nn.Module]        # unwrapped modules to checkpoint
    optimizers() -> dict[str, Optimizer]     # their optimizers
    config() -> dict                         # JSON config stored in checkpoints
    micro_batches(step, n) -> list           # the step's n micro-batches (seeded!)
    updates(step) -> list[Update]            # optimizer updates of the step, in order
    loss(update, batch, step) -> (loss, metrics)   # one micro-batch's loss
    evaluate(step) -> dict[str, float]       # called on every rank; rank 0 logs
    progress_keys -> tuple[str, ...]         # metrics shown in the progress bar

The trainer owns the step around ``loss`` (:mod:`fsqkit.training.step`):
learning-rate schedule, autocast (``precision``), backward, gradient
accumulation over ``grad_accum`` micro-batches, the fp16 gradient scaler,
clipping, the optimizer steps, an EMA of the weights (``ema_decay``; used for
evaluation and saved in checkpoints) and ``torch.compile`` (``compile``). A task
may instead implement ``train_step(step) -> dict[str, float]`` and step its own
optimizers; then only the fp32, no-accumulation, eager settings apply.

Order of operations (the resume contract): for ``step`` in ``start+1 .. steps``:
step -> EMA update -> log -> (``evaluate``) -> (checkpoint). A checkpoint
captures the state *after* all of that, including every RNG, the EMA and the
gradient scaler, so resuming from step ``s`` and running to ``N`` gives the same
weights as running ``0 .. N`` at once, as long as the batches come from a
:class:`StepSampler` (a pure function of the step).
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
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
from fsqkit.training.compiled import CompiledModules, compile_failure_line, is_compile_error
from fsqkit.training.distributed import DistInfo, all_reduce_max
from fsqkit.training.ema import WeightEMA, is_ema_name
from fsqkit.training.errors import (
    CheckpointCorrupt,
    CheckpointSaveFailed,
    CheckpointWriteError,
    RunDirectoryInUse,
    TrainingDiverged,
    TrainingInterrupted,
)
from fsqkit.training.metrics_log import MetricsLogger
from fsqkit.training.precision import check_precision, grad_scaler, to_channels_last, use_fused
from fsqkit.training.rng import get_rng_state, set_rng_state
from fsqkit.training.signals import StopSignals
from fsqkit.training.step import StepSettings, Update, run_updates


class TrainTask(Protocol):
    progress_keys: tuple[str, ...]

    def modules(self) -> dict[str, nn.Module]: ...

    def optimizers(self) -> dict[str, torch.optim.Optimizer]: ...

    def config(self) -> dict[str, Any]: ...

    def micro_batches(self, step: int, n: int) -> Sequence[Any]: ...

    def updates(self, step: int) -> Sequence[Update]: ...

    def loss(self, update: str, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, float]]: ...

    def evaluate(self, step: int) -> dict[str, float]: ...


# Optional task attributes: ``ema_modules`` / ``compile_modules`` (names of
# ``modules()``; default: those with trainable parameters).


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
        precision: ``"fp32"`` (default), ``"bf16"`` or ``"fp16"`` autocast
            (:mod:`fsqkit.training.precision`); bf16/fp16 also put conv nets in
            channels-last layout and use fused optimizers.
        grad_accum: micro-batches per optimisation step (each of the task's
            batch size): the step sees ``batch_size * grad_accum * world_size``
            items.
        ema_decay: keep an EMA of the weights with this decay (0: off). It is
            saved in checkpoints, used by ``evaluate`` and, once ``fit()``
            returns, loaded into the task's modules.
        compile: ``torch.compile`` the trainable modules (falls back to eager
            with one line if compilation fails); ``compile_backend`` picks the
            backend.
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
    precision: str = "fp32"
    grad_accum: int = 1
    ema_decay: float = 0.0
    compile: bool = False
    compile_backend: str = "inductor"

    def __post_init__(self) -> None:
        for name in ("steps", "log_every", "keep_checkpoints", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("eval_every", "ckpt_every", "ckpt_minutes"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        check_precision(self.precision)
        if not (self.ema_decay == 0.0 or 0.0 < self.ema_decay < 1.0):
            raise ValueError(f"ema_decay must be 0 (off) or in (0, 1), got {self.ema_decay}")

    def settings(self) -> dict[str, Any]:
        """The settings that change the numbers (saved in checkpoints as ``"trainer"``)."""
        return {
            "precision": self.precision,
            "grad_accum": self.grad_accum,
            "ema_decay": self.ema_decay,
            "compile": self.compile,
        }


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
        self._loss_task = callable(getattr(task, "loss", None))
        if not self._loss_task:
            custom = [
                k
                for k, v in cfg.settings().items()
                if k != "ema_decay" and v != TrainerConfig.__dataclass_fields__[k].default
            ]
            if custom:
                raise ValueError(
                    f"{type(task).__name__} steps its own optimizers (train_step), so the trainer "
                    f"cannot apply {', '.join(custom)}; implement micro_batches/updates/loss instead"
                )
        modules = task.modules()
        self.ema: WeightEMA | None = None
        if cfg.ema_decay:
            names = getattr(task, "ema_modules", None) or _trainable(modules)
            self.ema = WeightEMA({n: modules[n] for n in names}, cfg.ema_decay)
        self.scaler = grad_scaler(cfg.precision, self.dist.device)
        self.compiled: CompiledModules | None = None
        self._compile_checked = False
        self._step_settings = StepSettings(
            cfg.steps, cfg.precision, cfg.grad_accum, self.dist.device, self.scaler
        )

    def _prepare(self) -> None:
        """Layout, fused optimizers and compilation, once the state is loaded."""
        cfg, modules = self.cfg, self.task.modules()
        fast = cfg.precision != "fp32"
        if fast:
            to_channels_last(modules)
        if fast or self.dist.device.type == "cuda":
            for opt in self.task.optimizers().values():
                use_fused(opt)
        if cfg.compile:
            names = getattr(self.task, "compile_modules", None) or _trainable(modules)
            self.compiled = CompiledModules({n: modules[n] for n in names}, cfg.compile_backend)

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
                extra: dict[str, Any] = {
                    "train_seconds": self.train_seconds,
                    "last_eval": self.last_eval,
                    "total_steps": self.cfg.steps,
                }
                if self.scaler is not None:
                    extra["grad_scaler"] = self.scaler.state_dict()
                try:
                    save_checkpoint(
                        self.cfg.out_dir,
                        self.step,
                        self.task.modules(),
                        {**self.task.config(), "trainer": self.cfg.settings()},
                        optimizers=self.task.optimizers(),
                        rng=get_rng_state(),
                        extra=extra,
                        keep=self.cfg.keep_checkpoints,
                        extra_weights=self.ema.state() if self.ema is not None else None,
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
        changed, added = _config_changes(ckpt.config, current)
        if changed:
            raise ValueError(
                f"cannot resume from {ckpt.path}: its config differs in {changed}; "
                f"use the same settings or a new --out directory"
            )
        if added and self.dist.is_main:
            print(
                f"note: {ckpt.path} was written before the settings {added} existed; "
                f"resuming with their current values",
                file=sys.stderr,
            )
        modules = self.task.modules()
        saved = {k for k in ckpt.weights if not is_ema_name(k)}
        if saved != set(modules):
            raise ValueError(
                f"checkpoint {ckpt.path} holds modules {sorted(saved)}, "
                f"the task has {sorted(modules)}"
            )
        for name, m in modules.items():
            m.load_state_dict(ckpt.weights[name])
        for name, opt in self.task.optimizers().items():
            opt.load_state_dict(ckpt.state["optimizers"][name])
        self.step = ckpt.step
        self._restore_trainer_state(ckpt.config.get("trainer", {}), ckpt.weights, ckpt.state)
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

    def _restore_trainer_state(
        self, saved: dict[str, Any], weights: dict[str, Any], state: dict[str, Any]
    ) -> None:
        """EMA and gradient scaler from a checkpoint; a warning when the run
        resumes with other numeric settings than it was saved with."""
        say = self.dist.is_main
        defaults = TrainerConfig(out_dir="", steps=1).settings()
        changed = {
            k: (saved.get(k, defaults[k]), v)
            for k, v in self.cfg.settings().items()
            if k != "compile" and saved.get(k, defaults[k]) != v
        }
        if changed and say:
            what = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items())
            print(
                f"warning: {self.cfg.out_dir} resumes with other settings ({what}): the "
                f"result differs from an uninterrupted run",
                file=sys.stderr,
            )
        if self.ema is not None:
            missing = self.ema.load(weights)
            if missing and say:
                print(
                    f"warning: the checkpoint has no EMA of {missing}; the average starts "
                    f"at the step-{self.step} weights",
                    file=sys.stderr,
                )
        scaler_state = state.get("extra", {}).get("grad_scaler")
        if self.scaler is not None and scaler_state:
            self.scaler.load_state_dict(scaler_state)

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
        self._prepare()
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
                metrics = self._train_step()
                if self.ema is not None:
                    self.ema.update()
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
                    self.last_eval = self._evaluate()
                    self.logger.log(
                        {
                            "step": self.step,
                            "split": "val",
                            "train_seconds": self.train_seconds,
                            **_peak_memory(self.dist.device),
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
            if self.compiled is not None:
                self.compiled.revert()
                self.compiled = None
        if self.ema is not None:
            self.ema.copy_to_modules()  # the trained model is the average
        return self.last_eval

    def _evaluate(self) -> dict[str, float]:
        """``task.evaluate`` with the EMA weights (if any) and eager modules."""
        with ExitStack() as stack:
            if self.ema is not None:
                stack.enter_context(self.ema.applied())
            if self.compiled is not None:
                stack.enter_context(self.compiled.eager())
            return self.task.evaluate(self.step)

    def _step_once(self) -> dict[str, float]:
        if not self._loss_task:
            return self.task.train_step(self.step)  # type: ignore[attr-defined]
        return run_updates(self.task, self.task.optimizers(), self.step, self._step_settings)

    def _train_step(self) -> dict[str, float]:
        """One step. In the first compiled step a compilation failure (of the
        backward pass: the forward falls back by itself) restores the state
        before the step and repeats it eagerly."""
        compiled = self.compiled
        if compiled is None or self._compile_checked:
            return self._step_once()
        self._compile_checked = True
        snapshot = _Snapshot(self.task)
        try:
            return self._step_once()
        except Exception as err:
            if not is_compile_error(err):
                raise
            compiled.revert()
            self.compiled = None
            snapshot.restore(self.task)
            if self.dist.is_main:
                print(compile_failure_line(err), file=sys.stderr)
            return self._step_once()


def _config_changes(saved: dict[str, Any], current: dict[str, Any]) -> tuple[list[str], list[str]]:
    """``(changed, added)``: entries of ``current`` (below the top level, dotted)
    whose saved value differs, and entries the saved config does not have yet
    (settings a later fsqkit version introduced: accepted, with a note)."""
    changed, added = [], []
    for key, value in current.items():
        if key == "trainer":
            continue
        old = saved.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            changed += [f"{key}.{k}" for k in old if k not in value or old[k] != value[k]]
            added += [f"{key}.{k}" for k in value if k not in old]
        elif old != value:
            changed.append(key)
    return sorted(changed), sorted(added)


def _peak_memory(device: torch.device) -> dict[str, float]:
    """The process's peak memory so far: CUDA memory allocated on ``device``, or
    the resident set size on the CPU (MiB)."""
    if device.type == "cuda":
        return {"peak_cuda_mib": torch.cuda.max_memory_allocated(device) / 2**20}
    import resource

    return {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _trainable(modules: dict[str, nn.Module]) -> list[str]:
    """Names of the modules with at least one trainable parameter."""
    return [n for n, m in modules.items() if any(p.requires_grad for p in m.parameters())]


class _Snapshot:
    """Weights, optimizer states and RNG of a task, to undo a failed step."""

    def __init__(self, task: Any) -> None:
        self.weights = {
            n: {k: v.detach().clone() for k, v in m.state_dict().items()}
            for n, m in task.modules().items()
        }
        self.optimizers = {n: copy.deepcopy(o.state_dict()) for n, o in task.optimizers().items()}
        self.rng = get_rng_state()

    def restore(self, task: Any) -> None:
        for n, m in task.modules().items():
            m.load_state_dict(self.weights[n])
        for n, o in task.optimizers().items():
            o.load_state_dict(self.optimizers[n])
            o.zero_grad(set_to_none=True)
        set_rng_state(self.rng)
