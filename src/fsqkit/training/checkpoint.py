"""Atomic, self-describing training checkpoints.

Layout of a run directory::

    RUN/checkpoints/step-000100/weights.safetensors   # every module's state dict,
                                                      # keys "<module>.<param>"
    RUN/checkpoints/step-000100/config.json           # user config + step + module list
    RUN/checkpoints/step-000100/state.pt              # optimizers, RNG states, extras
    RUN/checkpoints/step-000100/manifest.json         # size + SHA-256 of the three files
    RUN/checkpoints/latest                            # text: "step-000100"

Writing is crash-safe at every instant: a checkpoint is written into a hidden
temporary directory, its files are fsynced, the directory is renamed into place
with ``os.replace``, and only then is ``latest`` replaced (again write-temp +
``os.replace``). A kill at any moment therefore leaves ``latest`` pointing at a
complete checkpoint; leftovers of an interrupted write are ignored and cleaned
up by the next save.

Loading verifies the checksums: a damaged or incomplete checkpoint raises
:class:`~fsqkit.training.errors.CheckpointCorrupt` naming the file, and
:func:`~fsqkit.training.checkpoint_dirs.find_intact` finds the newest intact
one to resume from. A failed write (disk full, permission denied) raises
:class:`~fsqkit.training.errors.CheckpointWriteError` and changes nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from fsqkit.training.checkpoint_dirs import (
    CONFIG,
    FORMAT,
    LATEST,
    LEGACY_FORMAT,
    STATE,
    WEIGHTS,
    checkpoint_problem,
    checkpoints_dir,
    find_intact,
    prune,
    read_latest,
    step_name,
)
from fsqkit.training.errors import CheckpointCorrupt, CheckpointWriteError
from fsqkit.training.integrity import write_manifest

__all__ = [
    "Checkpoint",
    "atomic_write_text",
    "checkpoints_dir",
    "has_checkpoint",
    "load_checkpoint",
    "resolve_checkpoint",
    "save_checkpoint",
    "step_name",
]


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        path: the checkpoint directory.
        step: training step after which it was written.
        config: the JSON config saved with it.
        weights: ``{module_name: state_dict}`` (a weights EMA as ``"<module>@ema"``).
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


def _flatten_weights(
    modules: dict[str, nn.Module], extra: dict[str, dict[str, Tensor]] | None = None
) -> dict[str, Tensor]:
    flat: dict[str, Tensor] = {}
    states = {name: m.state_dict() for name, m in modules.items()}
    for name, state in (extra or {}).items():
        if name in states:
            raise ValueError(f"extra weights {name!r} clash with a module of that name")
        states[name] = state
    for name, state in states.items():
        if "." in name:
            raise ValueError(f"module names must not contain '.', got {name!r}")
        for key, t in state.items():
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
    extra_weights: dict[str, dict[str, Tensor]] | None = None,
) -> str:
    """Atomically write checkpoint ``step`` under ``run_dir`` and point ``latest``
    at it; keep the ``keep`` newest checkpoints. Returns the checkpoint directory.

    ``modules`` are unwrapped modules (not DDP). ``config`` must be JSON-serialisable.
    ``extra_weights``: more state dicts stored like modules (e.g. the weights'
    EMA as ``"<module>@ema"``); they load back as entries of ``weights``.

    Raises:
        CheckpointWriteError: the write failed (disk full, permission denied, ...);
            the previous checkpoint and ``latest`` are left as they were.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    root = checkpoints_dir(run_dir)
    final = os.path.join(root, step_name(step))
    previous = read_latest(root) if os.path.isdir(root) else None
    tmp = None
    try:
        os.makedirs(root, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".tmp-{step_name(step)}-", dir=root)
        _write_files(tmp, step, modules, config, optimizers, rng, extra, extra_weights)
        _move_into_place(tmp, final, root)
        atomic_write_text(os.path.join(root, LATEST), step_name(step) + "\n")
    except OSError as err:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        kept = (
            f"the previous checkpoint {os.path.join(root, previous)} is unchanged"
            if previous
            else "no earlier checkpoint exists"
        )
        raise CheckpointWriteError(f"could not write checkpoint {final}: {err}; {kept}") from err
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    prune(root, keep, just_written=step_name(step))
    return final


