"""The ``fsqkit`` command line.

Each subcommand lives in its own module ``fsqkit.cli.<name>`` that defines
``register(subparsers)``; registering adds an ``argparse`` sub-parser whose
``func`` default is a ``run(args) -> int`` function. ``main(argv)`` is what the
console script calls and what tests call in-process.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# Order here is the order in ``fsqkit --help``.
COMMAND_MODULES: list[str] = [
    "levels",
    "train_tokenizer",
    "encode",
    "decode",
    "demo",
    "train_maskgit",
    "sample",
    "fid",
    "study",
    "uvim",
]


class CLIError(Exception):
    """An error caused by the user's input; printed as ``fsqkit: error: ...`` (exit 2)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fsqkit",
        description="Finite Scalar Quantization toolkit: quantizers, tokenizers, MaskGIT, UViM, studies.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"fsqkit.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (defaults to ``sys.argv[1:]``); returns the exit code."""
    from fsqkit.cli.stopped import report_stop
    from fsqkit.training.errors import CheckpointWriteError, TrainingStopped

    argv = list(argv) if argv is not None else sys.argv[1:]
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv  # which flags were given (a preset fills the others)
    try:
        return int(args.func(args) or 0)
    except TrainingStopped as err:  # interrupted (130/143), diverged, checkpoint write failed
        return report_stop(err, args.command, argv, resumable=hasattr(args, "resume"))
    except (CLIError, ValueError, TypeError, FileNotFoundError, CheckpointWriteError) as err:
        # User-facing errors: a clear message, no traceback (FSQKIT_DEBUG=1 re-raises).
        if os.environ.get("FSQKIT_DEBUG"):
            raise
        print(f"fsqkit {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
