"""Hyperparameters of the MaskGIT transformer, saved inside every checkpoint."""

from __future__ import annotations

from dataclasses import dataclass

from fsqkit.training.config import SavedConfig


@dataclass(frozen=True)
class MaskGITConfig(SavedConfig):
    """Configuration of :class:`~fsqkit.maskgit.model.MaskGITTransformer`.

    ``codebook_size`` and ``grid`` come from the stage-I tokenizer's saved config
    (see :func:`fsqkit.maskgit.train.config_from_tokenizer`); they are never typed
    by hand.

    Attributes:
        codebook_size: ``K``, number of token values; the MASK token gets id ``K``.
        grid: ``(h, w)`` token grid of one image; ``S = h * w``.
        num_classes: number of class labels (0 = unconditional). Label id
            ``num_classes`` is the "no class" label used for classifier-free guidance.
        dim: transformer width.
        depth: number of transformer blocks.
        heads: attention heads (``dim`` must be divisible by it).
        mlp_ratio: MLP hidden width / ``dim``.
        dropout: dropout on embeddings, attention output and MLP output.
    """

    codebook_size: int
    grid: tuple[int, int]
    num_classes: int = 0
    dim: int = 256
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid", tuple(int(g) for g in self.grid))
        for name in ("codebook_size", "dim", "depth", "heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MaskGITConfig.{name} must be a positive int, got {value!r}")
        if len(self.grid) != 2 or min(self.grid) < 1:
            raise ValueError(f"MaskGITConfig.grid must be (h, w) with h, w >= 1, got {self.grid}")
        if self.num_classes < 0:
            raise ValueError(f"MaskGITConfig.num_classes must be >= 0, got {self.num_classes}")
        if self.dim % self.heads:
            raise ValueError(
                f"MaskGITConfig.dim ({self.dim}) must be divisible by heads ({self.heads})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"MaskGITConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"MaskGITConfig.mlp_ratio must be > 0, got {self.mlp_ratio}")

    @property
    def seq_len(self) -> int:
        """``S``: tokens per image."""
        return self.grid[0] * self.grid[1]

    @property
    def mask_id(self) -> int:
        """Input id of the MASK token (``K``)."""
        return self.codebook_size

    @property
    def null_class(self) -> int:
        """Label id meaning "no class" (``num_classes``)."""
        return self.num_classes
