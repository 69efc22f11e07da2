"""MaskGIT decoding as a pure function: schedule, invariants, determinism, guidance."""

from __future__ import annotations

import math

import pytest
import torch

from fsqkit.maskgit import (
    MaskGITConfig,
    MaskGITTransformer,
    decoding_schedule,
    guided_logits_fn,
    iterative_decode,
    sample_tokens,
)


@pytest.mark.parametrize(("s", "t"), [(256, 12), (64, 8), (16, 16), (10, 1), (49, 12)])
def test_schedule_sums_and_follows_cosine(s: int, t: int) -> None:
    counts = decoding_schedule(s, t)
    assert len(counts) == t and sum(counts) == s and min(counts) >= 1
    # Where no clamp is active, the number still masked after step k is floor(cos(π/2 k/T) S).
    masked = s
    for k, c in enumerate(counts, start=1):
        masked -= c
        target = math.floor(math.cos(math.pi / 2 * k / t) * s)
        if s >= 4 * t:  # enough tokens that the "at least one per step" clamp never binds
            assert masked == target


def test_schedule_cosine_front_loads_few_tokens() -> None:
    counts = decoding_schedule(256, 12)
    assert counts == sorted(counts)  # cosine: few confident tokens first, many at the end
    assert counts[0] == 256 - math.floor(math.cos(math.pi / 24) * 256)


@pytest.mark.parametrize(
    ("steps", "exc", "match"),
    [
        (0, ValueError, "num_steps must be >= 1"),
        (-3, ValueError, ">= 1"),
        (17, ValueError, "<= the number of tokens"),
        (2.0, TypeError, "must be an int"),
    ],
)
def test_schedule_bad_steps(steps, exc, match) -> None:
    with pytest.raises(exc, match=match):
        decoding_schedule(16, steps)


class RecordingLogits:
    """Seeded random logits that record every input the decoder passes in."""

    def __init__(self, k: int, seed: int = 0) -> None:
        self.k, self.calls = k, []
        self.g = torch.Generator().manual_seed(seed)

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        self.calls.append(tokens.clone())
        return 3 * torch.randn(*tokens.shape, self.k, generator=self.g)


@pytest.mark.parametrize(("s", "t", "tau"), [(64, 12, 4.5), (16, 16, 0.0), (30, 5, 1.0)])
def test_decode_invariants(s: int, t: int, tau: float) -> None:
    k, b = 11, 5
    fn = RecordingLogits(k)
    out = iterative_decode(
        fn,
        b,
        s,
        mask_id=k,
        num_steps=t,
        choice_temperature=tau,
        generator=torch.Generator().manual_seed(3),
    )
    # Every position filled with a real code after T steps.
    assert out.tokens.shape == (b, s) and bool(((out.tokens >= 0) & (out.tokens < k)).all())
    assert len(fn.calls) == t
    # Each position revealed exactly once, at the step recorded, and never changed after.
    assert bool(((out.reveal_step >= 0) & (out.reveal_step < t)).all())
    for step, inputs in enumerate(fn.calls):
        known = inputs != k
        assert torch.equal(known, out.reveal_step < step)
        assert torch.equal(inputs[known], out.tokens[known])
    # The number revealed per step follows the schedule, for every sample.
    per_step = torch.stack([torch.bincount(r, minlength=t) for r in out.reveal_step])
    assert per_step.tolist() == [decoding_schedule(s, t)] * b


def test_decode_reveals_most_confident_first() -> None:
    # Position i predicts code 0 with confidence growing with i; without choice noise the
    # decoder must reveal the highest positions first.
    s, k = 12, 4

    def fn(tokens: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*tokens.shape, k)
        logits[..., 0] = torch.arange(s, dtype=torch.float32)
        return logits

    out = iterative_decode(
        fn, 2, s, mask_id=k, num_steps=4, choice_temperature=0.0, temperature=0.0
    )
    counts = decoding_schedule(s, 4)
    expected = torch.cat([torch.full((c,), i) for i, c in enumerate(counts)]).flip(0)
    assert torch.equal(out.reveal_step[0], expected) and torch.equal(out.reveal_step[1], expected)
    assert bool((out.tokens == 0).all())


def test_decode_deterministic_for_seed() -> None:
    def run(seed: int) -> torch.Tensor:
        fn = RecordingLogits(9, seed=1)  # same logits; only the decoder's noise differs
        return iterative_decode(
            fn, 4, 20, 9, 6, generator=torch.Generator().manual_seed(seed)
        ).tokens

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_decode_rejects_wrong_logits_shape() -> None:
    with pytest.raises(ValueError, match="logits_fn must return"):
        iterative_decode(lambda x: torch.zeros(*x.shape, 5), 2, 8, mask_id=7, num_steps=2)


class LabelStub(torch.nn.Module):
    """Logits that depend only on the label: the cond/uncond combination is checkable."""

    def __init__(self) -> None:
        super().__init__()
        self.config = MaskGITConfig(
            codebook_size=3, grid=(2, 2), num_classes=2, dim=4, depth=1, heads=1
        )
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, tokens, labels):
        table = torch.tensor(
            [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 2.0]]
        )  # row 2 = no class
        return table[labels][:, None].expand(-1, tokens.shape[1], -1)


def test_classifier_free_guidance_formula() -> None:
    model, tokens = LabelStub(), torch.full((2, 4), 3)
    labels = torch.tensor([0, 1])
    got = guided_logits_fn(model, labels, guidance=0.5)(tokens)
    cond = model(tokens, labels)
    uncond = model(tokens, torch.tensor([2, 2]))
    torch.testing.assert_close(got, cond + 0.5 * (cond - uncond))
    torch.testing.assert_close(guided_logits_fn(model, labels, 0.0)(tokens), cond)


@pytest.fixture(scope="module")
def tiny_model() -> MaskGITTransformer:
    torch.manual_seed(0)
    cfg = MaskGITConfig(codebook_size=20, grid=(3, 4), num_classes=3, dim=32, depth=2, heads=2)
    return MaskGITTransformer(cfg)


def test_sample_tokens_seeded(tiny_model) -> None:
    a = sample_tokens(tiny_model, 5, 1, num_steps=4, guidance=1.0, seed=7)
    b = sample_tokens(tiny_model, 5, 1, num_steps=4, guidance=1.0, seed=7)
    c = sample_tokens(tiny_model, 5, 1, num_steps=4, guidance=1.0, seed=8)
    assert a.shape == (5, 3, 4) and torch.equal(a, b) and not torch.equal(a, c)
    assert tiny_model.training  # mode restored


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"class_label": 3}, "unknown class 3: this model knows classes 0..2"),
        ({"class_label": -1}, "unknown class -1"),
        ({"num_steps": 0}, "num_steps must be >= 1"),
        ({"num_steps": 13}, "<= the number of tokens per image \\(12\\)"),
        ({"guidance": 0.3}, "guidance needs a class label"),
        ({"class_label": 1, "guidance": -1.0}, "guidance must be >= 0"),
    ],
)
def test_sample_tokens_bad_input(tiny_model, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        sample_tokens(tiny_model, 2, **kwargs)


def test_unconditional_model_rejects_class() -> None:
    model = MaskGITTransformer(MaskGITConfig(codebook_size=5, grid=(2, 2), dim=8, depth=1, heads=1))
    with pytest.raises(ValueError, match="unconditional"):
        sample_tokens(model, 2, 0, num_steps=2)
