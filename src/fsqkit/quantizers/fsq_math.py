"""The FSQ formulas as pure torch functions (the reference path).

Dimension legend: ``N`` positions, ``D = len(levels)`` FSQ dimensions.
All functions expect float32 ``z`` of shape ``(..., D)``; the :class:`~fsqkit.FSQ`
module takes care of dtype, layout, projections and codebooks.

Paper (arXiv 2309.15505) and its official notebook:
    half_l = (L - 1) * (1 - eps) / 2
    offset = 0.5 if L is even else 0
    shift  = arctanh(offset / half_l)
    bound(z) = tanh(z + shift) * half_l - offset
    codes  = round_ste(bound(z)) / (L // 2)
Symmetric variant (arXiv 2411.19842, section 3.2):
    digits = round_ste((L - 1) * (tanh(z) + 1) / 2)
    codes  = 2 * digits / (L - 1) - 1
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class FSQConstants:
    """Per-dimension constants derived from the levels, as Python float lists."""

    levels: tuple[int, ...]
    half_l: tuple[float, ...]
    offset: tuple[float, ...]
    shift: tuple[float, ...]
    half_width: tuple[int, ...]
    basis: tuple[int, ...]
    symmetric: bool

    @staticmethod
    def build(levels: Sequence[int], eps: float = 1e-3, symmetric: bool = False) -> FSQConstants:
        levels = tuple(int(v) for v in levels)
        half_l = tuple((v - 1) * (1 - eps) / 2 for v in levels)
        offset = tuple(0.5 if v % 2 == 0 else 0.0 for v in levels)
        shift = tuple(math.atanh(o / h) if not symmetric else 0.0 for o, h in zip(offset, half_l))
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
        )


def round_ste(x: Tensor) -> Tensor:
    """Round to the nearest integer (ties to even), with identity gradient."""
    return x + (torch.round(x) - x).detach()


def bound(z: Tensor, half_l: Tensor, offset: Tensor, shift: Tensor) -> Tensor:
    """The paper's ``bound``: ``tanh(z + shift) * half_l - offset``. Shapes ``(..., D)``
    with ``(D,)`` constants."""
    return torch.tanh(z + shift) * half_l - offset


def scaled_digits_symmetric(z: Tensor, levels: Tensor) -> Tensor:
    """Symmetric variant before rounding: ``(L - 1) * (tanh(z) + 1) / 2`` in ``[0, L-1]``."""
    return (levels - 1) * (torch.tanh(z) + 1) / 2


def digits_to_indices(digits: Tensor, basis: Tensor, dtype: torch.dtype) -> Tensor:
    """Mixed-radix index from integer digits ``(..., D)`` (first dimension fastest).

    Computed in integer arithmetic of ``dtype``, so it is exact whatever the
    precision of the inputs."""
    return (digits.to(dtype) * basis.to(dtype)).sum(dim=-1, dtype=dtype)


def indices_to_digits(indices: Tensor, basis: Tensor, levels: Tensor) -> Tensor:
    """Inverse of :func:`digits_to_indices`: ``(...,)`` -> ``(..., D)`` int64 digits."""
    idx = indices.long().unsqueeze(-1)
    return torch.div(idx, basis.long(), rounding_mode="floor") % levels.long()
