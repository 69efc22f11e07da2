"""torch.compile parity and torch.export / TorchScript-free deployment."""

from __future__ import annotations

import torch

from fsqkit import FSQ


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
