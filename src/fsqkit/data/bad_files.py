"""Counting the image files a run had to skip, and stopping when there are too many.

A streamed source never fails on one bad file: the decoding worker reports it
(path and reason) with the batch, the item is replaced by the next readable
file, and the main process prints one line per bad file (once) and counts it.
More than ``limit`` distinct bad files stop the run with :class:`TooManyBadFiles`.
Conversions a user may want to know about (CMYK, 16-bit, alpha) print one
note per file, the first :data:`MAX_NOTES` of them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable

DEFAULT_MAX_BAD_FILES = 100
MAX_NOTES = 20


class TooManyBadFiles(ValueError):
    """More bad files than the run allows (``--max-bad-files``)."""


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class BadFiles:
    """Bad-file and conversion bookkeeping of one process.

    Args:
        limit: the most distinct bad files tolerated (``None``: no limit).
        quiet: print nothing (ranks other than 0 count, rank 0 tells).
        say: where the one-line messages go (default: stderr).
    """

    def __init__(
        self,
        limit: int | None = DEFAULT_MAX_BAD_FILES,
        *,
        quiet: bool = False,
        say: Callable[[str], None] = _stderr,
    ) -> None:
        if limit is not None and limit < 0:
            raise ValueError(f"max_bad_files must be >= 0, got {limit}")
        self.limit = limit
        self.say = (lambda line: None) if quiet else say
        self.bad: dict[str, str] = {}
        self.notes: dict[str, str] = {}

    @property
    def count(self) -> int:
        return len(self.bad)

    def add(self, path: str, reason: str) -> None:
        """Record one bad file (messages and the limit count each file once)."""
        if path in self.bad:
            return
        self.bad[path] = reason
        self.say(f"warning: skipping bad image file {path}: {reason}")
        if self.limit is not None and len(self.bad) > self.limit:
            raise TooManyBadFiles(
                f"stopping: {len(self.bad)} bad image files, more than the limit of "
                f"{self.limit} (--max-bad-files); the last one: {path}: {reason}"
            )

    def add_all(self, items: Iterable[tuple[str, str]]) -> None:
        for path, reason in items:
            self.add(path, reason)

    def note(self, path: str, text: str) -> None:
        """Record a conversion note (printed for the first :data:`MAX_NOTES` files)."""
        if path in self.notes:
            return
        self.notes[path] = text
        if len(self.notes) <= MAX_NOTES:
            self.say(f"note: {path}: {text}")
        if len(self.notes) == MAX_NOTES:
            self.say(f"note: further conversion notes are not shown (after {MAX_NOTES})")
