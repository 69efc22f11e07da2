"""The studies (fsqkit.experiments.studies, ``fsqkit study``) on the tiny scale: a 2 x 2 grid
end to end, skipping finished cells, resuming an interrupted one, a failing
cell, and argument errors."""

from __future__ import annotations

import json
import math
import os

import pytest

from fsqkit.cli import main
from fsqkit.experiments.studies import codebook_size, levels
from fsqkit.experiments.studies import runner as runner_mod
from fsqkit.experiments.studies.cells import (
    codebook_size_cells,
    levels_cells,
    levels_with_min,
    parse_size,
)
from fsqkit.tokenizer.train import TokenizerTask
from tests.single_thread import one_thread  # noqa: F401  (autouse)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("study") / "cs")
    table = codebook_size(out, "tiny", ["fsq", "vq"], [16, 64], progress=False)
    return out, table


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _cell_files(out: str) -> dict[str, float]:
    """mtime of every file under out/cells (what a skipped re-run must not touch)."""
    found = {}
    for root, _, files in os.walk(os.path.join(out, "cells")):
        for f in files:
            found[os.path.join(root, f)] = os.path.getmtime(os.path.join(root, f))
    return found


def test_grid_writes_table_figure_and_cells(grid):
    out, table = grid
    for name in ("table.md", "table.json", "figure.png", "study.json"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    assert [r["status"] for r in table.rows] == ["done"] * 4
    assert [(r["quantizer"].split()[0], r["log2 K"], r["codes"]) for r in table.rows] == [
        ("FSQ", 4, 15),
        ("FSQ", 6, 64),
        ("VQ", 4, 16),
        ("VQ", 6, 64),
    ]
    data = json.loads(_read(os.path.join(out, "table.json")))
    tokens = 16  # tiny: 8x8 crops, f=2 -> 4x4 tokens
    for cell in data["cells"]:
        m = cell["metrics"]
        assert 0 < m["usage"] <= 1 and m["codes_used"] == round(m["usage"] * cell["codes"])
        # usage on 64 held-out crops (their first 32 give the other metrics): never less
        assert m["usage_images"] == 64 and m["usage"] >= m["usage_val_crops"] > 0
        assert m["raw_bits_per_image"] == pytest.approx(tokens * math.log2(cell["codes"]))
        assert all(math.isfinite(m[k]) for k in ("psnr", "recon_fd", "sample_fd", "bits_per_image"))
        assert os.path.isfile(os.path.join(out, "cells", cell["cell"], "result.json"))
    md = _read(os.path.join(out, "table.md"))
    assert "| FSQ (levels_for) | 4 | 15 | [5, 3] |" in md and "figure.png" in md


def test_rerun_skips_finished_cells(grid, capsys):
    out, table = grid
    before = _cell_files(out)
    again = codebook_size(out, "tiny", ["fsq", "vq"], [16, 64], progress=False)
    assert _cell_files(out) == before  # nothing trained, evaluated or rewritten
    assert again.rows == table.rows
    assert capsys.readouterr().out.count("done earlier, skipped") == 4


def test_interrupted_cell_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    out = str(tmp_path / "cs")
    calls: list[int] = []
    original = TokenizerTask.micro_batches

    def step(self, s, n):
        calls.append(s)
        if s == 3 and len(calls) == 3:  # Ctrl-C during the first run's last step
            raise KeyboardInterrupt
        return original(self, s, n)

    monkeypatch.setattr(TokenizerTask, "micro_batches", step)
    with pytest.raises(KeyboardInterrupt):
        codebook_size(out, "tiny", ["fsq"], [16], progress=False)
    cell = os.path.join(out, "cells", "fsq-16")
    assert not os.path.exists(os.path.join(cell, "result.json"))
    assert "missing" in _read(os.path.join(out, "table.md"))  # table written anyway
    table = codebook_size(out, "tiny", ["fsq"], [16], progress=False)
    assert calls == [1, 2, 3, 3]  # resumed after the step-2 checkpoint (tiny: ckpt_every=2)
    assert table.rows[0]["status"] == "done"


def test_failed_cell_is_reported_and_retried(tmp_path, monkeypatch):
    out = str(tmp_path / "cs")
    real = runner_mod.run_cell

    def flaky(cell, *args, **kwargs):
        if cell.name == "fsq-64":
            raise RuntimeError("boom\nsecond line")
        return real(cell, *args, **kwargs)

    monkeypatch.setattr(runner_mod, "run_cell", flaky)
    table = codebook_size(out, "tiny", ["fsq"], [16, 64], progress=False)
    assert [r["status"] for r in table.rows] == ["done", "failed: RuntimeError: boom"]
    assert table.rows[1]["PSNR dB"] is None and table.rows[0]["PSNR dB"] is not None
    failed = os.path.join(out, "cells", "fsq-64", "failed.json")
    assert "boom" in json.loads(_read(failed))["traceback"]
    assert "failed: RuntimeError: boom" in _read(os.path.join(out, "table.md"))
    monkeypatch.setattr(runner_mod, "run_cell", None)  # --table-only must not run a cell
    os.remove(os.path.join(out, "table.md"))
    assert main(["study", "codebook-size", "--scale", "tiny", "--quantizers", "fsq",
                 "--sizes", "16", "64", "128", "--out", out, "--table-only"]) == 0  # fmt: skip
    md = _read(os.path.join(out, "table.md"))
    assert "| done |" in md and "failed: RuntimeError: boom" in md and "| missing |" in md
    assert not os.path.exists(os.path.join(out, "cells", "fsq-128"))
    monkeypatch.setattr(runner_mod, "run_cell", real)
    table = codebook_size(out, "tiny", ["fsq"], [16, 64], progress=False)
    assert [r["status"] for r in table.rows] == ["done", "done"]
    assert not os.path.exists(failed)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--quantizers", "fsq", "lfq"], "unknown quantizer 'lfq'"),
        (["--sizes", "2"], "FSQ cannot reach codebook size 2"),
        (["--sizes"], "expected at least one argument"),
        (["--sizes", "2^x"], "cannot read codebook size '2^x'"),
        (["--scale", "huge"], "invalid choice: 'huge'"),
    ],
)
def test_cli_rejects_bad_arguments(tmp_path, capsys, args, message):
    out = str(tmp_path / "never")
    try:
        code = main(["study", "codebook-size", "--scale", "tiny", "--out", out, *args])
    except SystemExit as exit_:  # argparse errors
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()[-1]) < 200
    assert not os.path.exists(out)  # nothing ran


