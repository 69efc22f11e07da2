"""The paper's UViM quantizers by short name: ``fsq`` (levels ``[7, 5, 5, 5, 5]``,
4375 codes), ``vq`` (4096 codes, EMA codebook, commitment 0.25, no splitting)
and ``vq_split`` (the same with UViM's code splitting). Any other registered
quantizer name passes through with its own keyword arguments.

Both VQ presets use ``ema_decay=0.9``: the discounted counts start at 1, so with
the default 0.99 no code falls below the splitting threshold (0.1) before step
~230, after the demo's budget; with 0.9 splitting starts after ~22 steps."""

from __future__ import annotations

from typing import Any

from fsqkit.quantizers.levels import PAPER_LEVELS

FSQ_LEVELS = PAPER_LEVELS[2**12]  # [7, 5, 5, 5, 5], 4375 codes
VQ_CODEBOOK_SIZE = 4096
VQ_LATENT_CHANNELS = 32
VQ_EMA_DECAY = 0.9


def quantizer_spec(
    name: str,
    levels: list[int] | None = None,
    codebook_size: int = VQ_CODEBOOK_SIZE,
    split_codes: bool = False,
    latent_channels: int | None = None,
) -> tuple[str, dict[str, Any], int | None]:
    """``(registered name, kwargs, latent_channels)`` for an oracle's bottleneck."""
    if name == "fsq":
        return "fsq", {"levels": list(levels or FSQ_LEVELS)}, latent_channels
    if name in ("vq", "vq_split"):
        kwargs = {
            "codebook_size": codebook_size,
            "learning": "ema",
            "commitment_weight": 0.25,
            "ema_decay": VQ_EMA_DECAY,
            "split_codes": split_codes or name == "vq_split",
        }
        return "vq", kwargs, latent_channels or VQ_LATENT_CHANNELS
    return name, {}, latent_channels
