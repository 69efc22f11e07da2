"""Metrics as JSON lines (one object per record, ``{"step": ..., ...}``).

Only rank 0 writes. On resume, records logged after the checkpoint's step (by
the interrupted run) are dropped, so the file reads as one uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no inf/nan
    return v


class MetricsLogger:
    """Append-only JSONL writer; a no-op when ``enabled`` is false (ranks > 0)."""

    def __init__(self, path: str, enabled: bool = True) -> None:
        self.path = path
        self.enabled = enabled
        if enabled:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop records with ``step > step`` (written after the resumed checkpoint)."""
        if not self.enabled or not os.path.isfile(self.path):
            return
        keep = [r for r in read_metrics(self.path) if int(r.get("step", 0)) <= step]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            for r in keep:
                f.write(json.dumps(r) + "\n")
        os.replace(tmp, self.path)


def read_metrics(path: str) -> list[dict[str, Any]]:
    """All records of a metrics file (a torn last line from a crash is skipped)."""
    out = []
    with open(path) as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out
