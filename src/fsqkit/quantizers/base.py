"""Abstract base every fsqkit quantizer derives from."""

from __future__ import annotations

from torch import Tensor, nn

from fsqkit.quantizers.output import QuantizerOutput


class Quantizer(nn.Module):
    """Common interface: ``forward(z) -> QuantizerOutput``.

    Subclasses set ``codebook_size`` (total number of distinct indices per
    position, per codebook/stage) and ``dim`` (the channel width of the inputs
    they accept) and implement :meth:`forward` and :meth:`indices_to_codes`.
    """

    codebook_size: int
    dim: int

    def forward(self, z: Tensor) -> QuantizerOutput:  # pragma: no cover - abstract
        """Quantize ``z`` ``(..., dim)`` (or channel-first): ``quantized`` like ``z``,
        ``indices``, ``aux_loss`` and statistics in a :class:`QuantizerOutput`."""
        raise NotImplementedError

    def indices_to_codes(self, indices: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Inverse of the ``indices`` of :meth:`forward`: returns what ``quantized``
        would be (same layout), in eval mode exactly."""
        raise NotImplementedError

    @property
    def num_parameters(self) -> int:
        """Number of parameters (learned or EMA codebook entries count too)."""
        n = sum(p.numel() for p in self.parameters())
        n += sum(b.numel() for name, b in self.named_buffers() if name.endswith("embed"))
        return n
