"""The image tokenizer: encoder -> quantizer -> decoder.

Dimension legend: ``B`` batch, ``H, W`` image size, ``h = H / f``, ``w = W / f``
token grid, ``D`` latent channels. Images at the public API are float
``(B, 3, H, W)`` in ``[0, 1]``; the network works in ``[-1, 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fsqkit.quantizers import QuantizerOutput, build_quantizer
from fsqkit.tokenizer.autoencoder import Decoder, Encoder
from fsqkit.tokenizer.config import TokenizerConfig


@dataclass
class TokenizerOutput:
    """``recon``: ``(B, 3, H, W)`` reconstruction in ``[-1, 1]`` scale (unclamped);
    ``quant``: the quantizer's output (``indices`` ``(B, h, w)``, ``aux_loss``, stats)."""

    recon: Tensor
    quant: QuantizerOutput


class Tokenizer(nn.Module):
    """VQGAN-style image tokenizer with a pluggable quantizer.

    Example::

        tok = Tokenizer.load("runs/fsq")
        idx = tok.encode(images)        # (B, 3, H, W) in [0, 1] -> (B, h, w) int
        rec = tok.decode(idx)           # -> (B, 3, H, W) in [0, 1]
    """

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        if not isinstance(cfg, TokenizerConfig):
            raise TypeError(f"cfg must be a TokenizerConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        kwargs = dict(cfg.quantizer_kwargs)
        for reserved in ("dim", "channel_first"):
            if reserved in kwargs:
                raise ValueError(
                    f"quantizer_kwargs must not set {reserved!r}: the tokenizer sets it "
                    f"(dim = latent_channels = {cfg.latent_channels}, channel_first=True)"
                )
        self.quantizer = build_quantizer(
            cfg.quantizer, dim=cfg.latent_channels, channel_first=True, **kwargs
        )
        self.decoder = Decoder(cfg)

    @property
    def codebook_size(self) -> int:
        return int(self.quantizer.codebook_size)

    def _check_images(self, images: Tensor) -> None:
        if not isinstance(images, Tensor) or not images.is_floating_point():
            raise TypeError("images must be a floating-point tensor (B, 3, H, W) in [0, 1]")
        f = self.cfg.downsample_factor
        if images.ndim != 4 or images.shape[1] != self.cfg.in_channels:
            raise ValueError(
                f"images must have shape (B, {self.cfg.in_channels}, H, W), got {tuple(images.shape)}"
            )
        if images.shape[-1] % f or images.shape[-2] % f:
            raise ValueError(
                f"image height and width must be multiples of the down-sampling factor {f}, "
                f"got {tuple(images.shape[-2:])}"
            )

    def forward(self, images: Tensor) -> TokenizerOutput:
        """``(B, 3, H, W)`` in ``[0, 1]`` -> reconstruction (``[-1, 1]`` scale) + quantizer output."""
        self._check_images(images)
        z = self.encoder(images * 2.0 - 1.0)  # (B, D, h, w)
        q = self.quantizer(z)
        return TokenizerOutput(self.decoder(q.quantized), q)

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` float in ``[0, 1]`` -> integer indices ``(B, h, w)``
        (``(B, h, w, G)`` for multi-codebook / residual quantizers)."""
        self._check_images(images)
        return self.quantizer(self.encoder(images * 2.0 - 1.0)).indices

    @torch.no_grad()
    def decode(self, indices: Tensor) -> Tensor:
        """Indices from :meth:`encode` -> images ``(B, 3, H, W)`` in ``[0, 1]``."""
        if not isinstance(indices, Tensor) or indices.is_floating_point():
            raise TypeError("indices must be an integer tensor (B, h, w)")
        if indices.ndim < 3:
            raise ValueError(f"indices must have shape (B, h, w[, G]), got {tuple(indices.shape)}")
        codes = self.quantizer.indices_to_codes(indices)  # (B, D, h, w)
        return self.to_images(self.decoder(codes))

    @staticmethod
    def to_images(recon: Tensor) -> Tensor:
        """Network output in ``[-1, 1]`` scale -> images clamped to ``[0, 1]``."""
        return ((recon + 1.0) / 2.0).clamp(0.0, 1.0)

    @torch.no_grad()
    def reconstruct(self, images: Tensor) -> Tensor:
        """``decode(encode(images))`` in one pass (``[0, 1]``)."""
        return self.to_images(self(images).recon)

    # ------------------------------------------------------------ persistence
    def save(self, path: str) -> str:
        """Write a weights-only checkpoint directory ``path`` (atomically)."""
        from fsqkit.training.checkpoint import save_checkpoint

        # A stand-alone checkpoint is a run directory with one checkpoint.
        return save_checkpoint(path, 0, {"tokenizer": self}, {"tokenizer": self.cfg.to_dict()})

    @classmethod
    def load(
        cls, path: str, map_location: str = "cpu", channels_last: bool = False, ema: bool = True
    ) -> Tokenizer:
        """Load from a run directory, a checkpoint directory or :meth:`save`'s output.
        Returns the model in eval mode. The checkpoint's checksums are verified:
        a damaged file raises ``CheckpointCorrupt`` (a ``ValueError``) naming it.

        ``ema``: the run's EMA weights when it kept them (``--ema``), else the raw
        weights; ``ema=False``: always the raw (last optimizer step's) weights.

        ``channels_last``: NHWC weights, so the convolutions run in that layout
        for any input (on a 2-core CPU about 1.5-2x faster encoding of 32x32
        crops); a code can differ from the NCHW result where a latent sits on a
        bin edge to round-off (1 token in 262,144 in the demo's usage count)."""
        from fsqkit.training.checkpoint import load_checkpoint
        from fsqkit.training.ema import module_weights

        ckpt = load_checkpoint(path, weights_only=True, map_location=map_location)
        if "tokenizer" not in ckpt.config or "tokenizer" not in ckpt.weights:
            raise ValueError(f"{ckpt.path} is not a tokenizer checkpoint (no 'tokenizer' entry)")
        model = cls(TokenizerConfig.from_dict(ckpt.config["tokenizer"]))
        model.load_state_dict(module_weights(ckpt.weights, "tokenizer", ema))
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model.to(map_location).eval()


def describe(model: Tokenizer) -> str:
    """One line: quantizer, codebook size, grid, parameter counts."""
    cfg = model.cfg
    n_q = model.quantizer.num_parameters  # codebook entries (0 for FSQ)
    n = sum(p.numel() for p in model.parameters())
    return (
        f"{cfg.quantizer} K={model.codebook_size} f={cfg.downsample_factor} "
        f"grid={cfg.token_grid}x{cfg.token_grid} params={n / 1e6:.2f}M quantizer_params={n_q}"
    )
