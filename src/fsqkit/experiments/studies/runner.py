"""Run a grid of cells into one folder: skip finished cells, resume an
interrupted one, keep going past a failed one, then write the table and plot.

Study folder::

    <out>/study.json      the study's name, scale and cell list
    <out>/cells/<cell>/   one run folder per cell (see :mod:`fsqkit.experiments.studies.cell`)
    <out>/table.md        the table (Markdown), failed and missing cells marked
    <out>/table.json      the same rows plus every cell's full result
    <out>/<plot>.png      the figure (:mod:`fsqkit.experiments.studies.plots`)

A failed cell writes ``<cell>/failed.json`` (the error) and is retried by the
next run; Ctrl-C writes the table of what is done and re-raises.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch

from fsqkit.data import build_dataset
from fsqkit.experiments.report import Table
from fsqkit.experiments.studies.cell import EvalContext, cell_record, read_result, run_cell
from fsqkit.experiments.studies.cells import Cell
from fsqkit.experiments.studies.plots import save_study_figure
from fsqkit.experiments.studies.scale import StudyScale
from fsqkit.experiments.studies.table import study_table
from fsqkit.metrics.inception import feature_extractor
from fsqkit.training import DistInfo, atomic_write_text, distributed_session

FAILED_FILE = "failed.json"


def run_study(
    title: str,
    cells: list[Cell],
    scale: StudyScale,
    out: str,
    *,
    progress: bool = True,
    device: str | None = None,
    table_only: bool = False,
    log: Callable[[str], None] = print,
) -> Table:
    """Run (or continue) every cell of ``cells`` under ``out``; returns the table.

    Under ``torchrun`` each cell trains with DDP; every rank evaluates, rank 0
    writes. ``table_only``: train nothing, write the table and figure of the
    cells finished so far (e.g. while another process runs the study).
    ``log`` receives one line per cell (rank 0 only).
    """
    if not cells:
        raise ValueError("the study has no cells")
    threads = torch.get_num_threads()
    try:
        with distributed_session(device) as dist:
            if dist.device.type == "cpu" and scale.cpu_threads:
                torch.set_num_threads(scale.cpu_threads)
            say = log if dist.is_main else _quiet
            return _run(title, cells, scale, out, progress, table_only, dist, say)
    finally:
        torch.set_num_threads(threads)


def _quiet(*_: Any, **__: Any) -> None:
    pass


def _run(
    title: str,
    cells: list[Cell],
    scale: StudyScale,
    out: str,
    progress: bool,
    table_only: bool,
    dist: DistInfo,
    log: Callable[[str], None],
) -> Table:
    cells_root = os.path.join(out, "cells")
    if table_only and not os.path.isdir(cells_root):
        raise ValueError(f"{out} holds no study (no cells/ folder) to write a table of")
    if dist.is_main and not table_only:
        os.makedirs(cells_root, exist_ok=True)
        meta = {"title": title, "scale": scale.to_dict(), "cells": [c.name for c in cells]}
        atomic_write_text(os.path.join(out, "study.json"), json.dumps(meta, indent=2))
    ctx: EvalContext | None = None
    results: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    try:
        for i, cell in enumerate(cells, 1):
            cell_dir = os.path.join(cells_root, cell.name)
            done = read_result(cell_dir)
            if done is not None:
                results[cell.name] = done
                log(f"[{i}/{len(cells)}] {cell.name}: done earlier, skipped")
                continue
            if table_only:
                failed = _read_json(os.path.join(cell_dir, FAILED_FILE))
                if failed is not None:
                    results[cell.name] = failed
                continue
            if ctx is None:
                ctx = _eval_context(scale)
            log(f"[{i}/{len(cells)}] {cell.name}: {cell.label}, {cell.codes} codes -> {cell_dir}")
            try:
                results[cell.name] = run_cell(cell, scale, cell_dir, ctx, progress, dist)
                _remove(os.path.join(cell_dir, FAILED_FILE), dist)
                log(f"    done ({time.perf_counter() - t0:.0f} s so far)")
            except Exception as err:  # a failed cell must not lose the others
                msg = f"{type(err).__name__}: {err}".splitlines()[0]
                results[cell.name] = _failure(cell, msg)
                if dist.is_main:
                    os.makedirs(cell_dir, exist_ok=True)
                    record = {**results[cell.name], "traceback": traceback.format_exc()}
                    atomic_write_text(
                        os.path.join(cell_dir, FAILED_FILE), json.dumps(record, indent=2)
                    )
                log(f"    FAILED: {msg}")
    except KeyboardInterrupt:
        log(
            "interrupted: writing the table of the finished cells; re-run the same command to resume"
        )
        raise
    finally:
        table = study_table(title, cells, results, scale)
        if dist.is_main:
            write_outputs(out, table, cells, results, scale)
    return table


def write_outputs(
    out: str,
    table: Table,
    cells: list[Cell],
    results: dict[str, dict[str, Any]],
    scale: StudyScale,
) -> None:
    """``table.md``, ``table.json`` and the figure (``figure.png``) into ``out``."""
    md = f"# {table.title}\n\n{table.to_markdown()}\n\n![study figure](figure.png)\n"
    atomic_write_text(os.path.join(out, "table.md"), md)
    payload = {
        "title": table.title,
        "scale": scale.to_dict(),
        "columns": table.columns,
        "rows": table.rows,
        "cells": [results.get(c.name, cell_record(c)) for c in cells],
    }
    atomic_write_text(os.path.join(out, "table.json"), json.dumps(payload, indent=2, default=str))
    save_study_figure(cells, results, os.path.join(out, "figure.png"), scale)


def _eval_context(scale: StudyScale) -> EvalContext:
    val = build_dataset(
        scale.data, "val", image_size=scale.image_size, seed=scale.seed, num_images=scale.fd_images
    )
    extractor = feature_extractor(scale.features)
    usage = None
    if scale.usage_images is not None and scale.usage_images > scale.val_images:
        usage = build_dataset(
            scale.data, "val", image_size=scale.image_size, seed=scale.seed,
            num_images=scale.usage_images,
        )  # fmt: skip
    return EvalContext(val, extractor, extractor(val.batch(slice(None))), usage)


def _failure(cell: Cell, message: str) -> dict[str, Any]:
    return {**cell_record(cell, "failed"), "error": message}


def _read_json(path: str) -> dict[str, Any] | None:
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _remove(path: str, dist: DistInfo) -> None:
    if dist.is_main and os.path.exists(path):
        os.remove(path)
