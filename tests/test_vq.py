"""VectorQuantizer: search correctness and memory bound, losses, codebook learning,
tricks, exact decoding, gradients, compile parity and bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from fsqkit import VectorQuantizer, build_quantizer
from fsqkit.quantizers.vq_search import entropy_penalty, nearest_codes, search_plan


def _brute_nearest(x, cb):
    return torch.cdist(x.double(), cb.double()).argmin(-1)


class _LargestTensor(TorchDispatchMode):
    """Records the bytes of the largest tensor any op produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel() * t.element_size())
        return out


@pytest.mark.parametrize("budget", [64, 4 * 37 * 5, 2**20])
def test_chunked_search_matches_brute_force(budget):
    g = torch.Generator().manual_seed(0)
    x, cb = torch.randn(301, 6, generator=g), torch.randn(37, 6, generator=g)
    assert torch.equal(nearest_codes(x, cb, budget), _brute_nearest(x, cb))


def test_search_plan_respects_budget():
    for n, k, budget in [(65536, 2**16, 2**27), (10, 1000, 400), (5, 7, 10**9)]:
        rows, cols = search_plan(n, k, budget)
        assert rows * cols * 4 <= max(budget, 4) and 1 <= rows <= n and 1 <= cols <= k


def test_no_distance_block_exceeds_budget_in_search_and_entropy_backward():
    n, k, d, budget = 512, 1024, 16, 2**16  # a full N x K matrix would be 2 MiB
    x = torch.randn(n, d, requires_grad=True)
    cb = torch.randn(k, d, requires_grad=True)
    inputs = max(x.numel(), cb.numel()) * 4
    with _LargestTensor() as probe:
        nearest_codes(x.detach(), cb.detach(), budget)
        entropy_penalty(x, cb, 0.01, budget).backward()
    assert probe.largest <= max(budget, inputs)
    assert x.grad is not None and cb.grad is not None


def _dense_entropy(x, cb, t):
    logits = -torch.cdist(x, cb).square() / t
    p = logits.softmax(-1)
    sample = -(p * logits.log_softmax(-1)).sum(-1).mean()
    avg = p.mean(0)
    return sample + (avg * avg.log()).sum()


@pytest.mark.parametrize(
    "budget",
    [4 * 4 * 9 * 3, 2**20],  # 3 rows per chunk (recomputed in backward); one chunk (kept)
)
def test_entropy_penalty_matches_dense_formula_and_gradients(budget):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 5, generator=g, dtype=torch.float64).float().requires_grad_()
    cb = torch.randn(9, 5, generator=g).requires_grad_()
    got = entropy_penalty(x, cb, 0.5, budget)
    ref = _dense_entropy(x, cb, 0.5)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    g_got = torch.autograd.grad(got, (x, cb))
    g_ref = torch.autograd.grad(ref, (x, cb))
    for a, b in zip(g_got, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_forward_indices_are_nearest_codes_and_commitment_value():
    vq = VectorQuantizer(6, 50, max_distance_bytes=256).eval()
    z = torch.randn(3, 17, 6)
    out = vq(z)
    assert out.indices.shape == (3, 17) and out.indices.dtype == torch.int32
    assert torch.equal(out.indices.long().flatten(), _brute_nearest(z.reshape(-1, 6), vq.codebook))
    codes = vq.codebook[out.indices.long()]
    torch.testing.assert_close(out.losses["commitment"], 0.25 * F.mse_loss(z, codes))
    assert out.losses["codebook"] == 0 and out.losses["entropy"] == 0
    torch.testing.assert_close(out.aux_loss, sum(out.losses.values()))


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"cosine": True},
        {"codebook_dim": 3, "channel_first": True},
        {"learning": "loss", "entropy_weight": 0.1, "kmeans_init": True},
        {"split_codes": True, "split_threshold": 0.9, "codebook_dim": 4},
    ],
)
def test_indices_to_codes_is_exact_after_training(kwargs):
    vq = VectorQuantizer(8, 32, **kwargs)
    z = torch.randn(2, 8, 5, 3) if kwargs.get("channel_first") else torch.randn(4, 15, 8)
    for _ in range(3):
        vq(z + 0.1 * torch.randn_like(z))
    vq.eval()
    out = vq(z)
    assert out.quantized.shape == z.shape
    assert torch.equal(vq.indices_to_codes(out.indices), out.quantized)


