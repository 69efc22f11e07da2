"""Tokenizer hyperparameters: one dataclass, saved inside every checkpoint so
``Tokenizer.load(path)`` needs nothing else."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from fsqkit.training.config import SavedConfig

ALLOWED_FACTORS = (2, 4, 8, 16)


@dataclass
class TokenizerConfig(SavedConfig):
    """Architecture of a VQGAN-style tokenizer.

    Attributes:
        quantizer: registered quantizer name (``"fsq"``, ``"vq"``, ``"residual_fsq"``, ...).
        quantizer_kwargs: keyword arguments for ``build_quantizer`` (e.g.
            ``{"levels": [8, 5, 5, 5]}`` or ``{"codebook_size": 1024, ...}``). ``dim``
            and ``channel_first`` are set by the tokenizer.
        latent_channels: channels the encoder emits (the quantizer's ``dim``).
            ``None`` means ``len(levels) * num_codebooks`` for FSQ-style quantizers
            (no projection); required otherwise.
        image_size: training image side (only used to report the token grid).
        in_channels: image channels (3).
        base_channels: channels of the first stage.
        channel_mult: per-stage multipliers; ``len(channel_mult) = log2(f) + 1``
            (one stage per resolution).
        num_res_blocks: residual blocks per stage.
        norm_groups: groups of every GroupNorm (must divide every stage's width).
    """

    quantizer: str = "fsq"
    quantizer_kwargs: dict[str, Any] = field(default_factory=lambda: {"levels": [8, 5, 5, 5]})
    latent_channels: int | None = None
    image_size: int = 32
    in_channels: int = 3
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    norm_groups: int = 8

    def __post_init__(self) -> None:
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        if not self.channel_mult or any(m < 1 for m in self.channel_mult):
            raise ValueError(f"channel_mult must be positive integers, got {self.channel_mult}")
        if self.downsample_factor not in ALLOWED_FACTORS:
            raise ValueError(
                f"channel_mult {list(self.channel_mult)} gives a down-sampling factor "
                f"f={self.downsample_factor}; expected f in {ALLOWED_FACTORS}, i.e. "
                f"2 to 5 entries"
            )
        for name in ("base_channels", "num_res_blocks", "in_channels", "norm_groups", "image_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for m in self.channel_mult:
            if (self.base_channels * m) % self.norm_groups:
                raise ValueError(
                    f"norm_groups={self.norm_groups} must divide every stage width "
                    f"base_channels*mult, got {self.base_channels}*{m}"
                )
        if self.image_size % self.downsample_factor:
            raise ValueError(
                f"image_size {self.image_size} must be divisible by the down-sampling "
                f"factor {self.downsample_factor}"
            )
        if self.latent_channels is None:
            levels = self.quantizer_kwargs.get("levels")
            if levels is None:
                raise ValueError(
                    f"latent_channels is required for quantizer {self.quantizer!r} "
                    f"(it is only derived from 'levels' for FSQ-style quantizers)"
                )
            self.latent_channels = len(levels) * int(self.quantizer_kwargs.get("num_codebooks", 1))
        if self.latent_channels < 1:
            raise ValueError(f"latent_channels must be >= 1, got {self.latent_channels}")

    @property
    def downsample_factor(self) -> int:
        """``f``: image side / token grid side."""
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def token_grid(self) -> int:
        """Token grid side for ``image_size`` images."""
        return self.image_size // self.downsample_factor

    @staticmethod
    def channel_mult_for(factor: int, widths: tuple[int, ...] = (1, 2, 2, 4, 4)) -> tuple[int, ...]:
        """Default multipliers for a down-sampling factor ``f`` (2, 4, 8, 16)."""
        if factor not in ALLOWED_FACTORS:
            raise ValueError(f"down-sampling factor must be one of {ALLOWED_FACTORS}, got {factor}")
        return widths[: int(math.log2(factor)) + 1]
