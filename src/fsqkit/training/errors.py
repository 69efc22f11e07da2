"""The ways a training run or a checkpoint can fail, as exception types the CLI
turns into one-line messages and exit codes.

* :class:`CheckpointCorrupt`: a checkpoint's files fail their checksums or do
  not parse (a ``ValueError``: bad input).
* :class:`RunDirectoryInUse`: a new (not resumed) run was pointed at a run
  directory that holds an earlier run's checkpoints (a ``ValueError``).
* :class:`CheckpointWriteError`: writing a checkpoint failed (disk full,
  permission denied); the previous checkpoint is left as it was.
* :class:`TrainingStopped`: the trainer stopped on purpose, on every rank at the
  same step (so a distributed run can still tear down together):
  :class:`TrainingInterrupted` (SIGINT / SIGTERM, after writing a checkpoint),
  :class:`TrainingDiverged` (non-finite loss, nothing saved) and
  :class:`CheckpointSaveFailed` (a periodic checkpoint could not be written).
"""

from __future__ import annotations

import signal


class CheckpointCorrupt(ValueError):
    """A checkpoint is damaged or incomplete; the message names the file."""


class RunDirectoryInUse(ValueError):
    """A new run would mix with (or prune) an earlier run's checkpoints."""


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed; the message says why and what is still intact."""


class TrainingStopped(Exception):
    """The trainer stopped before the last step, on every rank at the same step.

    Attributes:
        step: the last completed step.
        exit_code: what a command line should exit with.
    """

    exit_code = 1

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step


class TrainingInterrupted(TrainingStopped):
    """SIGINT or SIGTERM arrived; the trainer finished the step and saved ``checkpoint``.

    ``exit_code`` is the shell's convention for the signal (130 for SIGINT,
    143 for SIGTERM).
    """

    def __init__(self, signum: int, step: int, checkpoint: str) -> None:
        name = signal.Signals(signum).name
        super().__init__(f"{name} received: stopped after step {step}, saved {checkpoint}", step)
        self.signum = signum
        self.checkpoint = checkpoint
        self.exit_code = 128 + signum


class TrainingDiverged(TrainingStopped):
    """A loss became NaN or infinite; nothing was saved after the last good checkpoint."""


class CheckpointSaveFailed(TrainingStopped):
    """A checkpoint could not be written during training (see :class:`CheckpointWriteError`)."""
