"""vector-quantize-pytorch 1.32's ``ResidualFSQ`` and ``GroupedResidualFSQ``.

Dimension legend: ``B`` batch, ``N`` positions, ``C`` ``dim``, ``D = len(levels)``,
``Q`` ``num_quantizers``, ``G`` groups.

vector-quantize-pytorch's residual FSQ is not :class:`fsqkit.ResidualFSQ`: the
input is soft-clamped, ``x = c tanh(z / c)`` with ``c = 1 + 1 / (L - 1)``; every
stage ``s`` (stage 0 included) quantizes ``clamp(r_s / L^-s, -1, 1)`` to ``L``
symmetric levels with ``floor(y + 0.5)`` and scales the code back by ``L^-s``;
the straight-through gradient passes through every stage's clamp; quantize
dropout cuts all stages after one random index for the whole batch (indices
-1). This module computes exactly that, with the same float operations in the
same order, so values, indices and gradients equal vector-quantize-pytorch's;
indices come from the integer digits (exact for any codebook size). The stage
scales and clamp values are constants (module casts do not change them).
fsqkit's own ``ResidualFSQ(stage_scale="L")`` is the same idea in fsqkit's
conventions (FSQ's stage 0, per-element quantize dropout).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from fsqkit.compat.vector_quantize_pytorch._args import refuse_unknown, refuse_unsupported
from fsqkit.compat.vector_quantize_pytorch._dropout import LayerDropout, dropout_seed
from fsqkit.quantizers.fsq_math import (
    FSQConstants,
    constant_tensor,
    digits_to_indices,
    floor_half_ste,
    indices_to_digits,
    nan_to_zero_,
)
from fsqkit.quantizers.layout import check_positive_int, to_channel_last
from fsqkit.quantizers.levels import validate_levels

# Keyword arguments vector-quantize-pytorch passes on to its FSQ layers.
LAYER_ARGS = {
    "projection_has_bias": True,
    "allowed_dtypes": (torch.float32, torch.float64),
    "force_quantization_f32": True,
}
UNSUPPORTED_LAYER_ARGS = {
    "num_codebooks": 1,
    "keep_num_codebooks_dim": None,
    "scale": None,
    "channel_first": False,
    "return_indices": True,
    "noise_dropout": 0.0,
    "orthogonal_rotation": False,
}


def _flatten_channel_first(x: Tensor) -> tuple[Tensor, torch.Size]:
    """``(B, C, ...) -> (B, N, C)`` and the spatial shape."""
    spatial = x.shape[2:]
    return to_channel_last(x, True).reshape(x.shape[0], -1, x.shape[1]), spatial


def _restore_channel_first(y: Tensor, spatial: torch.Size) -> Tensor:
    """``(B, N, K) -> (B, K, ...)``."""
    return y.reshape(y.shape[0], *spatial, y.shape[-1]).movedim(-1, 1)


class ResidualFSQ(nn.Module):
    """vector-quantize-pytorch's ``ResidualFSQ``: ``quantized, indices = rq(x)``.

    Args (keyword-only, as in vector-quantize-pytorch 1.32):
        levels: levels per dimension (>= 2).
        num_quantizers: ``Q`` stages.
        dim: input channels; projections when it differs from ``len(levels)``.
        is_channel_first: inputs are ``(B, C, ...)``; indices come out ``(B, Q, ...)``.
        quantize_dropout: a flag (``True``/``False``): in training with gradients
            on, all stages after one random index (drawn from
            ``[quantize_dropout_cutoff_index, Q)``, rounded up to a multiple of
            ``quantize_dropout_multiple_of``) are dropped for the whole batch,
            with indices -1.
        soft_clamp_input_value: with ``bound_hard_clamp=False``, the soft clamp of
            the input (None: none).
        bound_hard_clamp: stages clamp to ``[-1, 1]`` (else ``tanh``); the input is
            soft-clamped at ``1 + 1 / (L - 1)``.
        **kwargs: vector-quantize-pytorch's FSQ-layer arguments at their defaults.

    Example::

        >>> import torch
        >>> from fsqkit.compat.vector_quantize_pytorch import ResidualFSQ
        >>> residual_fsq = ResidualFSQ(dim=256, levels=[8, 5, 5, 3], num_quantizers=8)
        >>> x = torch.randn(1, 1024, 256)
        >>> residual_fsq = residual_fsq.eval()
        >>> quantized, indices = residual_fsq(x)
        >>> quantized.shape, indices.shape
        (torch.Size([1, 1024, 256]), torch.Size([1, 1024, 8]))
        >>> bool(torch.all(quantized == residual_fsq.get_output_from_indices(indices)))
        True
    """

    def __init__(
        self,
        *,
        levels: Sequence[int],
        num_quantizers: int,
        dim: int | None = None,
        is_channel_first: bool = False,
        quantize_dropout: bool = False,
        quantize_dropout_cutoff_index: int = 0,
        quantize_dropout_multiple_of: int = 1,
        soft_clamp_input_value: float | Sequence[float] | Tensor | None = None,
        bound_hard_clamp: bool = True,
        **kwargs: object,
    ) -> None:
        super().__init__()
        refuse_unsupported("ResidualFSQ", kwargs, UNSUPPORTED_LAYER_ARGS)
        refuse_unsupported("ResidualFSQ", kwargs, LAYER_ARGS)
        refuse_unknown("ResidualFSQ", kwargs, set(LAYER_ARGS) | set(UNSUPPORTED_LAYER_ARGS))
        self.levels = validate_levels(levels, allow_two=True)
        self.num_quantizers = check_positive_int(num_quantizers, "num_quantizers")
        self.dropout = LayerDropout.build(
            quantize_dropout, quantize_dropout_cutoff_index, quantize_dropout_multiple_of,
            self.num_quantizers,
        )  # fmt: skip
        self.quantize_dropout = self.dropout.enabled
        codebook_dim = len(self.levels)
        self.dim = codebook_dim if dim is None else check_positive_int(dim, "dim")
        self.is_channel_first = is_channel_first
        self.has_projections = self.dim != codebook_dim
        self.project_in: nn.Module = (
            nn.Linear(self.dim, codebook_dim) if self.has_projections else nn.Identity()
        )
        self.project_out: nn.Module = (
            nn.Linear(codebook_dim, self.dim) if self.has_projections else nn.Identity()
        )
        self.bound_hard_clamp = bound_hard_clamp
        if bound_hard_clamp and soft_clamp_input_value is not None:
            raise ValueError("soft_clamp_input_value needs bound_hard_clamp=False")
        self.constants = FSQConstants.build(self.levels, symmetric=True, bound="vq-pytorch")
        self.codebook_size = self.constants.codebook_size
        levels_t = torch.tensor(self.levels)
        # vector-quantize-pytorch's float32 stage scales L^-s (Q, D) and soft clamp.
        self._scales = tuple(
            tuple((levels_t.float() ** -s).tolist()) for s in range(self.num_quantizers)
        )
        clamp: Tensor | None = None
        if bound_hard_clamp:
            clamp = 1 + (1 / (levels_t - 1))
        elif soft_clamp_input_value is not None:
            clamp = torch.as_tensor(soft_clamp_input_value, dtype=torch.float32)
        self._clamp = None if clamp is None else tuple(clamp.reshape(-1).tolist())

    @property
    def scales(self) -> Tensor:
        """Per-stage scales ``L^-s``, ``(Q, D)`` float32."""
        return constant_tensor(self._scales, torch.float32)

    @property
    def codebooks(self) -> Tensor:
        """Each stage's (unscaled) implicit codebook, ``(Q, K, D)``."""
        codes = self._digits_to_codes(self._digits(torch.arange(self.codebook_size)))
        return codes.unsqueeze(0).expand(self.num_quantizers, -1, -1)

    def _digits(self, indices: Tensor) -> Tensor:
        t = self.constants.tensors(indices.device)
        return indices_to_digits(indices, t.basis_long, t.levels_long)

    def _digits_to_codes(self, digits: Tensor) -> Tensor:
        lm1 = self.constants.tensors(digits.device).levels - 1
        return digits.to(torch.int32) * (2.0 / lm1) - 1.0

    def _stage(self, residual: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
        """One stage on ``residual (B, N, D)``: scaled codes with the straight-through
        gradient and int32 indices ``(B, N)``."""
        t = self.constants.tensors(residual.device)
        z = residual / scale
        orig_dtype = z.dtype
        if z.dtype not in (torch.float32, torch.float64):
            z = z.float()
        lm1 = t.levels - 1
        bounded = z.clamp(-1.0, 1.0) if self.bound_hard_clamp else torch.tanh(z)
        q = floor_half_ste(lm1 * (bounded + 1) / 2.0)
        codes = (2.0 / lm1) * q - 1.0
        digits = nan_to_zero_(q.detach())
        indices = digits_to_indices(digits, t.basis, torch.int32)
        return codes.to(orig_dtype) * scale, indices

    def forward(
        self,
        x: Tensor,
        return_all_codes: bool = False,
        rand_quantize_dropout_fixed_seed: int | None = None,
    ) -> tuple[Tensor, ...]:
        """``x``: ``(B, N, C)`` (``(B, C, ...)`` with ``is_channel_first``). Returns
        ``(quantized, indices)``, indices ``(B, N, Q)`` (``(B, Q, ...)`` channel-first),
        plus ``all_codes (Q, B, ..., D)`` with ``return_all_codes``."""
        spatial = None
        if self.is_channel_first:
            x, spatial = _flatten_channel_first(x)
        x = self.project_in(x)
        if self._clamp is not None:
            clamp = constant_tensor(self._clamp, torch.float32, x.device)
            x = (x / clamp).tanh() * clamp
        cut = self.num_quantizers
        if self.training and self.quantize_dropout and torch.is_grad_enabled():
            cut = self.dropout.kept(x.device, rand_quantize_dropout_fixed_seed)
        scales = constant_tensor(self._scales, torch.float32, x.device)
        quantized_out: Tensor | float = 0.0
        residual = x
        all_indices = []
        for s in range(self.num_quantizers):
            if s >= cut:
                all_indices.append(torch.full(x.shape[:-1], -1, dtype=torch.long, device=x.device))
                continue
            quantized, indices = self._stage(residual, scales[s])
            residual = residual - quantized.detach()
            quantized_out = quantized_out + quantized
            all_indices.append(indices)
        out = self.project_out(quantized_out)
        indices = torch.stack(all_indices, dim=-1)
        codes = self.get_codes_from_indices(indices) if return_all_codes else None
        if spatial is not None:
            out, indices = (
                _restore_channel_first(out, spatial),
                _restore_channel_first(indices, spatial),
            )
            if codes is not None:
                codes = codes.reshape(*codes.shape[:2], *spatial, codes.shape[-1])
        return (out, indices) if codes is None else (out, indices, codes)

    def get_codes_from_indices(self, indices: Tensor) -> Tensor:
        """Indices ``(B, ..., q)`` (``q <= Q`` stages, -1 for dropped ones) ->
        scaled per-stage codes ``(Q, B, ..., D)`` (zero for dropped stages)."""
        indices, dropped = self.dropout.pad(indices)  # (Q, B, ...)
        codes = self._digits_to_codes(self._digits(indices.masked_fill(dropped, 0)))
        codes = codes.masked_fill(dropped.unsqueeze(-1), 0.0)
        scales = constant_tensor(self._scales, torch.float32, indices.device)
        return codes * scales.reshape(self.num_quantizers, *([1] * (codes.ndim - 2)), -1)

    def get_output_from_indices(self, indices: Tensor) -> Tensor:
        """Indices ``(B, ..., q)`` -> quantized ``(B, ..., C)`` (channel-last, as in
        vector-quantize-pytorch)."""
        return self.project_out(self.get_codes_from_indices(indices).sum(dim=0))


class GroupedResidualFSQ(nn.Module):
    """vector-quantize-pytorch's ``GroupedResidualFSQ``: a :class:`ResidualFSQ` per
    channel group; ``quantized, indices = q(x)`` with indices ``(G, B, ..., Q)``.

    Args (keyword-only): ``dim``, ``groups``, ``accept_image_fmap`` (groups split
    dim 1 instead of the last), and :class:`ResidualFSQ`'s arguments.

    Example::

        >>> import torch
        >>> from fsqkit.compat.vector_quantize_pytorch import GroupedResidualFSQ
        >>> q = GroupedResidualFSQ(dim=64, groups=2, levels=[8, 5, 5, 3], num_quantizers=4)
        >>> quantized, indices = q.eval()(torch.randn(1, 100, 64))
        >>> quantized.shape, indices.shape
        (torch.Size([1, 100, 64]), torch.Size([2, 1, 100, 4]))
    """

    def __init__(self, *, dim: int, groups: int = 1, accept_image_fmap: bool = False, **kwargs):
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        self.groups = check_positive_int(groups, "groups")
        if dim % groups:
            raise ValueError(f"dim={dim} is not a multiple of groups={groups}")
        self.accept_image_fmap = accept_image_fmap
        self.rvqs = nn.ModuleList(ResidualFSQ(dim=dim // groups, **kwargs) for _ in range(groups))
        self.codebook_size = self.rvqs[0].codebook_size

    @property
    def codebooks(self) -> Tensor:
        return torch.stack([rvq.codebooks for rvq in self.rvqs])

    @property
    def split_dim(self) -> int:
        return 1 if self.accept_image_fmap else -1

    def forward(self, x: Tensor, return_all_codes: bool = False) -> tuple:
        """Returns ``(quantized, indices (G, ...))``, plus a tuple of each group's
        ``all_codes`` with ``return_all_codes``."""
        if x.shape[self.split_dim] != self.dim:
            raise ValueError(
                f"expected dim {self.split_dim} of size {self.dim}, got {tuple(x.shape)}"
            )
        seed = dropout_seed(x.device) if self.training else None
        outs = [
            rvq(chunk, return_all_codes=return_all_codes, rand_quantize_dropout_fixed_seed=seed)
            for rvq, chunk in zip(self.rvqs, x.chunk(self.groups, dim=self.split_dim))
        ]
        quantized = torch.cat([o[0] for o in outs], dim=self.split_dim)
        indices = torch.stack([o[1] for o in outs])
        if return_all_codes:
            return quantized, indices, tuple(o[2] for o in outs)
        return quantized, indices

    def get_codes_from_indices(self, indices: Tensor) -> Tensor:
        return torch.stack([rvq.get_codes_from_indices(i) for rvq, i in zip(self.rvqs, indices)])

    def get_output_from_indices(self, indices: Tensor) -> Tensor:
        parts = [rvq.get_output_from_indices(i) for rvq, i in zip(self.rvqs, indices)]
        return torch.cat(parts, dim=self.split_dim)
