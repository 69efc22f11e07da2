"""The Triton CUDA path gives bit-identical codes, indices and gradients to the
reference path on the same GPU. Needs a CUDA GPU and Triton: run by
``benchmarks/gpu_check.sh`` on a GPU machine; skipped elsewhere (the kernels'
indexing is also checked on CPU by ``test_fsq_triton_interpret.py``)."""

from __future__ import annotations

import math

import pytest
import torch

from fsqkit import FSQ
from fsqkit.quantizers._fsq_backends import gpu as fsq_gpu
from fsqkit.quantizers._fsq_backends.edges import bin_edges

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

DEV = torch.device("cuda")


@pytest.fixture(autouse=True, params=["tiles", "rows"])
def kernel_variant(request, monkeypatch) -> str:
    """Every test runs with the 2-D tile kernels and the opt-in row kernels."""
    monkeypatch.setattr(fsq_gpu, "ROW_KERNELS", request.param == "rows")
    return request.param


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view({4: torch.int32, 2: torch.int16}[t.element_size()])


def pair(levels, **kw) -> tuple[FSQ, FSQ]:
    fast = FSQ(levels, fast=None, **kw).to(DEV)
    ref = FSQ(levels, fast=False, **kw).to(DEV)
    ref.load_state_dict(fast.state_dict())
    return fast, ref


def assert_same(fast: FSQ, ref: FSQ, z: torch.Tensor, grad: bool = True) -> None:
    assert fsq_gpu.gpu_path_applies(z, fast.constants), "the Triton path should apply"
    assert fast._fused_forward(z.detach()) is not None, "the Triton path should run"
    z1 = z.detach().clone().requires_grad_(grad)
    z2 = z.detach().clone().requires_grad_(grad)
    o1, o2 = fast(z1), ref(z2)
    assert o1.quantized.dtype == o2.quantized.dtype == z.dtype
    assert o1.quantized.shape == o2.quantized.shape
    assert torch.equal(bits(o1.quantized), bits(o2.quantized))
    assert o1.indices.dtype == o2.indices.dtype and torch.equal(o1.indices, o2.indices)
    if grad:
        g = torch.randn(o1.quantized.shape, device=DEV).to(z.dtype)
        o1.quantized.backward(g)
        o2.quantized.backward(g)
        assert torch.equal(bits(z1.grad), bits(z2.grad))
        for p1, p2 in zip(fast.parameters(), ref.parameters()):
            assert torch.equal(p1.grad, p2.grad)


def test_probe_finds_a_bit_exact_variant() -> None:
    assert fsq_gpu.triton_kernels() is not None, fsq_gpu._state["reason"]
    assert fsq_gpu.probe(DEV) is not None


@pytest.mark.parametrize(
    "levels", [[8, 5, 5, 5], [7, 5, 5, 5, 5], [8, 6, 5], [16, 4], [8, 8, 8, 5, 5, 5]]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_matches_reference_channel_last(levels, dtype) -> None:
    fast, ref = pair(levels)
    assert_same(fast, ref, (torch.randn(3001, len(levels), device=DEV) * 2.5).to(dtype))


@pytest.mark.parametrize("levels", [[8, 5, 5, 5], [7, 6, 2]])
@pytest.mark.parametrize("channel_first", [False, True])
def test_matches_reference_symmetric(levels, channel_first) -> None:
    fast, ref = pair(levels, symmetric=True, channel_first=channel_first)
    shape = (2, len(levels), 9, 13) if channel_first else (777, len(levels))
    assert_same(fast, ref, torch.randn(shape, device=DEV) * 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 4, 9, 13), (3, 4, 1500), (1, 4, 3, 5, 7), (64, 4, 24, 24)])
def test_matches_reference_channel_first(shape, dtype) -> None:
    fast, ref = pair([8, 5, 5, 5], channel_first=True)
    assert_same(fast, ref, (torch.randn(shape, device=DEV) * 2).to(dtype))


@pytest.mark.parametrize("channel_first", [False, True])
def test_matches_reference_num_codebooks(channel_first) -> None:
    fast, ref = pair([8, 5, 5], num_codebooks=3, channel_first=channel_first)
    shape = (2, 9, 5, 7) if channel_first else (4, 33, 9)
    assert_same(fast, ref, torch.randn(shape, device=DEV) * 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matches_reference_with_projections(dtype) -> None:
    fast, ref = pair([8, 5, 5, 5], dim=24, num_codebooks=2, channel_first=True)
    fast.to(dtype)
    ref.to(dtype)
    assert_same(fast, ref, torch.randn(2, 24, 5, 6, device=DEV).to(dtype))


def test_matches_reference_on_non_contiguous_inputs() -> None:
    fast, ref = pair([8, 5, 5, 5], channel_first=True)
    assert_same(
        fast, ref, torch.randn(2, 4, 10, 12, device=DEV).to(memory_format=torch.channels_last)
    )
    fast, ref = pair([8, 5, 5, 5])
    assert_same(fast, ref, torch.randn(4, 300, device=DEV).t())


def test_large_input_many_programs() -> None:
    fast, ref = pair([8, 5, 5, 5])
    assert_same(fast, ref, torch.randn(2**22 + 3, 4, device=DEV) * 2)


@pytest.mark.parametrize("symmetric", [False, True])
def test_bin_edges_bit_identical(symmetric) -> None:
    """Every float within 64 steps of every bin edge."""
    levels = [8, 6, 5, 3]
    fast, ref = pair(levels, symmetric=symmetric)
    # edges of the CPU reference: within a few float steps of the GPU's
    edges = bin_edges(FSQ(levels, symmetric=symmetric).constants, torch.device("cpu")).edges
    edges = edges.to(DEV)
    cols = []
    for d in range(len(levels)):
        e = edges[d][~torch.isnan(edges[d])]
        keys = e.view(torch.int32).long().unsqueeze(1) + torch.arange(-64, 65, device=DEV)
        cols.append(keys.flatten().to(torch.int32).view(torch.float32))
    n = max(c.numel() for c in cols)
    z = torch.stack([c.repeat(math.ceil(n / c.numel()))[:n] for c in cols], dim=1)
    assert_same(fast, ref, z)


def test_nonfinite_raises_and_infinities_match_without_check() -> None:
    fast, ref = pair([8, 5, 5, 5])
    z = torch.randn(100, 4, device=DEV)
    z[17, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        fast(z)
    fast, ref = pair([8, 5, 5, 5], check_finite=False)
    z = torch.randn(200, 4, device=DEV)
    z[3, 1], z[5, 0] = float("inf"), float("-inf")
    assert_same(fast, ref, z, grad=True)


def test_saves_only_the_input_for_backward() -> None:
    fast = FSQ([8, 5, 5, 5]).to(DEV)
    z = torch.randn(4096, 4, device=DEV, requires_grad=True)
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        fast(z)
    assert len(saved) == 1
    assert saved[0].untyped_storage().data_ptr() == z.untyped_storage().data_ptr()


def test_levels_above_64_and_large_codebooks() -> None:
    fast, ref = pair([100, 9, 5])
    assert_same(fast, ref, torch.randn(5000, 3, device=DEV) * 2)


def test_compile_uses_reference_ops_and_matches() -> None:
    torch._dynamo.reset()
    fast = FSQ([8, 5, 5, 5]).to(DEV)
    z = torch.randn(64, 4, device=DEV)
    compiled = torch.compile(fast, backend="aot_eager", fullgraph=True)
    a, b = compiled(z), fast(z)
    assert torch.equal(a.indices, b.indices) and torch.equal(bits(a.quantized), bits(b.quantized))
