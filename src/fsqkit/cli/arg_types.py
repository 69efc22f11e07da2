"""Argument types shared by several commands."""

from __future__ import annotations

import argparse


def int_list(text: str) -> list[int]:
    """``"8,5,5,5"`` -> ``[8, 5, 5, 5]``; an ``argparse`` error naming the text otherwise."""
    try:
        return [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
