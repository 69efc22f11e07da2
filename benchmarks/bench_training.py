"""Training-step speed and memory of the shared trainer under each step
setting: fp32 (the default), bf16 autocast, torch.compile and bf16+compile, for
the demo's tokenizer, a paper-shaped tokenizer at reduced width and resolution
and a MaskGIT transformer on the paper's 16x16 token grid.

Each (model, setting) runs in its own subprocess (fresh compile caches, honest
memory): it builds the task, applies the trainer's preparation (channels-last
and fused Adam for bf16, compilation) and times ``--steps`` optimisation steps
through the trainer's step code after ``--warmup`` steps (compilation happens
in the warm-up). ``peak`` is the process's ru_maxrss after the timed steps
minus its RSS before the first step. Ratios are against fp32 of the same model
in the same run. One torch thread by default (a shared 2-core machine).

    python benchmarks/bench_training.py                  # all models and settings
    python benchmarks/bench_training.py --models demo --settings fp32 bf16
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from proc_memory import rss_kib

SETTINGS = {
    "fp32": {},
    "bf16": {"precision": "bf16"},
    "compile": {"compile": True},
    "bf16+compile": {"precision": "bf16", "compile": True},
}
MODELS = ("demo", "paper-small", "maskgit")


def _tokenizer_task(name: str, out: str):
    from fsqkit.tokenizer import TokenizerConfig, TokenizerTrainConfig
    from fsqkit.tokenizer.train import TokenizerTask

    if name == "demo":  # the demo's FSQ tokenizer: 32x32 crops, f=4, batch 16
        model = TokenizerConfig(image_size=32, base_channels=16, channel_mult=(1, 2, 4))
        batch = 16
    else:  # MaskGIT's VQGAN shape (2 res blocks, [1,1,2,2,4], f=16) at 32 filters, 64 px
        model = TokenizerConfig(
            image_size=64, base_channels=32, channel_mult=(1, 1, 2, 2, 4), num_res_blocks=2
        )
        batch = 8
    train = TokenizerTrainConfig(
        data="embedded", num_train_images=512, num_val_images=16, batch_size=batch, grid_images=0
    )
    return TokenizerTask(model, train, 10_000, out, verbose=False), batch


def _maskgit_task(out: str):
    """A MaskGIT (width 256, 4 layers) on 16x16 grids of 1000 codes, batch 16."""
    import torch

    from fsqkit.maskgit.train import MaskGITTask, MaskGITTrainConfig
    from fsqkit.tokenizer import Tokenizer, TokenizerConfig

    torch.manual_seed(0)
    tok = Tokenizer(TokenizerConfig(image_size=64, base_channels=8, channel_mult=(1, 2, 2, 2, 2)))
    train = MaskGITTrainConfig(
        data="embedded", num_train_images=256, num_val_images=16, batch_size=16, tokenizer=""
    )
    arch = {"dim": 256, "depth": 4, "heads": 4}
    return MaskGITTask(arch, train, 10_000, out, tokenizer=tok), 16


def run_one(model: str, setting: str, steps: int, warmup: int) -> dict:
    import torch

    from fsqkit.training import Trainer, TrainerConfig

    out = tempfile.mkdtemp(prefix="bench-training-")
    if model == "maskgit":
        task, batch = _maskgit_task(out)
    else:
        task, batch = _tokenizer_task(model, out)
    cfg = TrainerConfig(out_dir=out, steps=10_000, progress=False, **SETTINGS[setting])
    trainer = Trainer(task, cfg)
    trainer._prepare()  # what fit() does before the first step
    rss0 = rss_kib()
    t_warm = time.perf_counter()
    for s in range(1, warmup + 1):
        trainer.step = s
        trainer._train_step()
    warm_s = time.perf_counter() - t_warm
    t0 = time.perf_counter()
    for s in range(warmup + 1, warmup + steps + 1):
        trainer.step = s
        loss = trainer._train_step()["loss"]
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
    return {
        "steps_per_s": steps / dt,
        "images_per_s": steps * batch / dt,
        "warmup_s": warm_s,
        "peak_mib": max(0, peak) / 1024,
        "loss": float(loss),
        "compiled": trainer.compiled is not None,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # child: MODEL SETTING
    args = ap.parse_args()
    if args.one:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(run_one(*args.one, args.steps, args.warmup)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    print(
        f"{'model':<12} {'setting':<13} {'steps/s':>8} {'img/s':>7} {'vs fp32':>8} "
        f"{'peak MiB':>9} {'warm-up s':>9} {'loss':>7}"
    )
    for model in args.models:
        base = None
        for setting in args.settings:
            cmd = [
                sys.executable, __file__, "--one", model, setting, "--steps", str(args.steps),
                "--warmup", str(args.warmup), "--threads", str(args.threads),
            ]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                err = (proc.stderr.strip().splitlines() or ["?"])[-1]
                print(f"{model:<12} {setting:<13} failed: {err[:120]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            if setting == "fp32":
                base = r["steps_per_s"]
            ratio = f"{r['steps_per_s'] / base:.2f}x" if base else "-"
            note = "" if r["compiled"] or "compile" not in setting else " (fell back to eager)"
            print(
                f"{model:<12} {setting:<13} {r['steps_per_s']:8.2f} {r['images_per_s']:7.1f} "
                f"{ratio:>8} {r['peak_mib']:9.0f} {r['warmup_s']:9.1f} {r['loss']:7.4f}{note}"
            )


if __name__ == "__main__":
    main()
