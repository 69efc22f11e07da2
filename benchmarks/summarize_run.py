"""One line about a finished training run (for benchmarks/gpu_pipelines.sh):
images/s, peak memory and the loss curve, from RUN/metrics.jsonl and the
checkpoint's config; writes the curve to RUN/loss_curve.tsv (step, loss).

    python benchmarks/summarize_run.py RUN [RUN ...]
"""

from __future__ import annotations

import os
import sys

from fsqkit.training import load_checkpoint, read_metrics


def summarize(run: str) -> str:
    run = run.rstrip("/")
    records = read_metrics(os.path.join(run, "metrics.jsonl"))
    train = [r for r in records if r.get("split") == "train" and "loss" in r]
    val = [r for r in records if r.get("split") == "val"]
    if not train or not val:
        return f"{run}: no finished run (train/val records missing)"
    cfg = load_checkpoint(run, weights_only=True).config
    batch = cfg.get("train", {}).get("batch_size", 0)
    accum = cfg.get("trainer", {}).get("grad_accum", 1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    steps, seconds = val[-1]["step"], val[-1]["train_seconds"]
    images_s = steps * batch * accum * world / seconds if seconds else float("nan")
    with open(os.path.join(run, "loss_curve.tsv"), "w") as f:
        f.write("step\tloss\n")
        f.writelines(f"{r['step']}\t{r['loss']:.6g}\n" for r in train)
    peak = val[-1].get("peak_cuda_mib", val[-1].get("peak_rss_mib", float("nan")))
    kind = "cuda" if "peak_cuda_mib" in val[-1] else "rss"
    k = max(1, len(train) // 10)
    first = sum(r["loss"] for r in train[:k]) / k
    last = sum(r["loss"] for r in train[-k:]) / k
    precision = cfg.get("trainer", {}).get("precision", "fp32")
    return (
        f"{os.path.basename(run)}: {images_s:.1f} images/s ({precision}, batch "
        f"{batch}x{accum}), peak {kind} {peak:.0f} MiB, loss {first:.4g} -> {last:.4g} over "
        f"{steps} steps (curve: {run}/loss_curve.tsv)"
    )


if __name__ == "__main__":
    for path in sys.argv[1:]:
        print(summarize(path))
