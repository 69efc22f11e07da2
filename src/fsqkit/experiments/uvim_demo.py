"""``fsqkit uvim demo``: UViM-style dense prediction with FSQ vs VQ tokens.

For each task (depth and panoptic segmentation on the procedural ``scenes``,
colorization of the ``embedded`` photographs) and each quantizer (FSQ ``[7, 5, 5, 5, 5]``; VQ with
4096 codes, without and with UViM's code splitting) it trains a stage-I oracle
and a stage-II token predictor, plus one direct regression baseline with the
same context encoder and decoder and the budget of oracle + stage II. Prints
one table (oracle metric, full-model metric, codebook usage) and writes
``report.md`` / ``report.json``, one prediction grid per task and the runs.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from fsqkit.data.io import save_image_grid
from fsqkit.experiments.report import Report, Table
from fsqkit.training import TrainerConfig
from fsqkit.uvim import (
    OracleConfig,
    UViMTrainConfig,
    get_task,
    train_direct,
    train_oracle,
    train_stage2,
)
from fsqkit.uvim.evaluate import evaluate_dense, train_target_mean, trivial_predictor
from fsqkit.uvim.presets import quantizer_spec
from fsqkit.uvim.train import load_data

DEMO_DATA = {"depth": "scenes", "colorize": "embedded", "panoptic": "scenes"}
SECONDARY = {
    "depth": ("absrel", "delta1"),
    "colorize": ("psnr", "colorfulness"),
    "panoptic": ("pq_things", "pq_stuff"),
}
TRIVIAL = {"depth": "mean depth", "colorize": "grayscale copy", "panoptic": "all ground"}


@dataclass
class UViMDemoConfig:
    """Demo settings; :data:`PRESETS` hold the named budgets.

    Attributes:
        out: report folder.
        tasks, quantizers: what to compare (``fsq``, ``vq``, ``vq_split``).
        oracle_steps, stage2_steps: steps per stage; the direct baseline gets both.
        image_size, base_channels, channel_mult: shared conv layout (tokens at 1/f).
        direct_base_channels: the direct baseline's width (wider, so its size is
            near the full model's parameters used at prediction time).
        batch_size, lr: shared optimisation settings.
        num_train, num_val: generated items per split.
        s2_dim, s2_depth, decode_steps: the stage-II transformer.
        seed, progress: run seed, progress bars.
        threads: torch threads (1: tiny models on a shared 2-core machine run
            about 3x faster with one thread than with two; ``None``: torch's default).
    """

    out: str = "reports/uvim"
    tasks: tuple[str, ...] = ("depth", "colorize", "panoptic")
    quantizers: tuple[str, ...] = ("fsq", "vq", "vq_split")
    oracle_steps: int = 100
    stage2_steps: int = 100
    image_size: int = 32
    base_channels: int = 16
    direct_base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    batch_size: int = 16
    lr: float = 2e-3
    num_train: int = 2048
    num_val: int = 256
    s2_dim: int = 64
    s2_depth: int = 2
    decode_steps: int = 4
    seed: int = 0
    progress: bool = True
    threads: int | None = 1


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "quick": dict(
        oracle_steps=6, stage2_steps=6, base_channels=8, direct_base_channels=8, batch_size=4, num_train=32,
        num_val=8, s2_dim=32, s2_depth=1,
    ),
}  # fmt: skip


def uvim_demo_config(
    preset: str = "default", steps: int | None = None, **overrides: Any
) -> UViMDemoConfig:
    """The preset's config; ``steps`` sets both stages' steps; ``None`` overrides are ignored."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    if steps is not None:
        if steps < 1:
            raise ValueError(f"--steps must be >= 1, got {steps}")
        overrides.update(oracle_steps=steps, stage2_steps=steps)
    return replace(
        UViMDemoConfig(**PRESETS[preset]), **{k: v for k, v in overrides.items() if v is not None}
    )


def _trainer(cfg: UViMDemoConfig, out: str, steps: int) -> TrainerConfig:
    return TrainerConfig(out_dir=out, steps=steps, log_every=10, progress=cfg.progress)


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def run_task(cfg: UViMDemoConfig, task_name: str, report: Report) -> list[dict[str, Any]]:
    """Every quantizer's oracle + full model and the direct baseline for one task;
    returns the table rows and adds the prediction grid to ``report``."""
    task = get_task(task_name)
    metric = task.primary_metric
    tcfg = UViMTrainConfig(
        data=DEMO_DATA[task_name], num_train=cfg.num_train, num_val=cfg.num_val,
        batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, grid_images=8,
    )  # fmt: skip
    train, val = load_data(tcfg, task_name, cfg.image_size)
    layout = dict(image_size=cfg.image_size, base_channels=cfg.base_channels,
                  channel_mult=cfg.channel_mult)  # fmt: skip
    rows: list[dict[str, Any]] = []
    trivial = evaluate_dense(task, trivial_predictor(task, train_target_mean(task, train)), val)
    name = TRIVIAL[task_name]
    rows.append({"task": task_name, "model": f"trivial ({name})", "full": trivial.get(metric),
                 **{k: trivial.get(k) for k in SECONDARY[task_name]}})  # fmt: skip
    grid_batch = val.batch(slice(0, 8))
    inputs = task.inputs(grid_batch)
    grid = [inputs, task.to_rgb(task.target(grid_batch))]
    root = os.path.join(cfg.out, "runs", task_name)

    d_out = os.path.join(root, "direct")
    if cfg.progress:
        print(
            f"[{task_name}] direct baseline ({cfg.oracle_steps + cfg.stage2_steps} steps) -> {d_out}"
        )
    dlayout = {**layout, "base_channels": cfg.direct_base_channels}
    direct = train_direct(OracleConfig(task=task_name, **dlayout), tcfg,
                          _trainer(cfg, d_out, cfg.oracle_steps + cfg.stage2_steps))  # fmt: skip
    rows.append({"task": task_name, "model": "direct (no tokens)", "full": direct.metrics.get(metric),
                 "params": _params(direct.model), "train_s": direct.train_seconds,
                 **{k: direct.metrics.get(k) for k in SECONDARY[task_name]}})  # fmt: skip
    grid.append(task.to_rgb(direct.model.predict(inputs)))

    for q in cfg.quantizers:
        qname, qkw, latent = quantizer_spec(q)
        o_out, u_out = os.path.join(root, f"oracle-{q}"), os.path.join(root, f"uvim-{q}")
        if cfg.progress:
            print(f"[{task_name}] {q} oracle ({cfg.oracle_steps} steps) -> {o_out}")
        ocfg = OracleConfig(task=task_name, quantizer=qname, quantizer_kwargs=qkw,
                            latent_channels=latent, **layout)  # fmt: skip
        oracle = train_oracle(ocfg, tcfg, _trainer(cfg, o_out, cfg.oracle_steps))
        if cfg.progress:
            print(f"[{task_name}] {q} stage II ({cfg.stage2_steps} steps) -> {u_out}")
        full = train_stage2(o_out, tcfg, _trainer(cfg, u_out, cfg.stage2_steps), dim=cfg.s2_dim,
                            depth=cfg.s2_depth, decode_steps=cfg.decode_steps)  # fmt: skip
        rows.append({
            "task": task_name, "model": f"UViM {q}", "codes": oracle.model.codebook_size,
            "oracle": oracle.metrics.get(metric), "full": full.metrics.get(metric),
            "usage": oracle.metrics.get("train_usage"), "full_usage": full.metrics.get("usage"),
            "params": _params(full.model), "train_s": oracle.train_seconds + full.train_seconds,
            **{k: full.metrics.get(k) for k in SECONDARY[task_name]},
        })  # fmt: skip
        grid.append(task.to_rgb(full.model.predict(grid_batch.image)))
    path = os.path.join(cfg.out, f"predictions_{task_name}.png")
    save_image_grid([g.cpu() for g in grid], path)
    report.add_image(
        f"{task_name}: input / truth / direct / " + " / ".join(f"UViM {q}" for q in cfg.quantizers),
        os.path.basename(path),
    )
    return rows


def run_uvim_demo(cfg: UViMDemoConfig) -> Report:
    """Run the demo and write the report folder; returns the :class:`Report`."""
    t0 = time.perf_counter()
    os.makedirs(cfg.out, exist_ok=True)
    report = Report("UViM on FSQ vs VQ tokens: depth, colorization and panoptic segmentation")
    rows: list[dict[str, Any]] = []
    threads = torch.get_num_threads()
    try:  # the demo's thread count, not a lasting side effect for API callers
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        for task_name in cfg.tasks:
            rows += run_task(cfg, task_name, report)
    finally:
        torch.set_num_threads(threads)
    columns = ["task", "model", "codes", "oracle", "full", "usage", "full_usage",
               "absrel", "delta1", "psnr", "colorfulness", "pq_things", "pq_stuff", "params",
               "train_s"]  # fmt: skip
    used = [c for c in columns if any(r.get(c) is not None for r in rows)]
    fmt = {c: ".4g" for c in ("oracle", "full", "absrel", "delta1", "psnr", "colorfulness",
                              "pq_things", "pq_stuff")}  # fmt: skip
    fmt.update(usage=".1%", full_usage=".1%", train_s=".0f")
    table = Table(
        "UViM: oracle (stage I, sees the target) vs full model (stage II tokens -> decoder)",
        used, rows, fmt,
        note="depth: RMSE in metres (lower is better) on `scenes`; colorize: Fréchet "
        "distance in random-conv feature space (lower is better, not an FID) on `embedded`; "
        "panoptic: panoptic quality PQ in [0, 1] (higher is better) on `scenes`. "
        "usage: fraction of the codebook used by the oracle's tokens on the training set; "
        "full_usage: by stage II's predicted tokens on validation.",
    )  # fmt: skip
    report.sections.insert(0, {"kind": "table", "title": table.title, "table": table})
    report.data.update(config=asdict(cfg), total_seconds=time.perf_counter() - t0)
    md, _ = report.write(cfg.out)
    print()
    print(table.to_text())
    print(table.note)
    print(f"\nreport: {md} (total {report.data['total_seconds']:.0f} s)")
    return report
