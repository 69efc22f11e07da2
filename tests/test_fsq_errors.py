"""Bad input gets a clear error that names the problem and the expected value."""

from __future__ import annotations

import pytest
import torch

from fsqkit import FSQ


@pytest.mark.parametrize(
    ("levels", "exc", "match"),
    [
        ([], ValueError, "non-empty"),
        ([8, 5.0, 5], TypeError, r"levels\[1\] must be an integer"),
        ([8, 2, 5], ValueError, r"levels\[1\] = 2.*symmetric=True"),
        ([8, 1], ValueError, r"levels\[1\] = 1: every level must be >= 3"),
        ([0], ValueError, ">= 3"),
        ("855", TypeError, "must be an integer"),
        ([True, 5], TypeError, "must be an integer"),
        ([2**20], ValueError, "not supported"),
    ],
)
def test_bad_levels(levels, exc, match) -> None:
    with pytest.raises(exc, match=match):
        FSQ(levels)


def test_symmetric_rejects_one_level() -> None:
    with pytest.raises(ValueError, match=">= 2"):
        FSQ([1, 4], symmetric=True)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_codebooks": 0}, "num_codebooks"),
        ({"dim": 0}, "dim must be"),
        ({"eps": 1.5}, "eps"),
        ({"dither": 1.5}, "dither"),
        ({"dither": 0.6, "passthrough": 0.6}, "dither \\+ passthrough"),
    ],
)
def test_bad_options(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        FSQ([8, 5, 5, 5], **kwargs)


def test_wrong_channel_dimension() -> None:
    with pytest.raises(ValueError, match=r"last dimension of size dim=4.*\(2, 3\)"):
        FSQ([8, 5, 5, 5])(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"dim 1 \(channel_first=True\) of size dim=4"):
        FSQ([8, 5, 5, 5], channel_first=True)(torch.randn(2, 3, 4, 4))


def test_non_float_and_non_finite_inputs() -> None:
    fsq = FSQ([8, 5, 5, 5])
    with pytest.raises(TypeError, match="floating-point"):
        fsq(torch.ones(2, 4, dtype=torch.int64))
    for bad in (float("nan"), float("inf"), -float("inf")):
        z = torch.randn(3, 4)
        z[1, 2] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            fsq(z)


def test_bad_indices() -> None:
    fsq = FSQ([8, 5, 5, 5])
    with pytest.raises(TypeError, match="integer tensor"):
        fsq.indices_to_codes(torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"expected values in \[0, 1000\).*max 1000"):
        fsq.indices_to_codes(torch.tensor([0, 1000]))
    with pytest.raises(ValueError, match="min -1"):
        fsq.indices_to_codes(torch.tensor([-1]))
    multi = FSQ([8, 5, 5, 5], num_codebooks=2)
    with pytest.raises(ValueError, match="trailing dimension of size 2"):
        multi.indices_to_codes(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="last dimension of size 4"):
        fsq.codes_to_indices(torch.zeros(3, 5))


def test_no_input_gives_out_of_range_indices() -> None:
    # Extreme but finite inputs (and denormals, signed zeros) stay in range.
    for levels, symmetric in (([3, 4, 8, 5], False), ([2, 3, 4, 8], True)):
        fsq = FSQ(levels, symmetric=symmetric)
        z = torch.tensor(
            [
                [3.4e38, -3.4e38, 1e-45, -0.0],
                [-3.4e38, 3.4e38, 50.0, -50.0],
                [1e4, -1e4, 0.5, -0.5],
            ]
        )
        idx = fsq(z).indices
        assert ((idx >= 0) & (idx < fsq.codebook_size)).all()
        digits = fsq.indices_to_digits(idx)
        assert ((digits >= 0) & (digits < torch.tensor(levels))).all()
