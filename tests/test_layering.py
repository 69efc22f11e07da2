"""The import rules of the package hold (see ``tests/layering.py`` and the README's
"How the code is organised"), and the check catches each kind of break."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.layering import scan, violations

SRC = Path(__file__).resolve().parents[1] / "src" / "fsqkit"


def test_the_package_follows_its_import_rules():
    assert violations(SRC) == []


def test_the_scan_sees_imports_inside_functions():
    _, edges = scan(SRC)
    # the CLI imports each command module by name; this one is a plain function-level import
    inside = [e for e in edges if e.source == "fsqkit.cli" and e.target == "fsqkit.cli.stopped"]
    assert inside, "main() imports fsqkit.cli.stopped inside the function"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "fsqkit"
    shutil.copytree(SRC, root, ignore=shutil.ignore_patterns("__pycache__", "*.c", "*.h"))
    return root


def _plant(root: Path, relative: str, code: str) -> None:
    path = root / relative
    path.write_text(path.read_text() + "\n\n" + code + "\n")


def test_a_planted_back_import_is_caught(tree: Path):
    # a core module reaching up into an application, inside a function
    _plant(tree, "quantizers/levels.py", "def _f():\n    from fsqkit.uvim import UViM\n")
    found = violations(tree)
    assert "fsqkit.quantizers.levels imports fsqkit.uvim" in found[0]
    assert "quantizers may not import uvim" in found[0]
    # and uvim imports the quantizers, so the back-import also closes a circle
    assert len(found) == 2 and found[1].startswith("import circle: ")
    assert "fsqkit.quantizers.levels -> fsqkit.uvim" in found[1]


def test_models_import_in_one_direction_only(tree: Path):
    _plant(tree, "tokenizer/config.py", "import fsqkit.maskgit.config")
    assert any("tokenizer may not import maskgit" in v for v in violations(tree))


def test_the_library_never_imports_the_experiments(tree: Path):
    _plant(tree, "metrics/image.py", "from fsqkit.experiments.report import Report")
    assert any("metrics may not import experiments" in v for v in violations(tree))


def test_a_private_module_stays_in_its_package(tree: Path):
    (tree / "training" / "_secret.py").write_text("X = 1\n")
    _plant(tree, "training/optim.py", "from fsqkit.training._secret import X")  # allowed
    assert violations(tree) == []
    _plant(tree, "metrics/depth.py", "from fsqkit.training._secret import X")
    found = violations(tree)
    assert len(found) == 1 and "private to fsqkit.training" in found[0]


def test_an_import_circle_is_caught(tree: Path):
    # data/files.py imports data/dataset.py; the way back closes a circle
    _plant(tree, "data/dataset.py", "def _g():\n    from fsqkit.data import files\n")
    found = violations(tree)
    assert found == [
        "import circle: fsqkit.data.dataset -> fsqkit.data.files -> fsqkit.data.dataset"
    ]
