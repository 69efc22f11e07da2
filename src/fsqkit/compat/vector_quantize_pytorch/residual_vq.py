"""vector-quantize-pytorch 1.32's ``ResidualVQ``: :class:`VectorQuantize` layers on
the residual of the previous ones.

Dimension legend: ``B`` batch, ``N`` positions, ``C`` ``dim``, ``D``
``codebook_dim``, ``Q`` ``num_quantizers``.

r_0 = project_in(x); layer q quantizes r_q (its own codebook, loss and EMA
update, as :class:`VectorQuantize`); r_{q+1} = r_q - sg(e_q); quantized =
project_out(e_0 + ... + e_{Q-1}). Quantize dropout (``quantize_dropout=True``,
training): all layers after one random index, for the whole batch, are skipped
(indices -1, loss 0). Returns ``(quantized, indices (B, N, Q), losses (Q,))``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fsqkit.compat.vector_quantize_pytorch._args import refuse_unsupported
from fsqkit.compat.vector_quantize_pytorch._dropout import LayerDropout
from fsqkit.compat.vector_quantize_pytorch.vq import VectorQuantize
from fsqkit.quantizers.layout import check_positive_int

UNSUPPORTED = {
    "shared_codebook": False,
    "diveq": False,
    "heads": 1,
    "accept_image_fmap": False,
    "implicit_neural_codebook": False,
    "beam_size": None,
    "eval_beam_size": None,
    "beam_score_quantizer_weights": None,
    "quant_grad_frac": 0.0,
}
UNSUPPORTED_FORWARD = {"mask": None, "indices": None, "beam_size": None}


class ResidualVQ(nn.Module):
    """vector-quantize-pytorch's ``ResidualVQ``: ``quantized, indices, losses = rvq(x)``.

    Args (keyword-only, as in vector-quantize-pytorch 1.32): ``dim``,
    ``num_quantizers``, ``codebook_size`` (one size for all layers),
    ``codebook_dim``, ``quantize_dropout`` (a flag),
    ``quantize_dropout_cutoff_index``, ``quantize_dropout_multiple_of``,
    ``return_zeros_for_masked_padding``, and :class:`VectorQuantize`'s arguments
    for every layer. The others raise ``NotImplementedError`` unless left at their
    defaults.

    Example::

        >>> import torch
        >>> from fsqkit.compat.vector_quantize_pytorch import ResidualVQ
        >>> residual_vq = ResidualVQ(dim=256, num_quantizers=8, codebook_size=1024)
        >>> x = torch.randn(1, 1024, 256)
        >>> quantized, indices, commit_loss = residual_vq(x)
        >>> quantized.shape, indices.shape, commit_loss.shape
        (torch.Size([1, 1024, 256]), torch.Size([1, 1024, 8]), torch.Size([8]))
    """

    def __init__(
        self,
        *,
        dim: int,
        num_quantizers: int,
        codebook_size: int,
        codebook_dim: int | None = None,
        quantize_dropout: bool = False,
        quantize_dropout_cutoff_index: int = 0,
        quantize_dropout_multiple_of: int = 1,
        return_zeros_for_masked_padding: bool = True,
        **kwargs: object,
    ) -> None:
        super().__init__()
        refuse_unsupported("ResidualVQ", kwargs, UNSUPPORTED)
        vq_kwargs = {k: v for k, v in kwargs.items() if k not in UNSUPPORTED}
        if isinstance(codebook_size, tuple):
            raise NotImplementedError(
                "ResidualVQ(codebook_size=tuple): per-layer codebook sizes are not supported by "
                "fsqkit.compat.vector_quantize_pytorch; see docs/migrating.md"
            )
        self.dim = check_positive_int(dim, "dim")
        self.num_quantizers = check_positive_int(num_quantizers, "num_quantizers")
        self.codebook_dim = (
            dim if codebook_dim is None else check_positive_int(codebook_dim, "codebook_dim")
        )
        self.has_projections = self.codebook_dim != dim
        self.project_in: nn.Module = (
            nn.Linear(dim, self.codebook_dim) if self.has_projections else nn.Identity()
        )
        self.project_out: nn.Module = (
            nn.Linear(self.codebook_dim, dim) if self.has_projections else nn.Identity()
        )
        self.layers = nn.ModuleList(
            VectorQuantize(
                dim=self.codebook_dim, codebook_size=codebook_size, codebook_dim=self.codebook_dim,
                return_zeros_for_masked_padding=return_zeros_for_masked_padding, **vq_kwargs,
            )  # type: ignore[arg-type]
            for _ in range(self.num_quantizers)
        )  # fmt: skip
        self.dropout = LayerDropout.build(
            quantize_dropout, quantize_dropout_cutoff_index, quantize_dropout_multiple_of,
            self.num_quantizers,
        )  # fmt: skip
        self.quantize_dropout = self.dropout.enabled

    @property
    def codebook_size(self) -> int:
        return self.layers[0].codebook_size

    @property
    def codebooks(self) -> Tensor:
        """``(Q, K, D)``."""
        return torch.stack([layer.codebook for layer in self.layers])

    def get_codes_from_indices(self, indices: Tensor) -> Tensor:
        """Indices ``(B, ..., q)`` (``q <= Q``; -1 for dropped layers) -> codes
        ``(Q, B, ..., D)`` (zero where dropped)."""
        indices, dropped = self.dropout.pad(indices)  # (Q, B, ...)
        codes = torch.stack(
            [layer.codebook[i] for layer, i in zip(self.layers, indices.masked_fill(dropped, 0))]
        )
        return codes.masked_fill(dropped.unsqueeze(-1), 0.0)

    def get_output_from_indices(self, indices: Tensor) -> Tensor:
        """Indices ``(B, ..., q)`` -> quantized ``(B, ..., C)``."""
        return self.project_out(self.get_codes_from_indices(indices).sum(dim=0))

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        indices: Tensor | None = None,
        return_all_codes: bool = False,
        sample_codebook_temp: float | None = None,
        freeze_codebook: bool = False,
        beam_size: int | None = None,
        rand_quantize_dropout_fixed_seed: int | None = None,
    ) -> tuple:
        """``x``: ``(B, N, C)``. Returns ``(quantized (B, N, C), indices (B, N, Q),
        losses (Q,))``, plus ``all_codes (Q, B, N, D)`` with ``return_all_codes``."""
        refuse_unsupported("ResidualVQ.forward", locals(), UNSUPPORTED_FORWARD)
        x = self.project_in(x)
        cut = self.num_quantizers
        if self.training and self.quantize_dropout:
            cut = self.dropout.kept(x.device, rand_quantize_dropout_fixed_seed)
        quantized_out = torch.zeros_like(x)
        residual = x
        all_indices, all_losses = [], []
        for q, layer in enumerate(self.layers):
            if q >= cut:
                all_indices.append(torch.full(x.shape[:-1], -1, dtype=torch.long, device=x.device))
                all_losses.append(torch.zeros((), device=x.device))
                continue
            quantized, layer_indices, loss = layer(
                residual, sample_codebook_temp=sample_codebook_temp, freeze_codebook=freeze_codebook
            )
            residual = residual - quantized.detach()
            quantized_out = quantized_out + quantized
            all_indices.append(layer_indices)
            all_losses.append(loss)
        out = self.project_out(quantized_out)
        indices_out = torch.stack(all_indices, dim=-1)
        losses = torch.stack(all_losses)
        if return_all_codes:
            return out, indices_out, losses, self.get_codes_from_indices(indices_out)
        return out, indices_out, losses
