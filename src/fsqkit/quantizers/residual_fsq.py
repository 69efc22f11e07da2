"""Residual FSQ: each stage quantizes what the previous stages left over.

Dimension legend: ``B`` batch, ``C`` model channels (``dim``), ``D = len(levels)``,
``S`` ``num_stages``, ``G`` groups.

Semantics (exact, per dimension with ``L`` levels):
    x      = the FSQ value before rounding, normalised like FSQ's codes:
             bound(z) / (L // 2)  (paper grid) or  tanh(z)  (symmetric grid);
    c_0    = FSQ's code of z (stage 0 is exactly FSQ, same indices);
    r_s    = x - (c_0 + ... + c_{s-1})       (the residual, |r_s| <= a_s per dim);
    c_s    = b_s * (2 m / (L - 1) - 1),  m = clamp(round((r_s / b_s + 1)(L - 1) / 2), 0, L - 1)
             for s >= 1: L points spread evenly over [-b_s, b_s], ends included;
    a_1    = half a grid step of stage 0 (1 / (2 * (L // 2)) paper grid, 1 / (L - 1) symmetric).
Two per-stage scales (``stage_scale``):
    "L-1": b_s = a_s,             a_{s+1} = a_s / (L - 1)   (the grid spans the residual);
    "L":   b_s = a_s (L - 1) / L, a_{s+1} = a_s / L         (half a step inside each end).
After S stages every dimension is within a_S of x. "L-1" decomposes a uniform
grid exactly (stage points coincide at cell boundaries, as in a post-hoc
residual of a uniform quantizer); "L" is the minimax choice, ``max(step / 2,
a_s - b_s)`` is smallest there, so the error shrinks by L per stage and all
L^S combinations are distinct points (docs/quantizers.md measures both). With
"L-1" the clamp is a no-op in exact arithmetic; with "L" it clips the last half
step. ``quantized = c_0 + ... + c_{S-1}`` (value) with a straight-through
gradient to x.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from fsqkit.quantizers.base import Quantizer
from fsqkit.quantizers.capture import graph_capture
from fsqkit.quantizers.fsq_math import (
    FSQConstants,
    bound,
    clamped_digits,
    constant_tensor,
    digits_to_codes,
    digits_to_indices,
    grid_value,
    indices_to_digits,
    nan_to_zero_,
    scaled_digits_symmetric,
)
from fsqkit.quantizers.layout import (
    check_index_tensor,
    check_input,
    check_positive_int,
    from_channel_last,
    to_channel_last,
)
from fsqkit.quantizers.levels import validate_levels
from fsqkit.quantizers.output import QuantizerOutput, index_dtype, zero_loss
from fsqkit.quantizers.registry import register_quantizer
from fsqkit.quantizers.residual_stages import check_dropout, check_stage_indices, dropout_mask

STAGE_SCALES = ("L-1", "L")


class ResidualFSQ(Quantizer):
    """Residual FSQ: ``num_stages`` FSQ stages with the same levels on ever finer grids
    (exact semantics in the module docstring).

    Args:
        levels: FSQ levels per dimension (>= 3, or >= 2 with ``symmetric``).
        num_stages: ``S`` >= 1.
        dim: input channels; if not ``len(levels)``, learned projections are added.
        channel_first: inputs with >= 3 dims carry channels at dim 1.
        quantize_dropout: training-only probability that a batch element uses a random
            prefix of the stages (a number in ``[0, 1]``; booleans are refused).
        quantize_dropout_min_stages: smallest prefix quantize dropout keeps.
        symmetric: stage 0 uses the symmetric grid of arXiv 2411.19842.
        eps: the paper's ``eps`` in ``bound``.
        projection_bias: bias of the projections.
        check_finite: raise on NaN/inf inputs.
        stage_scale: ``"L-1"`` (default) or ``"L"``: how much each stage's range
            shrinks (module docstring).

    Forward: ``z`` ``(..., C)`` -> :class:`QuantizerOutput` with ``quantized`` of the
    same shape/dtype, ``indices`` ``(..., S)`` int32 (each in ``[0, prod(levels))``),
    a zero ``aux_loss``.

    Example::

        >>> import torch
        >>> from fsqkit import ResidualFSQ
        >>> rq = ResidualFSQ([8, 5, 5, 5], num_stages=3, dim=16).eval()
        >>> out = rq(torch.randn(2, 10, 16))
        >>> out.indices.shape
        torch.Size([2, 10, 3])
        >>> torch.equal(rq.indices_to_codes(out.indices), out.quantized)
        True
        >>> rq.indices_to_codes(out.indices[..., :2]).shape  # a prefix: coarser
        torch.Size([2, 10, 16])
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
        stage_scale: str = "L-1",
    ) -> None:
        super().__init__()
        self.levels = validate_levels(levels, allow_two=symmetric)
        self.num_stages = check_positive_int(num_stages, "num_stages")
        if stage_scale not in STAGE_SCALES:
            raise ValueError(f"stage_scale must be one of {STAGE_SCALES}, got {stage_scale!r}")
        self.stage_scale = stage_scale
        if self.num_stages > 1 and stage_scale == "L-1" and min(self.levels) < 3:
            raise ValueError(
                f"levels {self.levels}: residual stages with stage_scale='L-1' need every "
                f"level >= 3 (each stage shrinks the error by L - 1, which is 1 for L = 2); "
                f"use stage_scale='L'"
            )
        self.quantize_dropout = check_dropout(
            quantize_dropout, quantize_dropout_min_stages, self.num_stages
        )
        self.quantize_dropout_min_stages = quantize_dropout_min_stages
        if not 0.0 < eps < 1.0:
            raise ValueError(f"eps must be in (0, 1), got {eps}")
        self.codebook_dim = len(self.levels)
        self.dim = check_positive_int(self.codebook_dim if dim is None else dim, "dim")
        self.channel_first = bool(channel_first)
        self.symmetric = bool(symmetric)
        self.check_finite = check_finite
        # Python constants: module casts (.half(), .to(dtype)) cannot change them.
        self.constants = FSQConstants.build(self.levels, eps=eps, symmetric=symmetric)
        self.codebook_size = self.constants.codebook_size
        self.index_dtype = index_dtype(self.codebook_size)
        self.has_projections = self.dim != self.codebook_dim
        if self.has_projections:
            self.project_in: nn.Module = nn.Linear(self.dim, self.codebook_dim, projection_bias)
            self.project_out: nn.Module = nn.Linear(self.codebook_dim, self.dim, projection_bias)
        else:
            self.project_in = nn.Identity()
            self.project_out = nn.Identity()
        # b_s, the half-range of stage s >= 1's grid, (S, D) (row 0 unused: stage 0 is FSQ)
        self._radius = tuple(tuple(row) for row in self._stage_radius().tolist())

    def _first_bound(self) -> Tensor:
        """``a_1``, ``(D,)`` float64: half a grid step of stage 0."""
        levels = torch.tensor(self.levels, dtype=torch.float64)
        if self.symmetric:
            return 1.0 / (levels - 1)
        return 1.0 / (2 * torch.tensor(self.constants.half_width, dtype=torch.float64))

    def _shrink(self) -> Tensor:
        """Per-stage shrink factor of the bound, ``(D,)`` float64: ``L - 1`` or ``L``."""
        levels = torch.tensor(self.levels, dtype=torch.float64)
        return levels - 1 if self.stage_scale == "L-1" else levels

    def _stage_radius(self) -> Tensor:
        powers = torch.arange(self.num_stages, dtype=torch.float64).clamp_min(1) - 1
        bounds = self._first_bound() / self._shrink() ** powers.unsqueeze(-1)  # a_s, (S, D)
        if self.stage_scale == "L":
            levels = torch.tensor(self.levels, dtype=torch.float64)
            return bounds * (levels - 1) / levels
        return bounds

    def error_bound(self, num_stages: int) -> Tensor:
        """``(D,)`` float64: per-dimension bound on ``|x - decode(first num_stages)|``,
        i.e. ``a_num_stages`` of the module docstring (``num_stages`` may exceed ``S``)."""
        n = check_positive_int(num_stages, "num_stages")
        return self._first_bound() / self._shrink() ** (n - 1)

    def bounded(self, z: Tensor) -> Tensor:
        """The value the stages approximate: ``x`` of the module docstring, ``(..., D)``
        float32 for float32 ``z`` of shape ``(..., D)`` (after ``project_in``)."""
        t = self.constants.tensors(z.device)
        if self.symmetric:
            return scaled_digits_symmetric(z, t.levels) * (2.0 / (t.levels - 1)) - 1.0
        return bound(z, t.half_l, t.offset, t.shift) / t.half_width

    def _stage0_digits(self, z: Tensor) -> Tensor:
        """FSQ's integer digits ``(..., D)`` (float32, in ``[0, L)``) of ``z``."""
        c = self.constants
        t = c.tensors(z.device)
        return clamped_digits(torch.round(grid_value(z, c, t)), c, t, not self._checks_finite())

    def _checks_finite(self) -> bool:
        """Whether what is quantized was checked for NaN (``forward`` checks its input,
        in eager mode; a projection's output is not checked)."""
        return self.check_finite and not self.has_projections and not graph_capture()

    def _fine_codes(self, digits: Tensor, radius: Tensor, levels: Tensor) -> Tensor:
        return radius * (digits * (2.0 / (levels - 1)) - 1.0)

    def forward(self, z: Tensor) -> QuantizerOutput:
        """Quantize ``z`` ``(..., C)`` (channel-first ``(B, C, ...)`` with
        ``channel_first``): see the class docstring for the output."""
        check_input(z, self.dim, self.channel_first, "ResidualFSQ", self.check_finite)
        zl = to_channel_last(z, self.channel_first)
        keep = dropout_mask(self, zl.shape, z.device)
        out, indices = self.quantize_channel_last(zl, keep)
        return QuantizerOutput(
            quantized=from_channel_last(out, self.channel_first),
            indices=indices,
            aux_loss=zero_loss(out),
            codebook_size=self.codebook_size,
        )

    def quantize_channel_last(self, z: Tensor, keep: Tensor | None) -> tuple[Tensor, Tensor]:
        """The stages on a validated channel-last ``z (..., C)``: ``(quantized (..., C)``
        in ``z``'s dtype, ``indices (..., S))``. ``keep``: a quantize-dropout mask from
        :func:`~fsqkit.quantizers.residual_stages.stage_keep_mask`, or None."""
        orig_dtype = z.dtype
        h = self.project_in(z)  # (..., D)
        with torch.autocast(device_type=z.device.type, enabled=False):
            hf = h.float()
            t = self.constants.tensors(z.device)
            radius = constant_tensor(self._radius, torch.float32, z.device)  # (S, D)
            x = self.bounded(hf)  # (..., D)
            digits0 = self._stage0_digits(hf.detach())
            all_digits = [digits0]
            stage_codes = [digits_to_codes(digits0, self.constants, t)]
            total = stage_codes[0]
            for s in range(1, self.num_stages):
                r = x.detach() - total  # (..., D)
                u = (r / radius[s] + 1.0) * ((t.levels - 1) / 2)
                m = torch.minimum(torch.round(u).clamp_min(0), t.levels - 1)
                m = m if self._checks_finite() else nan_to_zero_(m)
                all_digits.append(m)
                stage_codes.append(self._fine_codes(m, radius[s], t.levels))
                total = total + stage_codes[-1]
            if keep is not None:
                total = stage_codes[0]
                for s in range(1, self.num_stages):
                    total = total + stage_codes[s] * keep[..., s : s + 1]
            quantized = total + (x - x.detach())  # value: the codes; gradient: to x
            digits = torch.stack(all_digits, dim=-2)  # (..., S, D)
            indices = digits_to_indices(digits, t.basis, self.index_dtype)  # (..., S)
        if self.has_projections:
            quantized = quantized.to(self.project_out.weight.dtype)  # type: ignore[union-attr]
        return self.project_out(quantized).to(orig_dtype), indices

    def indices_to_stage_codes(self, indices: Tensor) -> Tensor:
        """Per-stage codes: ``(..., n)`` indices (the first ``n <= S`` stages) ->
        ``(..., n, D)`` float32 codes before ``project_out``; ``codes[..., s, :]`` is
        ``c_s`` of the module docstring and their sum in stage order is what
        :meth:`indices_to_codes` projects."""
        n = check_stage_indices(indices, self.codebook_size, self.num_stages, None)
        return torch.stack(self._stage_codes(indices, n), dim=-2)

    def _stage_codes(self, indices: Tensor, n: int) -> list[Tensor]:
        t = self.constants.tensors(indices.device)
        radius = constant_tensor(self._radius, torch.float32, indices.device)
        digits = indices_to_digits(indices, t.basis_long, t.levels_long).float()  # (..., n, D)
        codes = [digits_to_codes(digits[..., 0, :], self.constants, t)]
        for s in range(1, n):
            codes.append(self._fine_codes(digits[..., s, :], radius[s], t.levels))
        return codes

    def indices_to_codes(self, indices: Tensor, num_stages: int | None = None) -> Tensor:
        """Indices ``(..., n)`` of the first ``n <= S`` stages -> ``quantized`` (exact in
        eval mode for ``n = S``), using the first ``num_stages`` of them (all given
        by default; fewer gives a coarser reconstruction). Returns ``(..., C)``,
        channel-first ``(B, C, ...)`` when ``channel_first``."""
        n = check_stage_indices(indices, self.codebook_size, self.num_stages, num_stages)
        codes = self._stage_codes(indices, n)
        total = codes[0]
        for c in codes[1:]:
            total = total + c
        if self.has_projections:
            total = total.to(self.project_out.weight.dtype)  # type: ignore[union-attr]
        return from_channel_last(self.project_out(total), self.channel_first)

    def extra_repr(self) -> str:
        parts = [f"levels={self.levels}", f"num_stages={self.num_stages}", f"dim={self.dim}"]
        if self.stage_scale != "L-1":
            parts.append(f"stage_scale={self.stage_scale!r}")
        if self.channel_first:
            parts.append("channel_first=True")
        if self.symmetric:
            parts.append("symmetric=True")
        return ", ".join(parts)


