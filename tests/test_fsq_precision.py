"""Low precision never loses codes: every code of [8,8,8,5,5,5] survives bf16/fp16."""

from __future__ import annotations

import pytest
import torch

from fsqkit import FSQ

from .test_fsq import inverse_bound_for_codes

LEVELS = [8, 8, 8, 5, 5, 5]  # 64000 codes


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_every_code_survives_low_precision_inputs(dtype: torch.dtype) -> None:
    fsq = FSQ(LEVELS)
    idx = torch.arange(fsq.codebook_size)
    z = inverse_bound_for_codes(LEVELS, fsq.indices_to_codes(idx)).to(dtype)
    out = fsq(z)
    assert out.quantized.dtype == dtype
    assert out.indices.dtype == torch.int32
    assert torch.equal(out.indices, idx.int())
    assert out.indices.unique().numel() == 64000
    # The low-precision output codes map back to the same indices.
    assert torch.equal(fsq.codes_to_indices(out.quantized), idx.int())
    # ... and the codes themselves are the fp32 codes rounded to the dtype.
    assert torch.equal(out.quantized, fsq.indices_to_codes(idx).to(dtype))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_matches_fp32_on_same_values(dtype: torch.dtype) -> None:
    fsq = FSQ(LEVELS)
    z = (torch.randn(20000, 6) * 2).to(dtype)
    low = fsq(z)
    high = fsq(z.float())  # identical input values, computed in fp32 either way
    assert torch.equal(low.indices, high.indices)


def test_autocast_does_not_reach_quantization() -> None:
    fsq = FSQ([8, 5, 5, 5], dim=16)
    z = torch.randn(64, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fsq(z)
    # Indices are what fp32 quantization of the (autocast) projection gives.
    proj = torch.nn.functional.linear(
        z.bfloat16(), fsq.project_in.weight.bfloat16(), fsq.project_in.bias.bfloat16()
    )
    ref = FSQ([8, 5, 5, 5])(proj.float())
    assert torch.equal(out.indices, ref.indices)


def test_symmetric_low_precision_round_trip() -> None:
    fsq = FSQ([2, 4, 5, 8], symmetric=True)
    idx = torch.arange(fsq.codebook_size)
    codes = fsq.indices_to_codes(idx)
    for dtype in (torch.bfloat16, torch.float16):
        assert torch.equal(fsq.codes_to_indices(codes.to(dtype)), idx.int())
