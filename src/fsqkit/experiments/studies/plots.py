"""The study figure, laid out like the paper's Fig. 3: x = log2(codebook size),
one curve per quantizer row, panels for reconstruction (FD and PSNR), codebook
usage (with "all codes" and 50% lines), sampling quality (FD) and compression
cost (with the uniform ``tokens x log2 K`` line). Matplotlib with the Agg backend.
"""

from __future__ import annotations

import math
import os
from typing import Any

from fsqkit.experiments.studies.cells import Cell
from fsqkit.experiments.studies.scale import StudyScale

# (metric key, panel title, y label)
PANELS: tuple[tuple[str, str, str], ...] = (
    ("recon_fd", "Reconstruction", "reconstruction FD (lower is better)"),
    ("psnr", "Reconstruction", "PSNR dB (higher is better)"),
    ("usage", "Codebook usage", "fraction of codes used"),
    ("sample_fd", "Sampling", "sample FD (lower is better)"),
    ("bits_per_image", "Compression cost", "bits per image"),
)


def save_study_figure(
    cells: list[Cell], results: dict[str, dict[str, Any]], path: str, scale: StudyScale
) -> str:
    """Write the figure of the finished cells of ``results`` to ``path`` (PNG, atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[str, tuple[str, list[tuple[float, dict[str, float]]]]] = {}
    for cell in cells:
        label, points = curves.setdefault(cell.row, (cell.label, []))
        r = results.get(cell.name, {})
        if r.get("status") == "done":
            points.append((math.log2(cell.target), r["metrics"]))
    xs = sorted({math.log2(c.target) for c in cells})
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.0 * len(PANELS), 3.6))
    for ax, (key, title, ylabel) in zip(axes, PANELS):
        for label, points in curves.values():
            pts = sorted((x, m[key]) for x, m in points if m.get(key) is not None)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        if key == "recon_fd":
            ax.set_yscale("log")  # VQ variants span an order of magnitude
        if key == "usage":
            ax.axhline(1.0, color="k", ls="--", lw=0.8, label="all codes")
            ax.axhline(0.5, color="gray", ls=":", lw=0.8, label="50%")
            ax.set_ylim(0, 1.05)
        if key == "bits_per_image":
            tokens = (scale.image_size // 2 ** (len(scale.channel_mult) - 1)) ** 2
            ax.plot(
                xs,
                [tokens * x for x in xs],
                color="k",
                ls="-.",
                lw=0.8,
                label="uniform: tokens x log2 K",
            )
        ax.set(title=title, xlabel="log2(codebook size)", ylabel=ylabel, xticks=xs)
        ax.grid(alpha=0.3)
    handles, labels = axes[2].get_legend_handles_labels()
    for h, lab in zip(*axes[4].get_legend_handles_labels()):
        if lab not in labels:
            handles.append(h)
            labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 8), fontsize=8)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)
    return path
