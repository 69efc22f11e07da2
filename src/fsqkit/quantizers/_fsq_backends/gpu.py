"""The fused CUDA path of :class:`~fsqkit.FSQ` (Triton kernels).

Dimension legend: ``C = G * D`` channels, ``D = len(levels)``, ``G`` codebooks,
``N`` positions.

Forward reads ``z`` once and writes codes and int32 indices once, computing
the reference's float32 operations in its order. Backward reads ``z`` (saved:
the input itself) and the gradient, recomputes ``tanh`` and writes the input
gradient. That is the fewest bytes FSQ can move: 4 + 4 + 4/D bytes per float32
element forward, 12 backward. (Unlike the CPU kernel, the GPU kernel does not
use bin edges: a GPU computes ``tanh`` for free in a memory-bound pass.)

Codes, indices and gradients equal the reference path's bit for bit. The one
thing that cannot be derived is whether libdevice's ``tanhf`` and the
``1 - t*t`` of torch's ``tanh_backward`` (FMA or not) match torch's CUDA
kernels: a probe compares both against the reference on the device at first
use, picks the matching variant, and otherwise disables this path with one log
line (the reference path then runs). No Triton, no path: one log line too.

Applies to CUDA tensors of float32/bfloat16/float16 with int32 indices,
outside ``torch.compile`` tracing and training-time dither.
"""

from __future__ import annotations

import functools
import logging
import threading
from types import ModuleType

import torch
from torch import Tensor

from fsqkit.quantizers._fsq_backends.fused import Geometry, eligible, kernel_constants
from fsqkit.quantizers.fsq_math import FSQConstants, digits_to_indices, reference_quantize

log = logging.getLogger("fsqkit.fast")

TILE_ELEMENTS = 4096  # elements per Triton program
NUM_WARPS: int | None = None  # None: 8 for tiles of 2048 elements or more, else 4
# Opt-in: 1-D "row" programs (channel-first forward with one codebook, and
# backward) instead of 2-D tiles. Bit-identical results; which is faster is to be
# measured on a GPU (benchmarks/triton_variants.py runs both).
ROW_KERNELS = False
ROW_BLOCK = 1024

_lock = threading.Lock()
_state: dict[str, object] = {"tried": False, "module": None, "reason": None}
_probed: dict[torch.device, bool | None] = {}  # device -> FMA flag (None: probe failed)


def triton_kernels() -> ModuleType | None:
    """:mod:`.triton_kernels` if Triton imports, else None (after one log line)."""
    if not _state["tried"]:
        with _lock:
            if not _state["tried"]:
                try:
                    import fsqkit.quantizers._fsq_backends.triton_kernels as kernels

                    _state["module"] = kernels
                except Exception as exc:  # ImportError, or a broken Triton install
                    _state["reason"] = f"Triton unavailable ({type(exc).__name__}: {exc})"
                    log.warning("fsqkit: %s; CUDA FSQ uses the reference path", _state["reason"])
                _state["tried"] = True
    return _state["module"]  # type: ignore[return-value]


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


