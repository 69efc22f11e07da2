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
from fsqkit.experiments.parallel import available_cores, run_side_by_side
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
        threads: torch threads per model (1: tiny models on a shared 2-core
            machine run about 3x faster with one thread than with two; ``None``:
            torch's default).
        workers: worker processes that train the table's models (each task's
            direct baseline and per-quantizer oracle + stage II are independent
            jobs) at the same time, ``threads`` threads each; the numbers are the
            same as one after the other. ``None``: one per ``threads`` cores of
            this machine; 1: all in this process.
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
    workers: int | None = None


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


def _trainer(cfg: UViMDemoConfig, out: str, steps: int, label: str | None = None) -> TrainerConfig:
    return TrainerConfig(
        out_dir=out,
        steps=steps,
        log_every=10,
        progress=cfg.progress,
        progress_label=label,
        overwrite=True,  # the report folder's runs start over on every demo run
    )


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def run_task(cfg: UViMDemoConfig, task_name: str, report: Report) -> list[dict[str, Any]]:
    """Every quantizer's oracle + full model and the direct baseline for one task;
    returns the table rows and adds the prediction grid to ``report``."""
    return run_tasks(replace(cfg, tasks=(task_name,)), report)


def run_tasks(cfg: UViMDemoConfig, report: Report) -> list[dict[str, Any]]:
    """All of ``cfg.tasks``: the models of every task are independent jobs, run
    side by side in ``cfg.workers`` processes (or here, one after the other);
    returns the table rows (task by task) and adds one prediction grid per task."""
    jobs: dict[tuple[str, str], tuple[Any, ...]] = {}
    context: dict[str, tuple[list[dict[str, Any]], list[torch.Tensor]]] = {}
    for task_name in cfg.tasks:
        rows, grid, task_jobs = _task_jobs(cfg, task_name)
        context[task_name] = (rows, grid)
        jobs.update({(task_name, model): job for model, job in task_jobs.items()})
    workers = _workers(cfg, len(jobs))
    if cfg.progress:
        how = f"{workers} worker processes" if workers > 1 else "one after the other"
        print(f"[uvim] {len(jobs)} models for {', '.join(cfg.tasks)} ({how})")
    if workers > 1:
        named = {f"{t}/{m}": job for (t, m), job in jobs.items()}
        for i, job in enumerate(named.values()):
            for trainer in job[-1]:  # one progress line per worker slot
                trainer.progress_position = i % workers
        done = run_side_by_side(_run_job, named, threads_each=cfg.threads or 1, max_workers=workers)
        results = {key: done[f"{key[0]}/{key[1]}"] for key in jobs}
    else:
        results = {key: _run_job(*job) for key, job in jobs.items()}
    all_rows: list[dict[str, Any]] = []
    for task_name in cfg.tasks:
        rows, grid = context[task_name]
        for (t, _model), (row, pred) in results.items():
            if t == task_name:
                rows.append(row)
                grid.append(pred)
        path = os.path.join(cfg.out, f"predictions_{task_name}.png")
        save_image_grid([g.cpu() for g in grid], path)
        report.add_image(
            f"{task_name}: input / truth / direct / "
            + " / ".join(f"UViM {q}" for q in cfg.quantizers),
            os.path.basename(path),
        )
        all_rows += rows
    return all_rows


