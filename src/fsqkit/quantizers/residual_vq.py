"""Residual VQ: each stage is a :class:`~fsqkit.VectorQuantizer` on what the
previous stages left over.

Dimension legend: ``B`` batch, ``C`` model channels (``dim``), ``D``
``codebook_dim``, ``S`` ``num_stages``.

r_0 = project_in(z); stage s is a VectorQuantizer on r_s with its own codebook
and losses; r_s+1 = r_s - e_s (codes detached); quantized = e_0 + ... + e_{S-1}
with a straight-through gradient to r_0. Quantize dropout as in
:mod:`fsqkit.quantizers.residual_stages`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fsqkit.quantizers.base import Quantizer
from fsqkit.quantizers.layout import (
    check_input,
    check_positive_int,
    from_channel_last,
    to_channel_last,
)
from fsqkit.quantizers.output import QuantizerOutput, zero_loss
from fsqkit.quantizers.registry import register_quantizer
from fsqkit.quantizers.residual_stages import check_dropout, check_stage_indices, dropout_mask
from fsqkit.quantizers.vq import VectorQuantizer


class ResidualVQ(Quantizer):
    """Residual VQ: ``num_stages`` :class:`VectorQuantizer` stages, each quantizing the
    residual of the previous ones (semantics in the module docstring).

    Args:
        dim: input channels ``C``.
        codebook_size: ``K`` per stage.
        num_stages: ``S`` >= 1.
        codebook_dim: code dimension ``D``; projections ``C <-> D`` when it differs.
        channel_first: inputs with >= 3 dims carry channels at dim 1.
        quantize_dropout, quantize_dropout_min_stages: as in
            :class:`~fsqkit.ResidualFSQ`.
        check_finite: raise on NaN/inf inputs (checked once, not per stage).
        **vq_kwargs: passed to every stage's :class:`VectorQuantizer` (e.g.
            ``learning``, ``kmeans_init``, ``reseed_dead``, ``commitment_weight``).

    Forward: ``indices`` ``(..., S)`` int32; ``aux_loss`` and each ``losses`` entry are
    summed over stages; ``extra_stats["dead_codes"]`` is the total over stages.

    Example::

        >>> import torch
        >>> from fsqkit import ResidualVQ
        >>> rvq = ResidualVQ(64, 256, num_stages=4, codebook_dim=8, kmeans_init=True)
        >>> out = rvq(torch.randn(8, 64, 64))  # training: every stage is initialised
        >>> out.indices.shape
        torch.Size([8, 64, 4])
        >>> rvq = rvq.eval()
        >>> idx = rvq(torch.randn(2, 64)).indices
        >>> rvq.indices_to_codes(idx, num_stages=2).shape  # a coarser reconstruction
        torch.Size([2, 64])
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
        check_finite: bool = True,
        **vq_kwargs: object,
    ) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        self.num_stages = check_positive_int(num_stages, "num_stages")
        self.codebook_dim = check_positive_int(
            dim if codebook_dim is None else codebook_dim, "codebook_dim"
        )
        self.quantize_dropout = check_dropout(
            quantize_dropout, quantize_dropout_min_stages, self.num_stages
        )
        self.channel_first = bool(channel_first)
        self.check_finite = bool(check_finite)
        self.quantize_dropout_min_stages = quantize_dropout_min_stages
        base_seed = int(vq_kwargs.pop("seed", 0))  # type: ignore[call-overload]
        self.stages = nn.ModuleList(
            VectorQuantizer(
                self.codebook_dim,
                codebook_size,
                seed=base_seed + s,
                check_finite=False,
                **vq_kwargs,  # type: ignore[arg-type]
            )
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
        """Quantize ``z`` ``(..., C)`` (channel-first ``(B, C, ...)`` with
        ``channel_first``) stage by stage: see the class docstring for the output."""
        check_input(z, self.dim, self.channel_first, "ResidualVQ", self.check_finite)
        orig_dtype = z.dtype
        z = to_channel_last(z, self.channel_first)
        h = self.project_in(z).float()  # (..., D), residuals kept in float32
        residual = h
        stage_codes: list[Tensor] = []
        indices: list[Tensor] = []
        losses: dict[str, Tensor] = {}
        dead: float | Tensor = 0.0
        for stage in self.stages:
            o = stage(residual)
            codes = o.quantized.detach()  # value == the selected codes
            stage_codes.append(codes)
            indices.append(o.indices)
            for name, value in o.losses.items():
                losses[name] = losses[name] + value if name in losses else value
            dead += o.extra_stats["dead_codes"]
            residual = residual - codes
        keep = dropout_mask(self, h.shape, h.device)
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
        n = check_stage_indices(indices, self.codebook_size, self.num_stages, num_stages)
        total = self.stages[0].indices_to_codes(indices[..., 0])
        for s in range(1, n):
            total = total + self.stages[s].indices_to_codes(indices[..., s])
        if self.has_projections:
            total = total.to(self.project_out.weight.dtype)  # type: ignore[union-attr]
        return from_channel_last(self.project_out(total), self.channel_first)


@register_quantizer("residual_vq")
def _build_residual_vq(**kwargs: object) -> ResidualVQ:
    return ResidualVQ(**kwargs)  # type: ignore[arg-type]