def test_api_rejects_empty_lists():
    with pytest.raises(ValueError, match="codebook size list is empty"):
        codebook_size_cells(["fsq"], [], vq_dim=8)
    with pytest.raises(ValueError, match="quantizer list is empty"):
        codebook_size_cells([], [16], vq_dim=8)
    with pytest.raises(ValueError, match="min-level list is empty"):
        levels("unused", "tiny", [1024], [])
    with pytest.raises(ValueError, match="need 3 <= smallest level"):
        levels_cells([1024], [2])


def test_parse_size():
    assert [parse_size(s) for s in ("1024", "2^10", "2**10", " 16 ")] == [1024, 1024, 1024, 16]


def test_levels_study_cells_have_the_requested_smallest_level():
    cells = levels_cells([2**10, 2**12], [3, 4, 5, 8])
    for cell in cells:
        lv = cell.quantizer_kwargs["levels"]
        assert min(lv) == int(cell.row.removeprefix("fsq_min"))
        assert abs(math.log2(math.prod(lv)) - math.log2(cell.target)) < 0.2, (cell, lv)
    assert levels_with_min(2**10, 5) == [8, 5, 5, 5]  # the paper's recommendation
    assert levels_with_min(2**12, 5) == [7, 5, 5, 5, 5]


def test_study_usage_runs_and_the_old_alias_is_gone(capsys):
    args = ["--codebook-size", "27", "--steps", "5", "--clusters", "4"]
    assert main(["study", "usage", *args]) == 0
    assert "vq_split" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # argparse: invalid choice
        main(["usage-study", *args])


def test_levels_study_cli_runs(tmp_path, capsys):
    out = str(tmp_path / "lv")
    args = ["--scale", "tiny", "--sizes", "2^4", "--min-levels", "3", "4", "--out", out]
    assert main(["study", "levels", *args, "--no-progress"]) == 0
    data = json.loads(_read(os.path.join(out, "table.json")))
    assert [(c["row"], c["levels"], c["status"]) for c in data["cells"]] == [
        ("fsq_min3", [5, 3], "done"),
        ("fsq_min4", [4, 4], "done"),
    ]
    assert os.path.isfile(os.path.join(out, "figure.png"))
    assert "FSQ min L=4" in capsys.readouterr().out
