"""torch.compile parity and torch.export / TorchScript-free deployment."""

from __future__ import annotations

import pytest
import torch

from fsqkit import FSQ, ResidualFSQ


def test_compile_gives_identical_codes_and_gradients() -> None:
    torch._dynamo.reset()
    fsq = FSQ([8, 5, 5, 5], dim=8, channel_first=True)
    compiled = torch.compile(fsq)
    z = torch.randn(2, 8, 6, 6)
    z1 = z.clone().requires_grad_()
    z2 = z.clone().requires_grad_()
    eager = fsq(z1)
    comp = compiled(z2)
    assert torch.equal(eager.indices, comp.indices)
    torch.testing.assert_close(eager.quantized, comp.quantized, rtol=1e-6, atol=1e-6)
    eager.quantized.square().sum().backward()
    comp.quantized.square().sum().backward()
    torch.testing.assert_close(z1.grad, z2.grad, rtol=1e-5, atol=1e-6)


def test_export_round_trip() -> None:
    fsq = FSQ([7, 5, 5, 5, 5]).eval()
    z = torch.randn(32, 5)
    exported = torch.export.export(fsq, (z,))
    out = exported.module()(z)
    ref = fsq(z)
    assert torch.equal(out.indices, ref.indices)
    assert torch.equal(out.quantized, ref.quantized)
    z2 = torch.randn(32, 5) * 3  # a new input through the exported graph
    assert torch.equal(exported.module()(z2).indices, fsq(z2).indices)


def test_decode_compiles_fullgraph_and_with_inductor() -> None:
    """The range check reads min/max back to the host; it is left out of captured
    graphs, and the decode math uses integer constants (no float buffer .long())."""
    fsq = FSQ([8, 5, 5, 5], dim=12)
    idx = fsq(torch.randn(64, 12)).indices
    torch._dynamo.reset()
    full = torch.compile(fsq.indices_to_codes, fullgraph=True, backend="aot_eager")
    assert torch.equal(full(idx), fsq.indices_to_codes(idx))
    torch._dynamo.reset()
    inductor = torch.compile(fsq.indices_to_codes)
    torch.testing.assert_close(inductor(idx), fsq.indices_to_codes(idx))
    plain = FSQ([7, 5, 5, 5, 5], num_codebooks=2)
    idx2 = plain(torch.randn(8, 6, 10)).indices
    torch._dynamo.reset()
    assert torch.equal(torch.compile(plain.indices_to_codes)(idx2), plain.indices_to_codes(idx2))


class _Decoder(torch.nn.Module):
    """A model whose forward decodes indices (e.g. a tokenizer's decoder input)."""

    def __init__(self) -> None:
        super().__init__()
        self.fsq = FSQ([8, 5, 5, 5], dim=16, channel_first=True)

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        return self.fsq.indices_to_codes(indices)


def test_export_of_a_module_that_decodes() -> None:
    model = _Decoder().eval()
    idx = torch.randint(0, 1000, (2, 5, 7))
    exported = torch.export.export(model, (idx,))
    assert torch.equal(exported.module()(idx), model(idx))
    other = torch.randint(0, 1000, (2, 5, 7))
    assert torch.equal(exported.module()(other), model(other))


def test_eager_decode_still_rejects_out_of_range_indices() -> None:
    with pytest.raises(ValueError, match=r"expected values in \[0, 1000\)"):
        _Decoder().eval()(torch.tensor([[[1000]]]))


@pytest.mark.parametrize("fast", [None, False])
def test_unchecked_nan_inputs_give_valid_indices(fast) -> None:
    """check_finite=False: a NaN gets digit 0 in its dimension (its code stays NaN),
    never the int32 minimum."""
    fsq = FSQ([8, 5, 5, 5], check_finite=False, fast=fast)
    z = torch.randn(64, 4)
    z[3, 1] = float("nan")
    z[7] = float("nan")
    out = fsq(z)
    assert bool(((out.indices >= 0) & (out.indices < 1000)).all())
    digits = fsq.indices_to_digits(out.indices)
    assert digits[3, 1] == 0 and digits[7].tolist() == [0, 0, 0, 0]
    clean = fsq(torch.where(torch.isnan(z), 0.0, z))
    assert torch.equal(digits[3, [0, 2, 3]], fsq.indices_to_digits(clean.indices)[3, [0, 2, 3]])
    assert torch.isnan(out.quantized[3, 1]) and not torch.isnan(out.quantized[3, 0])
    residual = ResidualFSQ([8, 5, 5, 5], num_stages=3, check_finite=False)
    idx = residual(z).indices
    assert bool(((idx >= 0) & (idx < 1000)).all())
    assert fsq.codes_to_indices(torch.full((1, 4), float("nan"))).item() == 0


def test_unchecked_nan_under_compile_gives_valid_indices() -> None:
    fsq = FSQ([8, 5, 5, 5])  # check_finite=True is skipped inside a captured graph
    z = torch.randn(16, 4)
    z[2, 0] = float("nan")
    torch._dynamo.reset()
    idx = torch.compile(fsq, backend="aot_eager", fullgraph=True)(z).indices
    assert bool(((idx >= 0) & (idx < 1000)).all())
    clean = fsq(torch.where(torch.isnan(z), 0.0, z)).indices
    assert torch.equal(fsq.indices_to_digits(idx)[2, 1:], fsq.indices_to_digits(clean)[2, 1:])
    assert fsq.indices_to_digits(idx)[2, 0] == 0
