"""The non-learned baseline of the demo: the same token grid and codebook size
as the tokenizers, with no learning at all.

Each ``f x f`` pixel block becomes one token: the block's mean colour (area
down-sampling), snapped to the nearest colour of a fixed uniform RGB palette of
``n^3`` colours (``n = 10`` gives 1000 codes, the size of FSQ ``[8,5,5,5]``);
decoding up-samples the palette colours bicubically to full size. Same grid,
(almost) the same bits per token, no parameters.

Dimension legend: ``B`` batch, ``H, W`` image size, ``f`` block size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fsqkit.data import ImageDataset
from fsqkit.metrics.reconstruction import reconstruction_metrics


def palette_levels(codebook_size: int) -> int:
    """Largest ``n`` with ``n^3 <= codebook_size`` (10 for 1000, 10 for 1024)."""
    n = 1
    while (n + 1) ** 3 <= codebook_size:
        n += 1
    return n


class BicubicPaletteBaseline:
    """``encode``: ``(B, 3, H, W)`` in ``[0, 1]`` -> ``(B, H/f, W/f)`` indices in
    ``[0, n^3)``; ``decode``: indices -> ``(B, 3, H, W)`` (bicubic, clamped)."""

    def __init__(self, factor: int, levels_per_channel: int) -> None:
        if factor < 1 or levels_per_channel < 2:
            raise ValueError(
                f"need factor >= 1 and levels_per_channel >= 2, got {factor}, {levels_per_channel}"
            )
        self.factor = factor
        self.n = levels_per_channel
        self.codebook_size = levels_per_channel**3

    def encode(self, images: Tensor) -> Tensor:
        small = F.avg_pool2d(images, self.factor)  # (B, 3, h, w) block means
        digits = (small.clamp(0, 1) * (self.n - 1)).round().long()  # nearest palette level
        return digits[:, 0] + self.n * digits[:, 1] + self.n * self.n * digits[:, 2]

    def decode(self, indices: Tensor) -> Tensor:
        n = self.n
        digits = torch.stack([indices % n, (indices // n) % n, indices // (n * n)], dim=1)
        small = digits.float() / (n - 1)  # (B, 3, h, w)
        up = F.interpolate(small, scale_factor=self.factor, mode="bicubic", align_corners=False)
        return up.clamp(0, 1)

    def describe(self) -> str:
        return (
            f"{self.factor}x{self.factor} block mean -> nearest of {self.n}^3={self.codebook_size} "
            f"uniform RGB colours -> bicubic {self.factor}x up-sampling"
        )


def evaluate_baseline(
    baseline: BicubicPaletteBaseline, data: ImageDataset, batch_size: int = 256
) -> dict[str, float]:
    """Same metrics as :func:`fsqkit.tokenizer.evaluate_tokenizer`."""

    def codec(x: Tensor) -> tuple[Tensor, Tensor]:
        idx = baseline.encode(x)
        return idx, baseline.decode(idx)

    return reconstruction_metrics(data, codec, baseline.codebook_size, batch_size)
