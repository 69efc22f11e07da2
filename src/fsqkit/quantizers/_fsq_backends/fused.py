"""What the fused FSQ paths share: the CPU kernel (:mod:`.cpu`) and the CUDA
kernels (:mod:`.gpu`).

Dimension legend: ``C = G * D`` channels, ``G`` codebooks, ``D = len(levels)``,
``S`` spatial positions of a channel-first input.

Each path supplies a *spec* for one (constants, layout, dtype), with

- ``run(x, keep) -> (codes, indices, saved, nonfinite)``: codes in the spec's
  output dtype, int32 indices ``(N * G,)``, the tensor backward needs (when
  ``keep``; ``x`` itself or a float32 ``tanh``) and whether NaN/inf was seen;
- ``backward(grad, saved, dtype) -> grad_z``.

Everything around the kernels (eligibility, layout, the autograd function, NaN
handling, the per-dimension constants) is here, once. Specs and constants are
cached by value (the immutable :class:`~fsqkit.quantizers.fsq_math.FSQConstants`
and the layout), in this module, never on an FSQ module: modules stay copyable
and picklable, and modules with the same levels share them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from fsqkit.quantizers.capture import graph_capture
from fsqkit.quantizers.fsq_math import FSQConstants

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
NONFINITE_MESSAGE = "FSQ input contains NaN or infinite values"
Geometry = tuple[int, int, int]  # (outer, C, inner)


class Spec(Protocol):
    def run(self, x: Tensor, keep: bool) -> tuple[Tensor, Tensor, Tensor | None, bool]: ...
    def backward(self, grad: Tensor, saved: Tensor, dtype: torch.dtype) -> Tensor: ...


SpecFor = Callable[[FSQConstants, Tensor, Geometry, torch.dtype, bool], "Spec | None"]


@functools.lru_cache(maxsize=64)
def kernel_constants(c: FSQConstants, device: torch.device) -> dict[str, Tensor]:
    """Per-dimension constants ``(D,)`` as the reference path computes them:
    float32 ``shift, half_l, offset, half_width, lm1 = L - 1,
    sym_scale = 2 / (L - 1), inv_half_width = 1 / (L // 2)`` and int32 ``basis``."""
    t = c.tensors(device)
    return {
        "shift": t.shift.contiguous(),
        "half_l": t.half_l.contiguous(),
        "offset": t.offset.contiguous(),
        "half_width": t.half_width.contiguous(),
        "lm1": (t.levels - 1).contiguous(),
        "sym_scale": (2.0 / (t.levels - 1)).contiguous(),  # as in fsq_math.codes_from_grid
        "inv_half_width": (1.0 / t.half_width).contiguous(),
        "basis": t.basis.to(torch.int32).contiguous(),
    }


def _transforms_active() -> bool:
    probe = getattr(torch._C._functorch, "are_transforms_active", None)
    return bool(probe()) if probe is not None else False


def eligible(z: object, c: FSQConstants, device_type: str) -> bool:
    """The checks both fused paths make (cheap; no kernel is built here)."""
    # First: a captured graph (compile, export, tracing) must use the reference ops.
    if graph_capture() or _transforms_active():
        return False
    if not isinstance(z, Tensor) or type(z) is not Tensor:
        return False
    if z.device.type != device_type or z.dtype not in SUPPORTED_DTYPES or z.numel() == 0:
        return False
    return c.codebook_size < 2**31 and z.numel() < 2**31


def layout(z: Tensor, channel_first: bool) -> tuple[Tensor, Geometry, bool]:
    """Pick a kernel layout without copying where possible.

    Returns ``(x, (outer, C, inner), moved)``: ``x`` contiguous; ``moved`` when a
    channel-first ``z`` stored channels-last (e.g. ``torch.channels_last``) is
    handed to the kernel as channel-last ``x = z.movedim(1, -1)``."""
    cf = channel_first and z.ndim >= 3
    C = z.shape[1] if cf else z.shape[-1]
    if cf:
        if not z.is_contiguous():
            moved = z.movedim(1, -1)
            if moved.is_contiguous():
                return moved, (moved.numel() // C, C, 1), True
            z = z.contiguous()
        return z, (z.shape[0], C, z.numel() // (z.shape[0] * C)), False
    x = z.contiguous()
    return x, (x.numel() // C, C, 1), False


class NonFinite(Exception):
    """Raised inside the autograd function so that nothing is recorded."""


class FusedFSQ(torch.autograd.Function):
    """``x (contiguous) -> (codes, indices)`` with the straight-through gradient;
    saves one tensor (``x`` itself, or the spec's float32 ``tanh``)."""

    @staticmethod
    def forward(ctx, x: Tensor, spec: Spec) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        codes, indices, saved, bad = spec.run(x, keep=True)
        if bad:
            raise NonFinite
        ctx.spec = spec
        ctx.z_dtype = x.dtype
        ctx.save_for_backward(saved)
        ctx.mark_non_differentiable(indices)
        # No zero-filled gradient for the indices (an index-sized memset per call)
        ctx.set_materialize_grads(False)
        return codes, indices

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor | None, _grad_indices: None) -> tuple[Tensor | None, None]:  # type: ignore[override]
        if grad_out is None:
            return None, None
        (saved,) = ctx.saved_tensors
        grad = grad_out.contiguous()
        if grad.dtype not in SUPPORTED_DTYPES:
            grad = grad.float()
        return ctx.spec.backward(grad, saved, ctx.z_dtype), None


def _quantize(spec: Spec, x: Tensor) -> tuple[Tensor, Tensor]:
    if torch.is_grad_enabled() and x.requires_grad:
        return FusedFSQ.apply(x, spec)
    codes, indices, _, bad = spec.run(x, keep=False)
    if bad:
        raise NonFinite
    return codes, indices


def run_fused(
    z: Tensor,
    c: FSQConstants,
    channel_first: bool,
    out_dtype: torch.dtype,
    raise_on_nonfinite: bool,
    spec_for: SpecFor,
) -> tuple[Tensor, Tensor] | None:
    """``(codes, int32 indices)`` of ``z`` through the spec that ``spec_for(c, x,
    geometry, out_dtype, raise_on_nonfinite)`` gives (None: the reference path
    must run). Codes have ``z``'s shape and layout in ``out_dtype``; indices are
    ``(positions)`` or ``(positions, G)`` with ``G = C / len(levels)``.

    NaN/inf (reported by the spec): ``ValueError`` when ``raise_on_nonfinite``,
    otherwise None, so the reference path runs and its NaN behaviour is kept."""
    D = len(c.levels)
    x, geometry, moved = layout(z, channel_first)
    G = geometry[1] // D
    try:
        spec = spec_for(c, x, geometry, out_dtype, raise_on_nonfinite)
        if spec is None:
            return None
        codes, indices = _quantize(spec, x)
    except NonFinite:
        if raise_on_nonfinite:
            raise ValueError(NONFINITE_MESSAGE) from None
        return None
    out = codes.movedim(-1, 1) if moved else codes
    cf = channel_first and z.ndim >= 3
    positions = (z.shape[0], *z.shape[2:]) if cf else z.shape[:-1]
    indices = indices.view(*positions, G) if G > 1 else indices.view(positions)
    return out, indices
