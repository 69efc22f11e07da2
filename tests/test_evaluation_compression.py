"""Compression cost: NLL in bits per image under a deterministic masking schedule."""

from __future__ import annotations

import math

import pytest
import torch

from fsqkit.maskgit import MaskGITConfig, MaskGITTransformer, decoding_schedule, masked_token_loss
from fsqkit.maskgit.evaluate import compression_cost
from tests.single_thread import one_thread  # noqa: F401  (autouse)


class StubModel(torch.nn.Module):
    """Logits ``scale · onehot(0)``; records the inputs it sees."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.config = MaskGITConfig(codebook_size=8, grid=(3, 3), dim=4, depth=1, heads=1)
        self.scale, self.inputs = scale, []
        self.p = torch.nn.Parameter(torch.zeros(()))

    def forward(self, tokens, labels=None, select=None):
        self.inputs.append(tokens.clone())
        logits = torch.zeros(*tokens.shape, 8)
        logits[..., 0] = self.scale
        return logits if select is None else logits[select]


def test_uniform_model_costs_raw_bits() -> None:
    tokens = torch.randint(0, 8, (5, 3, 3))
    cost = compression_cost(StubModel(0.0), tokens, num_steps=4)
    assert cost["bits_per_image"] == pytest.approx(9 * 3.0)
    assert cost["raw_bits_per_image"] == pytest.approx(27.0)
    assert cost["bits_per_token"] == pytest.approx(3.0)


def test_exact_cost_for_known_probabilities() -> None:
    # p(0) = e^s / (e^s + 7): an image with z zeros costs -z log2 p0 - (9-z) log2 p_other.
    s = 2.0
    p0, p1 = math.exp(s) / (math.exp(s) + 7), 1 / (math.exp(s) + 7)
    tokens = torch.tensor([[0, 0, 0, 0, 1, 2, 3, 0, 0]])
    cost = compression_cost(StubModel(s), tokens, num_steps=3)
    assert cost["bits_per_image"] == pytest.approx(-(6 * math.log2(p0) + 3 * math.log2(p1)))


def test_schedule_is_deterministic_and_reveals_by_steps() -> None:
    tokens = torch.randint(0, 8, (2, 9), generator=torch.Generator().manual_seed(0))
    a, b = StubModel(1.0), StubModel(1.0)
    compression_cost(a, tokens, num_steps=4, order_seed=3)
    compression_cost(b, tokens, num_steps=4, order_seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.inputs, b.inputs))
    known = [int((x[0] != 8).sum()) for x in a.inputs]
    counts = decoding_schedule(9, 4)
    assert known == [sum(counts[:i]) for i in range(4)]


def test_cost_equals_full_logits_loop() -> None:
    """Only each step's positions get logits; the sum must be that of the plain loop
    over full ``[B, S, K]`` logits (same order, same schedule)."""
    torch.manual_seed(0)
    model = MaskGITTransformer(
        MaskGITConfig(codebook_size=16, grid=(4, 4), dim=32, depth=2, heads=2)
    )
    model.eval()
    tokens = torch.randint(0, 16, (6, 16), generator=torch.Generator().manual_seed(1))
    schedule = decoding_schedule(16, 5)
    order = torch.randperm(16, generator=torch.Generator().manual_seed(7))
    total, inputs, pos = 0.0, torch.full_like(tokens, 16), 0
    with torch.no_grad():
        for count in schedule:
            step_pos = order[pos : pos + count]
            logp = torch.log_softmax(model(inputs), dim=-1)  # [B, S, K]
            total -= logp[:, step_pos].gather(-1, tokens[:, step_pos, None]).sum().item()
            inputs[:, step_pos] = tokens[:, step_pos]
            pos += count
    expected = total / math.log(2) / len(tokens)
    cost = compression_cost(model, tokens, num_steps=5, order_seed=7, batch_size=4)
    assert cost["bits_per_image"] == pytest.approx(expected, rel=1e-6)


def test_trained_model_compresses_structured_tokens() -> None:
    # Every grid is constant: after a little training the model needs far fewer bits than raw.
    torch.manual_seed(0)
    cfg = MaskGITConfig(codebook_size=16, grid=(2, 4), dim=32, depth=1, heads=2, dropout=0.0)
    model = MaskGITTransformer(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        tokens = torch.randint(0, 16, (32, 1), generator=g).expand(-1, 8)
        loss, _ = masked_token_loss(model, tokens, generator=g, label_smoothing=0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    test = torch.arange(16)[:, None].expand(-1, 8)
    cost = compression_cost(model, test, num_steps=4)
    # Ideal: 4 bits for the first token, ~0 for the rest; raw is 32 bits.
    assert cost["bits_per_image"] < 10.0 < cost["raw_bits_per_image"]


def test_bad_token_grid() -> None:
    with pytest.raises(ValueError, match=r"9 positions per image \(grid \(3, 3\)\)"):
        compression_cost(StubModel(0.0), torch.zeros(2, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="num_steps must be >= 1"):
        compression_cost(StubModel(0.0), torch.zeros(2, 9, dtype=torch.long), num_steps=0)
