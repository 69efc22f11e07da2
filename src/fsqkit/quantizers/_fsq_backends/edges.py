"""Exact bin edges of FSQ's reference pipeline: quantization without ``tanh``.

Dimension legend: ``D = len(levels)``, ``K = max(levels) - 1`` edges per
dimension, ``W`` the verification half-window (in float32 steps).

Each FSQ digit is a non-decreasing step function of the float32 input: the
reference computes ``round(tanh(z + shift) * half_l - offset)`` (or the
symmetric form), and every step but ``tanh`` is a correctly rounded, monotone
float32 operation. So the digit of dimension ``d`` is fully described by its
``L_d - 1`` *edges*: the smallest float32 ``z`` at which the digit reaches
``k + 1``. With them,

    digit_d(z) = #{k : z >= edges[d, k]}     (edges padded with NaN: never counted)

and the code follows from the digit with the reference's own float32 formula
(``(digit - L//2) / (L//2)``, or ``digit * (2 / (L-1)) - 1`` when symmetric).
A forward pass then needs no transcendental at all: ``K`` comparisons per
element, which is what the fused kernels do (``tanh`` is still computed once,
in backward, for the gradient).

The edges are found by running the reference path itself
(:func:`fsqkit.quantizers.fsq_math.reference_quantize` on the device where the kernel runs, so with that device's ``tanh``) in a
bisection over the float32 bit patterns (33 vectorized steps for all edges at
once), so they reproduce the reference's digits by construction, float for
float. One assumption remains: that the library ``tanh`` is monotone near each
edge. It is checked, not assumed: for every edge, the reference is evaluated on
the ``W = 4096`` consecutive floats on either side, and they must give exactly
digit ``k`` below the edge and ``k + 1`` from it on; and just outside the window
the computed ``tanh`` could move by 64 float32 steps toward the edge without
changing the digit (everything after ``tanh`` is exact and monotone). The exact
``tanh`` is monotone and the libraries' ``tanh`` errs by at most 1-2 ulp (MKL VML
HA, SLEEF u10, CUDA ``tanhf``), so no float outside the windows can land on the
wrong side of an edge. The code formula is checked on
the same floats. If any check fails, :func:`bin_edges` returns None and the
kernels use ``tanh`` for the forward pass as well.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from fsqkit.quantizers.fsq_math import (
    FSQConstants,
    digits_to_codes,
    reference_quantize,
    round_grid,
)

log = logging.getLogger("fsqkit.fast")

MAX_EDGES = 63  # levels up to 64; larger levels quantize through tanh
WINDOW = 4096
MARGIN_ULPS = 64


@dataclass(frozen=True)
class BinEdges:
    """``edges``: ``(D, K)`` float32 (ascending per row, NaN padded) on the
    kernel's device; ``digit_d(z) = (z >= edges[d]).sum()`` for any non-NaN ``z``
    (``+-inf`` too, like the reference: ``tanh(+-inf) = +-1``)."""

    edges: Tensor

    @property
    def num_edges(self) -> int:
        return self.edges.shape[1]


def _to_keys(z: Tensor) -> Tensor:
    """float32 -> int64 keys whose order is the float order (-0 just below +0)."""
    bits = z.contiguous().view(torch.int32).to(torch.int64)
    return torch.where(bits >= 0, bits, -(bits & 0x7FFFFFFF) - 1)


def _from_keys(keys: Tensor) -> Tensor:
    bits = torch.where(keys >= 0, keys, (-keys - 1) - 2**31)
    return bits.to(torch.int32).view(torch.float32)


def _reference(c: FSQConstants, z: Tensor) -> tuple[Tensor, Tensor]:
    """The reference path's ``(codes, digits)`` for float32 ``z (M, D)``."""
    with torch.no_grad(), torch.autocast(device_type=z.device.type, enabled=False):
        codes, digits = reference_quantize(z, c, c.tensors(z.device))
    return codes, digits.to(torch.int64)


def codes_from_digits(c: FSQConstants, digits: Tensor) -> Tensor:
    """The reference's float32 code for integer ``digits (..., D)``: the formula the
    kernels use, in the same float32 operations."""
    return digits_to_codes(digits, c, c.tensors(digits.device))


def _bisect(c: FSQConstants, device: torch.device, levels: Tensor, K: int) -> Tensor:
    """Keys ``(K, D)`` of the smallest float32 with ``digit >= k + 1``."""
    D = levels.numel()
    target = torch.arange(1, K + 1, device=device).unsqueeze(1).expand(K, D)  # (K, D)
    big = torch.tensor(torch.finfo(torch.float32).max, device=device)
    lo = _to_keys(-big).expand(K, D).clone()  # digit(lo) = 0 < target
    hi = _to_keys(big).expand(K, D).clone()  # digit(hi) = L - 1 >= target (valid rows)
    while bool((hi - lo > 1).any()):
        mid = (lo + hi) // 2
        _, digits = _reference(c, _from_keys(mid))
        up = digits >= target
        hi = torch.where(up, mid, hi)
        lo = torch.where(up, lo, mid)
    return hi


