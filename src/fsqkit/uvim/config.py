"""UViM hyperparameters: one dataclass per stage, saved inside every
checkpoint so ``load(path)`` needs nothing else. Stage II derives its
vocabulary and token grid from stage I's saved config (never typed twice)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fsqkit.tokenizer.config import ALLOWED_FACTORS
from fsqkit.training.config import SavedConfig

STAGE2_DECODERS = ("masked", "autoregressive")


def _check_positive(obj: Any, names: tuple[str, ...]) -> None:
    for name in names:
        v = getattr(obj, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{type(obj).__name__}.{name} must be a positive integer, got {v!r}")


@dataclass
class OracleConfig(SavedConfig):
    """Stage I: a conv autoencoder of the task's target, conditioned on the image.

    Attributes:
        task: registered task name (``depth``, ``colorize``, ``panoptic``).
        task_options: the task's options (:meth:`~fsqkit.uvim.tasks.DenseTask.with_options`;
            e.g. a panoptic class table from a COCO-panoptic JSON); ``{}``: its defaults.
        quantizer / quantizer_kwargs: ``fsqkit.quantizers.build_quantizer`` name and
            arguments (``dim`` and ``channel_first`` are set by the model).
        latent_channels: channels of the bottleneck (the quantizer's ``dim``);
            ``None``: ``len(levels)`` for FSQ.
        image_size: side of the images and targets.
        base_channels / channel_mult: widths of the conv stages; the token grid is
            ``image_size / 2 ** (len(channel_mult) - 1)``.
        norm_groups: GroupNorm groups.
    """

    task: str = "depth"
    task_options: dict[str, Any] = field(default_factory=dict)
    quantizer: str = "fsq"
    quantizer_kwargs: dict[str, Any] = field(default_factory=lambda: {"levels": [7, 5, 5, 5, 5]})
    latent_channels: int | None = None
    image_size: int = 32
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    norm_groups: int = 8

    def __post_init__(self) -> None:
        from fsqkit.uvim.tasks import get_task

        get_task(self.task, self.task_options)
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        if self.factor not in ALLOWED_FACTORS:
            raise ValueError(
                f"channel_mult {list(self.channel_mult)} gives factor {self.factor}; "
                f"expected one of {ALLOWED_FACTORS}"
            )
        _check_positive(self, ("image_size", "base_channels", "norm_groups"))
        if self.image_size % self.factor:
            raise ValueError(f"image_size {self.image_size} must be divisible by {self.factor}")
        if any((self.base_channels * m) % self.norm_groups for m in self.channel_mult):
            raise ValueError(f"norm_groups={self.norm_groups} must divide every stage width")
        if self.latent_channels is None:
            levels = self.quantizer_kwargs.get("levels")
            if levels is None:
                raise ValueError(f"latent_channels is required for quantizer {self.quantizer!r}")
            self.latent_channels = len(levels)

    @property
    def factor(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def grid(self) -> tuple[int, int]:
        g = self.image_size // self.factor
        return (g, g)


@dataclass
class Stage2Config(SavedConfig):
    """Stage II: a transformer that predicts the oracle's tokens from the image.

    Attributes:
        codebook_size, grid: from the oracle (``K`` codes; ``MASK``/``BOS`` id ``K``).
        decoder: ``"masked"`` (MaskGIT: bidirectional, parallel decoding in
            ``decode_steps`` steps; the default) or ``"autoregressive"`` (raster
            order, causal, one token per step, image features as a prefix).
        image_size, base_channels, channel_mult: the image encoder (same layout as
            the oracle's, so its top features sit on the token grid).
        dim, depth, heads, mlp_ratio, dropout: the transformer.
        decode_steps: MaskGIT decoding steps (``masked`` only).
    """

    codebook_size: int
    grid: tuple[int, int]
    decoder: str = "masked"
    image_size: int = 32
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    dim: int = 128
    depth: int = 3
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    decode_steps: int = 4
    norm_groups: int = 8

    def __post_init__(self) -> None:
        self.grid = tuple(int(g) for g in self.grid)  # type: ignore[assignment]
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        if self.decoder not in STAGE2_DECODERS:
            raise ValueError(f"decoder must be one of {STAGE2_DECODERS}, got {self.decoder!r}")
        _check_positive(self, ("codebook_size", "dim", "depth", "heads", "decode_steps"))
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        if self.decode_steps > self.seq_len:
            raise ValueError(
                f"decode_steps must be <= {self.seq_len} tokens, got {self.decode_steps}"
            )

    @property
    def seq_len(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def mask_id(self) -> int:
        return self.codebook_size

    @classmethod
    def from_oracle(cls, oracle: OracleConfig, codebook_size: int, **kwargs: Any) -> Stage2Config:
        """Stage II for ``oracle``: vocabulary, grid and image encoder layout from it."""
        return cls(
            codebook_size=codebook_size,
            grid=oracle.grid,
            image_size=oracle.image_size,
            base_channels=kwargs.pop("base_channels", oracle.base_channels),
            channel_mult=oracle.channel_mult,
            norm_groups=oracle.norm_groups,
            **kwargs,
        )
