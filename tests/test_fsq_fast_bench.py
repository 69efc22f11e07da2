"""Smoke test of benchmarks/bench_fsq.py: it runs and prints the ratio table."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_fsq.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_fsq", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_fsq"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_bench_quick_prints_ratios(capsys, tmp_path) -> None:
    bench = load_bench()
    out_json = tmp_path / "rows.json"
    argv = ["--quick", "--repeats", "1", "--warmup", "0", "--fp32-only", "--json", str(out_json)]
    assert bench.main(argv) == 0
    text = capsys.readouterr().out
    assert "| shape | mode | impl |" in text and "x tanh" in text
    rows = json.loads(out_json.read_text())
    impls = {r["impl"] for r in rows}
    assert {"tanh (fp32)", "fsqkit float32", "fsqkit reference float32"} <= impls
    for r in rows:
        assert r["ms"] > 0 and r["x_tanh"] > 0
        if r["mode"] == "forward+backward" and r["impl"] == "fsqkit float32":
            # bin-edge mode: nothing but the input itself is kept for backward
            assert r["saved_x_input"] == 0.0 and r["input_also_saved"]
