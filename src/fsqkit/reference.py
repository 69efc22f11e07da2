"""Plain-NumPy version of the paper's formulas, independent of the torch code.

Used by the tests as a second implementation to check :class:`fsqkit.FSQ`
against. Written straight from the paper (arXiv 2309.15505, Sec. 3 and the
official notebook) with the ``tan -> arctanh`` fix, in float64 unless the caller
passes float32 arrays.

Shapes: ``z`` is ``(..., D)`` with ``D = len(levels)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _levels(levels: Sequence[int]) -> np.ndarray:
    return np.asarray(levels, dtype=np.int64)


def bound(z: np.ndarray, levels: Sequence[int], eps: float = 1e-3) -> np.ndarray:
    """``tanh(z + shift) * half_l - offset`` (paper's ``bound``)."""
    lv = _levels(levels)
    half_l = (lv - 1) * (1 - eps) / 2
    offset = np.where(lv % 2 == 0, 0.5, 0.0)
    shift = np.arctanh(offset / half_l)
    return np.tanh(z + shift) * half_l - offset


def quantize(z: np.ndarray, levels: Sequence[int], eps: float = 1e-3) -> np.ndarray:
    """Codes in ``[-1, 1]``: ``round(bound(z)) / (L // 2)`` (round half to even)."""
    half_width = _levels(levels) // 2
    return np.round(bound(z, levels, eps)) / half_width


def quantize_symmetric(z: np.ndarray, levels: Sequence[int]) -> np.ndarray:
    """Symmetric grid (arXiv 2411.19842): ``2/(L-1) * round((L-1)(tanh z + 1)/2) - 1``."""
    lv = _levels(levels)
    return 2.0 / (lv - 1) * np.round((lv - 1) * (np.tanh(z) + 1) / 2) - 1


def basis(levels: Sequence[int]) -> np.ndarray:
    """Mixed-radix basis ``[1, L_1, L_1 L_2, ...]`` (first dimension fastest)."""
    lv = _levels(levels)
    return np.concatenate([[1], np.cumprod(lv[:-1])]).astype(np.int64)


def codes_to_indices(codes: np.ndarray, levels: Sequence[int]) -> np.ndarray:
    """``sum_i (code_i * hw_i + hw_i) * basis_i`` as int64."""
    hw = _levels(levels) // 2
    digits = np.round(codes * hw + hw).astype(np.int64)
    return (digits * basis(levels)).sum(axis=-1)


def codes_to_indices_symmetric(codes: np.ndarray, levels: Sequence[int]) -> np.ndarray:
    lv = _levels(levels)
    digits = np.round((codes + 1) * (lv - 1) / 2).astype(np.int64)
    return (digits * basis(levels)).sum(axis=-1)


def indices_to_codes(indices: np.ndarray, levels: Sequence[int]) -> np.ndarray:
    """Inverse: ``digit_i = (index // basis_i) mod L_i``, ``code_i = (digit_i - hw_i) / hw_i``."""
    lv = _levels(levels)
    hw = lv // 2
    digits = (np.asarray(indices, dtype=np.int64)[..., None] // basis(levels)) % lv
    return (digits - hw) / hw


def implicit_codebook(levels: Sequence[int]) -> np.ndarray:
    """``indices_to_codes(arange(prod(L)))``, shape ``(prod(L), D)``."""
    return indices_to_codes(np.arange(int(np.prod(_levels(levels)))), levels)


def bound_derivative(z: np.ndarray, levels: Sequence[int], eps: float = 1e-3) -> np.ndarray:
    """``d bound / dz = half_l * (1 - tanh(z + shift)^2)``."""
    lv = _levels(levels)
    half_l = (lv - 1) * (1 - eps) / 2
    offset = np.where(lv % 2 == 0, 0.5, 0.0)
    shift = np.arctanh(offset / half_l)
    return half_l * (1 - np.tanh(z + shift) ** 2)
