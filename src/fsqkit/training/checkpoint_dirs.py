"""The checkpoints of a run directory: names, ``latest``, which ones are intact,
and pruning.

``RUN/checkpoints/`` holds ``step-NNNNNN/`` directories and ``latest`` (the
name of the newest one). A checkpoint is *intact* when its files match the
checksums in its ``manifest.json`` (see :mod:`fsqkit.training.integrity`);
checkpoints written before manifests existed (format v1) count as intact.
"""

from __future__ import annotations

import json
import os
import re
import shutil

from fsqkit.training.integrity import MANIFEST, manifest_problem

FORMAT = "fsqkit-checkpoint-v2"  # v2: has manifest.json
LEGACY_FORMAT = "fsqkit-checkpoint-v1"
WEIGHTS = "weights.safetensors"
CONFIG = "config.json"
STATE = "state.pt"
LATEST = "latest"
_STEP_DIR = re.compile(r"^step-(\d{6,})$")


def checkpoints_dir(run_dir: str) -> str:
    return os.path.join(run_dir, "checkpoints")


def step_name(step: int) -> str:
    return f"step-{step:06d}"


def step_of(name: str) -> int | None:
    """The step of a checkpoint directory name (``None`` for other names)."""
    m = _STEP_DIR.match(name)
    return int(m.group(1)) if m else None


def list_checkpoints(root: str) -> list[str]:
    """Names of the ``step-*`` directories in ``root``, oldest first."""
    if not os.path.isdir(root):
        return []
    names = [d for d in os.listdir(root) if step_of(d) is not None]
    return sorted(names, key=lambda d: step_of(d) or 0)


def read_latest(root: str) -> str | None:
    """The checkpoint name in ``root/latest`` (``None`` if there is none)."""
    p = os.path.join(root, LATEST)
    if not os.path.isfile(p):
        return None
    with open(p) as f:
        return f.read().strip() or None


def checkpoint_problem(ckpt: str) -> str | None:
    """``None`` if the checkpoint directory ``ckpt`` is intact, else what is wrong
    with it, naming the file."""
    if not os.path.isfile(os.path.join(ckpt, MANIFEST)):
        try:
            with open(os.path.join(ckpt, CONFIG)) as f:
                if json.load(f).get("format") == LEGACY_FORMAT:
                    return None  # written before checksums; parse errors still show on load
        except (OSError, ValueError, AttributeError):
            pass
    return manifest_problem(ckpt)


def candidates(root: str) -> list[str]:
    """Checkpoint names to resume from, newest first: the one ``latest`` names and
    every older one. Newer directories than ``latest`` (an abandoned line of a run
    that was resumed from an earlier step) are left out."""
    names = list_checkpoints(root)
    newest = step_of(read_latest(root) or "")
    if newest is not None:
        names = [d for d in names if (step_of(d) or 0) <= newest]
    return names[::-1]


def find_intact(root: str) -> tuple[str | None, list[tuple[str, str]]]:
    """The newest intact checkpoint directory in ``root`` (or ``None``) and the
    newer ones skipped on the way, as ``(path, problem)`` pairs."""
    skipped: list[tuple[str, str]] = []
    for name in candidates(root):
        path = os.path.join(root, name)
        problem = checkpoint_problem(path)
        if problem is None:
            return path, skipped
        skipped.append((path, problem))
    return None, skipped


def prune(root: str, keep: int, just_written: str | None = None) -> None:
    """Keep the ``keep`` newest checkpoints up to ``latest``; delete older ones and
    leftovers of interrupted writes. If none of the kept ones is intact, the
    newest intact older one is kept as well. Directories newer than ``latest``
    are not ours to judge (a line of the run abandoned by a resume from an older
    step, or an earlier run in the same directory): they are left alone, and a
    re-save of the same step replaces them. ``just_written``: the name of a
    checkpoint known to be intact (not hashed again)."""
    newest_first = candidates(root)
    kept, older = newest_first[:keep], newest_first[keep:]
    if just_written not in kept and not any(
        checkpoint_problem(os.path.join(root, d)) is None for d in kept
    ):
        for d in older:
            if checkpoint_problem(os.path.join(root, d)) is None:
                older.remove(d)
                break
    for d in older:
        shutil.rmtree(os.path.join(root, d), ignore_errors=True)
    for d in os.listdir(root):
        if d.startswith((".tmp-", ".trash-")) and os.path.isdir(os.path.join(root, d)):
            shutil.rmtree(os.path.join(root, d), ignore_errors=True)
