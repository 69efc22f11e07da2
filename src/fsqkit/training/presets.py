"""Named run presets (the paper's configurations) and what they cost in memory.

A :class:`RunPreset` fills a command's flags (``args``), config fields that
have no flag (``train``) and trainer step settings (``trainer``); flags given
on the command line win. Each model package keeps its own registry
(``fsqkit.tokenizer.presets``, ``fsqkit.maskgit.presets``,
``fsqkit.uvim.presets``).

Before a preset run starts, :func:`memory_line` states the parameter count and
the activation memory per image that backward will hold, measured by
:func:`saved_bytes_per_item` (the bytes autograd saves during a forward pass
under the run's autocast, batch 2 minus batch 1) at small sizes and
extrapolated linearly (:func:`extrapolate`): activations of conv nets grow
with the pixel count, a transformer's with its depth.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from fsqkit.training.precision import autocast


@dataclass(frozen=True)
class RunPreset:
    """A named configuration of one training command.

    Attributes:
        name: what ``--preset`` takes.
        summary: one line for ``--help``.
        args: command-line destinations (``args.<dest>``) and their values; a flag
            given on the command line overrides its value.
        train: run-config fields that have no flag (e.g. Adam's betas).
        trainer: :class:`~fsqkit.training.TrainerConfig` step settings
            (``precision``, ``ema_decay``, ...); flags override them.
        global_batch: images per optimizer step over all processes; the command
            sets ``grad_accum`` so that ``batch_size * grad_accum * world_size``
            reaches it (unless ``--grad-accum`` is given).
        required: destinations the user must give (e.g. the data path).
        notes: where the paper is silent: the value chosen and why.
    """

    name: str
    summary: str
    args: dict[str, Any]
    train: dict[str, Any] = field(default_factory=dict)
    trainer: dict[str, Any] = field(default_factory=dict)
    global_batch: int | None = None
    required: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def presets_help(presets: dict[str, RunPreset]) -> str:
    """One line per preset, for ``--help``."""
    return "; ".join(f"{p.name}: {p.summary}" for p in presets.values())


def get_preset(presets: dict[str, RunPreset], name: str) -> RunPreset:
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(presets)}")
    return presets[name]


def grad_accum_for(global_batch: int, batch_size: int, world_size: int) -> int:
    """Micro-batches per step so that ``batch_size * n * world_size >= global_batch``."""
    return max(1, math.ceil(global_batch / (batch_size * world_size)))


def saved_bytes(forward: Callable[[], Any], precision: str = "fp32") -> int:
    """Bytes of the tensors autograd saves for backward while ``forward()`` runs
    under ``precision``'s autocast (CPU)."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
    with hooks, autocast(precision, torch.device("cpu")):
        forward()
    return total


def saved_bytes_per_item(forward: Callable[[int], Any], precision: str = "fp32") -> int:
    """Bytes saved for backward per batch item: ``forward(2)`` minus ``forward(1)``
    (so weights, and autocast's low-precision copies of them, cancel)."""
    return saved_bytes(lambda: forward(2), precision) - saved_bytes(lambda: forward(1), precision)


def extrapolate(size_a: float, bytes_a: int, size_b: float, bytes_b: int, size: float) -> float:
    """The line through ``(size_a, bytes_a)`` and ``(size_b, bytes_b)`` at ``size``."""
    slope = (bytes_b - bytes_a) / (size_b - size_a)
    return bytes_a + slope * (size - size_a)


def memory_line(
    label: str,
    params: dict[str, int],
    activation_bytes: float,
    precision: str,
    batch_size: int,
) -> str:
    """``label: N parameters (...); weights+grads+Adam X GB per process;
    activations Y MB per image at PRECISION (batch B: Z GB)``."""
    total = sum(params.values())
    parts = ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in params.items() if v)
    state = 16 * total  # fp32 weights, gradients and two Adam moments
    return (
        f"{label}: {total / 1e6:.2f}M parameters ({parts}); weights+grads+Adam "
        f"{state / 1e9:.2f} GB per process; activations {activation_bytes / 2**20:.0f} MiB "
        f"per image at {precision} (batch {batch_size}: {activation_bytes * batch_size / 2**30:.1f} "
        f"GiB)"
    )


def preset_banner(line: str, preset: RunPreset, batch_size: int, grad_accum: int) -> str:
    """What a command prints before a preset run: the :func:`memory_line`, the
    values chosen where the paper is silent, and the step's batch."""
    notes = [f"  chosen where the paper is silent: {n}" for n in preset.notes]
    batch = f"  batch {batch_size} x {grad_accum} micro-batch(es) per process per step"
    return "\n".join([line, *notes, batch])


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