def test_straight_through_and_gradients_reach_every_parameter():
    vq = VectorQuantizer.maskgit(8, 64, codebook_dim=4)
    z = torch.randn(64, 8, requires_grad=True)
    out = vq(z)
    (out.quantized.square().sum() + out.aux_loss).backward()
    for name, p in vq.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    plain = VectorQuantizer(5, 16).eval()
    z2 = torch.randn(7, 5, requires_grad=True)
    plain(z2).quantized.sum().backward()
    assert torch.equal(z2.grad, torch.ones_like(z2))  # identity straight-through


def test_ema_update_matches_hand_computation():
    vq = VectorQuantizer(2, 2, ema_decay=0.5)
    with torch.no_grad():
        vq.embed.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
        vq.embed_sum.copy_(vq.embed)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]])
    vq(x)
    size = torch.tensor([0.5 + 0.5 * 2, 0.5 + 0.5 * 1])
    sums = torch.tensor([[0.5, 0.5], [9.5, 9.5]])
    torch.testing.assert_close(vq.cluster_size, size)
    smoothed = (size + 1e-5) / (size.sum() + 2e-5) * size.sum()
    torch.testing.assert_close(vq.embed, sums / smoothed[:, None])


def test_loss_mode_learns_codebook_by_gradient():
    vq = VectorQuantizer(3, 4, learning="loss", commitment_weight=0.0)
    opt = torch.optim.SGD(vq.parameters(), lr=0.5)
    target = torch.tensor([[2.0, -1.0, 0.5]])
    for _ in range(60):
        out = vq(target)
        opt.zero_grad()
        out.aux_loss.backward()
        opt.step()
    assert vq(target).losses["codebook"] < 1e-4


def test_kmeans_init_finds_clusters():
    centres = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0], [0.0, -5.0]])
    x = centres.repeat(50, 1) + 0.05 * torch.randn(200, 2)
    vq = VectorQuantizer(2, 4, kmeans_init=True)
    vq(x)
    assert bool(vq.initted)
    assert torch.cdist(centres, vq.codebook).min(-1).values.max() < 0.1


def test_reseeding_replaces_dead_codes_with_batch_vectors():
    vq = VectorQuantizer(3, 8, reseed_dead=True, dead_threshold=0.5, ema_decay=0.1)
    with torch.no_grad():
        vq.embed.fill_(100.0)
        vq.embed[0] = 0.0
        vq.embed_sum.copy_(vq.embed)
    x = torch.randn(64, 3)
    vq(x)  # codes 1..7 unused: their counts fall to 0.1
    assert vq.num_dead_codes() == 7
    vq(x)  # maintenance reseeds them from the batch before searching
    reseeded = vq.embed[1:]
    assert torch.cdist(reseeded, x).min(-1).values.max() < 1.0
    assert vq.num_dead_codes() == 0


def test_split_replaces_dead_code_by_halves_of_the_most_used_code():
    vq = VectorQuantizer(4, 3, split_codes=True, split_threshold=0.1, learning="loss")
    with torch.no_grad():
        vq.cluster_size.copy_(torch.tensor([5.0, 0.01, 1.0]))
    donor = vq.embed[0].detach().clone()
    vq._maintain(torch.randn(2, 4))
    torch.testing.assert_close(vq.embed[0] + vq.embed[1], 2 * donor)
    assert not torch.equal(vq.embed[0], vq.embed[1])
    assert torch.allclose((vq.embed[1] / donor - 1).abs().max(), torch.tensor(0.0), atol=0.01)
    torch.testing.assert_close(vq.cluster_size, torch.tensor([2.5, 2.5, 1.0]))


def test_entropy_penalty_only_where_it_can_train():
    vq = VectorQuantizer(4, 16, learning="loss", entropy_weight=0.1)
    z = torch.randn(32, 4)
    assert vq(z).losses["entropy"] != 0  # training
    vq.eval()
    assert vq(z).losses["entropy"] != 0  # eval with gradients (a validation loss)
    with torch.no_grad():
        out = vq(z)
    assert out.losses["entropy"] == 0  # inference: skipped
    with torch.no_grad():
        assert torch.equal(out.indices, vq(z).indices)


def test_empty_batch_and_bf16_input():
    vq = VectorQuantizer(4, 8, reseed_dead=True, entropy_weight=0.1)
    out = vq(torch.randn(0, 4))
    assert out.indices.shape == (0,) and out.aux_loss == 0
    z = torch.randn(10, 4)
    vq.eval()
    out16 = vq(z.bfloat16())
    assert out16.quantized.dtype == torch.bfloat16
    assert torch.equal(out16.indices, vq(z.bfloat16().float()).indices)