def _tanh_of(c: FSQConstants, z: Tensor) -> Tensor:
    """The reference's ``tanh`` value for ``z`` (the one inexact step)."""
    with torch.no_grad():
        return torch.tanh(z if c.symmetric else z + c.tensors(z.device).shift)


def _digits_from_tanh(c: FSQConstants, t: Tensor) -> Tensor:
    """The reference's digit as a function of its ``tanh`` value: exact, monotone
    float32 steps (the same ops as ``fsq_math.grid_value``; checked against it)."""
    consts = c.tensors(t.device)
    with torch.no_grad():
        if c.symmetric:
            return round_grid((consts.levels - 1) * (t + 1) / 2, c).to(torch.int64)
        x = t * consts.half_l - consts.offset
        return (round_grid(x, c) + consts.half_width).to(torch.int64)


def _margin_ok(c: FSQConstants, keys: Tensor, valid: Tensor) -> bool:
    """Just outside each window, ``tanh`` could be off by ``MARGIN_ULPS`` float32
    steps and the digit would not change."""
    inf = torch.tensor(float("inf"), device=keys.device)
    k = torch.arange(keys.shape[0], device=keys.device).unsqueeze(1)
    for side, toward, want in ((-WINDOW - 1, inf, k), (WINDOW, -inf, k + 1)):
        t = _tanh_of(c, _from_keys(keys + side))
        for _ in range(MARGIN_ULPS):
            t = torch.nextafter(t, toward)
        if not bool(((_digits_from_tanh(c, t) == want) | ~valid).all()):
            return False
    return True


def _verify(c: FSQConstants, keys: Tensor, valid: Tensor) -> str:
    """Every edge must split its ``2 * WINDOW`` neighbouring floats cleanly, the
    code formula must match the reference on them, and the window must reach
    far enough from the boundary (:func:`_margin_ok`). Returns what failed, or ''."""
    K, D = keys.shape
    device = keys.device
    keys = torch.where(valid, keys, _to_keys(torch.zeros((), device=device)))
    if not _margin_ok(c, keys, valid):
        return "tanh moves by fewer than 64 float32 steps across an edge's window"
    steps = torch.arange(-WINDOW, WINDOW, device=device).view(-1, 1, 1)  # (2W, 1, 1)
    probe = _from_keys(keys.unsqueeze(0) + steps)  # (2W, K, D)
    codes, digits = _reference(c, probe.reshape(-1, D))
    digits = digits.view(2 * WINDOW, K, D)
    k = torch.arange(K, device=device).view(1, K, 1)
    expected = k + (steps >= 0).to(torch.int64)  # (2W, K, 1)
    if not bool(((digits == expected) | ~valid.unsqueeze(0)).all()):
        return "the digit is not a clean step near an edge (tanh not monotone there)"
    formula = codes_from_digits(c, digits.reshape(-1, D))
    if not torch.equal(formula.view(torch.int32), codes.view(torch.int32)):
        return "the code formula differs from the reference's codes"
    via_tanh = _digits_from_tanh(c, _tanh_of(c, probe.reshape(-1, D)))
    if not torch.equal(via_tanh, digits.reshape(-1, D)):
        return "the digit-from-tanh steps differ from the reference's"
    return ""


def compute_bin_edges(c: FSQConstants, device: torch.device) -> BinEdges | None:
    """Bin edges of the reference pipeline of constants ``c`` on ``device`` (None
    if a level exceeds 64 or a check fails; see the module docstring)."""
    levels = torch.tensor(c.levels, dtype=torch.int64, device=device)
    K = max(c.levels) - 1
    if K > MAX_EDGES or K < 1:
        return None
    valid = torch.arange(K, device=device).unsqueeze(1) < (levels - 1).unsqueeze(0)  # (K, D)
    keys = _bisect(c, device, levels, K)
    failed = _verify(c, keys, valid)
    if failed:
        log.info("fsqkit: no bin edges for levels %s on %s: %s", list(c.levels), device, failed)
        return None
    edges = torch.where(valid, _from_keys(keys), torch.tensor(float("nan"), device=device))
    return BinEdges(edges=edges.t().contiguous())  # (D, K)


@functools.lru_cache(maxsize=32)
def bin_edges(c: FSQConstants, device: torch.device) -> BinEdges | None:
    """:func:`compute_bin_edges`, cached by value (constants and device)."""
    return compute_bin_edges(c, device)
