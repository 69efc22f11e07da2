"""Channel layout and input validation shared by quantizers that take ``(..., C)``
or channel-first ``(B, C, ...)`` inputs.

Channel-first applies to inputs with 3 or more dimensions (``(B, C, T)``,
``(B, C, H, W)``, ...); 1-D and 2-D inputs are always channel-last.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fsqkit.quantizers.capture import graph_capture


def to_channel_last(z: Tensor, channel_first: bool) -> Tensor:
    """``(B, C, ...) -> (B, ..., C)`` when channel-first, else ``z`` unchanged.

    An explicit permutation of non-negative dimensions: ``movedim(1, -1)`` is
    exported to ONNX as ``Transpose`` with a negative entry, which ONNX Runtime
    rejects."""
    if not (channel_first and z.ndim >= 3):
        return z
    return z.permute(0, *range(2, z.ndim), 1)


def from_channel_last(z: Tensor, channel_first: bool) -> Tensor:
    """Inverse of :func:`to_channel_last`."""
    if not (channel_first and z.ndim >= 3):
        return z
    return z.permute(0, z.ndim - 1, *range(1, z.ndim - 1))


def check_input(
    z: Tensor, dim: int, channel_first: bool, name: str, check_finite: bool = True
) -> None:
    """Raise a clear ``TypeError``/``ValueError`` if ``z`` is not a finite float tensor
    whose channel dimension has size ``dim``."""
    if not isinstance(z, Tensor):
        raise TypeError(f"{name} expects a torch.Tensor, got {type(z).__name__}")
    if not z.is_floating_point():
        raise TypeError(f"{name} expects a floating-point tensor, got dtype {z.dtype}")
    if z.ndim < 1:
        raise ValueError(f"{name} expects a tensor with a channel dimension, got a scalar")
    cf = channel_first and z.ndim >= 3
    if z.shape[1 if cf else -1] != dim:
        where = "dim 1 (channel_first=True)" if cf else "the last dimension"
        raise ValueError(
            f"{name} expected {where} of size dim={dim}, got input of shape {tuple(z.shape)}"
        )
    if check_finite:
        check_finite_values(z, name)


def check_finite_values(z: Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``z`` holds NaN or infinities (one reduction and one
    host read; skipped while a graph is captured)."""
    if not graph_capture() and not bool(torch.isfinite(z).all()):
        raise ValueError(f"{name} input contains NaN or infinite values")


def check_index_tensor(indices: Tensor, size: int, name: str = "indices") -> None:
    """Raise if ``indices`` is not an integer tensor with values in ``[0, size)``.

    The range check reads the minimum and maximum back to the host: it runs in
    eager mode and is skipped while a graph is captured (``torch.compile``,
    ``torch.export``, tracing, ONNX export), where it would be a data-dependent
    branch. Decoding stays memory-safe without it: FSQ's digits are taken modulo
    the levels, and an embedding lookup checks its own bounds."""
    if not isinstance(indices, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(indices).__name__}")
    if indices.dtype.is_floating_point or indices.dtype.is_complex or indices.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got dtype {indices.dtype}")
    if indices.numel() and not graph_capture():
        lo, hi = int(indices.min()), int(indices.max())
        if lo < 0 or hi >= size:
            raise ValueError(
                f"{name} out of range: expected values in [0, {size}), got min {lo}, max {hi}"
            )


def check_positive_int(value: object, name: str) -> int:
    """``value`` as an int, or a ``ValueError`` naming the argument."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value
