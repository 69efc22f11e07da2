"""ResidualFSQ / ResidualVQ: error shrinks stage by stage, exact decoding,
quantize dropout, gradients, compile parity and bad input."""

from __future__ import annotations

import itertools

import pytest
import torch

from fsqkit import FSQ, ResidualFSQ, ResidualVQ, build_quantizer


@pytest.mark.parametrize(
    ("levels", "symmetric"), [([8, 5, 5, 5], False), ([7, 5, 5, 5, 5], False), ([4, 4, 3], True)]
)
def test_residual_fsq_error_strictly_decreases_within_the_bound(levels, symmetric):
    q = ResidualFSQ(levels, num_stages=4, symmetric=symmetric).eval()
    z = 2 * torch.randn(4096, len(levels))
    out = q(z)
    x = q.bounded(z)
    errors = []
    for n in range(1, 5):
        err = (q.indices_to_codes(out.indices, num_stages=n) - x).abs()
        assert (err <= q.error_bound(n).float() + 1e-6).all()
        errors.append(err.square().mean().item())
    assert all(a > b for a, b in itertools.pairwise(errors)), errors


def test_residual_fsq_first_stage_is_fsq_and_decoding_is_exact():
    z = torch.randn(2, 6, 7, 5)
    q = ResidualFSQ([8, 5, 5, 5], num_stages=3, dim=6, channel_first=True).eval()
    out = q(z)
    assert out.quantized.shape == z.shape and out.indices.shape == (2, 7, 5, 3)
    assert out.indices.dtype == torch.int32 and int(out.indices.max()) < 1000
    assert torch.equal(q.indices_to_codes(out.indices), out.quantized)
    plain = ResidualFSQ([8, 5, 5, 5], num_stages=2).eval()
    w = torch.randn(100, 4)
    assert torch.equal(plain(w).indices[..., 0], FSQ([8, 5, 5, 5])(w).indices)


def test_residual_fsq_quantize_dropout_keeps_a_prefix_per_sample():
    q = ResidualFSQ([5, 5, 5], num_stages=4, quantize_dropout=1.0)
    z = torch.randn(256, 3)
    out = q(z)
    prefixes = torch.stack([q.indices_to_codes(out.indices, n) for n in range(1, 5)])  # (4, B, 3)
    match = (prefixes == out.quantized.unsqueeze(0)).all(-1)  # (4, B)
    assert match.any(0).all()  # every sample equals the decoding of some prefix
    assert match[0].any() and match[3].any()  # shortest and full prefix both drawn
    q.eval()
    assert torch.equal(q.indices_to_codes(q(z).indices), q(z).quantized)


def test_residual_vq_error_decreases_and_decoding_is_exact():
    q = ResidualVQ(8, 64, num_stages=3, codebook_dim=4, kmeans_init=True)
    z = torch.randn(2048, 8)
    q(z)  # k-means init of every stage on its residuals
    q.eval()
    out = q(z)
    h = q.project_in(z)
    errors = []
    for n in range(1, 4):
        partial = sum(q.stages[s].codebook[out.indices[:, s].long()] for s in range(n))
        errors.append((partial - h).square().mean().item())
    assert all(a > b for a, b in itertools.pairwise(errors)), errors
    assert torch.equal(q.indices_to_codes(out.indices), out.quantized)


def test_residual_vq_losses_sum_over_stages_and_gradients_reach_every_parameter():
    q = ResidualVQ(6, 16, num_stages=2, codebook_dim=3, learning="loss", entropy_weight=0.1)
    z = torch.randn(5, 9, 6, requires_grad=True)
    out = q(z)
    assert out.indices.shape == (5, 9, 2)
    assert set(out.losses) == {"commitment", "codebook", "entropy"}
    torch.testing.assert_close(out.aux_loss, sum(out.losses.values()))
    (out.quantized.square().sum() + out.aux_loss).backward()
    for name, p in q.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_residual_fsq_gradient_and_compile_parity():
    q = ResidualFSQ([5, 5, 5], num_stages=3, dim=8)
    z = torch.randn(4, 10, 8, requires_grad=True)
    q(z).quantized.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in q.parameters())
    q.eval()
    eager = q(z.detach())
    compiled = torch.compile(q)(z.detach())
    assert torch.equal(compiled.indices, eager.indices)
    torch.testing.assert_close(compiled.quantized, eager.quantized)


