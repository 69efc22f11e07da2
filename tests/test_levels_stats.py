"""levels_for, codebook statistics and the `fsqkit levels` command."""

from __future__ import annotations

import math

import pytest
import torch

from fsqkit import FSQ, UsageTracker, levels_for
from fsqkit.cli import main
from fsqkit.quantizers import code_counts, entropy_bits, perplexity, usage_fraction
from fsqkit.quantizers.levels import PAPER_LEVELS


def test_paper_table() -> None:
    assert levels_for(2**10) == [8, 5, 5, 5]
    assert levels_for(2**12) == [7, 5, 5, 5, 5]  # appendix typo [7,5,5,5] fixed
    assert levels_for(2**16) == [8, 8, 8, 5, 5, 5]
    assert levels_for(2**4) == [5, 3]
    for size, levels in PAPER_LEVELS.items():
        assert 0.5 < math.prod(levels) / size < 1.25


@pytest.mark.parametrize("size", [5, 30, 100, 300, 2000, 3000, 10000, 50000, 2**20, 10**7])
def test_rule_respects_min_level_and_size(size: int) -> None:
    levels = levels_for(size)
    assert all(5 <= v <= 8 for v in levels)
    assert levels == sorted(levels, reverse=True)
    # Products of levels in {5..8} are spaced at most ~1.3x apart above 25.
    assert abs(math.log(math.prod(levels) / size)) < math.log(1.3)


def test_levels_for_errors() -> None:
    with pytest.raises(ValueError, match=">= 3"):
        levels_for(2)
    with pytest.raises(TypeError):
        levels_for(10.0)  # type: ignore[arg-type]


def test_stats_functions() -> None:
    counts = code_counts(torch.tensor([0, 0, 1, 3]), 4)
    assert counts.tolist() == [2, 1, 0, 1]
    assert usage_fraction(counts) == 0.75
    assert entropy_bits(counts) == pytest.approx(1.5)
    assert perplexity(counts) == pytest.approx(2**1.5)
    assert perplexity(torch.ones(1000, dtype=torch.long)) == pytest.approx(1000)
    with pytest.raises(ValueError, match="out of range"):
        code_counts(torch.tensor([4]), 4)
    with pytest.raises(TypeError, match="integer"):
        code_counts(torch.tensor([0.5]), 4)


def test_usage_tracker_over_batches() -> None:
    fsq = FSQ([8, 5, 5, 5])
    tracker = UsageTracker(fsq.codebook_size)
    for _ in range(5):
        tracker.update(fsq(torch.randn(4000, 4) * 1.5).indices)
    s = tracker.summary()
    assert s["total"] == 20000
    assert s["usage"] > 0.9
    assert 500 < s["perplexity"] <= 1000
    assert s["entropy_bits"] == pytest.approx(math.log2(s["perplexity"]))
    tracker.reset()
    assert tracker.total == 0 and tracker.fraction_used == 0.0


def test_levels_cli(capsys) -> None:
    assert main(["levels", "2^10"]) == 0
    assert "[8, 5, 5, 5] -> 1000 codes" in capsys.readouterr().out
    assert main(["levels", "4096", "--json"]) == 0
    assert '"size": 4375' in capsys.readouterr().out
    assert main(["levels", "abc"]) == 2
    assert "SIZE must be an integer" in capsys.readouterr().err


def test_window_usage_counts_only_the_last_batches():
    from fsqkit.quantizers.stats import WindowUsage

    live = WindowUsage(codebook_size=8, window=2)
    assert live.update(torch.tensor([0, 1])) == 2 / 8
    assert live.update(torch.tensor([[2, 3], [3, 3]])) == 4 / 8
    assert live.update(torch.tensor([4])) == 3 / 8  # codes 0 and 1 left the window
    with pytest.raises(ValueError, match="window"):
        WindowUsage(8, window=0)
