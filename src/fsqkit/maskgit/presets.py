"""The paper's stage-II (MaskGIT) configurations by name (``fsqkit train-maskgit
--preset NAME``), and what one costs in memory.

``maskgit-imagenet256`` (docs/paper facts): a bidirectional transformer over
the 16x16 token grid with 24 layers, width 768, 16 heads, MLP 3072, dropout
0.1, label smoothing 0.1, AdamW lr 1e-4 with betas ``(0.9, 0.96)`` and weight
decay 0.045, 5000 warm-up steps, class-conditional with 10% of labels dropped
for classifier-free guidance, at least 45% of tokens masked. Vocabulary and
grid come from the tokenizer, as always.
"""

from __future__ import annotations

import torch

from fsqkit.maskgit.config import MaskGITConfig
from fsqkit.maskgit.model import MaskGITTransformer
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
        summary="the paper's stage II at ImageNet 256 (24 layers, width 768, 16 heads, MLP "
        "3072, AdamW 1e-4, 5000 warm-up steps, class-conditional); needs --tokenizer, --data",
        args={
            "dim": 768,
            "depth": 24,
            "heads": 16,
            "mlp_ratio": 4.0,
            "dropout": 0.1,
            "label_smoothing": 0.1,
            "label_drop": 0.1,
            "min_mask_fraction": 0.45,
            "lr": 1e-4,
            "warmup_steps": 5000,
            "weight_decay": 0.045,
            "batch_size": 64,
            "steps": 1_500_000,
            "fid_samples": 10_000,
        },
        train={"betas": (0.9, 0.96)},
        trainer={"precision": "bf16"},
        global_batch=256,
        required=("data",),
        notes=(
            "global batch 256 and 1.5M steps (about 300 ImageNet epochs), as MaskGIT trained "
            "(the FSQ paper is silent)",
            "cosine decay to 10% of lr after the warm-up (paper silent on the decay)",
            "bf16 autocast (paper silent); the loss's softmax runs in float32",
            "each evaluation samples 10k images (12 steps, no guidance) for FID against the "
            "validation images (the paper reports 50k-sample FIDs: use fsqkit fid for those)",
            "class-conditional when the data has labels (ImageNet's class folders); sample "
            "with `fsqkit sample --guidance A`",
        ),
    ),
}


def preset_arch(preset: RunPreset) -> dict[str, float | int]:
    """The preset's :class:`MaskGITConfig` architecture fields."""
    return {k: preset.args[k] for k in ("dim", "depth", "heads", "mlp_ratio", "dropout")}


def activation_bytes_per_sequence(cfg: MaskGITConfig, precision: str) -> float:
    """Bytes autograd keeps per training sequence (all positions masked: the
    most logits), measured on the CPU with 1 and 2 layers and extrapolated in
    the depth."""
    measured = []
    for depth in (1, 2):
        torch.manual_seed(0)
        model = MaskGITTransformer(MaskGITConfig.from_dict({**cfg.to_dict(), "depth": depth}))

        def forward(batch: int, model: MaskGITTransformer = model) -> torch.Tensor:
            tokens = torch.zeros(batch, cfg.seq_len, dtype=torch.long)
            mask = torch.ones(batch, cfg.seq_len, dtype=torch.bool)
            labels = torch.zeros(batch, dtype=torch.long) if cfg.num_classes else None
            return model(tokens, labels, mask).float().mean()

        measured.append(saved_bytes_per_item(forward, precision))
    return extrapolate(1, measured[0], 2, measured[1], cfg.depth)


def describe_preset(preset: RunPreset, cfg: MaskGITConfig, precision: str, batch_size: int) -> str:
    """The line printed before a preset run: parameters and memory per image."""
    with torch.device("meta"):
        params = count_params(MaskGITTransformer(cfg))
    return memory_line(
        f"preset {preset.name} (K={cfg.codebook_size}, {cfg.grid[0]}x{cfg.grid[1]} tokens, "
        f"{cfg.num_classes} classes)",
        {"transformer": params},
        activation_bytes_per_sequence(cfg, precision),
        precision,
        batch_size,
    )
