"""What the fused FSQ paths share: the CPU kernel (:mod:`fsqkit.quantizers.fsq_fast`)
and the CUDA kernels (:mod:`fsqkit.quantizers.fsq_gpu`).

Dimension legend: ``B`` batch, ``C = G * D`` channels, ``G`` codebooks,
``D = len(levels)``, ``S`` spatial positions of a channel-first input.

Each path supplies a *spec* for one (module, layout, dtype), with

- ``run(x, keep) -> (codes, indices, saved, nonfinite)``: codes in the spec's
  output dtype, int32 indices ``(N * G,)``, the tensor backward needs (when
  ``keep``; ``x`` itself or a float32 ``tanh``) and whether NaN/inf was seen;
- ``backward(grad, saved, dtype) -> grad_z``.

Everything around the kernels (eligibility, layout, projections, the autograd
function, NaN handling, the output) is here, once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from fsqkit.quantizers.output import QuantizerOutput, zero_loss

if TYPE_CHECKING:
    from fsqkit.quantizers.fsq import FSQ

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
NONFINITE_MESSAGE = "FSQ input contains NaN or infinite values"
Geometry = tuple[int, int, int]  # (outer, C, inner)


class Spec(Protocol):
    def run(self, x: Tensor, keep: bool) -> tuple[Tensor, Tensor, Tensor | None, bool]: ...
    def backward(self, grad: Tensor, saved: Tensor, dtype: torch.dtype) -> Tensor: ...


def constants_key(fsq: FSQ) -> tuple:
    """Changes whenever one of the module's constant buffers does (``.to()``,
    ``load_state_dict``, an in-place edit): the key of every derived cache."""
    buffers = (fsq._shift, fsq._half_l, fsq._offset, fsq._half_width, fsq._levels, fsq._basis)
    return (fsq.symmetric, *((b.data_ptr(), b._version, b.dtype, b.device) for b in buffers))


def cached(fsq: FSQ, name: str, key: tuple, build: Callable[[], Any], limit: int = 32) -> Any:
    """``build()`` memoised on the module under ``name`` by ``key``."""
    cache = fsq.__dict__.setdefault(name, {})
    if key not in cache:
        if len(cache) >= limit:
            cache.clear()
        cache[key] = build()
    return cache[key]


def kernel_constants(fsq: FSQ, device: torch.device) -> dict[str, Tensor]:
    """Per-dimension constants ``(D,)`` as the reference path computes them:
    float32 ``shift, half_l, offset, half_width, lm1 = L - 1,
    sym_scale = 2 / (L - 1), inv_half_width = 1 / (L // 2)`` and int32 ``basis``."""

    def build() -> dict[str, Tensor]:
        f32 = torch.float32
        levels = fsq._levels.to(device, f32)
        half_width = fsq._half_width.to(device, f32).contiguous()
        return {
            "shift": fsq._shift.to(device, f32).contiguous(),
            "half_l": fsq._half_l.to(device, f32).contiguous(),
            "offset": fsq._offset.to(device, f32).contiguous(),
            "half_width": half_width,
            "lm1": (levels - 1).contiguous(),
            "sym_scale": (2.0 / (levels - 1)).contiguous(),  # as in FSQ.quantize_digits
            "inv_half_width": (1.0 / half_width).contiguous(),
            "basis": fsq._basis.to(device, torch.int32).contiguous(),
        }

    return cached(fsq, "_kernel_constants", (device, *constants_key(fsq)), build, limit=4)


def _transforms_active() -> bool:
    probe = getattr(torch._C._functorch, "are_transforms_active", None)
    return bool(probe()) if probe is not None else False


def eligible(fsq: FSQ, z: object, device_type: str) -> bool:
    """The checks both fused paths make (cheap; no kernel is built here)."""
    # First: under torch.compile/export the traced graph must use the reference ops.
    if torch.compiler.is_compiling() or torch.jit.is_scripting() or _transforms_active():
        return False
    if getattr(fsq, "fast", None) is False or not isinstance(z, Tensor) or type(z) is not Tensor:
        return False
    if z.device.type != device_type or z.dtype not in SUPPORTED_DTYPES or z.numel() == 0:
        return False
    if fsq.training and (fsq.dither > 0 or fsq.passthrough > 0):
        return False
    if fsq.index_dtype != torch.int32 or z.numel() >= 2**31:
        return False
    if fsq.has_projections and fsq._proj_dtype() not in SUPPORTED_DTYPES:
        return False
    return fsq._levels.device == z.device  # else the reference path raises the mismatch


def layout(fsq: FSQ, z: Tensor) -> tuple[Tensor, Geometry, bool]:
    """Pick a kernel layout without copying where possible.

    Returns ``(x, (outer, C, inner), moved)``: ``x`` contiguous; ``moved`` when a
    channel-first ``z`` stored channels-last (e.g. ``torch.channels_last``) is
    handed to the kernel as channel-last ``x = z.movedim(1, -1)``."""
    C = z.shape[1] if (fsq.channel_first and z.ndim >= 3) else z.shape[-1]
    if fsq.channel_first and z.ndim >= 3:
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


SpecFor = Callable[["FSQ", Tensor, Geometry, torch.dtype], "Spec | None"]


def fused_forward(fsq: FSQ, z: Tensor, spec_for: SpecFor) -> QuantizerOutput | None:
    """``fsq(z)`` through a fused path, after :func:`eligible` and the module's
    shape checks; same structure as the reference: project, quantize in float32
    codes, project back. ``spec_for(fsq, x, geometry, out_dtype)`` gives the spec
    (None: use the reference path).

    NaN/inf (reported by the spec): ``ValueError`` when ``check_finite`` is on
    (with projections ``FSQ.forward`` has checked ``z`` already); otherwise None,
    so the reference path runs and its NaN behaviour is kept."""
    G = fsq.num_codebooks
    try:
        if not fsq.has_projections:
            x, geometry, moved = layout(fsq, z)
            spec = spec_for(fsq, x, geometry, z.dtype)
            if spec is None:
                return None
            codes, indices = _quantize(spec, x)
            out = codes.movedim(-1, 1) if moved else codes
            cf = fsq.channel_first and z.ndim >= 3
            positions = (z.shape[0], *z.shape[2:]) if cf else z.shape[:-1]
        else:
            zp = fsq.project_in(fsq._to_channel_last(z)).contiguous()  # (..., G*D)
            with torch.autocast(device_type=z.device.type, enabled=False):
                geometry = (zp.numel() // zp.shape[-1], zp.shape[-1], 1)
                spec = spec_for(fsq, zp, geometry, torch.float32)
                if spec is None:
                    return None
                codes, indices = _quantize(spec, zp)
            out = fsq.project_out(codes.to(fsq._proj_dtype())).to(z.dtype)
            out = fsq._from_channel_last(out)
            positions = zp.shape[:-1]
    except NonFinite:
        if fsq.check_finite and not fsq.has_projections:
            raise ValueError(NONFINITE_MESSAGE) from None
        return None
    indices = indices.view(*positions, G) if G > 1 else indices.view(positions)
    return QuantizerOutput(
        quantized=out, indices=indices, aux_loss=zero_loss(out), codebook_size=fsq.codebook_size
    )