def _workers(cfg: UViMDemoConfig, jobs: int) -> int:
    if cfg.workers is not None:
        if cfg.workers < 1:
            raise ValueError(f"workers must be >= 1, got {cfg.workers}")
        return min(cfg.workers, jobs)
    return max(1, min(jobs, available_cores() // (cfg.threads or 1)))


def _task_jobs(
    cfg: UViMDemoConfig, task_name: str
) -> tuple[list[dict[str, Any]], list[torch.Tensor], dict[str, tuple[Any, ...]]]:
    """One task's trivial row, the grid's first two rows (input, truth) and its
    model jobs (``"direct"``, then one per quantizer) for :func:`_run_job`."""
    task = get_task(task_name)
    metric = task.primary_metric
    tcfg = UViMTrainConfig(
        data=DEMO_DATA[task_name], num_train=cfg.num_train, num_val=cfg.num_val,
        batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, grid_images=8,
    )  # fmt: skip
    train, val = load_data(tcfg, task_name, cfg.image_size)
    layout = dict(image_size=cfg.image_size, base_channels=cfg.base_channels,
                  channel_mult=cfg.channel_mult)  # fmt: skip
    trivial = evaluate_dense(task, trivial_predictor(task, train_target_mean(task, train)), val)
    rows = [{"task": task_name, "model": f"trivial ({TRIVIAL[task_name]})",
             "full": trivial.get(metric), **{k: trivial.get(k) for k in SECONDARY[task_name]}}]  # fmt: skip
    grid_batch = val.batch(slice(0, 8))
    grid = [task.inputs(grid_batch), task.to_rgb(task.target(grid_batch))]
    root = os.path.join(cfg.out, "runs", task_name)
    jobs: dict[str, tuple[Any, ...]] = {}
    d_steps = cfg.oracle_steps + cfg.stage2_steps
    d_trainer = _trainer(cfg, os.path.join(root, "direct"), d_steps, f"{task_name} direct")
    dcfg = OracleConfig(task=task_name, **{**layout, "base_channels": cfg.direct_base_channels})
    jobs["direct"] = ("direct", dcfg, tcfg, grid_batch, {}, (d_trainer,))
    for q in cfg.quantizers:
        qname, qkw, latent = quantizer_spec(q)
        ocfg = OracleConfig(task=task_name, quantizer=qname, quantizer_kwargs=qkw,
                            latent_channels=latent, **layout)  # fmt: skip
        trainers = (
            _trainer(cfg, os.path.join(root, f"oracle-{q}"), cfg.oracle_steps,
                     f"{task_name} {q} oracle"),
            _trainer(cfg, os.path.join(root, f"uvim-{q}"), cfg.stage2_steps,
                     f"{task_name} {q} stage II"),
        )  # fmt: skip
        s2 = dict(dim=cfg.s2_dim, depth=cfg.s2_depth, decode_steps=cfg.decode_steps)
        jobs[q] = (q, ocfg, tcfg, grid_batch, s2, trainers)
    return rows, grid, jobs


def _run_job(
    model: str,
    ocfg: OracleConfig,
    tcfg: UViMTrainConfig,
    grid_batch: Any,
    s2: dict[str, Any],
    trainers: tuple[TrainerConfig, ...],
) -> tuple[dict[str, Any], torch.Tensor]:
    """Train one model of the table (here or in a worker process): the direct
    baseline (``model == "direct"``) or one quantizer's oracle + stage II.
    Returns its table row and its predictions for the grid (RGB)."""
    task = get_task(ocfg.task)
    metric, secondary = task.primary_metric, SECONDARY[ocfg.task]
    if model == "direct":
        (trainer,) = trainers
        if trainer.progress:
            print(f"[{ocfg.task}] direct baseline ({trainer.steps} steps) -> {trainer.out_dir}")
        direct = train_direct(ocfg, tcfg, trainer)
        row = {"task": ocfg.task, "model": "direct (no tokens)", "full": direct.metrics.get(metric),
               "params": _params(direct.model), "train_s": direct.train_seconds,
               **{k: direct.metrics.get(k) for k in secondary}}  # fmt: skip
        return row, task.to_rgb(direct.model.predict(task.inputs(grid_batch)))
    o_trainer, u_trainer = trainers
    if o_trainer.progress:
        print(f"[{ocfg.task}] {model} oracle ({o_trainer.steps} steps) -> {o_trainer.out_dir}")
    oracle = train_oracle(ocfg, tcfg, o_trainer)
    if u_trainer.progress:
        print(f"[{ocfg.task}] {model} stage II ({u_trainer.steps} steps) -> {u_trainer.out_dir}")
    full = train_stage2(o_trainer.out_dir, tcfg, u_trainer, **s2)
    row = {
        "task": ocfg.task, "model": f"UViM {model}", "codes": oracle.model.codebook_size,
        "oracle": oracle.metrics.get(metric), "full": full.metrics.get(metric),
        "usage": oracle.metrics.get("train_usage"), "full_usage": full.metrics.get("usage"),
        "params": _params(full.model), "train_s": oracle.train_seconds + full.train_seconds,
        **{k: full.metrics.get(k) for k in secondary},
    }  # fmt: skip
    return row, task.to_rgb(full.model.predict(grid_batch.image))


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
        rows += run_tasks(cfg, report)
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