class GpuSpec:
    """Constants and launch geometry for one ``(constants, device, layout)``."""

    def __init__(
        self,
        c: FSQConstants,
        device: torch.device,
        geometry: Geometry,
        fma: bool,
        out_dtype: torch.dtype = torch.float32,
        check: bool = False,
    ) -> None:
        self.kernels = triton_kernels()
        k = self.kernels
        assert k is not None
        kc = kernel_constants(c, device)
        pow2 = all(h & (h - 1) == 0 for h in c.half_width)
        self.mode = k.MODE_SYM if c.symmetric else (k.MODE_MULINV if pow2 else k.MODE_DIV)
        zeros = torch.zeros_like(kc["shift"])
        sym = c.symmetric
        # per dimension, as the kernels take them (see triton_kernels._quantize)
        self.shift = zeros if sym else kc["shift"]
        self.b = kc["lm1"] if sym else kc["half_l"]
        self.offset = zeros if sym else kc["offset"]
        self.h = kc["sym_scale"] if sym else kc["half_width"]
        self.inv = kc["inv_half_width"]
        self.lm1 = kc["lm1"]
        self.basis = kc["basis"]
        self.out_dtype = out_dtype
        self.check = check  # report NaN/inf (one device-to-host read per call)
        self._no_flag = torch.zeros(1, dtype=torch.int32, device=device)  # written, never read
        outer, C, inner = geometry
        self.D = len(c.levels)
        self.G = C // self.D
        self.fma = fma
        self.geometry = geometry
        self.C, self.C_PAD, self.cf = C, _next_pow2(C), inner > 1
        self.n_pos = outer * inner
        per_tile = max(1, TILE_ELEMENTS // self.C_PAD)
        if self.cf:
            self.block = min(_next_pow2(inner), per_tile)
            self.grid = (outer * triton_cdiv(inner, self.block),)
        else:
            self.block = min(_next_pow2(self.n_pos), per_tile)
            self.grid = (triton_cdiv(self.n_pos, self.block),)
        self.num_warps = NUM_WARPS or (8 if self.block * self.C_PAD >= 2048 else 4)
        self.rows = ROW_KERNELS

    def run(self, x: Tensor, keep: bool) -> tuple[Tensor, Tensor, Tensor | None, bool]:
        """The fused-path spec protocol (:mod:`.fused`): backward
        needs ``x`` itself; NaN/inf is reported only when :attr:`check`."""
        codes, indices, flag = self.forward(x, self.out_dtype)
        return codes, indices, x if keep else None, self.check and bool(flag.item())

    def forward(self, x: Tensor, out_dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        """``(codes, indices (N * G,), nonfinite flag (1,))`` for contiguous ``x``;
        the flag is meaningful only when :attr:`check`."""
        codes = torch.empty(x.shape, dtype=out_dtype, device=x.device)
        indices = torch.empty(self.n_pos * self.G, dtype=torch.int32, device=x.device)
        flag = torch.zeros(1, dtype=torch.int32, device=x.device) if self.check else self._no_flag
        outer, _, inner = self.geometry
        if self.rows and self.cf and self.G == 1:
            block = min(_next_pow2(inner), ROW_BLOCK)
            self.kernels.fsq_forward_rows_kernel[(outer, triton_cdiv(inner, block))](
                x, codes, indices, flag, self.shift, self.b, self.offset, self.h, self.inv,
                self.lm1, self.basis, inner,
                C=self.C, D=self.D, MODE=self.mode, BLOCK=block, num_warps=4,
                enable_reflect_ftz=False,
            )  # fmt: skip
            return codes, indices, flag
        self.kernels.fsq_forward_kernel[self.grid](
            x, codes, indices, flag, self.shift, self.b, self.offset, self.h, self.inv,
            self.lm1, self.basis, self.n_pos, inner,
            C=self.C, C_PAD=self.C_PAD, D=self.D, G=self.G, MODE=self.mode, CF=self.cf,
            BLOCK=self.block, num_warps=self.num_warps, enable_reflect_ftz=False,
        )  # fmt: skip
        return codes, indices, flag

    def backward(self, grad: Tensor, x: Tensor, out_dtype: torch.dtype) -> Tensor:
        """Input gradient (``x``'s shape, ``out_dtype``) from the codes' gradient and
        the saved input ``x``."""
        grad_z = torch.empty(x.shape, dtype=out_dtype, device=x.device)
        outer, _, inner = self.geometry
        if self.rows:
            n = x.numel()
            block = min(_next_pow2(inner if self.cf else n), ROW_BLOCK)
            grid = (
                (outer * self.C, triton_cdiv(inner, block)) if self.cf else (triton_cdiv(n, block),)
            )
            self.kernels.fsq_backward_rows_kernel[grid](
                grad, x, grad_z, self.shift, self.b, self.inv, self.h, n, inner,
                C=self.C, D=self.D, MODE=self.mode, FMA=self.fma, CF=self.cf, BLOCK=block,
                num_warps=4, enable_reflect_ftz=False,
            )  # fmt: skip
            return grad_z
        self.kernels.fsq_backward_kernel[self.grid](
            grad, x, grad_z, self.shift, self.b, self.inv, self.h, self.n_pos, inner,
            C=self.C, C_PAD=self.C_PAD, D=self.D, MODE=self.mode, FMA=self.fma, CF=self.cf,
            BLOCK=self.block, num_warps=self.num_warps, enable_reflect_ftz=False,
        )  # fmt: skip
        return grad_z


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


@functools.lru_cache(maxsize=64)
def _cached_spec(
    c: FSQConstants, device: torch.device, geometry: Geometry, out_dtype: torch.dtype,
    fma: bool, check: bool, settings: tuple,
) -> GpuSpec:  # fmt: skip
    return GpuSpec(c, device, geometry, fma, out_dtype, check)


def gpu_spec(
    c: FSQConstants, x: Tensor, geometry: Geometry, out_dtype: torch.dtype, check: bool
) -> GpuSpec | None:
    """The spec for ``x``, cached by value (constants, device, layout and launch
    settings); None if the probe failed. ``check``: report NaN/inf (one 4-byte
    device-to-host read, where the reference path reduces ``isfinite`` over the
    whole input). Without it, NaN and infinities go through the same operations
    as in the reference."""
    fma = probe(x.device)
    if fma is None:
        return None
    settings = (ROW_KERNELS, ROW_BLOCK, TILE_ELEMENTS, NUM_WARPS)
    return _cached_spec(c, x.device, geometry, out_dtype, fma, check, settings)


def gpu_path_applies(z: object, c: FSQConstants) -> bool:
    """Cheap checks first; the Triton import and the probe run once. The kernels
    round half to even: ``floor(x + 0.5)`` rounding takes the reference path."""
    return eligible(z, c, "cuda") and not c.floor_half and triton_kernels() is not None


def probe(device: torch.device) -> bool | None:
    """At first use on ``device``: run the kernels against the reference path on a
    probe (both ``tanh_backward`` variants) and return the FMA flag that matches
    bit for bit, or None (after one log line) if neither does."""
    if device in _probed:
        return _probed[device]
    with _lock:
        if device not in _probed:
            try:
                _probed[device] = _run_probe(device)
            except Exception as exc:  # a Triton or driver that cannot compile/launch them
                log.warning(
                    "fsqkit: the Triton FSQ kernels failed on %s (%s: %s); CUDA FSQ uses the "
                    "reference path",
                    device,
                    type(exc).__name__,
                    exc,
                )
                _probed[device] = None
    return _probed[device]


def _run_probe(device: torch.device) -> bool | None:
    gen = torch.Generator().manual_seed(0)
    cases = (([8, 5, 5, 5], False), ([7, 6, 5], False), ([8, 5, 3], True))
    found: bool | None = None
    with torch.enable_grad():
        for fma in (True, False):
            if all(_probe_case(levels, sym, fma, device, gen) for levels, sym in cases):
                found = fma
                break
    if found is None:
        log.warning(
            "fsqkit: the Triton FSQ kernels do not reproduce torch's CUDA results bit for bit "
            "on %s; CUDA FSQ uses the reference path",
            device,
        )
    return found


def _probe_case(
    levels: list[int], symmetric: bool, fma: bool, device: torch.device, gen: torch.Generator
) -> bool:
    """The kernels against the reference path (codes, indices, gradient) on one case."""
    c = FSQConstants.build(levels, symmetric=symmetric)
    t = c.tensors(device)
    z = (torch.randn(65536, len(levels), generator=gen) * 3).to(device)
    spec = GpuSpec(c, device, (z.shape[0], len(levels), 1), fma)
    codes, indices, _ = spec.forward(z, torch.float32)
    zr = z.clone().requires_grad_()
    ref_codes, ref_digits = reference_quantize(zr, c, t)
    g = torch.randn(z.shape, generator=gen).to(device)
    ref_codes.backward(g)
    grad = spec.backward(g, z, torch.float32)
    return (
        torch.equal(codes.view(torch.int32), ref_codes.detach().view(torch.int32))
        and torch.equal(indices.long(), digits_to_indices(ref_digits, t.basis, torch.int64))
        and torch.equal(grad.view(torch.int32), zr.grad.view(torch.int32))
    )
