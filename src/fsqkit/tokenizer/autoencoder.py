"""VQGAN-style convolutional encoder and decoder (residual blocks, GroupNorm,
one stage per resolution, channel multipliers).

Dimension legend: ``B`` batch, ``H, W`` image size, ``f`` down-sampling factor
(``2 ** (len(channel_mult) - 1)``), ``h = H / f``, ``w = W / f``, ``D`` latent
channels (``TokenizerConfig.latent_channels``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from fsqkit.tokenizer.blocks import Downsample, ResBlock, Upsample, norm
from fsqkit.tokenizer.config import TokenizerConfig


class Encoder(nn.Module):
    """``(B, 3, H, W)`` images in ``[-1, 1]`` -> ``(B, D, h, w)`` latents."""

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        g = cfg.norm_groups
        widths = [cfg.base_channels * m for m in cfg.channel_mult]
        self.conv_in = nn.Conv2d(cfg.in_channels, widths[0], 3, padding=1)
        layers: list[nn.Module] = []
        c = widths[0]
        for i, w in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                layers.append(ResBlock(c, w, g))
                c = w
            if i < len(widths) - 1:
                layers.append(Downsample(c))
        layers.append(ResBlock(c, c, g))  # middle block at the token resolution
        self.body = nn.Sequential(*layers)
        self.norm_out = norm(c, g)
        self.conv_out = nn.Conv2d(c, cfg.latent_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.body(self.conv_in(x))  # (B, C_top, h, w)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, D, h, w)


class Decoder(nn.Module):
    """``(B, D, h, w)`` quantized latents -> ``(B, 3, H, W)`` images (unbounded;
    trained towards ``[-1, 1]``)."""

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        g = cfg.norm_groups
        widths = [cfg.base_channels * m for m in reversed(cfg.channel_mult)]
        c = widths[0]
        self.conv_in = nn.Conv2d(cfg.latent_channels, c, 3, padding=1)
        layers: list[nn.Module] = [ResBlock(c, c, g)]
        for i, w in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                layers.append(ResBlock(c, w, g))
                c = w
            if i < len(widths) - 1:
                layers.append(Upsample(c))
        self.body = nn.Sequential(*layers)
        self.norm_out = norm(c, g)
        self.conv_out = nn.Conv2d(c, cfg.in_channels, 3, padding=1)

    @property
    def last_layer(self) -> nn.Parameter:
        """Weight of the output conv (VQGAN's adaptive GAN weight uses its gradients)."""
        return self.conv_out.weight

    def forward(self, z: Tensor) -> Tensor:
        h = self.body(self.conv_in(z))
        return self.conv_out(F.silu(self.norm_out(h)))
