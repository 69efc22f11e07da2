"""The paper's stage-I tokenizer configurations by name (``fsqkit train-tokenizer
--preset NAME``), and what one costs in memory.

``maskgit-imagenet256``: MaskGIT's VQGAN as the FSQ paper trains it on ImageNet
256 (docs/paper facts): 128 filters, channel multipliers ``[1, 1, 2, 2, 4]``
(16x down-sampling: 16x16 tokens), L1/L2 reconstruction + perceptual (0.1) +
adversarial (0.1) losses with an R1 penalty of 10, Adam lr 1e-4 with betas
``(0, 0.99)``; FSQ levels ``[8, 5, 5, 5]`` (no extra loss) or, with
``--quantizer vq``, VQ with 1024 codes of dimension 256, commitment 0.25 and
entropy loss 0.1 (temperature 0.01). Where the paper is silent the preset's
``notes`` say what was chosen.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fsqkit.tokenizer.config import TokenizerConfig
from fsqkit.tokenizer.discriminator import PatchDiscriminator
from fsqkit.tokenizer.model import Tokenizer
from fsqkit.training.presets import (
    RunPreset,
    count_params,
    extrapolate,
    memory_line,
    saved_bytes_per_item,
)

PRESETS: dict[str, RunPreset] = {
    "maskgit-imagenet256": RunPreset(
        name="maskgit-imagenet256",
        summary="MaskGIT's VQGAN at ImageNet 256 (128 filters, [1,1,2,2,4], f=16; FSQ [8,5,5,5] "
        "or --quantizer vq: 1024x256); needs --data",
        args={
            "image_size": 256,
            "base_channels": 128,
            "channel_mult": [1, 1, 2, 2, 4],
            "num_res_blocks": 2,
            "levels": [8, 5, 5, 5],
            "codebook_size": 1024,
            "latent_channels": 256,
            "vq_learning": "loss",
            "commitment_weight": 0.25,
            "entropy_weight": 0.1,
            "entropy_temperature": 0.01,
            "recon_loss": "l1+l2",
            "perceptual_weight": 0.1,
            "disc_weight": 0.1,
            "disc_start": 10_000,
            "lr": 1e-4,
            "batch_size": 32,
            "steps": 500_000,
            "fid": "auto",
        },
        train={"betas": (0.0, 0.99), "r1_weight": 10.0, "warmup_steps": 1000},
        trainer={"precision": "bf16"},
        global_batch=256,
        required=("data",),
        notes=(
            "reconstruction 'L1/L2' is read as their sum (l1+l2; --recon-loss l1 or l2 for "
            "either alone)",
            "2 residual blocks per stage, as in MaskGIT's and taming's f=16 VQGAN (paper "
            "silent)",
            "VQ's latent width is its code dimension, 256 (the paper's 'dim 256'); FSQ emits "
            "4 channels (its levels), no projection",
            "global batch 256, 500k steps, 1000 warm-up steps, GAN loss from step 10k "
            "(paper silent: VQGAN practice)",
            "bf16 autocast (paper silent; TPU training is bf16): quantization and VQ "
            "distances stay float32",
            "the perceptual loss needs --perceptual-weights (a local VGG16 file); without it "
            "it is off and a line says so",
            "the discriminator is fsqkit's PatchGAN (paper silent on its architecture)",
        ),
    ),
}


def preset_model_config(preset: RunPreset, quantizer: str = "fsq") -> TokenizerConfig:
    """The preset's :class:`TokenizerConfig` for ``quantizer`` (``fsq`` or ``vq``)."""
    a = preset.args
    if quantizer == "fsq":
        qkw: dict = {"levels": list(a["levels"])}
        latent = None
    else:
        qkw = {
            "codebook_size": a["codebook_size"],
            "commitment_weight": a["commitment_weight"],
            "entropy_weight": a["entropy_weight"],
            "entropy_temperature": a["entropy_temperature"],
            "learning": a["vq_learning"],
        }
        latent = a["latent_channels"]
    return TokenizerConfig(
        quantizer=quantizer,
        quantizer_kwargs=qkw,
        latent_channels=latent,
        image_size=a["image_size"],
        base_channels=a["base_channels"],
        channel_mult=tuple(a["channel_mult"]),
        num_res_blocks=a["num_res_blocks"],
    )


def tokenizer_params(cfg: TokenizerConfig, gan: bool) -> dict[str, int]:
    """Parameter counts: ``encoder``, ``quantizer``, ``decoder`` (and ``discriminator``)."""
    with torch.device("meta"):
        model = Tokenizer(cfg)
        disc = PatchDiscriminator(cfg.in_channels) if gan else None
    counts = {
        "encoder": count_params(model.encoder),
        "quantizer": count_params(model.quantizer),
        "decoder": count_params(model.decoder),
    }
    if disc is not None:
        counts["discriminator"] = count_params(disc)
    return counts


def activation_bytes_per_image(cfg: TokenizerConfig, precision: str) -> float:
    """Bytes autograd keeps per image for one forward at ``cfg.image_size``,
    measured on the CPU at two small sizes and extrapolated in the pixel count."""
    torch.manual_seed(0)
    model = Tokenizer(cfg)
    f = cfg.downsample_factor
    sizes = (2 * f, 4 * f)
    measured = []
    for side in sizes:

        def forward(batch: int, side: int = side) -> Tensor:
            x = torch.rand(batch, cfg.in_channels, side, side)
            return model(x).recon.float().pow(2).mean()

        measured.append(saved_bytes_per_item(forward, precision))
    pixels = [s * s for s in sizes]
    return extrapolate(pixels[0], measured[0], pixels[1], measured[1], cfg.image_size**2)


def describe_preset(
    preset: RunPreset, cfg: TokenizerConfig, precision: str, batch_size: int, gan: bool
) -> str:
    """The line printed before a preset run: parameters and memory per image."""
    return memory_line(
        f"preset {preset.name} ({cfg.quantizer}, {cfg.image_size}px, "
        f"{cfg.token_grid}x{cfg.token_grid} tokens)",
        tokenizer_params(cfg, gan),
        activation_bytes_per_image(cfg, precision),
        precision,
        batch_size,
    )
