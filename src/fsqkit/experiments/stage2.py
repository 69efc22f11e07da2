"""Stage II of ``fsqkit demo``: MaskGIT on the FSQ and the VQ tokens.

After the tokenizer comparison (:func:`fsqkit.experiments.demo.run_stage1`),
trains one small unconditional MaskGIT transformer on each tokenizer's tokens of
the same training crops (same architecture, steps, seed), samples from both and
reports side by side: Fréchet distance / precision / recall of the samples
against the held-out crops in the offline random-conv feature space
(:mod:`fsqkit.metrics.features`; not an Inception FID), the compression cost
of the held-out crops' tokens, and the share of the codebook the samples use.
Two reference rows frame the numbers: the tokenizer's own reconstructions of the
held-out crops (the best samples could do through this tokenizer) and uniformly
random tokens decoded by it (what an untrained stage II gives).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from fsqkit.data import ImageDataset
from fsqkit.data.io import save_image_grid
from fsqkit.experiments.parallel import describe, run_jobs, side_by_side_threads
from fsqkit.experiments.report import Report, Table
from fsqkit.maskgit.evaluate import GenerationEval, evaluate_generation
from fsqkit.maskgit.train import MaskGITTrainConfig, train_maskgit
from fsqkit.metrics import FeatureExtractor, RandomConvFeatures, feature_quality
from fsqkit.quantizers.stats import code_counts
from fsqkit.tokenizer import Tokenizer
from fsqkit.training import DistInfo, TrainerConfig


@dataclass
class MaskGITBudget:
    """MaskGIT settings of the demo (one for both tokenizers).

    Attributes:
        steps: MaskGIT optimisation steps per tokenizer.
        dim, depth, heads, dropout: transformer size (dropout off by default:
            short runs do not overfit; the paper's 0.1 at ImageNet scale).
        batch_size, lr: optimisation; ``warmup_steps`` ``None``: ``min(50, steps // 10)``.
        num_samples: samples per model for the metrics (and 12 in the grid).
        decode_steps: decoding steps ``T``; choice temperature is MaskGIT's 4.5.
    """

    steps: int = 400
    dim: int = 128
    depth: int = 2
    heads: int = 4
    dropout: float = 0.0
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int | None = None
    num_samples: int = 256
    decode_steps: int = 12


MASKGIT_BUDGETS: dict[str, dict[str, Any]] = {
    "quick": {"steps": 20, "dim": 32, "depth": 1, "num_samples": 64, "decode_steps": 8},
    "default": {},
    "full": {"steps": 5000, "dim": 256, "depth": 4, "batch_size": 64, "num_samples": 1000},
}


def maskgit_budget(preset: str = "default") -> MaskGITBudget:
    """The stage-II budget of a demo preset (``quick`` / ``default`` / ``full``;
    ``DemoConfig.stage2`` names it, so ``--steps`` changes stage I only)."""
    if preset not in MASKGIT_BUDGETS:
        raise ValueError(
            f"unknown stage-II preset {preset!r}; expected one of {sorted(MASKGIT_BUDGETS)}"
        )
    return MaskGITBudget(**MASKGIT_BUDGETS[preset])


def run_stage2(
    demo_cfg: Any,
    report: Report,
    runs: dict[str, str],
    val: ImageDataset,
    cfg: MaskGITBudget | None = None,
) -> dict[str, dict[str, float]]:
    """Train MaskGIT on each tokenizer in ``runs`` (``{"fsq": dir, "vq": dir}``),
    evaluate against ``val``, add a table and a sample grid to ``report``.

    ``demo_cfg`` is the demo's ``DemoConfig`` (its ``out``, ``seed``,
    ``train_images``, ``stage2_val_images``, ``progress`` and ``stage2`` are used).
    Returns the metrics per method.
    """
    cfg = cfg or maskgit_budget(getattr(demo_cfg, "stage2", "default"))
    extractor = RandomConvFeatures()
    real = val.batch(slice(None))
    real_f = extractor(real)  # once: every row is measured against the same features

    def quality(images: torch.Tensor) -> dict[str, float]:
        return feature_quality(real_f, extractor(images))

    rows: list[dict[str, Any]] = []
    metrics: dict[str, dict[str, float]] = {}
    grid_rows = [val.batch(slice(0, 12))]
    jobs: dict[str, tuple[Any, ...]] = {}
    for i, (name, tok_dir) in enumerate(runs.items()):
        out = os.path.join(demo_cfg.out, "runs", f"maskgit_{name}")
        trainer = TrainerConfig(
            out,
            cfg.steps,
            log_every=10,
            overwrite=True,  # the report folder's runs start over on every demo run
            progress=demo_cfg.progress,
            progress_label=f"MaskGIT {name.upper()}",
            progress_position=i,
        )
        jobs[name] = (
            tok_dir,
            val,
            cfg,
            trainer,
            demo_cfg.train_images,
            demo_cfg.seed,
            extractor,
            real_f,
        )
    enabled = getattr(demo_cfg, "side_by_side", False)
    if demo_cfg.progress:
        how = describe(side_by_side_threads(enabled, len(jobs)))
        for name, job in jobs.items():
            print(
                f"[stage II] MaskGIT on the {name.upper()} tokens ({cfg.steps} steps, {how}) "
                f"-> {job[3].out_dir}"
            )
    done = run_jobs(_stage2_job, jobs, enabled)
    for name, tok_dir in runs.items():
        tokenizer = Tokenizer.load(tok_dir, channels_last=True)
        m, samples = done[name]
        metrics[name] = m
        grid_rows.append(samples)
        label = f"MaskGIT on {name.upper()} tokens ({tokenizer.codebook_size} codes)"
        rows.append(_row(label, m))
        recon = torch.cat([tokenizer.reconstruct(x) for x in real.split(256)])
        rows.append(
            _row(
                f"  reference: {name.upper()} reconstructions",
                quality(recon),
            )
        )
        g = torch.Generator().manual_seed(demo_cfg.seed)
        grid = tokenizer.cfg.token_grid
        rand = torch.randint(tokenizer.codebook_size, (cfg.num_samples, grid, grid), generator=g)
        noise = torch.cat([tokenizer.decode(t) for t in rand.split(256)])
        rows.append(
            _row(
                f"  reference: random {name.upper()} tokens",
                quality(noise),
            )
        )

    table = Table(
        title=f"Stage II: MaskGIT samples ({cfg.num_samples} per model, {cfg.decode_steps} decoding steps) "
        f"vs {len(val)} held-out crops; {cfg.steps} training steps, {cfg.depth} layers x {cfg.dim}",
        columns=[
            "method",
            "FD (rand-conv)",
            "precision",
            "recall",
            "bits/image",
            "raw bits",
            "sample usage",
            "train s",
        ],
        rows=rows,
        formats={
            "FD (rand-conv)": ".3f",
            "precision": ".3f",
            "recall": ".3f",
            "bits/image": ".0f",
            "raw bits": ".0f",
            "sample usage": ".1%",
            "train s": ".1f",
        },
        note=(
            "FD: Fréchet distance in the offline random-conv feature space (lower is better; not "
            "comparable with Inception FIDs). Precision/recall: k-NN manifolds (k=3). bits/image: "
            "MaskGIT's NLL of the held-out crops' tokens under a deterministic masking schedule "
            "(raw: tokens x log2 K). Sample usage: share of the codebook that the sampled "
            "tokens use. Reference rows: the tokenizer's reconstructions of the held-out "
            "crops (best reachable) and decoded uniformly random tokens (untrained stage II)."
        ),
    )
    print()
    print(table.to_text())
    print(table.note)
    report.add_table(table)
    report.data["stage2"] = {"config": asdict(cfg), "metrics": metrics}
    save_image_grid(grid_rows, os.path.join(demo_cfg.out, "samples.png"), scale=3)
    report.add_image(
        "MaskGIT samples (rows: held-out real crops, " + ", ".join(n.upper() for n in runs) + ")",
        "samples.png",
    )
    return metrics


def _stage2_job(
    tok_dir: str,
    val: ImageDataset,
    cfg: MaskGITBudget,
    trainer_cfg: TrainerConfig,
    train_images: int | None,
    seed: int,
    extractor: FeatureExtractor,
    real_features: torch.Tensor,
) -> tuple[dict[str, float], torch.Tensor]:
    """One tokenizer's stage II (here or in a worker process): its metrics and the
    first 12 samples for the grid."""
    m, ev = train_and_evaluate_maskgit(
        Tokenizer.load(tok_dir, channels_last=True),
        tok_dir,
        val,
        cfg,
        trainer_cfg,
        num_train_images=train_images,
        num_val_images=len(val),
        seed=seed,
        extractor=extractor,
        real_features=real_features,
    )
    return m, ev.samples[:12].clone()


def train_and_evaluate_maskgit(
    tokenizer: Tokenizer,
    tok_dir: str,
    val: ImageDataset,
    cfg: MaskGITBudget,
    trainer_cfg: TrainerConfig,
    *,
    num_train_images: int | None,
    num_val_images: int | None,
    seed: int,
    extractor: FeatureExtractor,
    real_features: torch.Tensor,
    data: str = "embedded",
    dist_info: DistInfo | None = None,
) -> tuple[dict[str, float], GenerationEval]:
    """Train (or resume) an unconditional MaskGIT on ``tokenizer``'s tokens of
    ``data`` and measure it against ``val`` (``(N, 3, H, W)`` crops).

    ``real_features``: ``extractor`` applied to all of ``val``. Returns the
    metrics of :func:`~fsqkit.maskgit.evaluate.evaluate_generation` plus
    ``sample_usage`` (share of the codebook the re-encoded samples use),
    ``train_seconds`` and ``eval_seconds``, and the evaluation itself.
    """
    train_cfg = MaskGITTrainConfig(
        data=data,
        num_train_images=num_train_images,
        num_val_images=num_val_images,
        tokenizer=tok_dir,
        class_conditional=False,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        warmup_steps=min(50, cfg.steps // 10) if cfg.warmup_steps is None else cfg.warmup_steps,
        seed=seed,
    )
    arch = {"dim": cfg.dim, "depth": cfg.depth, "heads": cfg.heads, "dropout": cfg.dropout}
    result = train_maskgit(arch, train_cfg, trainer_cfg, dist_info, tokenizer=tokenizer)
    t0 = time.perf_counter()
    ev = evaluate_generation(
        result.model,
        tokenizer,
        val,
        num_samples=cfg.num_samples,
        num_steps=cfg.decode_steps,
        seed=seed,
        extractor=extractor,
        real_features=real_features,
    )
    m = dict(ev.metrics)
    device = next(tokenizer.parameters()).device
    sample_tokens = torch.cat([tokenizer.encode(x.to(device)).cpu() for x in ev.samples.split(256)])
    m["sample_usage"] = float(
        (code_counts(sample_tokens, tokenizer.codebook_size) > 0).float().mean()
    )
    m["train_seconds"], m["eval_seconds"] = result.train_seconds, time.perf_counter() - t0
    return m, ev


def _row(label: str, m: dict[str, float]) -> dict[str, Any]:
    return {
        "method": label,
        "FD (rand-conv)": m["fd"],
        "precision": m["precision"],
        "recall": m["recall"],
        "bits/image": m.get("bits_per_image"),
        "raw bits": m.get("raw_bits_per_image"),
        "sample usage": m.get("sample_usage"),
        "train s": m.get("train_seconds"),
    }
