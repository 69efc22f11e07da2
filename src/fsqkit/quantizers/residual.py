"""Residual quantizers: each stage quantizes what the previous stages left over.

Dimension legend: ``B`` batch, ``C`` model channels (``dim``), ``D`` code
dimension (``len(levels)`` for FSQ, ``codebook_dim`` for VQ), ``S`` ``num_stages``.

ResidualFSQ semantics (exact):
    x      = the FSQ value before rounding, normalised like FSQ's codes:
             bound(z) / (L // 2)  (paper grid) or  tanh(z)  (symmetric grid);
    c_0    = FSQ's code of z (stage 0 is exactly FSQ, same indices);
    r_s    = x - (c_0 + ... + c_{s-1})       (the residual, |r_s| <= a_s per dim);
    c_s    = a_s * (2 m / (L - 1) - 1),  m = clamp(round((r_s / a_s + 1)(L - 1) / 2), 0, L - 1)
             for s >= 1: L points spread evenly over [-a_s, a_s], ends included;
    a_1    = half a grid step of stage 0 (1 / (2 * (L // 2)) paper grid, 1 / (L - 1) symmetric);
    a_s+1  = a_s / (L - 1)                   (half a step of stage s).
So after S stages every dimension is within a_S of x, and the bound shrinks by
``L - 1`` per stage. The clamp is a no-op in exact arithmetic (|r_s| <= a_s); it
keeps indices in range under float rounding. quantized = c_0 + ... + c_{S-1}
(value) with a straight-through gradient to x.

ResidualVQ: r_0 = project_in(z); stage s is a VectorQuantizer on r_s with its
own codebook and losses; r_s+1 = r_s - e_s (codes detached); quantized =
e_0 + ... + e_{S-1} with a straight-through gradient to r_0.

Quantize dropout (training only, both): with probability ``quantize_dropout`` a
batch element (dim 0) keeps only its first ``n ~ U{min_stages..S}`` stages in
``quantized``. Indices of all stages are always computed from the clean
residual chain, so they stay in range and decode with ``indices_to_codes(...,
num_stages=n)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from fsqkit.quantizers.base import Quantizer
from fsqkit.quantizers.fsq_math import (
    FSQConstants,
    bound,
    digits_to_indices,
    indices_to_digits,
    scaled_digits_symmetric,
)
from fsqkit.quantizers.layout import (
    check_index_tensor,
    check_input,
    check_positive_int,
    from_channel_last,
    to_channel_last,
)
from fsqkit.quantizers.levels import codebook_size_of, validate_levels
from fsqkit.quantizers.output import QuantizerOutput, index_dtype, zero_loss
from fsqkit.quantizers.registry import register_quantizer
from fsqkit.quantizers.vq import VectorQuantizer


def _check_dropout(p: float, min_stages: int, num_stages: int) -> None:
    if not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"quantize_dropout must be a probability in [0, 1], got {p!r}")
    check_positive_int(min_stages, "quantize_dropout_min_stages")
    if min_stages > num_stages:
        raise ValueError(
            f"quantize_dropout_min_stages={min_stages} exceeds num_stages={num_stages}"
        )


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


def _check_stage_indices(
    indices: Tensor, codebook_size: int, total: int, num_stages: int | None
) -> int:
    """Validate ``(..., S)`` stage indices and the number of stages to decode."""
    check_index_tensor(indices, codebook_size)
    if indices.ndim == 0 or indices.shape[-1] != total:
        raise ValueError(
            f"indices must have a trailing dimension of size num_stages={total}, "
            f"got shape {tuple(indices.shape)}"
        )
    if num_stages is None:
        return total
    check_positive_int(num_stages, "num_stages")
    if num_stages > total:
        raise ValueError(f"num_stages={num_stages} exceeds the quantizer's {total} stages")
    return num_stages


class ResidualFSQ(Quantizer):
    """Residual FSQ: ``num_stages`` FSQ stages with the same levels on ever finer grids
    (exact semantics in the module docstring).

    Args:
        levels: FSQ levels per dimension (>= 3, or >= 2 with ``symmetric``).
        num_stages: ``S`` >= 1.
        dim: input channels; if not ``len(levels)``, learned projections are added.
        channel_first: inputs with >= 3 dims carry channels at dim 1.
        quantize_dropout: training-only probability that a batch element uses a random
            prefix of the stages.
        quantize_dropout_min_stages: smallest prefix quantize dropout keeps.
        symmetric: stage 0 uses the symmetric grid of arXiv 2411.19842.
        eps: the paper's ``eps`` in ``bound``.
        projection_bias: bias of the projections.
        check_finite: raise on NaN/inf inputs.

    Forward: ``z`` ``(..., C)`` -> :class:`QuantizerOutput` with ``quantized`` of the
    same shape/dtype, ``indices`` ``(..., S)`` int32 (each in ``[0, prod(levels))``),
    a zero ``aux_loss``.
    """

    def __init__(
        self,
        levels: Sequence[int],
        num_stages: int,
        dim: int | None = None,
        channel_first: bool = False,
        quantize_dropout: float = 0.0,
        quantize_dropout_min_stages: int = 1,
        symmetric: bool = False,
        eps: float = 1e-3,
        projection_bias: bool = True,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        self.levels = validate_levels(levels, allow_two=symmetric)
        self.num_stages = check_positive_int(num_stages, "num_stages")
        if self.num_stages > 1 and min(self.levels) < 3:
            raise ValueError(
                f"levels {self.levels}: residual stages need every level >= 3 (each stage "
                f"shrinks the error by L - 1, which is 1 for L = 2)"
            )
        _check_dropout(quantize_dropout, quantize_dropout_min_stages, self.num_stages)
        if not 0.0 < eps < 1.0:
            raise ValueError(f"eps must be in (0, 1), got {eps}")
        self.codebook_dim = len(self.levels)
        self.dim = check_positive_int(self.codebook_dim if dim is None else dim, "dim")
        self.channel_first = bool(channel_first)
        self.quantize_dropout = float(quantize_dropout)
        self.quantize_dropout_min_stages = quantize_dropout_min_stages
        self.symmetric = bool(symmetric)
        self.check_finite = check_finite
        self.codebook_size = codebook_size_of(self.levels)
        self.index_dtype = index_dtype(self.codebook_size)
        self.has_projections = self.dim != self.codebook_dim
        if self.has_projections:
            self.project_in: nn.Module = nn.Linear(self.dim, self.codebook_dim, projection_bias)
            self.project_out: nn.Module = nn.Linear(self.codebook_dim, self.dim, projection_bias)
        else:
            self.project_in = nn.Identity()
            self.project_out = nn.Identity()

        c = FSQConstants.build(self.levels, eps=eps, symmetric=symmetric)
        f32 = torch.float32
        levels_t = torch.tensor(c.levels, dtype=f32)
        half_width = torch.tensor(c.half_width, dtype=f32)
        # a_s, the half-range of stage s >= 1 (row 0 unused: stage 0 is plain FSQ).
        first = 1.0 / (levels_t - 1) if symmetric else 1.0 / (2 * half_width)
        powers = torch.arange(self.num_stages, dtype=torch.float64).clamp_min(1) - 1
        radius = first.double() / (levels_t.double() - 1) ** powers.unsqueeze(-1)  # (S, D)
        self.register_buffer("_levels", levels_t, persistent=False)
        self.register_buffer("_half_l", torch.tensor(c.half_l, dtype=f32), persistent=False)
        self.register_buffer("_offset", torch.tensor(c.offset, dtype=f32), persistent=False)
        self.register_buffer("_shift", torch.tensor(c.shift, dtype=f32), persistent=False)
        self.register_buffer("_half_width", half_width, persistent=False)
        self.register_buffer("_radius", radius.float(), persistent=False)
        self.register_buffer(
            "_basis", torch.tensor(c.basis, dtype=self.index_dtype), persistent=False
        )

    def error_bound(self, num_stages: int) -> Tensor:
        """``(D,)`` float64: per-dimension bound on ``|x - decode(first num_stages)|``,
        i.e. ``a_num_stages`` of the module docstring (``num_stages`` may exceed ``S``)."""
        n = check_positive_int(num_stages, "num_stages")
        levels = self._levels.double()
        first = 1.0 / (levels - 1) if self.symmetric else 1.0 / (2 * self._half_width.double())
        return first / (levels - 1) ** (n - 1)

    def bounded(self, z: Tensor) -> Tensor:
        """The value the stages approximate: ``x`` of the module docstring, ``(..., D)``
        float32 for float32 ``z`` of shape ``(..., D)`` (after ``project_in``)."""
        if self.symmetric:
            return scaled_digits_symmetric(z, self._levels) * (2.0 / (self._levels - 1)) - 1.0
        return bound(z, self._half_l, self._offset, self._shift) / self._half_width

    def _stage0_digits(self, z: Tensor) -> Tensor:
        """FSQ's integer digits ``(..., D)`` (float32, in ``[0, L)``) of ``z``."""
        if self.symmetric:
            digits = torch.round(scaled_digits_symmetric(z, self._levels))
        else:
            digits = (
                torch.round(bound(z, self._half_l, self._offset, self._shift)) + self._half_width
            )
        return torch.minimum(digits.clamp_min(0), self._levels - 1)

    def _fine_codes(self, digits: Tensor, s: int) -> Tensor:
        return self._radius[s] * (digits * (2.0 / (self._levels - 1)) - 1.0)

    def _stage0_codes(self, digits: Tensor) -> Tensor:
        if self.symmetric:
            return digits * (2.0 / (self._levels - 1)) - 1.0
        return (digits - self._half_width) / self._half_width

    def forward(self, z: Tensor) -> QuantizerOutput:
        check_input(z, self.dim, self.channel_first, "ResidualFSQ", self.check_finite)
        orig_dtype = z.dtype
        z = to_channel_last(z, self.channel_first)
        h = self.project_in(z)  # (..., D)
        with torch.autocast(device_type=z.device.type, enabled=False):
            hf = h.float()
            x = self.bounded(hf)  # (..., D)
            digits0 = self._stage0_digits(hf.detach())
            all_digits = [digits0]
            stage_codes = [self._stage0_codes(digits0)]
            total = stage_codes[0]
            for s in range(1, self.num_stages):
                r = x.detach() - total  # (..., D)
                t = (r / self._radius[s] + 1.0) * ((self._levels - 1) / 2)
                m = torch.minimum(torch.round(t).clamp_min(0), self._levels - 1)
                all_digits.append(m)
                stage_codes.append(self._fine_codes(m, s))
                total = total + stage_codes[-1]
            if self.training and self.quantize_dropout > 0:
                keep = stage_keep_mask(
                    x.shape, self.num_stages, self.quantize_dropout,
                    self.quantize_dropout_min_stages, x.device,
                )  # fmt: skip
                total = stage_codes[0]
                for s in range(1, self.num_stages):
                    total = total + stage_codes[s] * keep[..., s : s + 1]
            quantized = total + (x - x.detach())  # value: the codes; gradient: to x
            digits = torch.stack(all_digits, dim=-2)  # (..., S, D)
            indices = digits_to_indices(digits, self._basis, self.index_dtype)  # (..., S)
        if self.has_projections:
            quantized = quantized.to(self.project_out.weight.dtype)  # type: ignore[union-attr]
        out = self.project_out(quantized).to(orig_dtype)
        return QuantizerOutput(
            quantized=from_channel_last(out, self.channel_first),
            indices=indices,
            aux_loss=zero_loss(out),
            codebook_size=self.codebook_size,
        )

    def indices_to_codes(self, indices: Tensor, num_stages: int | None = None) -> Tensor:
        """Indices ``(..., S)`` -> ``quantized`` (exact in eval mode), using the first
        ``num_stages`` stages (all by default; fewer gives a coarser reconstruction).
        Returns ``(..., C)``, channel-first ``(B, C, ...)`` when ``channel_first``."""
        n = _check_stage_indices(indices, self.codebook_size, self.num_stages, num_stages)
        digits = indices_to_digits(indices, self._basis, self._levels).float()  # (..., S, D)
        total = self._stage0_codes(digits[..., 0, :])
        for s in range(1, n):
            total = total + self._fine_codes(digits[..., s, :], s)
        if self.has_projections:
            total = total.to(self.project_out.weight.dtype)  # type: ignore[union-attr]
        return from_channel_last(self.project_out(total), self.channel_first)


