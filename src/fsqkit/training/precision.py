"""Mixed precision for the shared trainer: autocast, the fp16 gradient scaler,
channels-last conv nets and fused optimizers.

``precision`` is one of :data:`PRECISIONS`:

- ``"fp32"`` (default): no autocast, no scaler; the ops are exactly those of a
  plain PyTorch loop.
- ``"bf16"``: ``torch.autocast(dtype=torch.bfloat16)`` around the forward and the
  loss; weights, gradients and optimizer state stay float32. No scaler (bf16 has
  float32's exponent range).
- ``"fp16"``: autocast to float16 plus a gradient scaler (losses are scaled
  before ``backward``, gradients unscaled before clipping, a step with
  non-finite gradients is skipped and the scale lowered).

Quantizers run their rounding, index arithmetic and VQ distances in float32
with autocast switched off inside them (see :mod:`fsqkit.quantizers`), so
indices do not depend on the precision of the surrounding network beyond the
latents it produces.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else ``ValueError``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def autocast(precision: str, device: torch.device) -> AbstractContextManager[object]:
    """The autocast context of ``precision`` on ``device`` (a no-op for fp32)."""
    if check_precision(precision) == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A gradient scaler for fp16, ``None`` otherwise."""
    if check_precision(precision) != "fp16":
        return None
    return torch.amp.GradScaler(device.type)


def bytes_per_activation(precision: str) -> int:
    """Bytes of one stored activation under ``precision`` (autocast keeps most
    activations in the low-precision dtype)."""
    return 4 if check_precision(precision) == "fp32" else 2


def to_channels_last(modules: dict[str, nn.Module]) -> list[str]:
    """Put every module that holds a 2-D convolution into channels-last (NHWC)
    layout, in place (parameters keep their identity, so optimizers stay valid).
    Returns the names converted."""
    done = []
    for name, module in modules.items():
        if any(isinstance(m, nn.Conv2d) for m in module.modules()):
            module.to(memory_format=torch.channels_last)
            done.append(name)
    return done


_FUSABLE = (torch.optim.Adam, torch.optim.AdamW)


def use_fused(optimizer: torch.optim.Optimizer) -> bool:
    """Switch ``optimizer`` to torch's fused kernel (one kernel for the whole
    update) when its class has one and every parameter is a float32 tensor on a
    device the kernel supports; returns whether it did. The update is the same
    formula; results differ from the per-tensor loop by float round-off only."""
    if not isinstance(optimizer, _FUSABLE):
        return False
    from torch.optim.optimizer import _get_fused_kernels_supported_devices

    devices = set(_get_fused_kernels_supported_devices())
    for group in optimizer.param_groups:
        if group.get("differentiable") or group.get("capturable"):
            return False
        for p in group["params"]:
            if p.dtype != torch.float32 or p.device.type not in devices:
                return False
    for group in optimizer.param_groups:
        group["foreach"] = None
        group["fused"] = True
    optimizer.defaults["fused"] = True
    return True
