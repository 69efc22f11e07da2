"""Exponential moving average (EMA) of a run's weights.

After every optimisation step each floating-point entry of the tracked modules'
state dicts (parameters and buffers, e.g. a VQ codebook learned by EMA) moves
towards the live value: ``ema = decay * ema + (1 - decay) * live``; integer
buffers are copied. The average starts as a copy of the initial weights and is
kept in float32 whatever the training precision.

Checkpoints hold it beside the raw weights as module ``"<name>@ema"`` (same
keys), so resuming continues the average exactly and loaders pick it:
:func:`module_weights` returns the EMA weights when a checkpoint has them
(``Tokenizer.load``, ``load_maskgit`` and the UViM loaders call it) and the raw
ones on request.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

EMA_SUFFIX = "@ema"


def ema_name(module: str) -> str:
    """The checkpoint entry of ``module``'s EMA weights."""
    return module + EMA_SUFFIX


def is_ema_name(name: str) -> bool:
    return name.endswith(EMA_SUFFIX)


class WeightEMA:
    """EMA of the state of ``modules`` (see the module docstring).

    Args:
        modules: ``{name: module}`` to track (unwrapped, not DDP).
        decay: in ``(0, 1)``; the average's horizon is about ``1 / (1 - decay)`` steps.
    """

    def __init__(self, modules: dict[str, nn.Module], decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        if not modules:
            raise ValueError("EMA needs at least one module to track")
        self.modules = modules
        self.decay = decay
        self.shadow: dict[str, dict[str, Tensor]] = {
            name: {k: _fp32_copy(v) for k, v in m.state_dict().items()}
            for name, m in modules.items()
        }

    @torch.no_grad()
    def update(self) -> None:
        """Move the average one step towards the live weights."""
        weight = 1.0 - self.decay
        for name, module in self.modules.items():
            shadow = self.shadow[name]
            floats_ema, floats_live = [], []
            for key, live in module.state_dict().items():
                ema = shadow[key]
                if ema.is_floating_point():
                    floats_ema.append(ema)
                    floats_live.append(live.detach().to(ema.dtype))
                else:
                    ema.copy_(live)
            if floats_ema:
                torch._foreach_lerp_(floats_ema, floats_live, weight)

    def state(self) -> dict[str, dict[str, Tensor]]:
        """``{"<name>@ema": state_dict}`` for a checkpoint."""
        return {ema_name(name): dict(sd) for name, sd in self.shadow.items()}

    @torch.no_grad()
    def load(self, weights: dict[str, dict[str, Tensor]]) -> list[str]:
        """Restore from checkpoint ``weights`` (``{"<name>@ema": ...}``); returns the
        modules for which the checkpoint had no average (they keep a copy of the
        current weights)."""
        missing = []
        for name, shadow in self.shadow.items():
            saved = weights.get(ema_name(name))
            if saved is None:
                missing.append(name)
                self.reset(name)
                continue
            if set(saved) != set(shadow):
                raise ValueError(f"the checkpoint's EMA of {name!r} has different entries")
            for key, value in saved.items():
                shadow[key].copy_(value)
        return missing

    @torch.no_grad()
    def reset(self, name: str) -> None:
        """Restart the average of ``name`` at its current weights."""
        for key, value in self.modules[name].state_dict().items():
            self.shadow[name][key].copy_(value)

    @torch.no_grad()
    def copy_to_modules(self) -> None:
        """Load the averaged weights into the modules (the raw ones are lost)."""
        for name, module in self.modules.items():
            _load_into(module, self.shadow[name])

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Within the block the modules hold the EMA weights; the raw weights are
        put back (bit for bit) afterwards."""
        raw = {
            name: {k: v.detach().clone() for k, v in m.state_dict().items()}
            for name, m in self.modules.items()
        }
        self.copy_to_modules()
        try:
            yield
        finally:
            with torch.no_grad():
                for name, module in self.modules.items():
                    _load_into(module, raw[name])


def _fp32_copy(t: Tensor) -> Tensor:
    t = t.detach()
    return t.float().clone() if t.is_floating_point() else t.clone()


def _load_into(module: nn.Module, state: dict[str, Tensor]) -> None:
    """Copy ``state`` into ``module``'s tensors in place (dtype and layout kept)."""
    for key, live in module.state_dict().items():
        live.copy_(state[key])


def module_weights(
    weights: dict[str, dict[str, Any]], name: str, ema: bool = True
) -> dict[str, Any]:
    """The state dict of module ``name`` in a loaded checkpoint's ``weights``: its
    EMA average when ``ema`` and the checkpoint has one, else the raw weights."""
    if ema and ema_name(name) in weights:
        return weights[ema_name(name)]
    return weights[name]
