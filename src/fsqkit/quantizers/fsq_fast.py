"""The fused fast path of :class:`~fsqkit.FSQ` (issue 6).

Dimension legend: ``B`` batch, ``C = G * D`` quantized channels, ``G``
``num_codebooks``, ``D = len(levels)``, ``S`` spatial positions of a
channel-first input, ``N`` positions in all.

The reference path makes about ten passes over memory and keeps ``tanh`` for
backward. The fused CPU kernel (``kernels/fsq_cpu*.c``) has two forward modes:

- *bin edges* (levels up to 64, the usual case): the digit of each element is the
  number of the reference's exact bin edges (:mod:`fsqkit.quantizers.fsq_edges`)
  at or below it, so the forward pass computes no ``tanh`` at all: one read of
  the input, one write of codes and indices. Backward reads the input and the
  gradient, computes ``tanh`` once and writes the input gradient. Saved for
  backward: the input itself.
- *tanh* (larger levels): forward computes ``tanh`` and, when a gradient is
  needed, keeps it (one float32 tensor) for a one-pass backward.

Codes and indices are bit-identical to the reference path and gradients equal
it bit for bit: the edges come from the reference itself, and where ``tanh`` is
computed the kernel calls torch's own primitive and repeats the reference's
float32 operations in the same order (see ``kernels/fsq_cpu.h``).

The FSQ module calls :func:`fast_path_applies` and :func:`fast_forward`; the
reference path stays the fallback for everything not handled here: non-CPU
tensors (CUDA tensors have their own kernels, :mod:`fsqkit.quantizers.fsq_gpu`), float64, training-time dither/passthrough, ``torch.compile`` tracing,
functorch transforms, codebooks of ``2**31`` codes or more, and machines where
the kernel cannot be built (one log line says why).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from fsqkit.quantizers.fsq_edges import bin_edges
from fsqkit.quantizers.kernels.build import CpuKernel, get_cpu_kernel
from fsqkit.quantizers.output import QuantizerOutput, zero_loss

if TYPE_CHECKING:
    from fsqkit.quantizers.fsq import FSQ

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MAX_CHANNELS = 256  # MAXC in fsq_cpu.h
NONFINITE_MESSAGE = "FSQ input contains NaN or infinite values"
# False forces the tanh forward mode everywhere (tests and benchmarks use it).
USE_BIN_EDGES = True


def _transforms_active() -> bool:
    probe = getattr(torch._C._functorch, "are_transforms_active", None)
    return bool(probe()) if probe is not None else False


def fast_path_applies(fsq: FSQ, z: object) -> bool:
    """Whether ``fsq(z)`` may take the fused path (cheap checks, no kernel build
    unless everything else qualifies)."""
    # First: under torch.compile/export the traced graph must use the reference ops.
    if torch.compiler.is_compiling() or torch.jit.is_scripting() or _transforms_active():
        return False
    if getattr(fsq, "fast", None) is False or not isinstance(z, Tensor) or type(z) is not Tensor:
        return False
    if z.device.type != "cpu" or z.dtype not in SUPPORTED_DTYPES or z.numel() == 0:
        return False
    if fsq.training and (fsq.dither > 0 or fsq.passthrough > 0):
        return False
    if fsq.index_dtype != torch.int32 or fsq.codebook_dim * fsq.num_codebooks > MAX_CHANNELS:
        return False
    if fsq.has_projections and fsq._proj_dtype() not in SUPPORTED_DTYPES:
        return False
    kernel = get_cpu_kernel()
    if kernel is None and getattr(fsq, "fast", None):
        from fsqkit.quantizers.kernels.build import unavailable_reason

        raise RuntimeError(
            f"FSQ(fast=True): the fused kernel is unavailable: {unavailable_reason()}"
        )
    return kernel is not None


def _constants(fsq: FSQ) -> dict[str, Tensor]:
    """Per-dimension constants as the reference path sees them (its float32 buffers),
    cached on the module until a buffer changes (``.to()``, ``load_state_dict``)."""
    buffers = (fsq._shift, fsq._half_l, fsq._offset, fsq._half_width, fsq._levels, fsq._basis)
    key = tuple((b.data_ptr(), b._version, b.dtype, b.device) for b in buffers)
    cached = getattr(fsq, "_fast_constants", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    consts = _build_constants(fsq)
    fsq._fast_constants = (key, consts)
    return consts


def _build_constants(fsq: FSQ) -> dict[str, Tensor]:
    f32 = torch.float32
    levels = fsq._levels.to("cpu", f32)
    return {
        "shift": fsq._shift.to("cpu", f32).contiguous(),
        "half_l": fsq._half_l.to("cpu", f32).contiguous(),
        "offset": fsq._offset.to("cpu", f32).contiguous(),
        "half_width": fsq._half_width.to("cpu", f32).contiguous(),
        "lm1": (levels - 1).contiguous(),
        "sym_scale": (2.0 / (levels - 1)).contiguous(),  # as in FSQ.quantize_digits
        "basis": fsq._basis.to("cpu", torch.int32).contiguous(),
    }


class _Spec:
    """Everything the kernel needs besides the tensors."""

    def __init__(
        self,
        kernel: CpuKernel,
        fsq: FSQ,
        geometry: tuple[int, int, int],
        out_dtype: torch.dtype,
    ) -> None:
        self.kernel = kernel
        self.consts = _constants(fsq)
        self.geometry = geometry
        self.out_dtype = out_dtype
        self.D = fsq.codebook_dim
        self.G = fsq.num_codebooks
        self.symmetric = fsq.symmetric
        # Forward by bin edges (no tanh; backward recomputes tanh from the input)
        # where the edges exist and fit the kernel; else tanh in forward, kept for
        # backward.
        found = bin_edges(fsq, torch.device("cpu")) if USE_BIN_EDGES else None
        _, C, inner = geometry
        fits = found is not None and kernel.edges_fit(C, found.num_edges, inner == 1)
        self._found = found  # keeps it alive: _spec_for keys on its id
        self.edges = found.edges if fits else None

    def run(self, x: Tensor, save_t: bool) -> tuple[Tensor, Tensor, Tensor | None, bool]:
        """Codes, int32 indices, the saved tanh (tanh path with ``save_t`` only)
        and whether ``x`` held NaN/inf."""
        outer, _, inner = self.geometry
        out = torch.empty(x.shape, dtype=self.out_dtype)
        indices = torch.empty(outer * inner * self.G, dtype=torch.int32)
        if self.edges is not None:
            bad = self.kernel.forward_edges(
                x,
                out,
                indices,
                self.geometry,
                self.edges,
                self.consts,
                self.D,
                self.G,
                self.symmetric,
            )
            return out, indices, None, bad
        saved_t = torch.empty(x.shape, dtype=torch.float32) if save_t else None
        bad = self.kernel.forward(
            x, out, saved_t, indices, self.geometry, self.consts, self.D, self.G, self.symmetric
        )
        return out, indices, saved_t, bad


def _spec_for(fsq: FSQ, kernel: CpuKernel, geometry, out_dtype) -> _Spec:
    """A cached :class:`_Spec` (rebuilt when a constant buffer changes)."""
    consts = _constants(fsq)
    edges = bin_edges(fsq, torch.device("cpu")) if USE_BIN_EDGES else None
    key = (geometry, out_dtype, id(consts), id(edges), USE_BIN_EDGES)
    cache = fsq.__dict__.setdefault("_cpu_specs", {})
    spec = cache.get(key)
    if spec is None:
        if len(cache) > 32:
            cache.clear()
        spec = cache[key] = _Spec(kernel, fsq, geometry, out_dtype)
    return spec


class _NonFinite(Exception):
    """Raised inside the autograd function so that nothing is recorded."""


class _FusedFSQ(torch.autograd.Function):
    """``x (contiguous) -> (codes, indices)`` with the straight-through gradient.

    Saved for backward: ``x`` itself on the bin-edge path (backward recomputes
    tanh from it), else one float32 tensor of ``tanh`` values; either is one
    tensor of ``x``'s element count, and ``x`` is often kept alive anyway."""

    @staticmethod
    def forward(ctx, x: Tensor, spec: _Spec) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        out, indices, saved_t, bad = spec.run(x, save_t=True)
        if bad:
            raise _NonFinite
        ctx.spec = spec
        ctx.z_dtype = x.dtype
        ctx.save_for_backward(x if saved_t is None else saved_t)
        ctx.mark_non_differentiable(indices)
        return out, indices

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor, _grad_indices: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (saved,) = ctx.saved_tensors
        spec: _Spec = ctx.spec
        grad = grad_out.contiguous()
        if grad.dtype not in SUPPORTED_DTYPES:
            grad = grad.to(spec.out_dtype)
        grad_z = torch.empty(saved.shape, dtype=ctx.z_dtype)
        if spec.edges is not None:
            spec.kernel.backward_z(
                grad, saved, grad_z, spec.geometry, spec.consts, spec.D, spec.symmetric
            )
        else:
            spec.kernel.backward(
                grad, saved, grad_z, spec.geometry, spec.consts, spec.D, spec.symmetric
            )
        return grad_z, None


