"""Bootstrap standard errors: per-image means match the textbook standard error,
set metrics are recomputed per resample, paired differences use the same
resamples (and are refused across different image sets)."""

from __future__ import annotations

import math

import pytest
import torch

from fsqkit.uvim import get_task
from fsqkit.uvim.evaluate import DenseEvaluation
from fsqkit.uvim.intervals import bootstrap, bootstrap_indices, score, standard_errors


def evaluation(values: torch.Tensor, data: str = "scenes/test") -> DenseEvaluation:
    return DenseEvaluation(data, {"rmse": values.double()})


def test_indices_are_seeded_and_in_range():
    a, b = bootstrap_indices(50, 30, seed=3), bootstrap_indices(50, 30, seed=3)
    assert a.shape == (30, 50) and torch.equal(a, b) and 0 <= int(a.min()) <= int(a.max()) < 50
    assert not torch.equal(a, bootstrap_indices(50, 30, seed=4))
    with pytest.raises(ValueError, match="needs >= 2"):
        bootstrap_indices(1, 30)


def test_mean_se_is_the_textbook_one():
    g = torch.Generator().manual_seed(0)
    values = torch.randn(400, generator=g).exp()  # heavy-ish tail, like per-image RMSE
    s = score(get_task("depth"), evaluation(values), resamples=2000)
    textbook = float(values.std() / math.sqrt(len(values)))
    assert s.standard_errors()["rmse"] == pytest.approx(textbook, rel=0.08)
    assert s.metrics["rmse"] == pytest.approx(float(values.mean()))


def test_paired_difference_is_sharper_than_either_score():
    """Two models that differ by a small, steady amount per image: each score is
    noisy (the images vary), their difference is not."""
    task = get_task("depth")
    g = torch.Generator().manual_seed(1)
    base = torch.randn(300, generator=g).exp()
    a = score(task, evaluation(base + 0.05 + 0.01 * torch.randn(300, generator=g)))
    b = score(task, evaluation(base))
    diff, se = a.minus(b, "rmse")
    assert diff == pytest.approx(0.05, abs=0.003)
    assert se < 0.1 * a.standard_errors()["rmse"] and diff / se > 20
    same, zero = b.minus(b, "rmse")
    assert same == 0 and zero == 0
    other = score(task, evaluation(base, data="scenes/val"))
    with pytest.raises(ValueError, match="same images"):
        a.minus(other, "rmse")


def test_set_metrics_are_recomputed_per_resample():
    task = get_task("panoptic")
    g = torch.Generator().manual_seed(2)
    stats = torch.randint(0, 4, (20, 4, 5), generator=g).double()  # TP, FP, FN, IoU sum
    stats[:, 3] = stats[:, 0] * 0.8  # matched IoUs of 0.8
    ev = DenseEvaluation("scenes/test", {"pixel_acc": torch.rand(20, generator=g)}, stats)
    idx = bootstrap_indices(20, 5, seed=0)
    reps = bootstrap(task, ev, idx)
    for r in range(5):
        assert reps["pq"][r].item() == pytest.approx(task.set_metrics_from(stats[idx[r]])["pq"])
        assert reps["pixel_acc"][r].item() == pytest.approx(
            float(ev.per_image["pixel_acc"][idx[r]].mean())
        )
    assert set(standard_errors(reps)) >= {"pq", "pq_things", "pq_stuff", "sq", "rq", "pixel_acc"}
    with pytest.raises(ValueError, match="N = 20"):
        bootstrap(task, ev, bootstrap_indices(30, 5))
