"""Streamed-data flags shared by the commands that read image data
(``--val-data``, ``--augment``, ``--no-flip``, ``--workers``, ``--max-bad-files``)
and the :class:`~fsqkit.data.StreamOptions` fields they give."""

from __future__ import annotations

import argparse
from typing import Any

from fsqkit.data.augment import AUGMENT_MODES
from fsqkit.data.bad_files import DEFAULT_MAX_BAD_FILES
from fsqkit.data.options import default_workers


def add_stream_args(p: argparse.ArgumentParser, *, augment: bool = True) -> None:
    """Add the "streamed data" group (``folder:`` and ``wds:`` sources)."""
    g = p.add_argument_group(
        "streamed data (folder:PATH, wds:PATTERN; the built-in sources stay in memory)"
    )
    g.add_argument(
        "--val-data",
        default=None,
        help="validation source (default: PATH/val next to PATH/train, a held-out 10%% of a "
        "folder, or the last shard of wds:)",
    )
    if augment:
        g.add_argument(
            "--augment",
            choices=AUGMENT_MODES,
            default="crop",
            help="training crops: random square of the resized image (crop, default), "
            "Inception's random resized crop, or none (the evaluation centre crop)",
        )
        g.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    g.add_argument(
        "--workers",
        type=int,
        default=None,
        help=f"DataLoader decoding processes (default {default_workers()} here: CPU cores - 1, "
        "at most 8; 0: decode in the training process)",
    )
    g.add_argument(
        "--max-bad-files",
        type=int,
        default=DEFAULT_MAX_BAD_FILES,
        help=f"stop when more image files than this are unreadable (default {DEFAULT_MAX_BAD_FILES})",
    )


def stream_options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~fsqkit.data.StreamOptions` fields of the parsed flags."""
    out: dict[str, Any] = {
        "val_data": args.val_data,
        "workers": args.workers,
        "max_bad_files": args.max_bad_files,
    }
    if hasattr(args, "augment"):
        out.update(augment=args.augment, flip=not args.no_flip)
    return out
