"""What the residual quantizers share: quantize-dropout settings and masks, and
the validation of stage indices.

Dimension legend: ``B`` batch, ``S`` ``num_stages``, ``n`` stages given.

Quantize dropout (training only): with probability ``quantize_dropout`` a batch
element (dim 0) keeps only its first ``n ~ U{min_stages..S}`` stages in
``quantized``. Indices of all stages are always computed from the clean residual
chain, so they stay in range and decode with ``indices_to_codes(..., num_stages=n)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fsqkit.quantizers.layout import check_index_tensor, check_positive_int


def check_dropout(p: float, min_stages: int, num_stages: int) -> float:
    """Validate quantize-dropout settings; returns ``p`` as a float.

    ``p`` must be a probability: ``True`` is refused rather than taken as 1
    (vector-quantize-pytorch's boolean flag means something else)."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"quantize_dropout must be a probability in [0, 1], got {p!r}")
    check_positive_int(min_stages, "quantize_dropout_min_stages")
    if min_stages > num_stages:
        raise ValueError(
            f"quantize_dropout_min_stages={min_stages} exceeds num_stages={num_stages}"
        )
    return float(p)


def stage_keep_mask(
    shape: torch.Size, num_stages: int, p: float, min_stages: int, device: torch.device
) -> Tensor:
    """Quantize-dropout mask ``(B, 1, ..., 1, S)`` (float, 1 = stage kept) for a
    channel-last input of shape ``shape = (B, ..., C)``: one draw per batch element."""
    b = shape[0] if len(shape) > 1 else 1
    drop = torch.rand(b, device=device) < p  # (B,)
    n = torch.randint(min_stages, num_stages + 1, (b,), device=device)
    n = torch.where(drop, n, torch.full_like(n, num_stages))
    keep = torch.arange(num_stages, device=device) < n.unsqueeze(-1)  # (B, S)
    view = (b,) + (1,) * (len(shape) - 2) + (num_stages,) if len(shape) > 1 else (num_stages,)
    return keep.float().reshape(view)


def dropout_mask(module: torch.nn.Module, shape: torch.Size, device: torch.device) -> Tensor | None:
    """:func:`stage_keep_mask` for a residual ``module`` (its ``num_stages``,
    ``quantize_dropout``, ``quantize_dropout_min_stages``) in training mode with
    dropout on; None otherwise."""
    p = module.quantize_dropout
    if not module.training or p <= 0:
        return None
    return stage_keep_mask(shape, module.num_stages, p, module.quantize_dropout_min_stages, device)


def check_stage_indices(
    indices: Tensor, codebook_size: int, total: int, num_stages: int | None
) -> int:
    """Validate ``(..., n)`` stage indices (``1 <= n <= total``: a prefix of the
    stages may be given) and return how many stages to decode: ``num_stages``
    (at most ``n``) or ``n``."""
    check_index_tensor(indices, codebook_size)
    if indices.ndim == 0 or not 1 <= indices.shape[-1] <= total:
        raise ValueError(
            f"indices must have a trailing dimension of 1 to num_stages={total} stages, "
            f"got shape {tuple(indices.shape)}"
        )
    given = indices.shape[-1]
    if num_stages is None:
        return given
    check_positive_int(num_stages, "num_stages")
    if num_stages > given:
        raise ValueError(
            f"num_stages={num_stages} exceeds the {given} stages in indices "
            f"(the quantizer has {total})"
        )
    return num_stages
