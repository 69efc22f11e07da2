"""The studies as Python functions (the CLI ``fsqkit study ...`` calls these).

- :func:`codebook_size`: the paper's Fig. 3 study, quantizers x codebook sizes.
- :func:`levels`: FSQ level sets with smallest level 3, 4, 5, 8 at fixed sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fsqkit.experiments.report import Table
from fsqkit.experiments.studies.cells import QUANTIZER_ROWS, codebook_size_cells, levels_cells
from fsqkit.experiments.studies.runner import run_study
from fsqkit.experiments.studies.scale import get_scale

DEFAULT_LEVEL_SIZES = (2**10, 2**12)
DEFAULT_MIN_LEVELS = (3, 4, 5, 8)


def codebook_size(
    out: str = "reports/study-codebook-size",
    scale: str = "small",
    quantizers: Sequence[str] | None = None,
    sizes: Sequence[int] | None = None,
    *,
    progress: bool = True,
    device: str | None = None,
    threads: int | None = None,
    table_only: bool = False,
    **scale_overrides: Any,
) -> Table:
    """Train and measure a tokenizer + MaskGIT per (quantizer, codebook size).

    Args:
        out: study folder (re-running continues it).
        scale: ``"small"`` (default, CPU), ``"paper"`` (GPUs) or ``"tiny"`` (smoke test).
        quantizers: rows, keys of :data:`~fsqkit.experiments.studies.cells.QUANTIZER_ROWS`
            (default: all).
        sizes: codebook sizes (default: the scale's ``2^4 … 2^12`` or ``2^16``).
        progress: progress bars; device: ``"cpu"``/``"cuda"`` (default: CUDA if any).
        threads: torch CPU threads (default: the scale's, 1 for tiny/small).
        table_only: train nothing; write the table and figure of the finished cells.
        scale_overrides: :class:`StudyScale` fields to change (e.g. ``data``,
            ``precision``, ``ema_decay``, ``grad_accum``, ``compile``).

    Returns:
        The study table (also written to ``out/table.md`` and ``out/table.json``).
    """
    sc = get_scale(scale, cpu_threads=threads, **scale_overrides)
    qs = list(QUANTIZER_ROWS) if quantizers is None else list(quantizers)
    ks = [2**e for e in sc.log2_sizes] if sizes is None else list(sizes)
    cells = codebook_size_cells(qs, ks, sc.vq_dim, sc.seed)
    title = f"Codebook-size study (scale {sc.name}): FSQ vs VQ, tokenizer + MaskGIT per cell"
    return run_study(title, cells, sc, out, progress=progress, device=device, table_only=table_only)


def levels(
    out: str = "reports/study-levels",
    scale: str = "small",
    sizes: Sequence[int] = DEFAULT_LEVEL_SIZES,
    min_levels: Sequence[int] = DEFAULT_MIN_LEVELS,
    *,
    progress: bool = True,
    device: str | None = None,
    threads: int | None = None,
    table_only: bool = False,
    **scale_overrides: Any,
) -> Table:
    """FSQ at fixed codebook sizes with level sets whose smallest ``L_i`` is each
    of ``min_levels`` (the paper advises ``L_i >= 5``); same outputs as
    :func:`codebook_size`."""
    sc = get_scale(scale, cpu_threads=threads, **scale_overrides)
    cells = levels_cells(list(sizes), list(min_levels))
    title = f"FSQ levels study (scale {sc.name}): smallest level {list(min_levels)}"
    return run_study(title, cells, sc, out, progress=progress, device=device, table_only=table_only)