def test_presets_and_registry():
    assert VectorQuantizer.plain(4, 8).extra_repr().endswith("tricks=[]")
    tricky = VectorQuantizer.with_tricks(4, 8, dead_codes="split")
    assert tricky.kmeans_init and tricky.split_codes and not tricky.reseed_dead
    m = VectorQuantizer.maskgit(256)
    assert (m.codebook_size, m.learning, m.entropy_weight, m.commitment_weight) == (
        1024,
        "loss",
        0.1,
        0.25,
    )
    assert isinstance(build_quantizer("vq", dim=4, codebook_size=8), VectorQuantizer)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dim": 0, "codebook_size": 4}, "dim"),
        ({"dim": 4, "codebook_size": 0}, "codebook_size"),
        ({"dim": 4, "codebook_size": 4, "codebook_dim": -1}, "codebook_dim"),
        ({"dim": 4, "codebook_size": 4, "learning": "sgd"}, "learning"),
        ({"dim": 4, "codebook_size": 4, "ema_decay": 1.0}, "ema_decay"),
        ({"dim": 4, "codebook_size": 4, "reseed_dead": True, "split_codes": True}, "one"),
        ({"dim": 4, "codebook_size": 4, "codebook_weight": 2.0}, "learning='ema'"),
        ({"dim": 4, "codebook_size": 4, "entropy_temperature": 0.0}, "temperature"),
        ({"dim": 4, "codebook_size": 4, "commitment_weight": -1.0}, "commitment_weight"),
        (
            {"dim": 4, "codebook_size": 1024, "entropy_weight": 0.1, "max_distance_bytes": 1000},
            "max_distance_bytes",
        ),
        ({"dim": 4, "codebook_size": 1, "split_codes": True}, "codebook_size >= 2"),
    ],
)
def test_bad_construction_raises_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VectorQuantizer(**kwargs)


def test_bad_forward_input_and_indices():
    vq = VectorQuantizer(4, 8)
    with pytest.raises(ValueError, match="size dim=4"):
        vq(torch.randn(3, 5))
    with pytest.raises(TypeError, match="floating-point"):
        vq(torch.ones(3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="NaN"):
        vq(torch.full((2, 4), float("nan")))
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        vq.indices_to_codes(torch.tensor([8]))


def test_compile_parity_eval():
    vq = VectorQuantizer(8, 64, codebook_dim=4, cosine=True).eval()
    z = torch.randn(4, 32, 8)
    eager = vq(z)
    compiled = torch.compile(vq)(z)
    assert torch.equal(compiled.indices, eager.indices)
    torch.testing.assert_close(compiled.quantized, eager.quantized)


def test_forward_reads_nothing_back_to_the_host():
    """The dead-code statistic stays a tensor until someone reads ``stats``."""
    vq = VectorQuantizer(4, 16, dead_threshold=0.5)
    out = vq(torch.randn(64, 4))
    assert isinstance(out.extra_stats["dead_codes"], torch.Tensor)
    assert out.stats["dead_codes"] == float(vq.num_dead_codes())
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(lambda z: vq(z).aux_loss)(torch.randn(64, 4))
    assert explanation.graph_break_count == 0


def test_kmeans_init_flag_follows_load_state_dict_and_compiles_fullgraph():
    trained = VectorQuantizer(4, 8, kmeans_init=True)
    trained(torch.randn(256, 4))
    assert bool(trained.initted) and not trained._kmeans_pending
    fresh = VectorQuantizer(4, 8, kmeans_init=True)
    fresh.load_state_dict(trained.state_dict())
    assert not fresh._kmeans_pending  # an initialised codebook is not re-initialised
    before = fresh.embed.clone()
    fresh.eval()(torch.randn(8, 4) + 100)  # eval never maintains
    assert torch.equal(fresh.embed, before)
    blank = VectorQuantizer(4, 8, kmeans_init=True)
    trained.load_state_dict(blank.state_dict())
    assert trained._kmeans_pending
    torch._dynamo.reset()
    step = torch.compile(lambda z: blank(z).aux_loss, fullgraph=True, backend="aot_eager")
    step(torch.randn(256, 4))  # k-means inside the graph (single process: no host read)
    assert bool(blank.initted) and not blank._kmeans_pending


def test_check_finite_can_be_switched_off():
    z = torch.randn(16, 4)
    z[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        VectorQuantizer(4, 8).eval()(z)
    idx = VectorQuantizer(4, 8, check_finite=False).eval()(z).indices
    assert bool(((idx >= 0) & (idx < 8)).all())
