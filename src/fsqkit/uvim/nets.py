"""Conv networks of UViM's stage I (and the direct baseline), built from the
tokenizer's blocks.

Dimension legend: ``B`` batch, ``H, W`` image size, ``f`` down-sampling factor,
``h = H / f``, ``w = W / f`` token grid, ``C`` target channels, ``D`` latent
channels, ``c_i`` width of stage ``i`` (``base_channels * channel_mult[i]``).

- :class:`ContextEncoder`: image -> features at every stage resolution (the
  decoder's skip connections; the top one sits on the token grid).
- :class:`TargetEncoder`: target and image -> latent ``(B, D, h, w)``.
- :class:`TargetDecoder`: latent (or nothing, for the direct baseline) and the
  context features -> target ``(B, C, H, W)`` on the ``[-1, 1]`` scale.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsqkit.tokenizer.blocks import Downsample, ResBlock, Upsample, norm

CONV_BATCH = 32
"""Images per call of the conv networks at prediction time: at 32x32 the
activations of 32 images stay in the CPU's caches, and smaller calls were up to
2x faster than calls on 128 images, with the same values per image."""


F_ = TypeVar("F_", bound=Callable[..., Tensor])


def inference(fn: F_) -> F_:
    """Run ``fn`` under ``torch.inference_mode`` (no autograd bookkeeping, no
    version counters) and return an ordinary tensor (a copy made outside it), so
    callers may still use the result in autograd, e.g. as a training target."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.inference_mode():
            out = fn(*args, **kwargs)
        return out.clone()

    return wrapper  # type: ignore[return-value]


def in_batches(fn: Callable[..., Tensor], *inputs: Tensor, size: int = CONV_BATCH) -> Tensor:
    """``fn(*inputs)`` evaluated on ``size`` items at a time (inputs sliced along
    dim 0, outputs concatenated): for per-item networks in inference on the CPU
    (on a GPU, where larger batches are faster, all at once)."""
    n = inputs[0].shape[0]
    if n <= size or inputs[0].device.type != "cpu":
        return fn(*inputs)
    return torch.cat([fn(*(x[i : i + size] for x in inputs)) for i in range(0, n, size)])


class ContextEncoder(nn.Module):
    """``(B, 3, H, W)`` in ``[-1, 1]`` -> ``[(B, c_0, H, W), …, (B, c_top, h, w)]``."""

    def __init__(self, widths: list[int], groups: int, in_channels: int = 3) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.stages = nn.ModuleList()
        c = widths[0]
        for i, w in enumerate(widths):
            down = [Downsample(c)] if i else []
            self.stages.append(nn.Sequential(*down, ResBlock(c, w, groups)))
            c = w

    def forward(self, x: Tensor) -> list[Tensor]:
        feats, h = [], self.conv_in(x)
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        return feats


class TargetEncoder(nn.Module):
    """``target (B, C, H, W)`` and ``image (B, 3, H, W)`` (both ``[-1, 1]``) ->
    latent ``(B, D, h, w)``: UViM's stage-I encoder sees the image too."""

    def __init__(self, target_channels: int, latent: int, widths: list[int], groups: int) -> None:
        super().__init__()
        self.body = ContextEncoder(widths, groups, in_channels=target_channels + 3)
        self.mid = ResBlock(widths[-1], widths[-1], groups)
        self.norm_out = norm(widths[-1], groups)
        self.conv_out = nn.Conv2d(widths[-1], latent, 1)

    def forward(self, target: Tensor, image: Tensor) -> Tensor:
        h = self.mid(self.body(torch.cat([target, image], 1))[-1])
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, D, h, w)


class TargetDecoder(nn.Module):
    """Latent ``(B, D, h, w)`` (``latent=0``: none) + context features -> target
    ``(B, C, H, W)`` (``[-1, 1]`` scale, unclamped). A U-Net-style decoder: at
    each resolution the matching context feature map is concatenated."""

    def __init__(self, target_channels: int, latent: int, widths: list[int], groups: int) -> None:
        super().__init__()
        self.latent = latent
        top = widths[-1]
        self.conv_in = nn.Conv2d(latent + top, top, 3, padding=1)
        self.mid = ResBlock(top, top, groups)
        self.ups = nn.ModuleList()
        self.fuse = nn.ModuleList()
        c = top
        for w in reversed(widths[:-1]):
            self.ups.append(Upsample(c))
            self.fuse.append(ResBlock(c + w, w, groups))
            c = w
        self.norm_out = norm(c, groups)
        self.conv_out = nn.Conv2d(c, target_channels, 3, padding=1)
        # Start at the encoded value 0 (mid-range depth; the grayscale copy for colours).
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, z: Tensor | None, context: list[Tensor]) -> Tensor:
        top = context[-1]
        if self.latent:
            if z is None:
                raise ValueError("this decoder needs a latent z")
            top = torch.cat([z, top], 1)
        h = self.mid(self.conv_in(top))
        for up, fuse, skip in zip(self.ups, self.fuse, reversed(context[:-1])):
            h = fuse(torch.cat([up(h), skip], 1))
        return self.conv_out(F.silu(self.norm_out(h)))
