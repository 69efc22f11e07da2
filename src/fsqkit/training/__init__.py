"""Shared training infrastructure (tokenizer, MaskGIT, ...).

- :class:`Trainer` / :class:`TrainerConfig` / :class:`TrainTask`: the one
  training loop (resume, checkpoints, eval, JSONL metrics, progress bar).
- :func:`save_checkpoint` / :func:`load_checkpoint`: atomic, checksummed
  safetensors + JSON + optimizer/RNG checkpoints.
- :mod:`fsqkit.training.errors`: how a run stops early (SIGINT/SIGTERM,
  divergence, a failed write) and how a checkpoint fails (corrupt, unwritable).
- :class:`OptimConfig`, :func:`lr_at`: the shared optimiser settings and schedule;
  :class:`SavedConfig`: (de)serialisation of model configs.
- :class:`Update`, :func:`micro_steps`: how a task describes its step (the
  trainer runs it: precision, accumulation, clipping, scaler);
  :class:`WeightEMA`, :func:`module_weights`: the weights' EMA and loading it.
- :class:`StepSampler`, :class:`EpochSampler`: seeded per-step batches (exact
  resume, DDP slices); :func:`batch_source`: a task's batches, in memory or streamed.
- :func:`setup_distributed`, :func:`wrap_ddp`, :func:`unwrap`: ``torchrun`` support.
- :class:`MetricsLogger`, :func:`read_metrics`: metrics JSON lines.
"""

from fsqkit.training.batches import BatchSource, InMemoryBatches, batch_source
from fsqkit.training.checkpoint import (
    Checkpoint,
    atomic_write_text,
    has_checkpoint,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from fsqkit.training.config import SavedConfig
from fsqkit.training.distributed import (
    DistInfo,
    barrier,
    cleanup_distributed,
    distributed_session,
    replicas_in_sync,
    setup_distributed,
    unwrap,
    wrap_ddp,
)
from fsqkit.training.ema import WeightEMA, module_weights
from fsqkit.training.errors import (
    CheckpointCorrupt,
    CheckpointSaveFailed,
    CheckpointWriteError,
    RunDirectoryInUse,
    TrainingDiverged,
    TrainingInterrupted,
    TrainingStopped,
)
from fsqkit.training.metrics_log import MetricsLogger, read_metrics
from fsqkit.training.optim import OptimConfig, lr_at
from fsqkit.training.precision import PRECISIONS
from fsqkit.training.rng import get_rng_state, seed_everything, set_rng_state
from fsqkit.training.sampler import EpochSampler, StepSampler
from fsqkit.training.step import Update, micro_steps
from fsqkit.training.trainer import Trainer, TrainerConfig, TrainTask

__all__ = [
    "PRECISIONS",
    "BatchSource",
    "Checkpoint",
    "CheckpointCorrupt",
    "CheckpointSaveFailed",
    "CheckpointWriteError",
    "DistInfo",
    "EpochSampler",
    "InMemoryBatches",
    "MetricsLogger",
    "OptimConfig",
    "RunDirectoryInUse",
    "SavedConfig",
    "StepSampler",
    "TrainTask",
    "Trainer",
    "TrainerConfig",
    "TrainingDiverged",
    "TrainingInterrupted",
    "TrainingStopped",
    "Update",
    "WeightEMA",
    "atomic_write_text",
    "barrier",
    "batch_source",
    "cleanup_distributed",
    "distributed_session",
    "get_rng_state",
    "has_checkpoint",
    "load_checkpoint",
    "lr_at",
    "micro_steps",
    "module_weights",
    "read_metrics",
    "replicas_in_sync",
    "resolve_checkpoint",
    "save_checkpoint",
    "seed_everything",
    "set_rng_state",
    "setup_distributed",
    "unwrap",
    "wrap_ddp",
]
