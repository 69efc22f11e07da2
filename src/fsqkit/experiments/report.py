"""A report made of sections (tables, text, images), written as Markdown + JSON.

The demo appends one section per stage; later stages (e.g. MaskGIT) append
their own with :meth:`Report.add_table` / :meth:`Report.add_text` /
:meth:`Report.add_image` and the same :meth:`Report.write` produces the folder.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from fsqkit.training.checkpoint import atomic_write_text


@dataclass
class Table:
    """Rows of ``{column: value}``; ``formats`` maps a column to a format spec."""

    title: str
    columns: list[str]
    rows: list[dict[str, Any]]
    formats: dict[str, str] = field(default_factory=dict)
    note: str = ""

    def _cell(self, col: str, v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float) and not math.isfinite(v):
            return str(v)
        fmt = self.formats.get(col)
        return format(v, fmt) if fmt else str(v)

    def to_text(self) -> str:
        """A fixed-width table for the terminal."""
        cells = [[self._cell(c, r.get(c)) for c in self.columns] for r in self.rows]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(self.columns)]
        line = "  ".join(c.ljust(w) for c, w in zip(self.columns, widths))
        out = [self.title, line, "  ".join("-" * w for w in widths)]
        out += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
        return "\n".join(out)

    def to_markdown(self) -> str:
        out = ["| " + " | ".join(self.columns) + " |", "|" + "---|" * len(self.columns)]
        for r in self.rows:
            out.append("| " + " | ".join(self._cell(c, r.get(c)) for c in self.columns) + " |")
        if self.note:
            out += ["", self.note]
        return "\n".join(out)


@dataclass
class Report:
    """Ordered sections; each is ``(title, kind, payload)``."""

    title: str
    sections: list[dict[str, Any]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # free-form JSON results per stage

    def add_table(self, table: Table) -> None:
        self.sections.append({"kind": "table", "title": table.title, "table": table})

    def add_text(self, title: str, text: str) -> None:
        self.sections.append({"kind": "text", "title": title, "text": text})

    def add_image(self, title: str, filename: str) -> None:
        """``filename`` relative to the report folder."""
        self.sections.append({"kind": "image", "title": title, "file": filename})

    def to_markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for s in self.sections:
            out.append(f"## {s['title']}")
            out.append("")
            if s["kind"] == "table":
                out.append(s["table"].to_markdown())
            elif s["kind"] == "text":
                out.append(s["text"])
            else:
                out.append(f"![{s['title']}]({s['file']})")
            out.append("")
        return "\n".join(out)

    def to_json(self) -> dict[str, Any]:
        tables = {
            s["title"]: {"columns": s["table"].columns, "rows": s["table"].rows}
            for s in self.sections
            if s["kind"] == "table"
        }
        images = [s["file"] for s in self.sections if s["kind"] == "image"]
        return {"title": self.title, "tables": tables, "images": images, "data": self.data}

    def write(self, out_dir: str) -> tuple[str, str]:
        """Write ``report.md`` and ``report.json`` into ``out_dir``; returns their paths."""
        os.makedirs(out_dir, exist_ok=True)
        md, js = os.path.join(out_dir, "report.md"), os.path.join(out_dir, "report.json")
        atomic_write_text(md, self.to_markdown())
        atomic_write_text(js, json.dumps(self.to_json(), indent=2, default=_json_default))
        return md, js


def _json_default(v: Any) -> Any:
    if isinstance(v, float):
        return str(v)
    return repr(v)
