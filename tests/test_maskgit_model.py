"""MaskGIT transformer, training mask and loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fsqkit.maskgit import (
    PAPER_R_MIN,
    MaskGITConfig,
    MaskGITTransformer,
    masked_token_loss,
    r_min_for_fraction,
    random_training_mask,
    sample_tokens,
)
from fsqkit.maskgit.loss import drop_labels
from fsqkit.maskgit.schedule import num_masked_for_training
from tests.single_thread import one_thread  # noqa: F401  (autouse)


def test_paper_r_min() -> None:
    assert abs(PAPER_R_MIN - 0.2972) < 1e-4
    assert r_min_for_fraction(1.0) == 1.0  # mask everything, always
    assert num_masked_for_training(torch.tensor([PAPER_R_MIN + 1e-9, 1.0]), 256).tolist() == [
        math.ceil(0.45 * 256),
        256,
    ]


def test_training_mask_counts() -> None:
    g = torch.Generator().manual_seed(0)
    mask = random_training_mask(2000, 64, generator=g)
    n = mask.sum(1)
    assert int(n.min()) >= math.ceil(0.45 * 64) and int(n.max()) == 64
    # With r_min = 0.9 at least ceil(cos(π/2 · 0.1) · S) are masked.
    n_hi = random_training_mask(500, 64, r_min=0.9, generator=g).sum(1)
    assert int(n_hi.min()) >= math.ceil(math.cos(math.pi / 2 * 0.1) * 64)
    # Masked positions are spread over the grid, not a fixed block.
    assert float(mask.float().mean(0).min()) > 0.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"grid": (4,)}, "grid must be"),
        ({"dim": 30, "heads": 4}, "divisible by heads"),
        ({"codebook_size": 0}, "codebook_size must be a positive int"),
        ({"num_classes": -1}, "num_classes must be >= 0"),
        ({"dropout": 1.0}, "dropout must be in"),
    ],
)
def test_config_errors(kwargs, match) -> None:
    base = {"codebook_size": 10, "grid": (2, 2), "dim": 16, "heads": 2}
    with pytest.raises(ValueError, match=match):
        MaskGITConfig(**{**base, **kwargs})


def test_config_round_trip() -> None:
    cfg = MaskGITConfig(codebook_size=1000, grid=(4, 4), num_classes=10)
    assert MaskGITConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown MaskGITConfig keys"):
        MaskGITConfig.from_dict({**cfg.to_dict(), "vocab": 3})


@pytest.fixture()
def model() -> MaskGITTransformer:
    return MaskGITTransformer(
        MaskGITConfig(codebook_size=12, grid=(2, 3), num_classes=4, dim=16, depth=2, heads=2)
    )


def test_forward_shapes_and_gradients(model) -> None:
    tokens = torch.randint(0, 13, (5, 6))
    logits = model(tokens, torch.tensor([0, 1, 2, 3, 4]))
    assert logits.shape == (5, 6, 12) and torch.isfinite(logits).all()
    loss, stats = masked_token_loss(
        model, torch.randint(0, 12, (5, 6)), torch.tensor([0, 1, 2, 3, 0])
    )
    loss.backward()
    missing = [
        n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert not missing, missing
    assert 0.45 <= stats["mask_frac"] <= 1.0


def test_label_changes_output(model) -> None:
    model.eval()
    tokens = torch.full((2, 6), 12)
    out = model(tokens, torch.tensor([0, 1]))
    assert not torch.allclose(out[0], out[1])


@pytest.mark.parametrize(
    ("tokens", "labels", "match"),
    [
        (torch.randint(0, 12, (2, 5)), None, r"shape \[B, 6\]"),
        (torch.full((2, 6), 13), None, r"token ids must be in \[0, 12\]"),
        (
            torch.zeros(2, 6, dtype=torch.long),
            torch.tensor([0, 5]),
            r"class labels must be in \[0, 3\]",
        ),
    ],
)
def test_forward_bad_input(model, tokens, labels, match) -> None:
    with pytest.raises(ValueError, match=match):
        model(tokens, labels)


def test_loss_is_cross_entropy_on_masked_positions(model) -> None:
    model.eval()  # no dropout, so the manual recomputation below sees the same logits
    tokens, labels = torch.randint(0, 12, (8, 6)), torch.randint(0, 4, (8,))
    loss, _ = masked_token_loss(
        model, tokens, labels, label_drop=0.5, generator=torch.Generator().manual_seed(5)
    )
    g = torch.Generator().manual_seed(5)
    mask = random_training_mask(8, 6, generator=g)
    dropped = drop_labels(labels, 4, 0.5, g)
    logits = model(torch.where(mask, torch.full_like(tokens, 12), tokens), dropped)
    expected = F.cross_entropy(logits[mask], tokens[mask], label_smoothing=0.1)
    torch.testing.assert_close(loss, expected)


def test_label_drop_rate() -> None:
    labels = torch.zeros(20000, dtype=torch.long)
    dropped = drop_labels(labels, 10, 0.1, torch.Generator().manual_seed(0))
    assert set(dropped.unique().tolist()) == {0, 10}
    assert float((dropped == 10).float().mean()) == pytest.approx(0.1, abs=0.01)


def test_tiny_model_learns_class_patterns() -> None:
    # Each class c has one fixed token grid; a conditional model must learn to sample it.
    torch.manual_seed(0)
    cfg = MaskGITConfig(
        codebook_size=8, grid=(2, 4), num_classes=3, dim=32, depth=2, heads=2, dropout=0.0
    )
    model = MaskGITTransformer(cfg)
    patterns = torch.randint(0, 8, (3, 8), generator=torch.Generator().manual_seed(1))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        labels = torch.randint(0, 3, (32,), generator=g)
        loss, _ = masked_token_loss(
            model, patterns[labels], labels, label_smoothing=0.0, generator=g
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.3
    correct = 0
    for c in range(3):
        samples = sample_tokens(model, 4, c, num_steps=4, guidance=1.0, seed=c).view(4, -1)
        correct += int((samples == patterns[c]).sum())
    assert correct / (3 * 4 * 8) >= 0.95  # sampled at temperature 1: allow a rare slip


def test_select_returns_the_selected_logits(model) -> None:
    model.eval()
    tokens = torch.randint(0, 13, (3, 6))
    select = torch.rand(3, 6) < 0.5
    torch.testing.assert_close(model(tokens, None, select), model(tokens)[select])
