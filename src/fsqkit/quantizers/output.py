"""The one output type every quantizer of fsqkit returns.

Models never special-case a quantizer: FSQ, the VQ baseline and the residual
variants all return a :class:`QuantizerOutput`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.utils._pytree as pytree
from torch import Tensor


@dataclass
class QuantizerOutput:
    """Result of ``quantizer(z)``.

    Attributes:
        quantized: the quantized tensor, same shape, layout and dtype as the input
            ``z`` (after the output projection, if the quantizer has one). Gradients
            flow to ``z`` through the straight-through estimator.
        indices: integer code indices (None from a quantizer built with
            ``return_indices=False``). Shape is the input shape without its channel
            dimension, e.g. ``(B, H, W)`` for a ``(B, C, H, W)`` channel-first input
            or ``(B, N)`` for ``(B, N, D)``; quantizers with several codebooks or
            stages append a trailing dimension ``(..., num_codebooks)`` /
            ``(..., num_stages)``. Dtype is ``int32`` for codebooks smaller than
            ``2**31`` and ``int64`` otherwise. Indices are always in range.
        aux_loss: scalar tensor to add to the training loss. Exactly zero (and
            detached from any graph) for FSQ; commitment + codebook + entropy terms
            for VQ.
        losses: the named parts of ``aux_loss`` (e.g. ``{"commitment": ...}``);
            empty for FSQ.
        codebook_size: number of distinct indices per codebook/stage (``K``).
        extra_stats: quantizer-specific statistics (e.g. VQ's ``"dead_codes"``), as
            0-d tensors (a forward pass never reads them back to the host) or floats.
        stats: (property) cheap batch statistics as Python floats: ``"usage"``
            (fraction of the codebook used in this batch), ``"perplexity"``, plus
            ``extra_stats``. Computed lazily on first access; never synchronises
            across processes.
    """

    quantized: Tensor
    indices: Tensor | None
    aux_loss: Tensor
    losses: dict[str, Tensor] = field(default_factory=dict)
    codebook_size: int = 0
    extra_stats: dict[str, float | Tensor] = field(default_factory=dict)
    _stats: dict[str, float] | None = field(default=None, repr=False, compare=False)

    @property
    def stats(self) -> dict[str, float]:
        """Batch statistics, computed on first access (so a forward pass never pays
        for a histogram nobody reads): ``usage`` and ``perplexity`` of ``indices``
        plus the quantizer's ``extra_stats``."""
        if self._stats is None:
            from fsqkit.quantizers.stats import batch_stats

            base = {}
            if self.codebook_size and self.indices is not None:
                base = batch_stats(self.indices, self.codebook_size)
            extra = {name: float(value) for name, value in self.extra_stats.items()}
            self._stats = {**base, **extra}
        return self._stats

    def __iter__(self):
        """Allow ``quantized, indices, aux_loss = quantizer(z)``."""
        yield self.quantized
        yield self.indices
        yield self.aux_loss


def zero_loss(like: Tensor) -> Tensor:
    """A scalar fp32 zero on the device of ``like``, not attached to any graph."""
    return torch.zeros((), dtype=torch.float32, device=like.device)


def index_dtype(codebook_size: int) -> torch.dtype:
    """Smallest safe index dtype: ``int32`` below ``2**31`` codes, else ``int64``."""
    return torch.int32 if codebook_size < 2**31 else torch.int64


def _flatten(out: QuantizerOutput):
    children = [out.quantized, out.indices, out.aux_loss, out.losses, out.extra_stats]
    return children, out.codebook_size


def _unflatten(children, context) -> QuantizerOutput:
    quantized, indices, aux_loss, losses, extra_stats = children
    return QuantizerOutput(quantized, indices, aux_loss, losses, context, dict(extra_stats))


def _flatten_with_keys(out: QuantizerOutput):
    children, context = _flatten(out)
    names = ("quantized", "indices", "aux_loss", "losses", "extra_stats")
    keyed = [(pytree.GetAttrKey(n), c) for n, c in zip(names, children)]
    return keyed, context


# A registered pytree node, so ``torch.export`` / ``torch.compile(fullgraph=True)``
# can return a QuantizerOutput from a quantizer's forward.
pytree.register_pytree_node(
    QuantizerOutput,
    _flatten,
    _unflatten,
    serialized_type_name="fsqkit.QuantizerOutput",
    flatten_with_keys_fn=_flatten_with_keys,
)
