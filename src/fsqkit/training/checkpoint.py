"""Atomic, self-describing training checkpoints.

Layout of a run directory::

    RUN/checkpoints/step-000100/weights.safetensors   # every module's state dict,
                                                      # keys "<module>.<param>"
    RUN/checkpoints/step-000100/config.json           # user config + step + module list
    RUN/checkpoints/step-000100/state.pt              # optimizers, RNG states, extras
    RUN/checkpoints/latest                            # text: "step-000100"

Writing is crash-safe at every instant: a checkpoint is written into a hidden
temporary directory, its files are fsynced, the directory is renamed into place
with ``os.replace``, and only then is ``latest`` replaced (again write-temp +
``os.replace``). A kill at any moment therefore leaves ``latest`` pointing at a
complete checkpoint; leftovers of an interrupted write are ignored and cleaned
up by the next save.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

FORMAT = "fsqkit-checkpoint-v1"
WEIGHTS = "weights.safetensors"
CONFIG = "config.json"
STATE = "state.pt"
LATEST = "latest"


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        path: the checkpoint directory.
        step: training step after which it was written.
        config: the JSON config saved with it.
        weights: ``{module_name: state_dict}``.
        state: optimizer states (``state["optimizers"][name]``), RNG states
            (``state["rng"]``) and task extras (``state["extra"]``); empty when
            loaded with ``weights_only``.
    """

    path: str
    step: int
    config: dict[str, Any]
    weights: dict[str, dict[str, Tensor]]
    state: dict[str, Any] = field(default_factory=dict)


def _fsync_file(path: str) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file + ``os.replace``."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(d)


def checkpoints_dir(run_dir: str) -> str:
    return os.path.join(run_dir, "checkpoints")


def step_name(step: int) -> str:
    return f"step-{step:06d}"


def _flatten_weights(modules: dict[str, nn.Module]) -> dict[str, Tensor]:
    flat: dict[str, Tensor] = {}
    for name, module in modules.items():
        if "." in name:
            raise ValueError(f"module names must not contain '.', got {name!r}")
        for key, t in module.state_dict().items():
            # safetensors needs contiguous tensors that share no storage.
            flat[f"{name}.{key}"] = t.detach().to("cpu").contiguous().clone()
    return flat


def save_checkpoint(
    run_dir: str,
    step: int,
    modules: dict[str, nn.Module],
    config: dict[str, Any],
    optimizers: dict[str, torch.optim.Optimizer] | None = None,
    rng: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    keep: int = 2,
) -> str:
    """Atomically write checkpoint ``step`` under ``run_dir`` and point ``latest``
    at it; keep the ``keep`` newest checkpoints. Returns the checkpoint directory.

    ``modules`` are unwrapped modules (not DDP). ``config`` must be JSON-serialisable.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    root = checkpoints_dir(run_dir)
    os.makedirs(root, exist_ok=True)
    final = os.path.join(root, step_name(step))
    tmp = tempfile.mkdtemp(prefix=f".tmp-{step_name(step)}-", dir=root)
    try:
        save_file(
            _flatten_weights(modules), os.path.join(tmp, WEIGHTS), metadata={"format": FORMAT}
        )
        meta = {"format": FORMAT, "step": step, "modules": sorted(modules), "config": config}
        with open(os.path.join(tmp, CONFIG), "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
        state = {
            "step": step,
            "optimizers": {k: o.state_dict() for k, o in (optimizers or {}).items()},
            "rng": rng or {},
            "extra": extra or {},
        }
        torch.save(state, os.path.join(tmp, STATE))
        for name in (WEIGHTS, CONFIG, STATE):
            _fsync_file(os.path.join(tmp, name))
        _fsync_dir(tmp)
        if os.path.exists(final):
            # Re-saving a step (e.g. after a resume): move the old copy aside first;
            # `latest` may still name it, so it is only deleted after `latest` moves.
            trash = tempfile.mkdtemp(prefix=".trash-", dir=root)
            os.replace(final, os.path.join(trash, "old"))
        os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(os.path.join(root, LATEST), step_name(step) + "\n")
    _prune(root, keep)
    return final


def _prune(root: str, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints and leftovers of crashed writes."""
    latest = _read_latest(root)
    steps = sorted(d for d in os.listdir(root) if d.startswith("step-"))
    for d in steps[:-keep]:
        if d != latest:
            shutil.rmtree(os.path.join(root, d), ignore_errors=True)
    for d in os.listdir(root):
        if d.startswith((".tmp-", ".trash-")) and os.path.isdir(os.path.join(root, d)):
            shutil.rmtree(os.path.join(root, d), ignore_errors=True)


def _read_latest(root: str) -> str | None:
    p = os.path.join(root, LATEST)
    if not os.path.isfile(p):
        return None
    with open(p) as f:
        return f.read().strip() or None


def resolve_checkpoint(path: str) -> str:
    """Checkpoint directory for ``path``: a checkpoint directory itself, a run
    directory (uses ``checkpoints/latest``) or a ``checkpoints`` directory."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint path {path!r} does not exist")
    if os.path.isfile(os.path.join(path, WEIGHTS)):
        return path
    for root in (checkpoints_dir(path), path):
        name = _read_latest(root) if os.path.isdir(root) else None
        if name is not None:
            ckpt = os.path.join(root, name)
            if not os.path.isfile(os.path.join(ckpt, WEIGHTS)):
                raise FileNotFoundError(f"{root}/latest names {name!r}, which has no {WEIGHTS}")
            return ckpt
    raise FileNotFoundError(
        f"no checkpoint found at {path!r} (expected {WEIGHTS}, or checkpoints/latest in a run directory)"
    )


def has_checkpoint(run_dir: str) -> bool:
    return _read_latest(checkpoints_dir(run_dir)) is not None


def load_checkpoint(
    path: str, *, weights_only: bool = False, map_location: str = "cpu"
) -> Checkpoint:
    """Load the checkpoint at ``path`` (see :func:`resolve_checkpoint`). With
    ``weights_only=True`` the optimizer/RNG state file is not read."""
    ckpt = resolve_checkpoint(path)
    with open(os.path.join(ckpt, CONFIG)) as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT:
        raise ValueError(
            f"{ckpt}: unknown checkpoint format {meta.get('format')!r}, expected {FORMAT!r}"
        )
    flat = load_file(os.path.join(ckpt, WEIGHTS), device=map_location)
    weights: dict[str, dict[str, Tensor]] = {m: {} for m in meta["modules"]}
    for key, t in flat.items():
        module, _, param = key.partition(".")
        weights[module][param] = t
    state: dict[str, Any] = {}
    if not weights_only:
        state = torch.load(os.path.join(ckpt, STATE), map_location=map_location, weights_only=True)
    return Checkpoint(ckpt, int(meta["step"]), meta["config"], weights, state)
