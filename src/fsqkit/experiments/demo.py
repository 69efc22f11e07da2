"""``fsqkit demo``: the project's main job.

Stage I on the built-in ``embedded`` photographs: an FSQ tokenizer (levels
``[8, 5, 5, 5]``, 1000 codes) and a VQ tokenizer (1024 codes, VQGAN's codebook and
commitment losses, k-means init, dead-code reseeding) with the same
encoder/decoder and the same training budget (trained side by side in two
worker processes), next to a non-learned baseline at the same token grid
(:mod:`fsqkit.experiments.baseline`). The recipe (data, learning rate, steps)
comes from the measured experiments in docs/tokenizer.md. Prints one table and writes a report
folder (``report.md``, ``report.json``, ``reconstructions.png``,
``training_curves.png``, the two runs with checkpoints under ``runs/``).

Stages are functions that take the :class:`DemoConfig` and the shared
:class:`~fsqkit.experiments.report.Report`; a stage II appends itself after
:func:`run_stage1` in :func:`run_demo` and can load the tokenizers from
``Stage1Result.runs``.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from fsqkit.data import ImageDataset, build_dataset
from fsqkit.data.io import save_image_grid
from fsqkit.experiments.baseline import BicubicPaletteBaseline, evaluate_baseline, palette_levels
from fsqkit.experiments.parallel import describe, run_jobs, side_by_side_threads
from fsqkit.experiments.report import Report, Table
from fsqkit.experiments.stage2 import MASKGIT_BUDGETS, run_stage2
from fsqkit.metrics.reconstruction import codebook_usage
from fsqkit.tokenizer import (
    Tokenizer,
    TokenizerConfig,
    TokenizerTrainConfig,
    TrainResult,
    train_tokenizer,
)
from fsqkit.training import TrainerConfig, read_metrics


@dataclass
class DemoConfig:
    """Demo settings; :data:`PRESETS` hold the named budgets.

    Attributes:
        out: report folder.
        steps: optimisation steps per tokenizer.
        image_size: crop side (32: 8x8 tokens at f=4).
        base_channels, channel_mult, num_res_blocks: the shared architecture.
        batch_size, lr, betas: shared optimisation settings.
        train_images, val_images: number of ``embedded`` crops (stage I is
            measured on all ``val_images`` held-out crops).
        usage_images: codebook usage is counted on this many held-out crops
            (encoder only, cheap); PSNR/SSIM/perplexity on the first
            ``val_images`` of them. Usage keeps rising with the number of tokens
            counted (rare codes need many tokens to show up); 16384 crops are ~1000
            tokens per code (the paper's ImageNet validation: ~12,800 at 2^10).
        stage2_val_images: stage II (MaskGIT) is measured against the first this
            many of them (its sampling metrics and compression cost cost more per crop).
        fsq_levels: FSQ levels; vq_codebook_size / vq_latent_channels: the VQ side.
        vq_kmeans_init, vq_reseed_dead: VQ's standard codebook tricks (k-means
            initialisation on the first batch, dead-code reseeding from the batch);
            without them the randomly initialised codebook sits far from the encoder's
            latents and most codes are never used (docs/tokenizer.md).
        vq_entropy_weight: MaskGIT's entropy penalty (the paper: 0.1, temperature
            0.01). Off by default: with reseeding it is not needed for usage, and at
            our loss scale it pulled the encoder away from colour (docs/tokenizer.md).
        stage2: the stage-II (MaskGIT) preset, ``quick`` / ``default`` / ``full``
            (:data:`fsqkit.experiments.stage2.MASKGIT_BUDGETS`); set by the demo
            preset, not by ``steps``.
        seed: one seed for data, init and batches of both runs.
        side_by_side: train the two tokenizers at the same time in two worker
            processes, each with half of this process's torch threads (one each
            on a 2-core machine: 1.2x the throughput of one process with two
            threads there, measured on the demo's tokenizers). ``False``: one
            after the other in this process.
        progress: show progress bars.
    """

    out: str = "reports/demo"
    steps: int = 2400
    image_size: int = 32
    base_channels: int = 16
    channel_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 1
    batch_size: int = 16
    lr: float = 3e-3
    betas: tuple[float, float] = (0.9, 0.99)
    train_images: int = 4096
    val_images: int = 4096
    usage_images: int = 16384
    stage2_val_images: int = 1024
    fsq_levels: list[int] = field(default_factory=lambda: [8, 5, 5, 5])
    vq_codebook_size: int = 1024
    vq_latent_channels: int = 32
    vq_kmeans_init: bool = True
    vq_reseed_dead: bool = True
    vq_entropy_weight: float = 0.0
    stage2: str = "default"
    seed: int = 0
    side_by_side: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if self.stage2 not in MASKGIT_BUDGETS:  # fail now, not after stage I
            raise ValueError(
                f"unknown stage-II preset {self.stage2!r}; expected one of {sorted(MASKGIT_BUDGETS)}"
            )


PRESETS: dict[str, dict[str, Any]] = {
    # A smoke test of the whole pipeline (seconds); numbers are not meaningful.
    "quick": {
        "steps": 30,
        "train_images": 512,
        "val_images": 128,
        "usage_images": 256,
        "stage2_val_images": 128,
        "stage2": "quick",
    },
    # The README's main job: about 5 minutes in all on a 2-core CPU, 3.6 of them
    # for stage I (the two tokenizers side by side, one core each).
    "default": {},
    # A longer, better run (about 10x the default).
    "full": {
        "steps": 15000,
        "batch_size": 32,
        "train_images": 16384,
        "val_images": 4096,
        "usage_images": 16384,
        "stage2_val_images": 4096,
        "stage2": "full",
    },
}


def demo_config(preset: str = "default", **overrides: Any) -> DemoConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    return replace(
        DemoConfig(**PRESETS[preset]), **{k: v for k, v in overrides.items() if v is not None}
    )


@dataclass
class Stage1Result:
    """Per method (``"fsq"``, ``"vq"``, ``"baseline"``): validation metrics;
    ``runs``: run directories of the trained tokenizers (``Tokenizer.load``-able)."""

    metrics: dict[str, dict[str, float]]
    runs: dict[str, str]
    val_data: ImageDataset


def tokenizer_configs(cfg: DemoConfig) -> dict[str, TokenizerConfig]:
    """The two tokenizers: identical encoder/decoder, different bottleneck."""
    common = dict(
        image_size=cfg.image_size,
        base_channels=cfg.base_channels,
        channel_mult=tuple(cfg.channel_mult),
        num_res_blocks=cfg.num_res_blocks,
    )
    return {
        "fsq": TokenizerConfig(
            quantizer="fsq", quantizer_kwargs={"levels": list(cfg.fsq_levels)}, **common
        ),
        "vq": TokenizerConfig(
            quantizer="vq",
            quantizer_kwargs={
                "codebook_size": cfg.vq_codebook_size,
                "learning": "loss",  # VQGAN: codebook + commitment (0.25) losses
                "commitment_weight": 0.25,
                "entropy_weight": cfg.vq_entropy_weight,  # MaskGIT: 0.1
                "entropy_temperature": 0.01,
                "kmeans_init": cfg.vq_kmeans_init,
                "reseed_dead": cfg.vq_reseed_dead,
                "seed": cfg.seed,
            },
            latent_channels=cfg.vq_latent_channels,
            **common,
        ),
    }


def quantizer_parameters(model: Tokenizer) -> int:
    """Codebook numbers inside the quantizer (``Quantizer.num_parameters``): 0 for
    FSQ, ``K x d`` for VQ (its usage-statistics buffers are not counted)."""
    return int(model.quantizer.num_parameters)


def train_config(cfg: DemoConfig) -> TokenizerTrainConfig:
    """The optimisation and data settings both tokenizers share."""
    return TokenizerTrainConfig(
        data="embedded",
        num_train_images=cfg.train_images,
        num_val_images=cfg.val_images,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        betas=cfg.betas,
        seed=cfg.seed,
    )


def run_stage1(cfg: DemoConfig, report: Report) -> Stage1Result:
    """Train FSQ and VQ tokenizers, evaluate them and the baseline, add the
    table and figures to ``report``, print the table."""
    train_cfg = train_config(cfg)
    # One set of held-out crops: usage is counted on all of them, the other
    # metrics on the first val_images (stage II on the first stage2_val_images).
    usage_val = build_dataset(
        "embedded",
        "val",
        image_size=cfg.image_size,
        seed=cfg.seed,
        num_images=max(cfg.usage_images, cfg.val_images),
    )
    val = usage_val.head(cfg.val_images)
    configs = tokenizer_configs(cfg)
    factor = configs["fsq"].downsample_factor
    grid = configs["fsq"].token_grid
    rows: list[dict[str, Any]] = []
    metrics: dict[str, dict[str, float]] = {}
    runs: dict[str, str] = {}
    models: dict[str, Tokenizer] = {}

    baseline = BicubicPaletteBaseline(factor, palette_levels(1000))
    t0 = time.perf_counter()
    metrics["baseline"] = evaluate_baseline(baseline, val)
    _count_usage(metrics["baseline"], baseline.encode, baseline.codebook_size, usage_val)
    rows.append(
        _row(
            "baseline (no learning)",
            baseline.codebook_size,
            metrics["baseline"],
            0,
            time.perf_counter() - t0,
        )
    )
    trained = _train_tokenizers(cfg, configs, train_cfg)
    for name, result in trained.items():
        models[name] = result.model
        metrics[name] = dict(result.metrics)
        _count_usage(metrics[name], result.model.encode, result.model.codebook_size, usage_val)
        runs[name] = result.out_dir
        label = (
            f"FSQ {list(cfg.fsq_levels)}" if name == "fsq" else f"VQ {cfg.vq_codebook_size} codes"
        )
        rows.append(
            _row(
                label,
                result.model.codebook_size,
                metrics[name],
                quantizer_parameters(result.model),
                result.train_seconds,
            )
        )

    table = Table(
        title=f"Stage I: image tokenizers on embedded photos ({cfg.image_size}x{cfg.image_size} crops, "
        f"{grid}x{grid} tokens, {len(val)} held-out validation crops, {cfg.steps} steps)",
        columns=[
            "method",
            "codes",
            "bits/token",
            "PSNR dB",
            "SSIM",
            "usage",
            "perplexity",
            "quantizer params",
            "train s",
        ],
        rows=rows,
        formats={
            "bits/token": ".2f",
            "PSNR dB": ".2f",
            "SSIM": ".3f",
            "usage": ".1%",
            "perplexity": ".1f",
            "train s": ".1f",
        },
        note=(
            f"Baseline: {baseline.describe()}. Usage: fraction of the codebook used at least once "
            f"on {len(usage_val)} held-out crops ({len(usage_val) * grid * grid} tokens; PSNR, "
            f"SSIM and perplexity on the first {len(val)}). Same architecture "
            f"({_arch(configs['fsq'])}), data, seed and steps for FSQ and VQ"
            + (
                ", trained side by side (one process each)."
                if side_by_side_threads(cfg.side_by_side, len(configs))
                else "."
            )
        ),
    )
    print()
    print(table.to_text())
    print(table.note)
    report.add_table(table)
    report.data["stage1"] = {"config": asdict(cfg), "metrics": metrics, "runs": runs}

    _recon_figure(models, baseline, val, os.path.join(cfg.out, "reconstructions.png"))
    report.add_image("Reconstructions (rows: original, baseline, FSQ, VQ)", "reconstructions.png")
    if _curves_figure(runs, os.path.join(cfg.out, "training_curves.png")):
        report.add_image("Training curves", "training_curves.png")
    return Stage1Result(metrics, runs, val)


def _count_usage(m: dict[str, float], encode: Any, codebook_size: int, data: ImageDataset) -> None:
    """Set ``m["usage"]`` / ``m["codes_used"]`` from the codes ``encode`` gives on all
    of ``data``; the value measured on the (smaller) evaluation set is kept as
    ``usage_eval_crops``."""
    u = codebook_usage(data, encode, codebook_size)
    m["usage_eval_crops"] = m["usage"]
    m["codes_used"], m["usage"], m["usage_crops"] = u["codes_used"], u["usage"], u["usage_images"]


def _train_tokenizers(
    cfg: DemoConfig, configs: dict[str, TokenizerConfig], train_cfg: TokenizerTrainConfig
) -> dict[str, TrainResult]:
    """Train every tokenizer of ``configs`` into ``<out>/runs/<name>``: side by side
    in worker processes (``cfg.side_by_side`` and >= 2 cores) or one after another."""
    trainers = {
        name: TrainerConfig(
            out_dir=os.path.join(cfg.out, "runs", name),
            steps=cfg.steps,
            overwrite=True,  # the report folder's runs start over on every demo run
            log_every=5,
            progress=cfg.progress,
            progress_label=name.upper(),
        )
        for name in configs
    }
    each = side_by_side_threads(cfg.side_by_side, len(configs))
    if cfg.progress:
        for name, t in trainers.items():
            print(
                f"[stage I] {name.upper()} tokenizer ({cfg.steps} steps, {describe(each)}) "
                f"-> {t.out_dir}"
            )
    jobs = {
        name: (mcfg.to_dict(), train_cfg, replace(trainers[name], progress_position=i))
        for i, (name, mcfg) in enumerate(configs.items())
    }
    done = run_jobs(_train_worker, jobs, cfg.side_by_side)
    return {
        name: TrainResult(
            Tokenizer.load(trainers[name].out_dir, channels_last=True),  # faster inference
            m,
            trainers[name].out_dir,
            s,
        )
        for name, (m, s) in done.items()
    }


def _train_worker(
    model_cfg: dict[str, Any], train_cfg: TokenizerTrainConfig, trainer_cfg: TrainerConfig
) -> tuple[dict[str, float], float]:
    """One tokenizer run in a worker process: its validation metrics and training seconds."""
    result = train_tokenizer(TokenizerConfig.from_dict(model_cfg), train_cfg, trainer_cfg)
    return result.metrics, result.train_seconds


def _arch(c: TokenizerConfig) -> str:
    return f"f={c.downsample_factor}, base {c.base_channels} x {list(c.channel_mult)}, {c.num_res_blocks} res block(s)/stage"


def _row(
    label: str, codes: int, m: dict[str, float], qparams: int, seconds: float
) -> dict[str, Any]:
    import math

    return {
        "method": label,
        "codes": codes,
        "bits/token": math.log2(codes),
        "PSNR dB": m["psnr"],
        "SSIM": m["ssim"],
        "usage": m["usage"],
        "perplexity": m["perplexity"],
        "quantizer params": qparams,
        "train s": seconds,
    }


@torch.no_grad()
def _recon_figure(
    models: dict[str, Tokenizer], baseline: BicubicPaletteBaseline, val: ImageDataset, path: str
) -> None:
    x = val.batch(slice(0, 12))
    rows = [x, baseline.decode(baseline.encode(x))]
    rows += [models[k].reconstruct(x) for k in ("fsq", "vq") if k in models]
    save_image_grid(rows, path, scale=3)


def _curves_figure(runs: dict[str, str], path: str) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for name, run in runs.items():
        recs = [
            r for r in read_metrics(os.path.join(run, "metrics.jsonl")) if r.get("split") == "train"
        ]
        steps = [r["step"] for r in recs]
        axes[0].plot(steps, [r["recon"] for r in recs], label=name.upper())
        axes[1].plot(steps, [r["usage"] for r in recs], label=name.upper())
    axes[0].set(xlabel="step", ylabel="train reconstruction loss (MSE, [-1,1] scale)", yscale="log")
    axes[1].set(xlabel="step", ylabel=f"codebook usage (last {20} steps)", ylim=(0, 1.02))
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return True


def run_demo(cfg: DemoConfig) -> Report:
    """All stages; writes the report folder and returns the report."""
    t0 = time.perf_counter()
    report = Report(title="fsqkit demo: FSQ vs VQ")
    stage1 = run_stage1(cfg, report)
    val2 = stage1.val_data.head(cfg.stage2_val_images)
    run_stage2(cfg, report, stage1.runs, val2)  # MaskGIT: fsqkit.experiments.stage2
    report.data["total_seconds"] = time.perf_counter() - t0
    md, _ = report.write(cfg.out)
    print(f"\nreport: {md} (total {report.data['total_seconds']:.0f} s)")
    return report
