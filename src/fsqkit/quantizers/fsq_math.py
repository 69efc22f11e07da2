"""The FSQ formulas as pure torch functions (the reference path), and the
immutable constants they use.

Dimension legend: ``N`` positions, ``D = len(levels)`` FSQ dimensions.
All functions expect float32 ``z`` of shape ``(..., D)``; the :class:`~fsqkit.FSQ`
module takes care of dtype, layout, projections and codebooks.

Paper (arXiv 2309.15505) and its official notebook (``bound="paper"``):
    half_l = (L - 1) * (1 - eps) / 2
    offset = 0.5 if L is even else 0
    shift  = arctanh(offset / half_l)
    bound(z) = tanh(z + shift) * half_l - offset
    codes  = round_ste(bound(z)) / (L // 2)
Symmetric variant (arXiv 2411.19842, section 3.2):
    digits = round_ste((L - 1) * (tanh(z) + 1) / 2)
    codes  = 2 * digits / (L - 1) - 1
``bound="vq-pytorch"`` reproduces vector-quantize-pytorch's bins: ``half_l =
(L - 1) * (1 + eps) / 2`` with every constant derived in float32 as it does, and
in the symmetric variant ``floor(x + 0.5)`` instead of rounding half to even.

Rounding is otherwise half to even (``torch.round``). Digits are clamped to ``[0, L - 1]``
(a no-op for finite inputs) and a NaN input gets digit 0, so indices are always
in range; its code stays NaN.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from fsqkit.quantizers.capture import graph_capture
from fsqkit.quantizers.output import index_dtype

BOUNDS = ("paper", "vq-pytorch")


@dataclass(frozen=True)
class FSQConstants:
    """Per-dimension constants derived from the levels, as Python numbers.

    Immutable and hashable: modules keep one, module casts (``.half()``,
    ``.to(dtype)``) cannot touch it, and derived tensors (:meth:`tensors`) and
    kernel data are cached by its value, never on a module."""

    levels: tuple[int, ...]
    half_l: tuple[float, ...]
    offset: tuple[float, ...]
    shift: tuple[float, ...]
    half_width: tuple[int, ...]
    basis: tuple[int, ...]
    symmetric: bool
    eps: float = 1e-3
    bound: str = "paper"

    @staticmethod
    def build(
        levels: Sequence[int], eps: float = 1e-3, symmetric: bool = False, bound: str = "paper"
    ) -> FSQConstants:
        """Constants of ``levels``: float64 formulas rounded once to float32 for
        ``bound="paper"``; vector-quantize-pytorch's float32 torch operations for
        ``bound="vq-pytorch"`` (so its bins are reproduced bit for bit)."""
        if bound not in BOUNDS:
            raise ValueError(f"bound must be one of {BOUNDS}, got {bound!r}")
        levels = tuple(int(v) for v in levels)
        offset = tuple(0.5 if v % 2 == 0 else 0.0 for v in levels)
        if bound == "paper":
            half_l = tuple((v - 1) * (1 - eps) / 2 for v in levels)
            shift = tuple(0.0 if symmetric else math.atanh(o / h) for o, h in zip(offset, half_l))
        else:
            lv = torch.tensor(levels, dtype=torch.int32)
            half_l_t = (lv - 1) * (1 + eps) / 2
            shift_t = torch.atanh(torch.tensor(offset) / half_l_t)
            half_l = tuple(half_l_t.tolist())
            shift = tuple(0.0 if symmetric else s for s in shift_t.tolist())
        basis = [1]
        for v in levels[:-1]:
            basis.append(basis[-1] * v)
        return FSQConstants(
            levels=levels,
            half_l=half_l,
            offset=offset,
            shift=shift,
            half_width=tuple(v // 2 for v in levels),
            basis=tuple(basis),
            symmetric=symmetric,
            eps=float(eps),
            bound=bound,
        )

    @property
    def codebook_size(self) -> int:
        """``prod(levels)`` as an exact Python int."""
        return math.prod(self.levels)

    @property
    def floor_half(self) -> bool:
        """Whether digits round as ``floor(x + 0.5)`` (vector-quantize-pytorch's
        symmetric variant) instead of half to even."""
        return self.symmetric and self.bound == "vq-pytorch"

    def tensors(self, device: torch.device | str | None = None) -> FSQTensors:
        """The constants as tensors on ``device`` (CPU by default): cached by value
        in eager mode, built afresh while a graph is captured (``torch.compile``,
        ``torch.export``, tracing), so the graph holds plain constants."""
        device = torch.device("cpu" if device is None else device)
        if graph_capture():
            return _build_tensors(self, device)
        return _cached_tensors(self, device)


@dataclass(frozen=True)
class FSQTensors:
    """:class:`FSQConstants` on one device, shapes ``(D,)``: float32 ``levels,
    half_l, offset, shift, half_width``; ``basis`` in the index dtype (int32 below
    ``2**31`` codes, else int64) and int64 ``levels_long``, ``basis_long`` for
    decoding (no float-to-integer conversion in a graph)."""

    levels: Tensor
    half_l: Tensor
    offset: Tensor
    shift: Tensor
    half_width: Tensor
    basis: Tensor
    levels_long: Tensor
    basis_long: Tensor


def constant_tensor(
    values: tuple, dtype: torch.dtype, device: torch.device | str | None = None
) -> Tensor:
    """``torch.tensor(values, dtype=dtype)`` on ``device`` (CPU by default), cached by
    value in eager mode and built afresh while a graph is captured, like
    :meth:`FSQConstants.tensors`. ``values``: nested tuples of Python numbers."""
    device = torch.device("cpu" if device is None else device)
    if graph_capture():
        return torch.tensor(values, dtype=dtype, device=device)
    return _cached_constant(values, dtype, device)


@functools.lru_cache(maxsize=256)
def _cached_constant(values: tuple, dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.tensor(values, dtype=dtype, device=device)


def _build_tensors(c: FSQConstants, device: torch.device) -> FSQTensors:
    f32, i64 = torch.float32, torch.int64
    # The basis of a codebook beyond int64 is never used for indices; keep it finite.
    basis = [min(b, 2**63 - 1) for b in c.basis]
    return FSQTensors(
        levels=torch.tensor(c.levels, dtype=f32, device=device),
        half_l=torch.tensor(c.half_l, dtype=f32, device=device),
        offset=torch.tensor(c.offset, dtype=f32, device=device),
        shift=torch.tensor(c.shift, dtype=f32, device=device),
        half_width=torch.tensor(c.half_width, dtype=f32, device=device),
        basis=torch.tensor(basis, dtype=index_dtype(c.codebook_size), device=device),
        levels_long=torch.tensor(c.levels, dtype=i64, device=device),
        basis_long=torch.tensor(basis, dtype=i64, device=device),
    )


@functools.lru_cache(maxsize=256)
def _cached_tensors(c: FSQConstants, device: torch.device) -> FSQTensors:
    return _build_tensors(c, device)


# ------------------------------------------------------------------ formulas
def round_ste(x: Tensor) -> Tensor:
    """Round to the nearest integer (ties to even), with identity gradient."""
    return x + (torch.round(x) - x).detach()


def floor_half_ste(x: Tensor) -> Tensor:
    """``floor(x + 0.5)`` with identity gradient (vector-quantize-pytorch's
    symmetric rounding)."""
    b = x + 0.5
    return b + (torch.floor(b) - b).detach()


def bound(z: Tensor, half_l: Tensor, offset: Tensor, shift: Tensor) -> Tensor:
    """The paper's ``bound``: ``tanh(z + shift) * half_l - offset``. Shapes ``(..., D)``
    with ``(D,)`` constants."""
    return torch.tanh(z + shift) * half_l - offset


def scaled_digits_symmetric(z: Tensor, levels: Tensor) -> Tensor:
    """Symmetric variant before rounding: ``(L - 1) * (tanh(z) + 1) / 2`` in ``[0, L-1]``."""
    return (levels - 1) * (torch.tanh(z) + 1) / 2


def grid_value(z: Tensor, c: FSQConstants, t: FSQTensors) -> Tensor:
    """The value FSQ rounds: ``bound(z)`` (in ``[-L//2, L//2]``) or, symmetric,
    the scaled ``tanh`` in ``[0, L - 1]``; ``(..., D)``."""
    if c.symmetric:
        return scaled_digits_symmetric(z, t.levels)
    return bound(z, t.half_l, t.offset, t.shift)


def round_grid(x: Tensor, c: FSQConstants) -> Tensor:
    """:func:`grid_value` rounded to the grid, straight-through."""
    return floor_half_ste(x) if c.floor_half else round_ste(x)


def clamped_digits(rounded: Tensor, c: FSQConstants, t: FSQTensors, nan_to_zero: bool) -> Tensor:
    """Integer digits in ``[0, L)`` (float32) of the rounded grid value.

    The clamp is a no-op for finite inputs (the bound keeps the value inside the
    grid); it guarantees in-range indices whatever float rounding does. With
    ``nan_to_zero`` a NaN gets digit 0 (one more operation, needed only where
    the input was not checked for NaN)."""
    digits = rounded if c.symmetric else rounded + t.half_width
    digits = torch.minimum(digits.clamp_min(0), t.levels - 1)
    return nan_to_zero_(digits) if nan_to_zero else digits


def nan_to_zero_(digits: Tensor) -> Tensor:
    """``digits`` with NaN replaced by 0 (the lowest level): a NaN input must not
    become index ``-2**31`` when converted to an integer."""
    return torch.where(torch.isnan(digits), 0.0, digits)


def codes_from_grid(q: Tensor, c: FSQConstants, t: FSQTensors) -> Tensor:
    """Normalised codes in ``[-1, 1]`` from the (rounded) grid value ``q``."""
    if c.symmetric:
        return q * (2.0 / (t.levels - 1)) - 1.0
    return q / t.half_width


def reference_quantize(
    z: Tensor, c: FSQConstants, t: FSQTensors, nan_to_zero: bool = True
) -> tuple[Tensor, Tensor]:
    """The reference path on float32 ``z (..., D)``: ``(codes, digits)``, codes with
    the straight-through gradient, digits float32 in ``[0, L)`` (detached)."""
    q = round_grid(grid_value(z, c, t), c)
    return codes_from_grid(q, c, t), clamped_digits(q.detach(), c, t, nan_to_zero)


def digits_to_codes(digits: Tensor, c: FSQConstants, t: FSQTensors) -> Tensor:
    """Codes of integer digits ``(..., D)`` (any dtype), the reference's float32
    formula: ``(d - L//2) / (L//2)`` or, symmetric, ``d * (2 / (L - 1)) - 1``."""
    d = digits.to(torch.float32)
    if c.symmetric:
        return d * (2.0 / (t.levels - 1)) - 1.0
    return (d - t.half_width) / t.half_width


def digits_to_indices(digits: Tensor, basis: Tensor, dtype: torch.dtype) -> Tensor:
    """Mixed-radix index from integer digits ``(..., D)`` (first dimension fastest).

    Computed in integer arithmetic of ``dtype``, so it is exact whatever the
    precision of the inputs."""
    return (digits.to(dtype) * basis.to(dtype)).sum(dim=-1, dtype=dtype)


def indices_to_digits(indices: Tensor, basis: Tensor, levels: Tensor) -> Tensor:
    """Inverse of :func:`digits_to_indices`: ``(...,)`` -> ``(..., D)`` int64 digits,
    with int64 ``basis`` and ``levels``. Total: any integer maps to in-range digits."""
    idx = indices.long().unsqueeze(-1)
    return torch.div(idx, basis, rounding_mode="floor") % levels
