"""``fsqkit usage-study``: the old name of ``fsqkit study usage`` (same arguments)."""

from __future__ import annotations

import argparse

from fsqkit.cli.study import add_usage_args
from fsqkit.studies.usage import run_usage_study

__all__ = ["register", "run_usage_study"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "usage-study",
        help="codebook usage: VQ without/with tricks vs FSQ on clustered data "
        "(alias of 'study usage')",
        description="Alias of 'fsqkit study usage': codebook usage of VQ without tricks, with "
        "reseeding, with code splitting and of FSQ on clustered synthetic data.",
    )
    add_usage_args(p)
