"""Graceful stop on SIGINT / SIGTERM while a :class:`~fsqkit.training.Trainer` runs.

The first signal only sets :attr:`StopSignals.received`; the trainer checks it
after each step, writes a checkpoint and stops. The same signal again (at least
``repeat_after_s`` later) restores the previous handlers and re-delivers it, so
a second Ctrl-C stops at once (``KeyboardInterrupt``) and a second SIGTERM
terminates the process. Repeats closer together than that count as one
delivery: ``torchrun`` forwards the signal its workers already got from the
terminal or the scheduler, which reach them within milliseconds.

Handlers are installed only in the main thread (Python delivers signals there)
and not for a signal that is ignored (``SIG_IGN``, e.g. SIGINT of a background
job).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """``with StopSignals() as stop:`` ... ``if stop.received: ...``.

    Args:
        announce: write one line to stderr when the first signal arrives.
        repeat_after_s: a repeat of a signal sooner than this is ignored.
    """

    def __init__(self, announce: bool = True, repeat_after_s: float = 1.0) -> None:
        self.announce = announce
        self.repeat_after_s = repeat_after_s
        self.received: int | None = None
        self._first_at = 0.0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                previous = signal.getsignal(sig)
                if previous is signal.SIG_IGN or previous is None:
                    continue  # ignored on purpose, or installed outside Python
                self._previous[sig] = previous
                signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def _restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if self.received is None:
            self.received, self._first_at = signum, now
            if self.announce:
                name = signal.Signals(signum).name
                # os.write, not print: a handler may interrupt a print to the same stream.
                os.write(
                    2,
                    f"\nfsqkit: {name} received: finishing this step, then saving a checkpoint "
                    f"(send {name} again to stop at once)\n".encode(),
                )
            return
        if now - self._first_at < self.repeat_after_s:
            return
        self._restore()
        signal.raise_signal(signum)