def _write_files(
    tmp: str,
    step: int,
    modules: dict[str, nn.Module],
    config: dict[str, Any],
    optimizers: dict[str, torch.optim.Optimizer] | None,
    rng: dict[str, Any] | None,
    extra: dict[str, Any] | None,
    extra_weights: dict[str, dict[str, Tensor]] | None = None,
) -> None:
    """Weights, config, state and (last) the manifest into ``tmp``, all fsynced."""
    flat = _flatten_weights(modules, extra_weights)
    save_file(flat, os.path.join(tmp, WEIGHTS), metadata={"format": FORMAT})
    names = sorted([*modules, *(extra_weights or {})])
    meta = {"format": FORMAT, "step": step, "modules": names, "config": config}
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
    write_manifest(tmp, (WEIGHTS, CONFIG, STATE))
    _fsync_dir(tmp)


def _move_into_place(tmp: str, final: str, root: str) -> None:
    """Rename ``tmp`` to ``final``. Re-saving a step (e.g. after a resume) moves the
    old copy aside first (``latest`` may still name it, so it is only deleted by
    the prune after ``latest`` moves) and back if the rename fails."""
    old = None
    if os.path.exists(final):
        old = os.path.join(tempfile.mkdtemp(prefix=".trash-", dir=root), "old")
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        if old is not None:
            os.replace(old, final)
        raise
    _fsync_dir(root)


def resolve_checkpoint(path: str) -> str:
    """Checkpoint directory for ``path``: a checkpoint directory itself, a run
    directory (uses ``checkpoints/latest``) or a ``checkpoints`` directory."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint path {path!r} does not exist")
    if os.path.isfile(os.path.join(path, WEIGHTS)):
        return path
    for root in (checkpoints_dir(path), path):
        name = read_latest(root) if os.path.isdir(root) else None
        if name is not None:
            ckpt = os.path.join(root, name)
            if not os.path.isfile(os.path.join(ckpt, WEIGHTS)):
                raise FileNotFoundError(f"{root}/latest names {name!r}, which has no {WEIGHTS}")
            return ckpt
    raise FileNotFoundError(
        f"no checkpoint found at {path!r} (expected {WEIGHTS}, or checkpoints/latest in a run directory)"
    )


def has_checkpoint(run_dir: str) -> bool:
    return read_latest(checkpoints_dir(run_dir)) is not None


def load_checkpoint(
    path: str, *, weights_only: bool = False, map_location: str = "cpu", verify: bool = True
) -> Checkpoint:
    """Load the checkpoint at ``path`` (see :func:`resolve_checkpoint`). With
    ``weights_only=True`` the optimizer/RNG state file is not read.

    Raises:
        CheckpointCorrupt: a file fails its checksum (``verify``), is missing or
            does not parse; the message names the file.
    """
    ckpt = resolve_checkpoint(path)
    problem = checkpoint_problem(ckpt) if verify else None
    if problem is not None:
        older, _ = find_intact(os.path.dirname(os.path.abspath(ckpt)))
        hint = f"; the newest intact one is {older}" if older else ""
        raise CheckpointCorrupt(f"corrupt checkpoint: {problem}{hint}")
    meta = _read(ckpt, CONFIG, _read_json)
    if meta.get("format") not in (FORMAT, LEGACY_FORMAT):
        raise ValueError(
            f"{ckpt}: unknown checkpoint format {meta.get('format')!r}, expected {FORMAT!r}"
        )
    flat = _read(ckpt, WEIGHTS, lambda p: load_file(p, device=map_location))
    weights: dict[str, dict[str, Tensor]] = {m: {} for m in meta["modules"]}
    for key, t in flat.items():
        module, _, param = key.partition(".")
        weights[module][param] = t
    state: dict[str, Any] = {}
    if not weights_only:
        state = _read(
            ckpt, STATE, lambda p: torch.load(p, map_location=map_location, weights_only=True)
        )
    return Checkpoint(ckpt, int(meta["step"]), meta["config"], weights, state)


def _read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def _read(ckpt: str, name: str, reader: Any) -> Any:
    """``reader(path)`` for file ``name`` of ``ckpt``; a missing or unparsable
    file raises :class:`CheckpointCorrupt` naming it."""
    path = os.path.join(ckpt, name)
    try:
        return reader(path)
    except (OSError, ValueError, RuntimeError, SafetensorError, EOFError) as err:
        # SafetensorError: bad header; RuntimeError/EOFError: torch.load of a torn zip.
        why = (str(err).strip().splitlines() or [""])[0]
        raise CheckpointCorrupt(
            f"corrupt checkpoint: {path} cannot be read ({type(err).__name__}: {why})"
        ) from err