def _layout(fsq: FSQ, z: Tensor) -> tuple[Tensor, tuple[int, int, int], bool]:
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


def _quantize(fsq: FSQ, kernel: CpuKernel, x: Tensor, geometry, out_dtype) -> tuple[Tensor, Tensor]:
    spec = _spec_for(fsq, kernel, geometry, out_dtype)
    if torch.is_grad_enabled() and x.requires_grad:
        return _FusedFSQ.apply(x, spec)
    out, indices, _, bad = spec.run(x, save_t=False)
    if bad:
        raise _NonFinite
    return out, indices


def fast_forward(fsq: FSQ, z: Tensor) -> QuantizerOutput | None:
    """``fsq(z)`` through the fused kernel (call after :func:`fast_path_applies`
    and the module's shape checks). Returns None if ``z`` turned out to hold
    NaN/inf and ``fsq.check_finite`` is off, so the caller runs the reference path
    (whose NaN behaviour the kernel does not imitate); raises ``ValueError`` on
    NaN/inf when ``check_finite`` is on."""
    kernel = get_cpu_kernel()
    assert kernel is not None
    G = fsq.num_codebooks
    try:
        if not fsq.has_projections:
            x, geometry, moved = _layout(fsq, z)
            codes, indices = _quantize(fsq, kernel, x, geometry, z.dtype)
            out = codes.movedim(-1, 1) if moved else codes
            cf = fsq.channel_first and z.ndim >= 3
            positions = (z.shape[0], *z.shape[2:]) if cf else z.shape[:-1]
        else:
            # Same structure as the reference: project, quantize in float32, project back.
            zp = fsq.project_in(fsq._to_channel_last(z)).contiguous()  # (..., G*D)
            with torch.autocast(device_type="cpu", enabled=False):
                codes, indices = _quantize(
                    fsq, kernel, zp, (zp.numel() // zp.shape[-1], zp.shape[-1], 1), torch.float32
                )
            out = fsq.project_out(codes.to(fsq._proj_dtype())).to(z.dtype)
            out = fsq._from_channel_last(out)
            positions = zp.shape[:-1]
    except _NonFinite:
        if fsq.check_finite and not fsq.has_projections:
            raise ValueError(NONFINITE_MESSAGE) from None
        return None
    indices = indices.view(*positions, G) if G > 1 else indices.view(positions)
    return QuantizerOutput(
        quantized=out, indices=indices, aux_loss=zero_loss(out), codebook_size=fsq.codebook_size
    )
