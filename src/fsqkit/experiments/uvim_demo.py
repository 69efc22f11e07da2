"""``fsqkit uvim demo``: UViM-style dense prediction with FSQ vs VQ tokens.

For each task (depth and panoptic segmentation on the procedural ``scenes``,
colorization of the ``embedded`` photographs) and each quantizer (FSQ ``[7, 5, 5, 5, 5]``; VQ with
4096 codes, without and with UViM's code splitting) it trains a stage-I oracle
and a stage-II token predictor, plus one direct regression baseline with the
same context encoder and decoder and the budget of oracle + stage II, and fits
the task's trivial baselines on the training set.

Everything is scored on data no model was trained or chosen on: the ``test``
split of ``scenes`` (its own seed range, ``num_test`` scenes), and for
``embedded`` (which has no test split) the held-out photographs of ``val``.
Every metric comes with a bootstrap standard error, and each task gets a table
of paired differences between models (same images, same resamples). Writes
``report.md`` / ``report.json``, one prediction grid per task and the runs.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from fsqkit.data.dense import build_dense_dataset
from fsqkit.data.io import save_image_grid
from fsqkit.experiments.parallel import available_cores, run_side_by_side
from fsqkit.experiments.report import Report
from fsqkit.experiments.uvim_report import add_task_tables
from fsqkit.training import TrainerConfig
from fsqkit.uvim import (
    OracleConfig,
    UViMTrainConfig,
    get_task,
    train_direct,
    train_oracle,
    train_stage2,
)
from fsqkit.uvim.baselines import fit_baselines
from fsqkit.uvim.evaluate import baseline_predictor, evaluate_images
from fsqkit.uvim.intervals import Scores, score
from fsqkit.uvim.presets import quantizer_spec
from fsqkit.uvim.runs import model_predictor

DEMO_DATA = {"depth": "scenes", "colorize": "embedded", "panoptic": "scenes"}


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
        num_train, num_val: generated items per split (val: reported while
            training; the final table of ``embedded``, which has no test split).
        num_test: ``scenes`` test items, the final tables of depth and panoptic.
        resamples: bootstrap resamples of the standard errors.
        s2_dim, s2_depth, decode_steps: the stage-II transformer.
        seed, progress: run seed (also the resamples'), progress bars.
        threads: torch threads per model (1: tiny models on a shared 2-core
            machine run about 3x faster with one thread than with two; ``None``:
            torch's default).
        workers: worker processes that train the table's models (each task's
            baselines, direct baseline and per-quantizer oracle + stage II are
            independent jobs) at the same time, ``threads`` threads each; the
            numbers are the same as one after the other. ``None``: one per
            ``threads`` cores of this machine; 1: all in this process.
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
    num_test: int = 2048
    resamples: int = 200
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
        num_val=8, num_test=16, resamples=20, s2_dim=32, s2_depth=1,
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


def eval_split(data: str) -> str:
    """Where a data source's final table is scored: ``test`` for ``scenes``,
    else its held-out ``val`` (the only other split it has)."""
    return "test" if data == "scenes" else "val"


@dataclass
class _Job:
    """One job of the table (picklable): ``kind`` is ``"baselines"``,
    ``"direct"`` or a quantizer name."""

    kind: str
    task: str
    tcfg: UViMTrainConfig
    image_size: int
    eval_num: int
    resamples: int
    ocfg: OracleConfig | None = None
    s2: dict[str, Any] = field(default_factory=dict)
    trainers: tuple[TrainerConfig, ...] = ()


@dataclass
class _JobResult:
    """Rows (numbers) with their :class:`Scores`, and prediction-grid rows (RGB)."""

    rows: list[tuple[dict[str, Any], Scores]]
    grid: list[torch.Tensor]


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
    """The baselines, every quantizer's oracle + full model and the direct
    baseline for one task; returns the table rows (numbers) and adds the task's
    tables and prediction grid to ``report``."""
    return run_tasks(replace(cfg, tasks=(task_name,)), report)


def run_tasks(cfg: UViMDemoConfig, report: Report) -> list[dict[str, Any]]:
    """All of ``cfg.tasks``: the jobs of every task are independent, run side by
    side in ``cfg.workers`` processes (or here, one after the other); returns
    the rows (task by task: baselines, direct, UViM per quantizer; each metric
    with ``<metric>_se``) and adds per task a table, the paired differences
    (also in ``report.data["comparisons"]``) and a prediction grid."""
    jobs: dict[tuple[str, str], _Job] = {}
    for task_name in cfg.tasks:
        jobs.update({(task_name, j.kind): j for j in _task_jobs(cfg, task_name)})
    workers = _workers(cfg, len(jobs))
    if cfg.progress:
        how = f"{workers} worker processes" if workers > 1 else "one after the other"
        print(f"[uvim] {len(jobs)} jobs for {', '.join(cfg.tasks)} ({how})")
    if workers > 1:
        named = {f"{t}/{k}": (job,) for (t, k), job in jobs.items()}
        for i, (job,) in enumerate(named.values()):
            for trainer in job.trainers:  # one progress line per worker slot
                trainer.progress_position = i % workers
        done = run_side_by_side(_run_job, named, threads_each=cfg.threads or 1, max_workers=workers)
        results = {key: done[f"{key[0]}/{key[1]}"] for key in jobs}
    else:
        results = {key: _run_job(job) for key, job in jobs.items()}
    all_rows: list[dict[str, Any]] = []
    for task_name in cfg.tasks:
        mine = [r for (t, _), r in results.items() if t == task_name]
        scored = [pair for r in mine for pair in r.rows]
        add_task_tables(task_name, scored, report, cfg.quantizers, cfg.resamples)
        path = os.path.join(cfg.out, f"predictions_{task_name}.png")
        save_image_grid([g.cpu() for r in mine for g in r.grid], path)
        report.add_image(
            f"{task_name}: input / truth / direct / "
            + " / ".join(f"UViM {q}" for q in cfg.quantizers),
            os.path.basename(path),
        )
        all_rows += [row for row, _ in scored]
    return all_rows


def _workers(cfg: UViMDemoConfig, jobs: int) -> int:
    if cfg.workers is not None:
        if cfg.workers < 1:
            raise ValueError(f"workers must be >= 1, got {cfg.workers}")
        return min(cfg.workers, jobs)
    return max(1, min(jobs, available_cores() // (cfg.threads or 1)))


def _task_jobs(cfg: UViMDemoConfig, task_name: str) -> list[_Job]:
    """One task's jobs for :func:`_run_job`: ``"baselines"`` (also the grid's
    input and truth rows), ``"direct"``, then one per quantizer."""
    data = DEMO_DATA.get(task_name, "scenes")
    tcfg = UViMTrainConfig(
        data=data, num_train=cfg.num_train, num_val=cfg.num_val,
        batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, grid_images=8,
    )  # fmt: skip
    eval_num = cfg.num_test if eval_split(data) == "test" else cfg.num_val
    common = dict(task=task_name, tcfg=tcfg, image_size=cfg.image_size, eval_num=eval_num,
                  resamples=cfg.resamples)  # fmt: skip
    layout = dict(image_size=cfg.image_size, base_channels=cfg.base_channels,
                  channel_mult=cfg.channel_mult)  # fmt: skip
    root = os.path.join(cfg.out, "runs", task_name)
    d_steps = cfg.oracle_steps + cfg.stage2_steps
    dcfg = OracleConfig(task=task_name, **{**layout, "base_channels": cfg.direct_base_channels})
    d_trainer = _trainer(cfg, os.path.join(root, "direct"), d_steps, f"{task_name} direct")
    jobs = [_Job("baselines", **common), _Job("direct", **common, ocfg=dcfg, trainers=(d_trainer,))]
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
        jobs.append(_Job(q, **common, ocfg=ocfg, s2=s2, trainers=trainers))
    return jobs


def _run_job(job: _Job) -> _JobResult:
    """Run one job of the table (here or in a worker process) and score it on
    the task's held-out split (:func:`eval_split`)."""
    task = get_task(job.task)
    tcfg = job.tcfg
    test = build_dense_dataset(
        tcfg.data, eval_split(tcfg.data), image_size=job.image_size, num=job.eval_num,
        seed=tcfg.seed,
    )  # fmt: skip
    grid_batch = test.batch(slice(0, 8))

    def scored(predict, codebook: int = 0) -> Scores:
        ev = evaluate_images(task, predict, test, codebook_size=codebook)
        return score(task, ev, job.resamples, tcfg.seed)

    if job.kind == "baselines":
        train = build_dense_dataset(
            tcfg.data, "train", image_size=job.image_size, num=tcfg.num_train, seed=tcfg.seed
        )
        rows = [
            ({"model": f"trivial: {name}", "fitted_on": train.name}, scored(baseline_predictor(b)))
            for name, b in fit_baselines(task, train).items()
        ]
        grid = [task.inputs(grid_batch), task.to_rgb(task.target(grid_batch))]
        return _JobResult([_with_scores(job.task, row, s) for row, s in rows], grid)
    assert job.ocfg is not None
    if job.kind == "direct":
        (trainer,) = job.trainers
        if trainer.progress:
            print(f"[{job.task}] direct baseline ({trainer.steps} steps) -> {trainer.out_dir}")
        direct = train_direct(job.ocfg, tcfg, trainer)
        s = scored(model_predictor(direct.model)[0])
        row = {"model": "direct (no tokens)", "params": _params(direct.model),
               "train_s": direct.train_seconds}  # fmt: skip
        pred = direct.model.predict(task.inputs(grid_batch))
        return _JobResult([_with_scores(job.task, row, s)], [task.to_rgb(pred)])
    o_trainer, u_trainer = job.trainers
    if o_trainer.progress:
        print(f"[{job.task}] {job.kind} oracle ({o_trainer.steps} steps) -> {o_trainer.out_dir}")
    oracle = train_oracle(job.ocfg, tcfg, o_trainer)
    if u_trainer.progress:
        print(f"[{job.task}] {job.kind} stage II ({u_trainer.steps} steps) -> {u_trainer.out_dir}")
    full = train_stage2(o_trainer.out_dir, tcfg, u_trainer, **job.s2)
    predict, codebook = model_predictor(oracle.model)
    oracle_metrics = evaluate_images(task, predict, test).metrics(task)
    s = scored(*model_predictor(full.model))
    row = {
        "model": f"UViM {job.kind}", "codes": codebook,
        "oracle": oracle_metrics.get(task.primary_metric),
        "usage": oracle.metrics.get("train_usage"), "full_usage": s.metrics.get("usage"),
        "params": _params(full.model), "train_s": oracle.train_seconds + full.train_seconds,
    }  # fmt: skip
    pred = full.model.predict(grid_batch.image)
    return _JobResult([_with_scores(job.task, row, s)], [task.to_rgb(pred)])


