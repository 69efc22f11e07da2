"""The fused CPU path of :class:`~fsqkit.FSQ`.

Dimension legend: ``C = G * D`` quantized channels, ``G`` ``num_codebooks``,
``D = len(levels)``, ``S`` spatial positions of a channel-first input, ``N``
positions in all.

The reference path makes about ten passes over memory and keeps ``tanh`` for
backward. The fused CPU kernel (``fsq_cpu*.c``, built by :mod:`.build`) has two
forward modes:

- *bin edges* (levels up to 64, the usual case): the digit of each element is the
  number of the reference's exact bin edges (:mod:`.edges`) at or below it, so
  the forward pass computes no ``tanh`` at all: one read of the input, one write
  of codes and indices. Backward reads the input and the gradient, computes
  ``tanh`` once and writes the input gradient. Saved for backward: the input
  itself.
- *tanh* (larger levels): forward computes ``tanh`` and, when a gradient is
  needed, keeps it (one float32 tensor) for a one-pass backward.

Codes and indices are bit-identical to the reference path and gradients equal
it bit for bit: the edges come from the reference itself, and where ``tanh`` is
computed the kernel calls torch's own primitive and repeats the reference's
float32 operations in the same order (see ``fsq_cpu.h``).

Not handled here (the reference path runs): more than ``MAX_CHANNELS``
channels, ``floor(x + 0.5)`` rounding (vector-quantize-pytorch's symmetric bins)
without bin edges (the tanh mode rounds half to even), and machines where the
kernel cannot be built (one log line says why).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from fsqkit.quantizers._fsq_backends.build import CpuKernel, get_cpu_kernel, unavailable_reason
from fsqkit.quantizers._fsq_backends.edges import bin_edges
from fsqkit.quantizers._fsq_backends.fused import Geometry, eligible, kernel_constants
from fsqkit.quantizers.fsq_math import FSQConstants

MAX_CHANNELS = 256  # MAXC in fsq_cpu.h
# False forces the tanh forward mode everywhere (tests and benchmarks use it).
USE_BIN_EDGES = True
CPU = torch.device("cpu")


def cpu_path_applies(z: object, c: FSQConstants, channels: int, require: bool) -> bool:
    """Whether ``z`` (with ``channels`` channels) may take the fused CPU path (cheap
    checks, no kernel build unless everything else qualifies). ``require``: raise
    ``RuntimeError`` when the kernel cannot be built (``FSQ(fast=True)``)."""
    if not eligible(z, c, "cpu") or channels > MAX_CHANNELS:
        return False
    kernel = get_cpu_kernel()
    if kernel is None and require:
        raise RuntimeError(
            f"FSQ(fast=True): the fused kernel is unavailable: {unavailable_reason()}"
        )
    return kernel is not None


class CpuSpec:
    """The CPU kernel for one (constants, layout, output dtype)."""

    def __init__(
        self, kernel: CpuKernel, c: FSQConstants, geometry: Geometry, out_dtype: torch.dtype,
        use_edges: bool,
    ) -> None:  # fmt: skip
        self.kernel = kernel
        self.consts = kernel_constants(c, CPU)
        self.geometry = geometry
        self.out_dtype = out_dtype
        _, C, inner = geometry
        self.D = len(c.levels)
        self.G = C // self.D
        self.symmetric = c.symmetric
        # Forward by bin edges (no tanh; backward recomputes tanh from the input)
        # where the edges exist and fit the kernel; else tanh in forward, kept for
        # backward.
        found = bin_edges(c, CPU) if use_edges else None
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


_cached_spec = functools.lru_cache(maxsize=64)(CpuSpec)


def cpu_spec(
    c: FSQConstants, x: Tensor, geometry: Geometry, out_dtype: torch.dtype, check: bool
) -> CpuSpec | None:
    """The spec for ``x`` (cached by value; None where the kernel cannot reproduce
    the reference); the kernel always reports NaN/inf."""
    kernel = get_cpu_kernel()
    assert kernel is not None
    spec = _cached_spec(kernel, c, geometry, out_dtype, USE_BIN_EDGES)
    return None if (spec.edges is None and c.floor_half) else spec
