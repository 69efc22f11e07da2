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


# ----------------------------------------------------------------- run presets
# The paper's NYU Depth v2 setting by name (``fsqkit uvim train-oracle|train
# --preset nyu-depth``): FSQ [7,5,5,5,5] (4375 codes) or, with ``--quantizer
# vq_split``, VQ with 4096 codes and code splitting. The paper is silent on the
# networks and optimisation (UViM's are ViTs; fsqkit's oracle is a conv net):
# each preset's ``notes`` say what was chosen.

_NYU_NOTES = (
    "256x256 crops and 16x16 = 256 tokens (channel multipliers 1,2,2,4,4: f=16); the "
    "paper gives only the codebooks",
    "Adam lr 3e-4, global batch 128, 100k steps, bf16 autocast (paper silent)",
)


def run_presets() -> dict[str, Any]:
    """``{"train-oracle": {...}, "train": {...}}``: the UViM run presets by command."""
    from fsqkit.training.presets import RunPreset

    arch = {"image_size": 256, "base_channels": 64, "channel_mult": [1, 2, 2, 4, 4]}
    optim = {"lr": 3e-4, "batch_size": 32, "steps": 100_000}
    return {
        "train-oracle": {
            "nyu-depth": RunPreset(
                name="nyu-depth",
                summary="UViM's NYU Depth v2 oracle: FSQ [7,5,5,5,5] (or --quantizer vq_split: "
                "4096 codes, splitting), 256px, 16x16 tokens; needs --data nyu:PATH",
                args={"task": "depth", "levels": list(FSQ_LEVELS), **arch, **optim},
                trainer={"precision": "bf16"},
                global_batch=128,
                required=("data",),
                notes=_NYU_NOTES,
            )
        },
        "train": {
            "nyu-depth": RunPreset(
                name="nyu-depth",
                summary="UViM's NYU Depth v2 stage II on a nyu-depth oracle (masked decoder, "
                "width 512, 8 layers, 8 heads)",
                args={"decoder": "masked", "dim": 512, "depth": 8, "heads": 8, **optim},
                trainer={"precision": "bf16"},
                global_batch=128,
                notes=(*_NYU_NOTES, "stage II: width 512, 8 layers, 8 heads (paper silent)"),
            )
        },
    }


def describe_run_preset(preset: Any, model_cfg: Any, precision: str, batch_size: int) -> str:
    """The line printed before a UViM preset run: parameter count and memory per
    image (``model_cfg``: an ``OracleConfig`` or a ``Stage2Config``), measured at
    two small image sizes and extrapolated in the pixel count."""
    import torch

    from fsqkit.training.presets import (
        count_params,
        extrapolate,
        memory_line,
        saved_bytes_per_item,
    )
    from fsqkit.uvim.config import OracleConfig
    from fsqkit.uvim.oracle import Oracle
    from fsqkit.uvim.stage2 import TokenPredictor

    oracle = isinstance(model_cfg, OracleConfig)
    cls = Oracle if oracle else TokenPredictor
    with torch.device("meta"):
        params = count_params(cls(model_cfg))
    f = 2 ** (len(model_cfg.channel_mult) - 1)
    sides, measured = (2 * f, 4 * f), []
    for side in sides:
        torch.manual_seed(0)
        grid = (side // f, side // f)
        small = type(model_cfg).from_dict(
            {**model_cfg.to_dict(), "image_size": side, **({} if oracle else {"grid": grid})}
        )
        model = cls(small)

        def forward(b: int, m: Any = model, side: int = side, grid: tuple = grid) -> Any:
            x = torch.rand(b, 3, side, side)
            if oracle:
                return m(x, torch.rand(b, m.task.target_channels, side, side)).recon.mean()
            return m(x, torch.zeros(b, *grid, dtype=torch.long))[0]

        measured.append(saved_bytes_per_item(forward, precision))
    pixels = [s * s for s in sides]
    act = extrapolate(pixels[0], measured[0], pixels[1], measured[1], model_cfg.image_size**2)
    kind = "oracle" if oracle else "stage II"
    return memory_line(
        f"preset {preset.name} ({kind}, {model_cfg.image_size}px)",
        {kind: params},
        act,
        precision,
        batch_size,
    )
