"""Property tests over random level lists and shapes."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fsqkit import FSQ

levels_st = st.lists(st.integers(min_value=3, max_value=12), min_size=1, max_size=6)
shape_st = st.lists(st.integers(min_value=1, max_value=5), min_size=0, max_size=3)


@settings(max_examples=60, deadline=None)
@given(levels=levels_st, shape=shape_st, scale=st.floats(0.1, 20.0), symmetric=st.booleans())
def test_indices_in_range_and_round_trip(levels, shape, scale, symmetric) -> None:
    fsq = FSQ(levels, symmetric=symmetric)
    z = torch.randn(*shape, len(levels)) * scale
    out = fsq(z)
    assert out.indices.shape == tuple(shape)
    assert out.quantized.shape == z.shape
    assert ((out.indices >= 0) & (out.indices < math.prod(levels))).all()
    assert (out.quantized.abs() <= 1).all()
    assert torch.equal(fsq.indices_to_codes(out.indices), out.quantized)
    assert torch.equal(fsq.codes_to_indices(out.quantized), out.indices)
    # Quantization is idempotent on its own grid in index space: codes -> indices -> codes.
    assert torch.equal(fsq.indices_to_codes(fsq.codes_to_indices(out.quantized)), out.quantized)


@settings(max_examples=30, deadline=None)
@given(levels=st.lists(st.integers(2, 9), min_size=1, max_size=4), groups=st.integers(1, 3))
def test_every_code_round_trips(levels, groups) -> None:
    fsq = FSQ(levels, num_codebooks=groups, symmetric=True)
    k = fsq.codebook_size
    idx = torch.arange(k).unsqueeze(-1).expand(k, groups)
    idx = torch.stack([idx[:, g].roll(g) for g in range(groups)], -1)
    if groups == 1:
        idx = idx.squeeze(-1)  # a single codebook has no trailing codebook dimension
    codes = fsq.indices_to_codes(idx)
    assert codes.shape == (k, groups * len(levels))
    assert torch.equal(fsq.codes_to_indices(codes), idx.int())


@settings(max_examples=40, deadline=None)
@given(levels=levels_st)
def test_quantization_is_monotone_per_dimension(levels) -> None:
    fsq = FSQ(levels)
    z = torch.linspace(-8, 8, 401).unsqueeze(-1).expand(401, len(levels)).contiguous()
    q = fsq(z).quantized
    assert (q.diff(dim=0) >= 0).all()
    # Every level of every dimension is reached over a wide enough sweep.
    for d, level in enumerate(levels):
        assert q[:, d].unique().numel() == level
