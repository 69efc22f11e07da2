"""What the command line prints when the trainer stops a run early
(:class:`~fsqkit.training.errors.TrainingStopped`): one message, from rank 0
only, and for an interrupt the exact command that resumes the run."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence

from fsqkit.training.errors import TrainingInterrupted, TrainingStopped


def resume_command(argv: Sequence[str]) -> str:
    """The command line that continues the run started with ``fsqkit ARGV``
    (``--resume`` added; under ``torchrun`` the same number of processes)."""
    args = list(argv)
    if "--resume" not in args:
        args.append("--resume")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return shlex.join(["fsqkit", *args])
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    launcher = (
        ["torchrun", "--standalone", f"--nproc_per_node={local}"]
        if local == world
        else ["torchrun", f"--nnodes={world // local}", f"--nproc_per_node={local}", "..."]
    )
    return shlex.join([*launcher, "-m", "fsqkit.cli", *args])


def report_stop(err: TrainingStopped, command: str, argv: Sequence[str], resumable: bool) -> int:
    """Print ``err`` (rank 0 only) and return the exit code."""
    if int(os.environ.get("RANK", "0")) == 0:
        if isinstance(err, TrainingInterrupted):
            hint = f"\nresume with: {resume_command(argv)}" if resumable else ""
            print(f"fsqkit {command}: {err}{hint}", file=sys.stderr)
        else:
            print(f"fsqkit {command}: error: {err}", file=sys.stderr)
    return err.exit_code
