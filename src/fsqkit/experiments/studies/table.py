"""The table of a study: one row per cell, failed and missing cells marked."""

from __future__ import annotations

import math
from typing import Any

from fsqkit.experiments.report import Table
from fsqkit.experiments.studies.cells import Cell
from fsqkit.experiments.studies.scale import StudyScale

# table column -> key in a cell result's "metrics"
METRIC_COLUMNS: dict[str, str] = {
    "PSNR dB": "psnr",
    "SSIM": "ssim",
    "recon FD": "recon_fd",
    "usage": "usage",
    "codes used": "codes_used",
    "perplexity": "perplexity",
    "sample FD": "sample_fd",
    "precision": "precision",
    "recall": "recall",
    "bits/image": "bits_per_image",
    "log2K bits": "raw_bits_per_image",
}

FORMATS: dict[str, str] = {
    "PSNR dB": ".2f",
    "SSIM": ".3f",
    "recon FD": ".3f",
    "usage": ".1%",
    "codes used": ".0f",
    "perplexity": ".1f",
    "sample FD": ".3f",
    "precision": ".3f",
    "recall": ".3f",
    "bits/image": ".1f",
    "log2K bits": ".0f",
    "train s": ".0f",
}


def study_table(
    title: str, cells: list[Cell], results: dict[str, dict[str, Any]], scale: StudyScale
) -> Table:
    """A :class:`~fsqkit.experiments.report.Table` of ``cells`` in order;
    ``results`` maps a cell name to its result (absent: the cell is missing)."""
    rows = []
    for cell in cells:
        r = results.get(cell.name, {"status": "missing"})
        row: dict[str, Any] = {
            "quantizer": cell.label,
            "log2 K": cell.target.bit_length() - 1
            if _is_pow2(cell.target)
            else round(math.log2(cell.target), 2),
            "codes": cell.codes,
            "levels": str(cell.quantizer_kwargs["levels"])
            if "levels" in cell.quantizer_kwargs
            else "",
            "status": r.get("status", "missing"),
        }
        if r.get("status") == "failed":
            row["status"] = f"failed: {r.get('error', '')}"
        metrics = r.get("metrics", {})
        for col, key in METRIC_COLUMNS.items():
            row[col] = metrics.get(key)
        sec = r.get("seconds", {})
        row["train s"] = (
            (sec.get("tokenizer_train", 0.0) + sec.get("maskgit_train", 0.0)) if sec else None
        )
        rows.append(row)
    s2 = scale.stage2
    note = (
        f"Scale {scale.name!r}: {scale.data} {scale.image_size}x{scale.image_size} crops, "
        f"{scale.steps} tokenizer steps x batch {scale.batch_size}; MaskGIT {s2.depth} layers x "
        f"{s2.dim}, {s2.steps} steps, {s2.num_samples} samples, {s2.decode_steps} decoding steps. "
        f"usage / codes used: over {scale.usage_images or scale.val_images} held-out crops' "
        f"tokens (a code counts if used at least once); perplexity over the first "
        f"{scale.val_images}. recon FD / sample FD / precision / recall: "
        f"against {scale.fd_images} held-out crops in the offline random-conv feature space "
        f"(lower FD is better; not an Inception FID). bits/image: MaskGIT's cost of those "
        f"crops' tokens under the deterministic masking schedule (compression cost); "
        f"log2K bits: tokens x log2 K (a uniform model). train s: tokenizer + MaskGIT "
        f"optimisation time."
    )
    columns = ["quantizer", "log2 K", "codes", "levels", *METRIC_COLUMNS, "train s", "status"]
    return Table(title=title, columns=columns, rows=rows, formats=FORMATS, note=note)


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0
