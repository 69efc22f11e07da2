"""``fsqkit study {codebook-size,levels,usage}``: the paper's studies in one command
each (see docs/studies.md). Argument parsing only; the logic is :mod:`fsqkit.experiments.studies`."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fsqkit.experiments.report import Table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study",
        help="the paper's studies: codebook size (Fig. 3), FSQ levels, synthetic usage",
        description="The paper's studies, one command each; each writes a folder with a "
        "table (Markdown + JSON), one run folder per cell and a figure (docs/studies.md).",
    )
    studies = p.add_subparsers(dest="study", metavar="STUDY")
    studies.required = True

    cs = studies.add_parser(
        "codebook-size",
        help="FSQ vs VQ tokenizers + MaskGIT at codebook sizes 2^4 ... (the paper's Fig. 3)",
        description="Per cell (quantizer x codebook size) train a tokenizer and a MaskGIT on "
        "its tokens, measure reconstruction, usage, sampling and compression cost; write a "
        "table and a figure to --out. Re-running the command continues the study.",
    )
    cs.add_argument(
        "--quantizers",
        nargs="+",
        default=None,
        metavar="Q",
        help="rows: fsq vq vq_maskgit vq_reseed vq_split (default: all)",
    )
    cs.add_argument(
        "--sizes",
        nargs="+",
        default=None,
        metavar="K",
        help="codebook sizes, e.g. 16 1024 or 2^4 2^10 (default: the scale's)",
    )
    _common(cs, "reports/study-codebook-size")
    cs.set_defaults(func=run_codebook_size)

    lv = studies.add_parser(
        "levels",
        help="FSQ level sets with smallest level 3, 4, 5, 8 at 2^10 and 2^12 codes",
        description="Test the paper's advice L_i >= 5: FSQ tokenizers + MaskGIT whose level "
        "sets have smallest level 3, 4, 5 and 8 at fixed codebook sizes.",
    )
    lv.add_argument("--sizes", nargs="+", default=["2^10", "2^12"], metavar="K")
    lv.add_argument("--min-levels", nargs="+", type=int, default=[3, 4, 5, 8], metavar="M")
    _common(lv, "reports/study-levels")
    lv.set_defaults(func=run_levels)

    us = studies.add_parser(
        "usage",
        help="codebook usage: VQ without/with tricks vs FSQ on clustered data (seconds)",
        description="Codebook usage of VQ without tricks, with reseeding, with code splitting "
        "and of FSQ on clustered synthetic data with more codes than clusters.",
    )
    add_usage_args(us)


def _common(p: argparse.ArgumentParser, out: str) -> None:
    p.add_argument(
        "--scale",
        default="small",
        choices=["tiny", "small", "paper", "imagenet128"],
        help="budget preset (default small: a 2-core CPU; paper: GPUs, torchrun; imagenet128: "
        "the paper's Fig. 3 setting, needs --data folder:PATH)",
    )
    p.add_argument(
        "--data", default=None, help="data spec (default: the scale's; imagenet128 needs one)"
    )
    from fsqkit.cli.run_args import add_step_args

    add_step_args(p)
    p.add_argument("--out", default=out, help=f"study folder (default {out})")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--table-only",
        action="store_true",
        help="train nothing: write the table and figure of the cells finished so far",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: the scale's, 1 for tiny/small on the CPU)",
    )


def _sizes(texts: list[str] | None) -> list[int] | None:
    from fsqkit.experiments.studies.cells import parse_size

    return None if texts is None else [parse_size(t) for t in texts]


def run_codebook_size(args: argparse.Namespace) -> int:
    from fsqkit.experiments.studies import codebook_size

    return _run(codebook_size, args, args.quantizers, _sizes(args.sizes))


def run_levels(args: argparse.Namespace) -> int:
    from fsqkit.experiments.studies import levels

    return _run(levels, args, _sizes(args.sizes) or [], args.min_levels)


def _run(study: Callable[..., Table], args: argparse.Namespace, *grid: object) -> int:
    """Call ``study(out, scale, *grid, ...)`` with the common flags; print its table."""
    opts = {
        "progress": not args.no_progress,
        "device": args.device,
        "threads": args.threads,
        "table_only": args.table_only,
    }
    from fsqkit.cli.run_args import step_settings_from_args

    overrides = {"data": args.data, **step_settings_from_args(args)}
    table = study(args.out, args.scale, *grid, **opts, **overrides)
    if os.environ.get("RANK", "0") == "0":  # under torchrun: rank 0 prints
        print(f"\n{table.to_text()}\n\ntable: {args.out}/table.md")
    return 0


def add_usage_args(p: argparse.ArgumentParser) -> None:
    """Arguments of the synthetic usage study."""
    p.add_argument("--codebook-size", type=int, default=125)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--clusters", type=int, default=8)
    p.add_argument("--spread", type=float, default=0.5)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_usage)


def run_usage(args: argparse.Namespace) -> int:
    from fsqkit.experiments.studies import run_usage_study

    result = run_usage_study(
        codebook_size=args.codebook_size,
        dim=args.dim,
        clusters=args.clusters,
        spread=args.spread,
        steps=args.steps,
        seed=args.seed,
    )
    print(f"codebook usage on held-out data ({args.clusters} clusters, K={args.codebook_size}):")
    for name, value in result.items():
        print(f"  {name:<10} {value:6.1%}")
    return 0
