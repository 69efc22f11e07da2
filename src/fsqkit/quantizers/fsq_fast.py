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

from fsqkit.quantizers.fsq_edges import bin_edges
from fsqkit.quantizers.fsq_fused import (
    Geometry,
    cached,
    constants_key,
    eligible,
    fused_forward,
    kernel_constants,
)
from fsqkit.quantizers.kernels.build import CpuKernel, get_cpu_kernel, unavailable_reason
from fsqkit.quantizers.output import QuantizerOutput

if TYPE_CHECKING:
    from fsqkit.quantizers.fsq import FSQ

MAX_CHANNELS = 256  # MAXC in fsq_cpu.h
# False forces the tanh forward mode everywhere (tests and benchmarks use it).
USE_BIN_EDGES = True
CPU = torch.device("cpu")


def fast_path_applies(fsq: FSQ, z: object) -> bool:
    """Whether ``fsq(z)`` may take the fused CPU path (cheap checks, no kernel
    build unless everything else qualifies)."""
    if not eligible(fsq, z, "cpu") or fsq.codebook_dim * fsq.num_codebooks > MAX_CHANNELS:
        return False
    kernel = get_cpu_kernel()
    if kernel is None and getattr(fsq, "fast", None):
        raise RuntimeError(
            f"FSQ(fast=True): the fused kernel is unavailable: {unavailable_reason()}"
        )
    return kernel is not None


class _Spec:
    """The CPU kernel for one (module, layout, output dtype)."""

    def __init__(self, kernel: CpuKernel, fsq: FSQ, geometry: Geometry, out_dtype: torch.dtype):
        self.kernel = kernel
        self.consts = kernel_constants(fsq, CPU)
        self.geometry = geometry
        self.out_dtype = out_dtype
        self.D = fsq.codebook_dim
        self.G = fsq.num_codebooks
        self.symmetric = fsq.symmetric
        # Forward by bin edges (no tanh; backward recomputes tanh from the input)
        # where the edges exist and fit the kernel; else tanh in forward, kept for
        # backward.
        found = bin_edges(fsq, CPU) if USE_BIN_EDGES else None
        _, C, inner = geometry
        fits = found is not None and kernel.edges_fit(C, found.num_edges, inner == 1)
        self.edges = found.edges if fits else None

    def run(self, x: Tensor, keep: bool) -> tuple[Tensor, Tensor, Tensor | None, bool]:
        """Codes, int32 indices, what backward needs (``keep``: ``x`` itself in
        bin-edge mode, the float32 tanh in tanh mode) and whether ``x`` held NaN/inf."""
        outer, _, inner = self.geometry
        out = torch.empty(x.shape, dtype=self.out_dtype)
        indices = torch.empty(outer * inner * self.G, dtype=torch.int32)
        args = (self.geometry, self.consts, self.D, self.G, self.symmetric)
        if self.edges is not None:
            bad = self.kernel.forward_edges(x, out, indices, self.geometry, self.edges, *args[1:])
            return out, indices, x if keep else None, bad
        saved_t = torch.empty(x.shape, dtype=torch.float32) if keep else None
        bad = self.kernel.forward(x, out, saved_t, indices, *args)
        return out, indices, saved_t, bad

    def backward(self, grad: Tensor, saved: Tensor, dtype: torch.dtype) -> Tensor:
        """Input gradient from the codes' gradient and what :meth:`run` kept."""
        grad_z = torch.empty(saved.shape, dtype=dtype)
        step = self.kernel.backward_z if self.edges is not None else self.kernel.backward
        step(grad, saved, grad_z, self.geometry, self.consts, self.D, self.symmetric)
        return grad_z


def _spec_for(fsq: FSQ, x: Tensor, geometry: Geometry, out_dtype: torch.dtype) -> _Spec:
    kernel = get_cpu_kernel()
    assert kernel is not None
    key = (geometry, out_dtype, USE_BIN_EDGES, *constants_key(fsq))
    return cached(fsq, "_cpu_specs", key, lambda: _Spec(kernel, fsq, geometry, out_dtype))


def fast_forward(fsq: FSQ, z: Tensor) -> QuantizerOutput | None:
    """``fsq(z)`` through the fused CPU kernel (call after :func:`fast_path_applies`
    and the module's shape checks). None if ``z`` held NaN/inf and ``check_finite``
    is off: the caller then runs the reference path, whose NaN behaviour the
    kernel does not imitate."""
    return fused_forward(fsq, z, _spec_for)
