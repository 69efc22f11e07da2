"""Gradient accumulation: two micro-batches give the gradients of one double
batch, and micro-batch ``i`` of step ``s`` is the batch a run without
accumulation draws at step ``(s-1)*n + i + 1``."""

from __future__ import annotations

import torch

from fsqkit.training import Trainer, TrainerConfig, micro_steps

from .train_helpers import tiny_task, train_records


def _grads_of_first_step(task, out: str, grad_accum: int) -> dict[str, torch.Tensor]:
    """Run one trainer step; return the tokenizer's gradients as the optimizer saw them."""
    seen: dict[str, torch.Tensor] = {}
    step = task.opt.step

    def record(*args, **kwargs):
        for name, p in task.model.named_parameters():
            if p.grad is not None:
                seen[name] = p.grad.detach().clone()
        return step(*args, **kwargs)

    task.opt.step = record
    cfg = TrainerConfig(out_dir=out, steps=1, progress=False, grad_accum=grad_accum)
    Trainer(task, cfg).fit()
    return seen


def test_two_micro_batches_give_the_gradients_of_the_double_batch(tmp_path):
    accum = tiny_task(str(tmp_path / "accum"), 1, batch_size=4, grad_clip=0.0)
    halves = accum.micro_batches(1, 2)
    g_accum = _grads_of_first_step(accum, str(tmp_path / "accum"), 2)

    double = tiny_task(str(tmp_path / "double"), 1, batch_size=8, grad_clip=0.0)
    both = {"images": torch.cat([h["images"] for h in halves])}
    double.micro_batches = lambda step, n: [dict(both)]
    g_double = _grads_of_first_step(double, str(tmp_path / "double"), 1)

    assert g_accum.keys() == g_double.keys() and len(g_accum) > 10
    for name, g in g_double.items():
        torch.testing.assert_close(g_accum[name], g, rtol=1e-4, atol=1e-6, msg=name)
    # ... and a single micro-batch alone gives other gradients (the test can fail).
    one = tiny_task(str(tmp_path / "one"), 1, batch_size=4, grad_clip=0.0)
    one.micro_batches = lambda step, n: [halves[0]]
    g_one = _grads_of_first_step(one, str(tmp_path / "one"), 1)
    assert not torch.allclose(g_one["encoder.conv_in.weight"], g_double["encoder.conv_in.weight"])


def test_micro_batches_are_the_batches_of_consecutive_plain_steps(tmp_path):
    task = tiny_task(str(tmp_path / "run"), 3)
    assert list(micro_steps(1, 1)) == [1] and list(micro_steps(3, 2)) == [5, 6]
    for step in (1, 3):
        micro = task.micro_batches(step, 2)
        for i, s in enumerate(micro_steps(step, 2)):
            assert torch.equal(micro[i]["images"], task.micro_batches(s, 1)[0]["images"])


def test_accumulated_run_logs_one_record_per_step_with_averaged_metrics(tmp_path):
    out = str(tmp_path / "run")
    task = tiny_task(out, 3)
    Trainer(
        task, TrainerConfig(out_dir=out, steps=3, progress=False, log_every=1, grad_accum=3)
    ).fit()
    recs = train_records(out)
    assert [r["step"] for r in recs] == [1, 2, 3]
    assert all(r["loss"] > 0 and "lr" in r for r in recs)
