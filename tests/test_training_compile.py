"""``--compile`` through the trainer: compiled and eager steps agree, the
modules come back eager after ``fit()``, and a backend that cannot compile
falls back to eager with one line (and the eager run's exact numbers)."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo import register_backend

from fsqkit.training import Trainer, TrainerConfig, load_checkpoint

from .train_helpers import tiny_fit, tiny_task, train_records


@register_backend
def fsqkit_test_broken(gm, example_inputs):
    raise RuntimeError("this backend has no compiler")


def _first_grads(out: str, **trainer) -> dict[str, torch.Tensor]:
    task = tiny_task(out, 1)
    seen: dict[str, torch.Tensor] = {}
    step = task.opt.step

    def record(*args, **kwargs):
        seen.update({n: p.grad.clone() for n, p in task.model.named_parameters()})
        return step(*args, **kwargs)

    task.opt.step = record
    Trainer(task, TrainerConfig(out_dir=out, steps=1, progress=False, **trainer)).fit()
    return seen


def _check_compiled_matches_eager(tmp_path, backend: str) -> None:
    eager = _first_grads(str(tmp_path / "eager"))
    compiled = _first_grads(str(tmp_path / "compiled"), compile=True, compile_backend=backend)
    for name, g in eager.items():
        torch.testing.assert_close(compiled[name], g, rtol=1e-4, atol=1e-6, msg=name)
    tiny_fit(str(tmp_path / "e3"), 3)
    task, _, _ = tiny_fit(str(tmp_path / "c3"), 3, compile=True, compile_backend=backend)
    a = [r["loss"] for r in train_records(str(tmp_path / "e3"))]
    b = [r["loss"] for r in train_records(str(tmp_path / "c3"))]
    assert b == pytest.approx(a, rel=1e-3)
    assert "forward" not in task.model.__dict__  # eager again after fit()


def test_compiled_step_agrees_with_eager_graph_capture(tmp_path):
    """Dynamo capture + AOTAutograd forward/backward graphs, without generating
    kernels (seconds); the inductor variant is the slow test below."""
    _check_compiled_matches_eager(tmp_path, "aot_eager")


@pytest.mark.slow
def test_compiled_step_agrees_with_eager_inductor(tmp_path):
    _check_compiled_matches_eager(tmp_path, "inductor")


def test_failed_compilation_falls_back_to_eager_with_one_line(tmp_path, capsys):
    tiny_fit(str(tmp_path / "eager"), 3)
    tiny_fit(str(tmp_path / "broken"), 3, compile=True, compile_backend="fsqkit_test_broken")
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "torch.compile failed" in ln]
    assert len(lines) == 1 and "training continues eagerly" in lines[0], err
    a, b = load_checkpoint(str(tmp_path / "eager")), load_checkpoint(str(tmp_path / "broken"))
    for k, v in a.weights["tokenizer"].items():
        assert torch.equal(v, b.weights["tokenizer"][k]), k
