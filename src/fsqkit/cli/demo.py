"""``fsqkit demo``: the main job (FSQ vs VQ tokenizers on built-in data)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the main job: FSQ vs VQ image tokenizers on built-in photos (about 5 minutes on 2 CPU cores)",
        description="Train an FSQ ([8,5,5,5]) and a VQ (1024 codes) tokenizer with the same "
        "architecture and budget on the built-in photos, compare them with a non-learned "
        "baseline at the same token grid, print one table and write a report folder.",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    size.add_argument("--full", action="store_true", help="a longer, better run (about 10x)")
    p.add_argument("--steps", type=int, default=None, help="override the steps per tokenizer")
    p.add_argument("--out", default="reports/demo", help="report folder (default reports/demo)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fsqkit.experiments.demo import demo_config, run_demo

    preset = "quick" if args.quick else "full" if args.full else "default"
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    cfg = demo_config(
        preset, steps=args.steps, out=args.out, seed=args.seed, progress=not args.no_progress
    )
    run_demo(cfg)
    return 0
