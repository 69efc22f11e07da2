"""UViM stage I, the "oracle": an autoencoder of the target conditioned on the
image, whose bottleneck is quantized by any registered fsqkit quantizer.

Dimension legend: ``B`` batch, ``H, W`` image size, ``h, w`` token grid, ``C``
target channels, ``D`` latent channels. Images at the public API are float
``(B, 3, H, W)`` in ``[0, 1]`` (the task's *input*, e.g. the grayscale image for
colorization); targets are in task units.

It is an upper bound for the full model: it sees the true target when encoding.
The decoder sees only the tokens and the image, so :meth:`decode` turns stage
II's predicted tokens into a prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fsqkit.quantizers import QuantizerOutput, build_quantizer
from fsqkit.uvim.config import OracleConfig
from fsqkit.uvim.nets import ContextEncoder, TargetDecoder, TargetEncoder, in_batches, inference
from fsqkit.uvim.tasks import DenseTask, get_task


def check_images(images: Tensor, size: int) -> None:
    """``ValueError``/``TypeError`` unless ``images`` is float ``(B, 3, size, size)``."""
    if not isinstance(images, Tensor) or not images.is_floating_point():
        raise TypeError("images must be a floating-point tensor (B, 3, H, W) in [0, 1]")
    if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (size, size):
        raise ValueError(
            f"images must have shape (B, 3, {size}, {size}), got {tuple(images.shape)}"
        )


@dataclass
class OracleOutput:
    """``recon``: ``(B, C, H, W)`` on the ``[-1, 1]`` scale; ``quant``: the
    quantizer's output (``indices`` ``(B, h, w)``, ``aux_loss``, stats)."""

    recon: Tensor
    quant: QuantizerOutput


class Oracle(nn.Module):
    """Stage I. ``forward(images, target) -> OracleOutput``; ``encode`` -> tokens
    ``(B, h, w)``; ``decode(tokens, images)`` -> target in task units."""

    def __init__(self, cfg: OracleConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.task: DenseTask = get_task(cfg.task, cfg.task_options)
        widths = [cfg.base_channels * m for m in cfg.channel_mult]
        c, d, g = self.task.target_channels, int(cfg.latent_channels or 0), cfg.norm_groups
        for reserved in ("dim", "channel_first"):
            if reserved in cfg.quantizer_kwargs:
                raise ValueError(f"quantizer_kwargs must not set {reserved!r}: the oracle sets it")
        self.context = ContextEncoder(widths, g)
        self.encoder = TargetEncoder(c, d, widths, g)
        self.quantizer = build_quantizer(
            cfg.quantizer, dim=d, channel_first=True, **cfg.quantizer_kwargs
        )
        self.decoder = TargetDecoder(c, d, widths, g)

    @property
    def codebook_size(self) -> int:
        return int(self.quantizer.codebook_size)

    def forward(self, images: Tensor, target: Tensor) -> OracleOutput:
        """``images (B, 3, H, W)`` in ``[0, 1]``, ``target (B, C, H, W)`` in task units."""
        check_images(images, self.cfg.image_size)
        x = images * 2.0 - 1.0
        q = self.quantizer(self.encoder(self.task.encode(target, images), x))  # (B, D, h, w)
        return OracleOutput(self.decoder(q.quantized, self.context(x)), q)

    @torch.no_grad()
    def encode(self, images: Tensor, target: Tensor) -> Tensor:
        """Token ids ``(B, h, w)`` of ``target`` given ``images``."""
        check_images(images, self.cfg.image_size)
        x = images * 2.0 - 1.0
        return self.quantizer(self.encoder(self.task.encode(target, images), x)).indices

    @inference
    def decode(self, tokens: Tensor, images: Tensor) -> Tensor:
        """Tokens ``(B, h, w)`` and images -> prediction ``(B, C, H, W)`` in task units
        (the networks run on ``CONV_BATCH`` images at a time)."""
        check_images(images, self.cfg.image_size)
        if tokens.is_floating_point() or tokens.shape != (images.shape[0], *self.cfg.grid):
            raise ValueError(
                f"tokens must be integer (B, {self.cfg.grid[0]}, {self.cfg.grid[1]}), "
                f"got {tokens.dtype} {tuple(tokens.shape)}"
            )
        return in_batches(self._decode, tokens, images)

    def _decode(self, tokens: Tensor, images: Tensor) -> Tensor:
        codes = self.quantizer.indices_to_codes(tokens)  # (B, D, h, w)
        return self.task.decode(self.decoder(codes, self.context(images * 2.0 - 1.0)), images)

    @torch.no_grad()
    def reconstruct(self, images: Tensor, target: Tensor) -> Tensor:
        """The oracle prediction (task units): ``decode(encode(images, target), images)``."""
        return self.task.decode(self(images, target).recon, images)


class DirectModel(nn.Module):
    """The direct baseline: the oracle's context encoder and decoder without a
    bottleneck, regressing the target from the image (no tokens)."""

    def __init__(self, cfg: OracleConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.task: DenseTask = get_task(cfg.task, cfg.task_options)
        widths = [cfg.base_channels * m for m in cfg.channel_mult]
        self.context = ContextEncoder(widths, cfg.norm_groups)
        self.decoder = TargetDecoder(self.task.target_channels, 0, widths, cfg.norm_groups)

    def forward(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` in ``[0, 1]`` -> ``(B, C, H, W)`` on the ``[-1, 1]`` scale."""
        check_images(images, self.cfg.image_size)
        return self.decoder(None, self.context(images * 2.0 - 1.0))

    @inference
    def predict(self, images: Tensor) -> Tensor:
        """Prediction in task units (``CONV_BATCH`` images at a time)."""
        return in_batches(lambda x: self.task.decode(self(x), x), images)
