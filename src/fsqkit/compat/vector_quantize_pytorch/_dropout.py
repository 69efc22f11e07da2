"""vector-quantize-pytorch's quantize dropout for its residual quantizers: in
training, all layers after one random index are dropped for the whole batch
(their indices are -1).

Dimension legend: ``B`` batch, ``Q`` layers, ``q`` layers given."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from fsqkit.quantizers.layout import check_positive_int


@dataclass(frozen=True)
class LayerDropout:
    """The quantize-dropout settings of a residual quantizer with ``layers`` layers."""

    enabled: bool
    cutoff_index: int
    multiple_of: int
    layers: int

    @staticmethod
    def build(
        quantize_dropout: object, cutoff_index: int, multiple_of: int, layers: int
    ) -> LayerDropout:
        """Validated settings (dropout is on only with 2+ layers)."""
        on = check_dropout(quantize_dropout, cutoff_index, multiple_of, layers)
        return LayerDropout(on, cutoff_index, multiple_of, layers)

    def kept(self, device: torch.device, fixed_seed: int | None) -> int:
        """How many leading layers this training call keeps."""
        seed = dropout_seed(device) if fixed_seed is None else fixed_seed
        return kept_layers(seed, self.cutoff_index, self.layers, self.multiple_of)

    def pad(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        """:func:`pad_dropped` for these settings."""
        return pad_dropped(indices, self.layers, self.enabled)


def check_dropout(
    quantize_dropout: object, cutoff_index: int, multiple_of: int, layers: int
) -> bool:
    """Validate the settings; returns whether dropout is on (it needs 2+ layers)."""
    if not isinstance(quantize_dropout, bool):
        raise ValueError(
            f"quantize_dropout={quantize_dropout!r}: vector-quantize-pytorch's quantize_dropout "
            f"is a flag (True or False); for a per-sample probability use fsqkit's own classes"
        )
    if not 0 <= cutoff_index < layers:
        raise ValueError(
            f"quantize_dropout_cutoff_index must be in [0, {layers}), got {cutoff_index}"
        )
    check_positive_int(multiple_of, "quantize_dropout_multiple_of")
    return quantize_dropout and layers > 1


def dropout_seed(device: torch.device) -> int:
    """The seed of one dropout draw: one value from torch's generator, summed over
    ranks under ``torch.distributed`` (so every rank drops the same layers)."""
    seed = torch.randint(0, 10_000, (), device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(seed)
    return int(seed.item())


def kept_layers(seed: int, cutoff_index: int, layers: int, multiple_of: int) -> int:
    """How many leading layers a dropout draw keeps (at least ``cutoff_index + 1``;
    rounded up to a multiple of ``multiple_of``)."""
    last = random.Random(seed).randrange(cutoff_index, layers)
    if multiple_of != 1:
        last = -(-(last + 1) // multiple_of) * multiple_of - 1
    return last + 1


def pad_dropped(indices: Tensor, layers: int, dropout: bool) -> tuple[Tensor, Tensor]:
    """Indices ``(B, ..., q)`` -> ``(Q, B, ...)`` with the missing layers as -1, and
    the mask of dropped entries. Fewer than ``Q`` layers need dropout on."""
    given = indices.shape[-1]
    if given > layers or (given < layers and not dropout):
        raise ValueError(
            f"indices have {given} layers for {layers} quantizers; fewer need "
            f"quantize_dropout=True (as in vector-quantize-pytorch)"
        )
    pad = torch.full((*indices.shape[:-1], layers - given), -1, dtype=indices.dtype,
                     device=indices.device)  # fmt: skip
    full = torch.cat([indices, pad], dim=-1).movedim(-1, 0)
    return full, full == -1
