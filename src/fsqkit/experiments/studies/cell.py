"""One cell of a study: train (or resume) a stage-I tokenizer and a stage-II
MaskGIT on its tokens, and measure both.

Folder of a cell::

    <cell>/tokenizer/   the tokenizer run (checkpoints, metrics.jsonl)
    <cell>/maskgit/     the MaskGIT run
    <cell>/result.json  written atomically when the cell is done

Both runs use the Trainer's ``resume=True`` with periodic checkpoints, so an
interrupted cell continues where its last checkpoint left it, and a finished
run is not trained again (only evaluated).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from fsqkit.data import ImageDataset
from fsqkit.experiments.stage2 import train_and_evaluate_maskgit
from fsqkit.experiments.studies.cells import Cell
from fsqkit.experiments.studies.scale import StudyScale
from fsqkit.metrics import FeatureExtractor, frechet_distance_features
from fsqkit.metrics.reconstruction import codebook_usage
from fsqkit.tokenizer import TokenizerConfig, TokenizerTrainConfig, train_tokenizer
from fsqkit.training import DistInfo, TrainerConfig, atomic_write_text

RESULT_FILE = "result.json"


@dataclass
class EvalContext:
    """What every cell is measured against (computed once per study).

    Attributes:
        val: validation crops ``(N, 3, H, W)`` in ``[0, 1]``.
        extractor: feature extractor of the Fréchet distances and precision/recall.
        real_features: ``extractor(val)``, ``(N, F)``.
        usage: the held-out crops codebook usage is counted on (``StudyScale.usage_images``),
            ``None``: the tokenizer's validation crops.
    """

    val: ImageDataset
    extractor: FeatureExtractor
    real_features: Tensor
    usage: ImageDataset | None = None


def tokenizer_config(cell: Cell, scale: StudyScale) -> TokenizerConfig:
    """The cell's tokenizer: the scale's encoder/decoder, the cell's bottleneck."""
    return TokenizerConfig(
        quantizer=cell.quantizer,
        quantizer_kwargs=dict(cell.quantizer_kwargs),
        latent_channels=cell.latent_channels,
        image_size=scale.image_size,
        base_channels=scale.base_channels,
        channel_mult=tuple(scale.channel_mult),
        num_res_blocks=scale.num_res_blocks,
    )


def cell_record(cell: Cell, status: str = "missing") -> dict[str, Any]:
    """The identifying fields of a cell's result (``cell``, ``row``, ``label``,
    ``target``, ``codes``, ``levels``) and its ``status``."""
    return {
        "cell": cell.name,
        "row": cell.row,
        "label": cell.label,
        "target": cell.target,
        "codes": cell.codes,
        "levels": cell.quantizer_kwargs.get("levels"),
        "status": status,
    }


def read_result(cell_dir: str) -> dict[str, Any] | None:
    """The finished cell's result, or ``None`` if the cell is not done."""
    path = os.path.join(cell_dir, RESULT_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def run_cell(
    cell: Cell,
    scale: StudyScale,
    cell_dir: str,
    ctx: EvalContext,
    progress: bool = False,
    dist_info: DistInfo | None = None,
) -> dict[str, Any]:
    """Train and measure ``cell``; writes and returns its result.

    Returns :func:`cell_record` with ``status="done"``, ``"metrics"`` (``psnr``,
    ``ssim``, ``mse``, ``usage``, ``codes_used``, ``perplexity``, ``recon_fd``,
    ``sample_fd``, ``precision``, ``recall``, ``bits_per_image``,
    ``raw_bits_per_image``, ``sample_usage``) and ``"seconds"``.
    """
    dist = dist_info or DistInfo()
    t_start = time.perf_counter()
    train_cfg = TokenizerTrainConfig(
        data=scale.data,
        num_train_images=scale.train_images,
        num_val_images=scale.val_images,
        batch_size=scale.batch_size,
        lr=scale.lr,
        betas=(0.9, 0.99),
        seed=scale.seed,
        grid_images=0,
    )
    tok_dir = os.path.join(cell_dir, "tokenizer")
    tok = train_tokenizer(
        tokenizer_config(cell, scale),
        train_cfg,
        _trainer_cfg(tok_dir, scale.steps, scale, progress),
        dist,
    )
    metrics: dict[str, float] = {
        k: float(tok.metrics[k])
        for k in ("psnr", "ssim", "mse", "usage", "codes_used", "perplexity")
    }
    if ctx.usage is not None:  # usage on more held-out crops than the other metrics
        device = next(tok.model.parameters()).device
        u = codebook_usage(ctx.usage, tok.model.encode, tok.model.codebook_size, device=device)
        metrics["usage_val_crops"] = metrics["usage"]
        metrics.update(usage=u["usage"], codes_used=u["codes_used"], usage_images=u["usage_images"])
    metrics["recon_fd"] = _recon_fd(tok.model, ctx)
    s2 = scale.stage2
    gen, _ = train_and_evaluate_maskgit(
        tok.model,
        tok_dir,
        ctx.val,
        s2,
        _trainer_cfg(os.path.join(cell_dir, "maskgit"), s2.steps, scale, progress),
        num_train_images=scale.train_images,
        num_val_images=scale.fd_images,
        seed=scale.seed,
        extractor=ctx.extractor,
        real_features=ctx.real_features,
        data=scale.data,
        dist_info=dist,
    )
    metrics["sample_fd"] = gen["fd"]
    for k in ("precision", "recall", "bits_per_image", "raw_bits_per_image", "sample_usage"):
        metrics[k] = float(gen[k])
    result = {
        **cell_record(cell, "done"),
        "metrics": metrics,
        "seconds": {
            "tokenizer_train": tok.train_seconds,
            "maskgit_train": gen["train_seconds"],
            "maskgit_eval": gen["eval_seconds"],
            "total_this_session": time.perf_counter() - t_start,
        },
    }
    if dist.is_main:
        atomic_write_text(os.path.join(cell_dir, RESULT_FILE), json.dumps(result, indent=2))
    return result


def _trainer_cfg(out: str, steps: int, scale: StudyScale, progress: bool) -> TrainerConfig:
    return TrainerConfig(
        out_dir=out,
        steps=steps,
        ckpt_every=scale.ckpt_every,
        log_every=max(1, min(10, steps)),
        keep_checkpoints=1,
        resume=True,
        progress=progress,
        precision=scale.precision,
        ema_decay=scale.ema_decay,
        grad_accum=scale.grad_accum,
        compile=scale.compile,
    )


@torch.no_grad()
def _recon_fd(model: torch.nn.Module, ctx: EvalContext) -> float:
    """Fréchet distance of the tokenizer's reconstructions of ``ctx.val`` to ``ctx.val``."""
    device = next(model.parameters()).device
    real = ctx.val.batch(slice(None))
    recon = torch.cat([model.reconstruct(x.to(device)).cpu() for x in real.split(256)])  # type: ignore[operator]
    return frechet_distance_features(ctx.real_features, ctx.extractor(recon))