def test_registry_and_bad_input():
    assert isinstance(build_quantizer("residual_fsq", levels=[5, 5], num_stages=2), ResidualFSQ)
    assert isinstance(
        build_quantizer("residual_vq", dim=4, codebook_size=8, num_stages=2), ResidualVQ
    )
    with pytest.raises(ValueError, match="num_stages"):
        ResidualFSQ([5, 5], num_stages=0)
    with pytest.raises(ValueError, match="quantize_dropout"):
        ResidualFSQ([5, 5], num_stages=2, quantize_dropout=1.5)
    with pytest.raises(ValueError, match="exceeds num_stages"):
        ResidualVQ(4, 8, num_stages=2, quantize_dropout=0.5, quantize_dropout_min_stages=3)
    with pytest.raises(ValueError, match="learning"):
        ResidualVQ(4, 8, num_stages=2, learning="sgd")
    with pytest.raises(ValueError, match="every level"):
        ResidualFSQ([2, 5], num_stages=2)
    with pytest.raises(ValueError, match="L - 1"):
        ResidualFSQ([2, 5], num_stages=2, symmetric=True)
    q = ResidualFSQ([5, 5], num_stages=2)
    with pytest.raises(ValueError, match="trailing dimension"):
        q.indices_to_codes(torch.zeros(3, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="exceeds"):
        q.indices_to_codes(torch.zeros(3, 2, dtype=torch.int64), num_stages=3)
    with pytest.raises(ValueError, match="size dim=2"):
        q(torch.randn(3, 4))


@pytest.mark.parametrize("symmetric", [False, True])
def test_stage_scale_l_shrinks_the_error_by_l_per_stage(symmetric):
    levels = [8, 5, 5, 3]
    q = ResidualFSQ(levels, num_stages=6, symmetric=symmetric, stage_scale="L").eval()
    z = 2 * torch.randn(20000, 4)
    out = q(z)
    x = q.bounded(z)
    for n in range(1, 7):
        err = (q.indices_to_codes(out.indices, num_stages=n) - x).abs()
        assert (err <= q.error_bound(n).float() * (1 + 1e-5) + 1e-7).all()
    ratio = q.error_bound(2) / q.error_bound(3)
    assert torch.allclose(ratio, torch.tensor(levels, dtype=torch.float64))


def test_stage_scale_l_is_finer_than_l_minus_1_after_six_stages():
    """The trade-off written in docs/quantizers.md: on the L = 3 dimension, after 6
    stages, the relative error is about 10x smaller with stage_scale='L'."""
    z = 2 * torch.randn(100_000, 4, generator=torch.Generator().manual_seed(0))
    rel = {}
    for scale in ("L-1", "L"):
        q = ResidualFSQ([8, 5, 5, 3], num_stages=6, stage_scale=scale).eval()
        x = q.bounded(z)
        err = (q(z).quantized - x).double()
        rel[scale] = (err.square().mean(0).sqrt() / x.double().square().mean(0).sqrt())[3].item()
    assert rel["L"] < rel["L-1"] / 5, rel
    assert 5e-3 < rel["L-1"] < 3e-2 and 5e-4 < rel["L"] < 3e-3, rel


@pytest.mark.parametrize(("stage_scale", "distinct"), [("L-1", 15), ("L", 27)])
def test_stage_scale_and_distinct_points(stage_scale, distinct):
    """Three stages of L = 3: 'L' reaches all 27 combinations, 'L-1' shares points
    between cells (the uniform grid -1.75, -1.5, ..., 1.75: 15 points)."""
    q = ResidualFSQ([3], num_stages=3, symmetric=True, stage_scale=stage_scale)
    idx = torch.cartesian_prod(*[torch.arange(3)] * 3)  # (27, 3): every combination
    values = q.indices_to_codes(idx)[:, 0]
    assert len(torch.unique(values)) == distinct


def test_two_levels_need_stage_scale_l():
    q = ResidualFSQ([2, 2, 4], num_stages=3, symmetric=True, stage_scale="L").eval()
    z = torch.randn(1000, 3)
    err = (q(z).quantized - q.bounded(z)).abs()
    assert (err <= q.error_bound(3).float() + 1e-6).all()
    with pytest.raises(ValueError, match="stage_scale='L'"):
        ResidualFSQ([2, 4], num_stages=2, symmetric=True)
    with pytest.raises(ValueError, match="stage_scale"):
        ResidualFSQ([4, 4], num_stages=2, stage_scale="half")


def test_prefix_indices_and_per_stage_codes():
    q = ResidualFSQ([8, 5, 5, 5], num_stages=4, stage_scale="L").eval()
    out = q(torch.randn(300, 4))
    for n in range(1, 5):
        prefix = out.indices[..., :n]
        assert torch.equal(q.indices_to_codes(prefix), q.indices_to_codes(out.indices, n))
        stage = q.indices_to_stage_codes(prefix)  # (300, n, 4)
        assert stage.shape == (300, n, 4)
        total = stage[:, 0]
        for s in range(1, n):
            total = total + stage[:, s]
        assert torch.equal(total, q.indices_to_codes(prefix))
    stage0 = q.indices_to_stage_codes(out.indices)[:, 0]
    assert torch.equal(stage0, FSQ([8, 5, 5, 5]).indices_to_codes(out.indices[:, 0]))
    with pytest.raises(ValueError, match="exceeds the 2 stages"):
        q.indices_to_codes(out.indices[..., :2], num_stages=3)


def test_quantize_dropout_must_be_a_probability_not_a_flag():
    # vector-quantize-pytorch's quantize_dropout=True means something else; never
    # silently take it as probability 1.
    for cls, args in ((ResidualFSQ, ([5, 5], 2)), (ResidualVQ, (4, 8, 2))):
        with pytest.raises(ValueError, match="probability"):
            cls(*args, quantize_dropout=True)


def test_grouped_residual_fsq_is_one_residual_fsq_per_group():
    from fsqkit.quantizers import GroupedResidualFSQ

    q = GroupedResidualFSQ([8, 5, 5, 5], num_stages=3, groups=2, dim=12, channel_first=True)
    q.eval()
    z = torch.randn(2, 12, 5, 7)
    out = q(z)
    assert out.quantized.shape == z.shape and out.indices.shape == (2, 5, 7, 2, 3)
    assert torch.equal(q.indices_to_codes(out.indices), out.quantized)
    for g in range(2):
        alone = q.residuals[g](z[:, 6 * g : 6 * g + 6].movedim(1, -1))
        assert torch.equal(out.indices[..., g, :], alone.indices)
        assert torch.equal(out.quantized[:, 6 * g : 6 * g + 6], alone.quantized.movedim(-1, 1))
    assert isinstance(build_quantizer("grouped_residual_fsq", levels=[5, 5], num_stages=2,
                                      groups=2), GroupedResidualFSQ)  # fmt: skip
    with pytest.raises(ValueError, match="multiple of groups"):
        GroupedResidualFSQ([5, 5], num_stages=2, groups=3, dim=8)


def test_grouped_quantize_dropout_keeps_the_same_prefix_in_every_group():
    from fsqkit.quantizers import GroupedResidualFSQ

    q = GroupedResidualFSQ([5, 5, 5], num_stages=4, groups=3, quantize_dropout=1.0)
    z = torch.randn(512, 9)
    out = q(z)
    decoded = torch.stack([q.indices_to_codes(out.indices, n) for n in range(1, 5)])  # (4, B, 9)
    match = (decoded == out.quantized).unflatten(-1, (3, 3)).all(-1)  # (4, B, groups)
    common = match.all(-1)  # (4, B): prefixes that explain every group at once
    assert common.any(0).all()
    assert common[0].any() and not common[0].all()  # short and long prefixes both drawn