class GroupedResidualFSQ(Quantizer):
    """Residual FSQ on ``groups`` channel groups, each with its own stages (and
    projections when ``dim / groups != len(levels)``).

    Args:
        levels, num_stages: as in :class:`ResidualFSQ` (the same for every group).
        groups: ``G`` >= 1; ``dim`` must be a multiple of it.
        dim: input channels ``C``; defaults to ``G * len(levels)``.
        channel_first: inputs with >= 3 dims carry channels at dim 1.
        quantize_dropout, quantize_dropout_min_stages: as in :class:`ResidualFSQ`;
            one draw per batch element, shared by the groups.
        **residual_kwargs: ``symmetric``, ``eps``, ``projection_bias``,
            ``check_finite``, ``stage_scale``, passed to every group.

    Forward: ``z`` ``(..., C)`` -> ``quantized`` of the same shape/dtype (group ``g``
    quantizes channels ``[g C/G, (g+1) C/G)``), ``indices`` ``(..., G, S)``.

    Example::

        >>> import torch
        >>> from fsqkit.quantizers import GroupedResidualFSQ
        >>> q = GroupedResidualFSQ([8, 5, 5, 5], num_stages=2, groups=2, dim=32).eval()
        >>> out = q(torch.randn(4, 32))
        >>> out.indices.shape
        torch.Size([4, 2, 2])
        >>> torch.equal(q.indices_to_codes(out.indices), out.quantized)
        True
    """

    def __init__(
        self,
        levels: Sequence[int],
        num_stages: int,
        groups: int,
        dim: int | None = None,
        channel_first: bool = False,
        quantize_dropout: float = 0.0,
        quantize_dropout_min_stages: int = 1,
        **residual_kwargs: object,
    ) -> None:
        super().__init__()
        self.groups = check_positive_int(groups, "groups")
        levels = validate_levels(levels, allow_two=bool(residual_kwargs.get("symmetric")))
        self.dim = check_positive_int(self.groups * len(levels) if dim is None else dim, "dim")
        if self.dim % self.groups:
            raise ValueError(f"dim={self.dim} is not a multiple of groups={self.groups}")
        self.channel_first = bool(channel_first)
        self.num_stages = check_positive_int(num_stages, "num_stages")
        self.quantize_dropout = check_dropout(
            quantize_dropout, quantize_dropout_min_stages, self.num_stages
        )
        self.quantize_dropout_min_stages = quantize_dropout_min_stages
        self.residuals = nn.ModuleList(
            ResidualFSQ(levels, num_stages, dim=self.dim // self.groups, **residual_kwargs)  # type: ignore[arg-type]
            for _ in range(self.groups)
        )
        self.codebook_size = self.residuals[0].codebook_size
        self.check_finite = self.residuals[0].check_finite

    def forward(self, z: Tensor) -> QuantizerOutput:
        """Quantize ``z`` ``(..., C)`` (channel-first ``(B, C, ...)`` with
        ``channel_first``): see the class docstring for the output."""
        check_input(z, self.dim, self.channel_first, "GroupedResidualFSQ", self.check_finite)
        zl = to_channel_last(z, self.channel_first)
        keep = dropout_mask(self, zl.shape, z.device)
        parts = [
            rq.quantize_channel_last(chunk, keep)
            for rq, chunk in zip(self.residuals, zl.chunk(self.groups, dim=-1))
        ]
        out = torch.cat([p[0] for p in parts], dim=-1)
        return QuantizerOutput(
            quantized=from_channel_last(out, self.channel_first),
            indices=torch.stack([p[1] for p in parts], dim=-2),  # (..., G, S)
            aux_loss=zero_loss(out),
            codebook_size=self.codebook_size,
        )

    def indices_to_codes(self, indices: Tensor, num_stages: int | None = None) -> Tensor:
        """Indices ``(..., G, n)`` -> ``quantized`` (exact in eval mode for ``n = S``),
        from the first ``num_stages`` stages of every group (all given by default)."""
        check_index_tensor(indices, self.codebook_size)
        if indices.ndim < 2 or indices.shape[-2] != self.groups:
            raise ValueError(
                f"indices must have shape (..., groups={self.groups}, stages), "
                f"got {tuple(indices.shape)}"
            )
        parts = [  # the groups are channel-last
            rq.indices_to_codes(indices[..., g, :], num_stages)
            for g, rq in enumerate(self.residuals)
        ]
        return from_channel_last(torch.cat(parts, dim=-1), self.channel_first)


@register_quantizer("residual_fsq")
def _build_residual_fsq(**kwargs: object) -> ResidualFSQ:
    return ResidualFSQ(**kwargs)  # type: ignore[arg-type]


@register_quantizer("grouped_residual_fsq")
def _build_grouped_residual_fsq(**kwargs: object) -> GroupedResidualFSQ:
    return GroupedResidualFSQ(**kwargs)  # type: ignore[arg-type]