def _with_scores(task: str, row: dict[str, Any], s: Scores) -> tuple[dict[str, Any], Scores]:
    """``row`` with the task, the data scored, each metric and its ``_se``."""
    se = s.standard_errors()
    metrics = {k: v for k, v in s.metrics.items() if k not in ("usage", "perplexity")}
    out = {"task": task, **row, "data": s.data, "images": s.images, **metrics}
    out.update({f"{k}_se": se[k] for k in metrics if k in se})
    return out, s


def run_uvim_demo(cfg: UViMDemoConfig) -> Report:
    """Run the demo and write the report folder; returns the :class:`Report`."""
    t0 = time.perf_counter()
    os.makedirs(cfg.out, exist_ok=True)
    report = Report("UViM on FSQ vs VQ tokens: depth, colorization and panoptic segmentation")
    threads = torch.get_num_threads()
    try:  # the demo's thread count, not a lasting side effect for API callers
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        rows = run_tasks(cfg, report)
    finally:
        torch.set_num_threads(threads)
    report.data.update(config=asdict(cfg), rows=rows, total_seconds=time.perf_counter() - t0)
    md, _ = report.write(cfg.out)
    for s in report.sections:
        if s["kind"] == "table":
            print()
            print(s["table"].to_text())
            print(s["table"].note)
    print(f"\nreport: {md} (total {report.data['total_seconds']:.0f} s)")
    return report