class ResidualVQ(Quantizer):
    """Residual VQ: ``num_stages`` :class:`VectorQuantizer` stages, each quantizing the
    residual of the previous ones (semantics in the module docstring).

    Args:
        dim: input channels ``C``.
        codebook_size: ``K`` per stage.
        num_stages: ``S`` >= 1.
        codebook_dim: code dimension ``D``; projections ``C <-> D`` when it differs.
        channel_first: inputs with >= 3 dims carry channels at dim 1.
        quantize_dropout, quantize_dropout_min_stages: as in :class:`ResidualFSQ`.
        **vq_kwargs: passed to every stage's :class:`VectorQuantizer` (e.g.
            ``learning``, ``kmeans_init``, ``reseed_dead``, ``commitment_weight``).

    Forward: ``indices`` ``(..., S)`` int32; ``aux_loss`` and each ``losses`` entry are
    summed over stages; ``extra_stats["dead_codes"]`` is the total over stages.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        num_stages: int,
        codebook_dim: int | None = None,
        channel_first: bool = False,
        quantize_dropout: float = 0.0,
        quantize_dropout_min_stages: int = 1,
        **vq_kwargs: object,
    ) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        self.num_stages = check_positive_int(num_stages, "num_stages")
        self.codebook_dim = check_positive_int(
            dim if codebook_dim is None else codebook_dim, "codebook_dim"
        )
        _check_dropout(quantize_dropout, quantize_dropout_min_stages, self.num_stages)
        self.channel_first = bool(channel_first)
        self.quantize_dropout = float(quantize_dropout)
        self.quantize_dropout_min_stages = quantize_dropout_min_stages
        base_seed = int(vq_kwargs.pop("seed", 0))  # type: ignore[call-overload]
        self.stages = nn.ModuleList(
            VectorQuantizer(self.codebook_dim, codebook_size, seed=base_seed + s, **vq_kwargs)  # type: ignore[arg-type]
            for s in range(self.num_stages)
        )
        self.codebook_size = self.stages[0].codebook_size
        self.has_projections = self.codebook_dim != self.dim
        if self.has_projections:
            self.project_in: nn.Module = nn.Linear(self.dim, self.codebook_dim)
            self.project_out: nn.Module = nn.Linear(self.codebook_dim, self.dim)
        else:
            self.project_in = nn.Identity()
            self.project_out = nn.Identity()

    def forward(self, z: Tensor) -> QuantizerOutput:
        check_input(z, self.dim, self.channel_first, "ResidualVQ")
        orig_dtype = z.dtype
        z = to_channel_last(z, self.channel_first)
        h = self.project_in(z).float()  # (..., D), residuals kept in float32
        residual = h
        stage_codes: list[Tensor] = []
        indices: list[Tensor] = []
        losses: dict[str, Tensor] = {}
        dead = 0.0
        for stage in self.stages:
            o = stage(residual)
            codes = o.quantized.detach()  # value == the selected codes
            stage_codes.append(codes)
            indices.append(o.indices)
            for name, value in o.losses.items():
                losses[name] = losses[name] + value if name in losses else value
            dead += o.extra_stats["dead_codes"]
            residual = residual - codes
        keep = None
        if self.training and self.quantize_dropout > 0:
            keep = stage_keep_mask(
                h.shape, self.num_stages, self.quantize_dropout,
                self.quantize_dropout_min_stages, h.device,
            )  # fmt: skip
        total = stage_codes[0]
        for s in range(1, self.num_stages):
            total = total + (
                stage_codes[s] if keep is None else stage_codes[s] * keep[..., s : s + 1]
            )
        quantized = total + (h - h.detach())  # straight-through to h
        if self.has_projections:
            quantized = quantized.to(self.project_out.weight.dtype)  # type: ignore[union-attr]
        out = self.project_out(quantized).to(orig_dtype)
        aux = sum(losses.values(), zero_loss(out))
        return QuantizerOutput(
            quantized=from_channel_last(out, self.channel_first),
            indices=torch.stack(indices, dim=-1),
            aux_loss=aux,
            losses=losses,
            codebook_size=self.codebook_size,
            extra_stats={"dead_codes": dead},
        )

    def indices_to_codes(self, indices: Tensor, num_stages: int | None = None) -> Tensor:
        """Indices ``(..., S)`` -> ``quantized`` (exact in eval mode) from the first
        ``num_stages`` stages."""
        n = _check_stage_indices(indices, self.codebook_size, self.num_stages, num_stages)
        total = self.stages[0].indices_to_codes(indices[..., 0])
        for s in range(1, n):
            total = total + self.stages[s].indices_to_codes(indices[..., s])
        if self.has_projections:
            total = total.to(self.project_out.weight.dtype)  # type: ignore[union-attr]
        return from_channel_last(self.project_out(total), self.channel_first)


@register_quantizer("residual_fsq")
def _build_residual_fsq(**kwargs: object) -> ResidualFSQ:
    return ResidualFSQ(**kwargs)  # type: ignore[arg-type]


@register_quantizer("residual_vq")
def _build_residual_vq(**kwargs: object) -> ResidualVQ:
    return ResidualVQ(**kwargs)  # type: ignore[arg-type]
