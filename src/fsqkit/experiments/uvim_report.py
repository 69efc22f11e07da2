"""The UViM demo's tables: per task, every model's metrics with bootstrap
standard errors on the held-out images, and the paired differences that say
which gaps are outside the noise (:mod:`fsqkit.uvim.intervals`)."""

from __future__ import annotations

from typing import Any

from fsqkit.experiments.report import Report, Table
from fsqkit.uvim import get_task
from fsqkit.uvim.intervals import Scores

TABLE_METRICS = {
    "depth": ("rmse", "absrel", "delta1"),
    "colorize": ("fd", "psnr", "ssim", "colorfulness"),
    "panoptic": ("pq", "pq_things", "pq_stuff", "sq", "rq", "sq_things", "rq_things", "pixel_acc"),
}
FORMATS = {"psnr": ".2f", "colorfulness": ".1f"}  # others: .3f
NOTES = {
    "depth": "RMSE (m), AbsRel, δ<1.25 over valid pixels, per image and averaged.",
    "colorize": "fd: Fréchet distance of predictions vs the true colour images in "
    "random-conv feature space (not an FID); PSNR, SSIM to the true colours; colourfulness "
    "(Hasler & Süsstrunk, 0-255 scale) of the prediction.",
    "panoptic": "PQ = SQ × RQ over all classes, things (sphere, box, cylinder) and stuff "
    "(wall, ground); fractions in [0, 1], over the whole set; pixel_acc: semantic, per image.",
}


def _cell(value: float | None, se: float | None, fmt: str) -> str | None:
    if value is None:
        return None
    return format(value, fmt) + ("" if se is None else f" ± {format(se, fmt)}")


def add_task_tables(
    task_name: str,
    scored: list[tuple[dict[str, Any], Scores]],
    report: Report,
    quantizers: tuple[str, ...],
    resamples: int,
) -> None:
    """Add to ``report`` the task's table (metric ± SE per model; ``scored``: the
    rows with their :class:`Scores`, all on the same images) and the paired
    differences of its primary metric (also ``report.data["comparisons"]``)."""
    task = get_task(task_name)
    rows = [row for row, _ in scored]
    metrics = [m for m in TABLE_METRICS.get(task_name, (task.primary_metric,))
               if any(m in r for r in rows)]  # fmt: skip
    shown = []
    for r in rows:
        d = {k: r.get(k) for k in ("model", "codes", "usage", "oracle", "params", "train_s")}
        for m in metrics:
            d[m] = _cell(r.get(m), r.get(f"{m}_se"), FORMATS.get(m, ".3f"))
        shown.append(d)
    columns = ["model", "codes", "usage", "oracle", *metrics, "params", "train_s"]
    columns = [c for c in columns if any(d.get(c) is not None for d in shown)]
    fmt = {"usage": ".1%", "oracle": FORMATS.get(task.primary_metric, ".3f"), "train_s": ".0f"}
    data, n = rows[0]["data"], rows[0]["images"]
    better = "lower" if task.lower_is_better else "higher"
    table = Table(
        f"{task_name} on {data} ({n} images, never trained or chosen on): metric ± bootstrap SE",
        columns, shown, fmt,
        note=f"{NOTES.get(task_name, '')} Primary metric {task.primary_metric} ({better} is "
        f"better). oracle: stage I with the true target (an upper bound), same images. usage: "
        f"fraction of the codebook the oracle uses on the training set. Baselines are fitted "
        f"on {rows[0].get('fitted_on', 'the training split')} only. SE: standard deviation over "
        f"{resamples} bootstrap resamples of the images.",
    )  # fmt: skip
    report.add_table(table)
    comparisons = _comparisons(task_name, scored, quantizers)
    if comparisons:
        report.add_table(
            Table(
                f"{task_name}: paired differences in {task.primary_metric} (same images, "
                f"same resamples)",
                ["a", "b", "a - b", "se", "z"],
                comparisons,
                {"a - b": FORMATS.get(task.primary_metric, ".3f"), "se": ".3f", "z": ".1f"},
                note="z = (a - b) / se; |z| > 2: the difference is outside the noise of "
                "this test set.",
            )
        )
        report.data.setdefault("comparisons", {})[task_name] = comparisons


def _comparisons(
    task_name: str, scored: list[tuple[dict[str, Any], Scores]], quantizers: tuple[str, ...]
) -> list[dict[str, Any]]:
    """Paired differences of the primary metric: FSQ vs each VQ, every full model
    vs the direct regression, and the direct regression vs the strongest
    trivial baseline."""
    task = get_task(task_name)
    metric = task.primary_metric
    by_model = {row["model"]: s for row, s in scored if metric in s.replicates}
    pairs = [("UViM fsq", f"UViM {q}") for q in quantizers if q != "fsq"]
    pairs += [(f"UViM {q}", "direct (no tokens)") for q in quantizers]
    trivial = [m for m in by_model if m.startswith("trivial")]
    if trivial:
        sign = 1 if task.lower_is_better else -1
        best = min(trivial, key=lambda m: sign * by_model[m].metrics[metric])
        pairs.append(("direct (no tokens)", best))
    out = []
    for a, b in pairs:
        if a in by_model and b in by_model:
            diff, se = by_model[a].minus(by_model[b], metric)
            out.append({"a": a, "b": b, "a - b": diff, "se": se, "z": diff / se if se else None})
    return out
