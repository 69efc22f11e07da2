"""``fsqkit levels SIZE``: recommended FSQ levels for a target codebook size."""

from __future__ import annotations

import argparse
import json
import math

from fsqkit.quantizers.levels import PAPER_LEVELS, codebook_size_of, levels_for


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "levels",
        help="recommended FSQ levels for a target codebook size",
        description="Print the recommended FSQ levels for a target codebook size "
        "(the paper's table where it has one) and the exact size they give. "
        "SIZE may be an integer or a power of two written 2^N.",
    )
    p.add_argument("size", help="target codebook size, e.g. 1024 or 2^10")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=run)


def parse_size(text: str) -> int:
    text = text.strip().replace("**", "^")
    try:
        if "^" in text:
            base, exp = text.split("^", 1)
            return int(base) ** int(exp)
        return int(text)
    except ValueError:
        raise ValueError(f"SIZE must be an integer or 2^N, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    size = parse_size(args.size)
    levels = levels_for(size)
    exact = codebook_size_of(levels)
    source = "paper (Table 1 / A.4.1)" if size in PAPER_LEVELS else "rule (L_i in {5..8})"
    if args.json:
        print(json.dumps({"target": size, "levels": levels, "size": exact, "source": source}))
    else:
        print(
            f"target {size}: levels {levels} -> {exact} codes "
            f"({math.log2(exact):.2f} bits), {source}"
        )
    return 0
