"""Exact bin edges of the reference pipeline (fsqkit.quantizers._fsq_backends.edges): the
digit counted against the edges equals the reference's digit on every float
tried, and a non-monotone tanh is detected rather than trusted."""

from __future__ import annotations

import pytest
import torch

from fsqkit import FSQ
from fsqkit.quantizers._fsq_backends import edges as fsq_edges
from fsqkit.quantizers._fsq_backends.edges import bin_edges, codes_from_digits, compute_bin_edges
from fsqkit.quantizers.fsq_math import FSQConstants

CPU = torch.device("cpu")


def reference_digits(fsq: FSQ, z: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return fsq.quantize_digits(z, apply_dither=False)[1].long()


def counted_digits(edges: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``(N, D)`` digits from edges ``(D, K)``: NaN padding never counts."""
    return (z.unsqueeze(-1) >= edges).sum(-1)


def floats_around(values: torch.Tensor, radius: int) -> torch.Tensor:
    """Every float32 within ``radius`` steps of each value (flattened)."""
    keys = fsq_edges._to_keys(values.float()).unsqueeze(-1) + torch.arange(-radius, radius + 1)
    return fsq_edges._from_keys(keys).flatten()


@pytest.mark.parametrize(
    "levels,symmetric,eps",
    [
        ([8, 5, 5, 5], False, 1e-3),
        ([7, 6, 5, 4, 3], False, 1e-3),
        ([16, 9, 3], False, 0.05),
        ([64, 33], False, 1e-3),
        ([8, 5, 5, 5], True, 1e-3),
        ([2, 7, 6], True, 1e-3),
    ],
)
def test_counted_digits_equal_the_reference(levels, symmetric, eps) -> None:
    fsq = FSQ(levels, symmetric=symmetric, eps=eps, fast=False)
    found = compute_bin_edges(fsq.constants, CPU)
    assert found is not None
    edges = found.edges  # (D, K)
    assert edges.shape == (len(levels), max(levels) - 1)
    for d, L in enumerate(levels):
        row = edges[d]
        assert not torch.isnan(row[: L - 1]).any() and torch.isnan(row[L - 1 :]).all()
        assert bool((row[1 : L - 1] > row[: L - 2]).all())  # strictly ascending
    # every float within 3000 steps of every edge of every dimension, plus a wide
    # random sample, in every column
    near = floats_around(edges[~torch.isnan(edges)], 3000)
    wide = torch.randn(200_000) * 4
    z = torch.cat([near, wide]).unsqueeze(1).expand(-1, len(levels)).contiguous()
    digits = reference_digits(fsq, z)
    assert torch.equal(counted_digits(edges, z), digits)
    with torch.no_grad():
        codes = fsq.quantize_digits(z, apply_dither=False)[0]
    formula = codes_from_digits(fsq.constants, digits)
    assert torch.equal(formula.view(torch.int32), codes.view(torch.int32))


def test_infinities_count_like_the_reference() -> None:
    fsq = FSQ([8, 5, 3], fast=False)
    edges = compute_bin_edges(fsq.constants, CPU).edges
    z = torch.tensor([[float("inf")] * 3, [float("-inf")] * 3])
    assert torch.equal(counted_digits(edges, z), reference_digits(fsq, z))


def test_levels_above_64_have_no_edges() -> None:
    assert compute_bin_edges(FSQConstants.build([65, 3]), CPU) is None


def test_a_non_monotone_tanh_is_detected(monkeypatch, caplog) -> None:
    """A tanh that steps back near one edge must make the edges unavailable."""
    fsq = FSQ([8, 5, 5, 5], fast=False)
    edge = compute_bin_edges(fsq.constants, CPU).edges[0, 2].item()
    u0 = edge + fsq.constants.tensors().shift[0].item()  # where tanh is evaluated at that edge
    real_tanh = torch.tanh

    def bumpy_tanh(x: torch.Tensor) -> torch.Tensor:
        t = real_tanh(x)
        # just above u0, return a little less than just below it
        bump = (x > u0) & (x < u0 + 1e-6)
        return torch.where(bump, t - 1e-5, t)

    monkeypatch.setattr(torch, "tanh", bumpy_tanh)
    with caplog.at_level("INFO", logger="fsqkit.fast"):
        assert compute_bin_edges(fsq.constants, CPU) is None
    assert any("no bin edges" in r.getMessage() for r in caplog.records)


def test_cache_is_keyed_by_the_constants_value() -> None:
    first = bin_edges(FSQ([8, 5, 5, 5]).constants, CPU)
    assert bin_edges(FSQ([8, 5, 5, 5]).constants, CPU) is first  # equal constants share
    other = bin_edges(FSQ([8, 5, 5, 5], eps=0.01).constants, CPU)
    assert other is not first
    assert not torch.equal(other.edges.nan_to_num(), first.edges.nan_to_num())
