"""FSQ against the paper: worked example, exact round trips, reference agreement,
straight-through gradients, layouts and codebooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fsqkit import FSQ, reference
from fsqkit.quantizers.fsq_math import FSQConstants

LEVEL_SETS = [[3], [5, 3], [8, 8], [8, 6, 5], [8, 5, 5, 5], [7, 5, 5, 5, 5], [4, 6, 3, 9]]


def test_notebook_worked_example() -> None:
    # Official notebook: levels [3,5,4], z=[0.25,0.6,-7] -> bound ~[0.2447,1.0730,-1.9985],
    # codes [0, 0.5, -1], index 10 with basis [1, 3, 15].
    fsq = FSQ([3, 5, 4])
    c = FSQConstants.build([3, 5, 4])
    z = torch.tensor([[0.25, 0.6, -7.0]])
    bounded = torch.tanh(z + torch.tensor(c.shift)) * torch.tensor(c.half_l) - torch.tensor(
        c.offset
    )
    torch.testing.assert_close(
        bounded, torch.tensor([[0.2447, 1.0730, -1.9985]]), atol=1e-4, rtol=0
    )
    out = fsq(z)
    assert out.quantized.tolist() == [[0.0, 0.5, -1.0]]
    assert out.indices.tolist() == [10]
    assert c.basis == (1, 3, 15)
    assert fsq.indices_to_codes(torch.tensor([10])).tolist() == [[0.0, 0.5, -1.0]]


def test_implicit_codebook_order_matches_paper() -> None:
    # Paper: for L=[3,4] rows run (-1,-1), (0,-1), (1,-1), (-1,-0.5), ...
    cb = FSQ([3, 4]).implicit_codebook
    assert cb[:4].tolist() == [[-1, -1], [0, -1], [1, -1], [-1, -0.5]]
    assert cb.shape == (12, 2)


@pytest.mark.parametrize("levels", LEVEL_SETS)
def test_exact_round_trip_every_code(levels: list[int]) -> None:
    fsq = FSQ(levels)
    idx = torch.arange(fsq.codebook_size)
    codes = fsq.indices_to_codes(idx)
    assert torch.equal(fsq.codes_to_indices(codes), idx.to(fsq.index_dtype))
    np.testing.assert_array_equal(
        codes.numpy(), reference.implicit_codebook(levels).astype(np.float32)
    )
    # Every code is also reachable by the forward pass: invert the bound at the
    # centre of each code's bin and quantize.
    z = inverse_bound_for_codes(levels, codes)
    assert torch.equal(fsq(z).indices, idx.to(fsq.index_dtype))


def inverse_bound_for_codes(levels: list[int], codes: torch.Tensor) -> torch.Tensor:
    """A float32 input ``z`` that ``FSQ(levels)`` maps to ``codes`` (non-symmetric)."""
    c = FSQConstants.build(levels)
    hw = torch.tensor(c.half_width, dtype=torch.float64)
    half_l = torch.tensor(c.half_l, dtype=torch.float64)
    offset = torch.tensor(c.offset, dtype=torch.float64)
    shift = torch.tensor(c.shift, dtype=torch.float64)
    target = codes.double() * hw  # integer grid values
    # Keep the target inside the reachable range of the bound, within its bin.
    lo, hi = -half_l - offset, half_l - offset
    target = torch.maximum(torch.minimum(target, hi - 0.3), lo + 0.3)
    return (torch.atanh((target + offset) / half_l) - shift).float()


@pytest.mark.parametrize("levels", LEVEL_SETS)
def test_agrees_with_numpy_reference(levels: list[int]) -> None:
    torch.manual_seed(1)
    z = torch.randn(4096, len(levels)) * 2
    out = FSQ(levels)(z)
    ref_bound = reference.bound(z.double().numpy(), levels)
    ref_codes = reference.quantize(z.double().numpy(), levels).astype(np.float32)
    # float32 vs float64 may only disagree where the bound lies on a rounding edge.
    edge = np.abs(ref_bound - np.floor(ref_bound) - 0.5) < 1e-5
    agree = out.quantized.numpy() == ref_codes
    assert (agree | edge).all()
    assert agree.mean() > 0.999
    ref_idx = reference.codes_to_indices(out.quantized.double().numpy(), levels)
    np.testing.assert_array_equal(out.indices.numpy(), ref_idx)


def test_symmetric_agrees_with_reference_and_allows_two_levels() -> None:
    levels = [2, 4, 5]
    fsq = FSQ(levels, symmetric=True)
    z = torch.randn(2048, 3) * 2
    out = fsq(z)
    ref_codes = reference.quantize_symmetric(z.double().numpy(), levels)
    agree = np.isclose(out.quantized.numpy(), ref_codes, rtol=0, atol=1e-6)
    assert agree.mean() > 0.999
    np.testing.assert_array_equal(
        out.indices.numpy(), reference.codes_to_indices_symmetric(out.quantized.numpy(), levels)
    )
    # Symmetric around 0 for even L too: L=4 -> {-1, -1/3, 1/3, 1}.
    values = sorted(set(fsq.implicit_codebook[:, 1].tolist()))
    np.testing.assert_allclose(values, [-1, -1 / 3, 1 / 3, 1], atol=1e-6)
    idx = torch.arange(fsq.codebook_size)
    assert torch.equal(fsq.codes_to_indices(fsq.indices_to_codes(idx)), idx.int())


@pytest.mark.parametrize("levels", [[8, 5, 5, 5], [3, 4, 7]])
def test_straight_through_gradient_is_bound_derivative(levels: list[int]) -> None:
    fsq = FSQ(levels)
    z = (torch.randn(512, len(levels)) * 1.5).requires_grad_()
    w = torch.randn(512, len(levels))
    (fsq(z).quantized * w).sum().backward()
    hw = np.array(levels) // 2
    expected = w.numpy() * reference.bound_derivative(z.detach().double().numpy(), levels) / hw
    np.testing.assert_allclose(z.grad.numpy(), expected, rtol=1e-4, atol=1e-6)


def test_aux_loss_is_zero_and_stats() -> None:
    out = FSQ([8, 5, 5, 5])(torch.randn(10000, 4))
    assert out.aux_loss.item() == 0.0 and not out.aux_loss.requires_grad
    assert out.losses == {}
    assert 0.3 < out.stats["usage"] <= 1.0
    assert 1.0 < out.stats["perplexity"] <= 1000


def test_channel_first_layouts_and_codebooks() -> None:
    fsq = FSQ([8, 5, 5, 5], channel_first=True)
    for shape in [(2, 4, 7), (2, 4, 5, 6), (2, 4, 3, 5, 6)]:
        z = torch.randn(shape)
        out = fsq(z)
        assert out.quantized.shape == shape
        assert out.indices.shape == (shape[0], *shape[2:])
        # Same result as channel-last on the moved tensor.
        ref = FSQ([8, 5, 5, 5])(z.movedim(1, -1))
        assert torch.equal(out.indices, ref.indices)
        assert torch.equal(out.quantized, ref.quantized.movedim(-1, 1))
        assert torch.equal(fsq.indices_to_codes(out.indices), out.quantized)

    multi = FSQ([5, 5, 3], num_codebooks=3)
    z = torch.randn(2, 11, 9)
    out = multi(z)
    assert out.indices.shape == (2, 11, 3)
    # Codebook g quantizes channels [3g, 3g+3) independently.
    single = FSQ([5, 5, 3])
    for g in range(3):
        assert torch.equal(out.indices[..., g], single(z[..., 3 * g : 3 * g + 3]).indices)
    assert torch.equal(multi.indices_to_codes(out.indices), out.quantized)


def test_projections_and_eval_inverse() -> None:
    fsq = FSQ([8, 5, 5, 5], dim=32, num_codebooks=2, channel_first=True).eval()
    assert fsq.has_projections
    z = torch.randn(2, 32, 4, 4, requires_grad=True)
    out = fsq(z)
    assert out.quantized.shape == z.shape and out.indices.shape == (2, 4, 4, 2)
    torch.testing.assert_close(fsq.indices_to_codes(out.indices), out.quantized)
    out.quantized.square().sum().backward()
    for name, p in fsq.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert z.grad.abs().sum() > 0


def test_digits_for_factorised_embeddings() -> None:
    fsq = FSQ([8, 5, 5, 5])
    idx = torch.arange(1000)
    digits = fsq.indices_to_digits(idx)
    assert digits.shape == (1000, 4)
    assert digits.min() == 0 and (digits.max(0).values == torch.tensor([7, 4, 4, 4])).all()
    assert torch.equal((digits * torch.tensor([1, 8, 40, 200])).sum(-1), idx)


def test_index_dtype_widens_for_huge_codebooks() -> None:
    small = FSQ([8, 8, 8, 5, 5, 5])
    assert small(torch.randn(3, 6)).indices.dtype == torch.int32
    huge = FSQ([4] * 16)  # 2**32 codes
    assert huge.codebook_size == 2**32
    z = torch.full((1, 16), 10.0)  # every dimension at its top level (digit 3)
    idx = huge(z).indices
    assert idx.dtype == torch.int64 and idx.item() == 2**32 - 1
    assert torch.equal(huge.indices_to_codes(idx), huge(z).quantized)
    with pytest.raises(ValueError, match="refusing to build"):
        _ = huge.implicit_codebook


def test_dither_never_corrupts_indices() -> None:
    fsq = FSQ([8, 5, 5, 5], dither=0.5, passthrough=0.3).train()
    z = torch.randn(4096, 4) * 3
    clean = FSQ([8, 5, 5, 5])(z)
    out = fsq(z)
    assert torch.equal(out.indices, clean.indices)
    # Some rows really are perturbed, and the perturbation stays within a level step.
    changed = (out.quantized != clean.quantized).any(-1)
    assert 0.3 < changed.float().mean() < 0.95
    step = 1.0 / torch.tensor([4.0, 2, 2, 2])
    assert ((out.quantized - clean.quantized).abs() <= step + 1e-6).all()
    # Eval mode: no dither.
    assert torch.equal(fsq.eval()(z).quantized, clean.quantized)


def test_codebooks_beyond_int64_need_return_indices_false() -> None:
    """[16] * 16 has 2**64 codes: int64 indices would wrap. Refuse them, and let users
    who only need the quantized values have those."""
    with pytest.raises(ValueError, match=r"do not fit int64.*return_indices=False"):
        FSQ([16] * 16)
    huge = FSQ([16] * 16, return_indices=False)
    z = torch.randn(100, 16) * 2
    out = huge(z)
    assert out.indices is None and out.stats == {}
    quantized, indices, _ = out
    assert indices is None
    # the values are FSQ's: each dimension is [16]'s code of its own input
    one = FSQ([16])
    assert torch.equal(quantized, torch.cat([one(z[:, d : d + 1]).quantized for d in range(16)], 1))
    with pytest.raises(ValueError, match="do not fit int64"):
        huge.indices_to_codes(torch.zeros(3, dtype=torch.int64))


def test_return_indices_false_gives_the_same_values() -> None:
    for fast in (None, False):
        plain = FSQ([8, 5, 5, 5], fast=fast)
        values_only = FSQ([8, 5, 5, 5], fast=fast, return_indices=False)
        z = torch.randn(2048, 4) * 2
        out = values_only(z)
        assert out.indices is None
        assert torch.equal(out.quantized, plain(z).quantized)
