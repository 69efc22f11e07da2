"""The fused fast path gives bit-identical codes, indices and gradients to the
reference path, falls back cleanly, and keeps one tensor for backward."""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Iterator

import pytest
import torch

from fsqkit import FSQ
from fsqkit.quantizers._fsq_backends import build, cpu

needs_kernel = pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler"
)


def bits(t: torch.Tensor) -> torch.Tensor:
    """Bit pattern (so -0.0 != +0.0 and NaN payloads count)."""
    return t.view({4: torch.int32, 2: torch.int16}[t.element_size()])


def pair(levels, **kw) -> tuple[FSQ, FSQ]:
    fast = FSQ(levels, fast=True, **kw)
    ref = FSQ(levels, fast=False, **kw)
    ref.load_state_dict(fast.state_dict())
    return fast, ref


def assert_same(fast: FSQ, ref: FSQ, z: torch.Tensor, grad: bool = True) -> None:
    """Forward (and backward) of both paths agree bit for bit."""
    z1 = z.detach().clone().requires_grad_(grad)
    z2 = z.detach().clone().requires_grad_(grad)
    o1, o2 = fast(z1), ref(z2)
    assert o1.quantized.dtype == o2.quantized.dtype == z.dtype
    assert o1.quantized.shape == o2.quantized.shape
    assert torch.equal(bits(o1.quantized.contiguous()), bits(o2.quantized.contiguous()))
    assert o1.indices.dtype == o2.indices.dtype and o1.indices.shape == o2.indices.shape
    assert torch.equal(o1.indices, o2.indices)
    if grad:
        g = torch.randn(o1.quantized.shape).to(z.dtype)
        o1.quantized.backward(g)
        o2.quantized.backward(g)
        assert torch.equal(bits(z1.grad.contiguous()), bits(z2.grad.contiguous()))
        for p1, p2 in zip(fast.parameters(), ref.parameters()):
            assert torch.equal(p1.grad, p2.grad)


@pytest.fixture(scope="module", autouse=True)
def _kernel() -> None:
    """Build (or load from the cache) once; every test below uses the real kernel."""
    if build.get_cpu_kernel() is None and shutil.which("cc"):
        pytest.fail(f"kernel should build here: {build.unavailable_reason()}")


@pytest.fixture(autouse=True, params=["bin-edges", "bin-edges-avx2-vml", "tanh"])
def forward_mode(request, monkeypatch) -> Iterator[str]:
    """Every test runs with both forward modes of the kernel, the bin-edge mode
    with both vector widths (16 lanes where built with AVX-512, and 8) and both
    tanh implementations (the fast one where available, and MKL's for all)."""
    monkeypatch.setattr(cpu, "USE_BIN_EDGES", request.param != "tanh")
    kernel = build.get_cpu_kernel()
    fast_tanh = kernel is not None and kernel.fast_tanh
    if kernel is not None and request.param == "bin-edges-avx2-vml":
        kernel.set_vector_width(8)
        kernel.set_fast_tanh(False)
    yield request.param
    if kernel is not None:
        kernel.set_vector_width(16)
        kernel.set_fast_tanh(fast_tanh)


LEVEL_SETS = [[8, 5, 5, 5], [7, 5, 5, 5, 5], [8, 6, 5], [3], [16, 4], [8, 8, 8, 5, 5, 5]]


@needs_kernel
@pytest.mark.parametrize("levels", LEVEL_SETS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_matches_reference_channel_last(levels, dtype) -> None:
    fast, ref = pair(levels)
    z = (torch.randn(3001, len(levels)) * 2.5).to(dtype)  # odd count: a partial last tile
    assert_same(fast, ref, z)


@needs_kernel
@pytest.mark.parametrize("levels", [[8, 5, 5, 5], [7, 6, 2], [2, 2, 3]])
@pytest.mark.parametrize("channel_first", [False, True])
def test_matches_reference_symmetric(levels, channel_first) -> None:
    fast, ref = pair(levels, symmetric=True, channel_first=channel_first)
    shape = (2, len(levels), 9, 13) if channel_first else (777, len(levels))
    assert_same(fast, ref, torch.randn(shape) * 2)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    "shape", [(2, 4, 9, 13), (3, 4, 1500), (1, 4, 3, 5, 7), (2, 4, 1), (64, 4, 24, 24)]
)
def test_matches_reference_channel_first(shape, dtype) -> None:
    fast, ref = pair([8, 5, 5, 5], channel_first=True)
    assert_same(fast, ref, (torch.randn(shape) * 2).to(dtype))


@needs_kernel
@pytest.mark.parametrize("channel_first", [False, True])
def test_matches_reference_num_codebooks(channel_first) -> None:
    fast, ref = pair([8, 5, 5], num_codebooks=3, channel_first=channel_first)
    shape = (2, 9, 5, 7) if channel_first else (4, 33, 9)
    assert_same(fast, ref, torch.randn(shape) * 2)
    out = fast(torch.randn(shape))
    assert out.indices.shape[-1] == 3


@needs_kernel
@pytest.mark.parametrize("levels,groups", [([8, 5, 5, 5], 4), ([5, 3], 1), ([7], 2), ([6], 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_matches_reference_channel_counts(levels, groups, dtype) -> None:
    """C = 16, 2, 2 and 1 channels: the channel patterns that fill a 16-lane
    vector (channel-last backward keeps them in registers), with odd row counts."""
    fast, ref = pair(levels, num_codebooks=groups)
    C = len(levels) * groups
    assert_same(fast, ref, (torch.randn(4099, C) * 2).to(dtype))  # C = 16: >= 65536, threaded
    fast, ref = pair(levels, num_codebooks=groups, channel_first=True)
    assert_same(fast, ref, (torch.randn(3, C, 11, 7) * 2).to(dtype))


@needs_kernel
@pytest.mark.parametrize("channel_first", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matches_reference_with_projections(channel_first, dtype) -> None:
    fast, ref = pair([8, 5, 5, 5], dim=24, num_codebooks=2, channel_first=channel_first)
    fast.to(dtype)
    ref.to(dtype)
    shape = (2, 24, 5, 6) if channel_first else (50, 24)
    assert_same(fast, ref, torch.randn(shape).to(dtype))


@needs_kernel
def test_matches_reference_on_non_contiguous_inputs() -> None:
    fast, ref = pair([8, 5, 5, 5], channel_first=True)
    z = torch.randn(2, 4, 10, 12).to(memory_format=torch.channels_last)
    assert_same(fast, ref, z)
    fast, ref = pair([8, 5, 5, 5])
    assert_same(fast, ref, torch.randn(4, 300).t())  # (300, 4) transposed view
    assert_same(fast, ref, torch.randn(300, 8)[:, ::2])


@needs_kernel
def test_large_input_uses_threads_and_streamed_stores() -> None:
    """Above 8 MiB outputs are streamed and several threads work; still exact."""
    fast, ref = pair([8, 5, 5, 5])
    assert_same(fast, ref, torch.randn(2**19 + 3, 4) * 2)


@needs_kernel
def test_result_does_not_depend_on_thread_count() -> None:
    fast, _ = pair([8, 5, 5, 5], channel_first=True)
    z = torch.randn(8, 4, 64, 64) * 2
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = fast(z)
        torch.set_num_threads(max(2, old))
        b = fast(z)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(bits(a.quantized), bits(b.quantized))
    assert torch.equal(a.indices, b.indices)


def bin_edges(levels: list[int], eps: float = 1e-3) -> list[torch.Tensor]:
    """Per dimension, the inputs z where bound(z) crosses k + 0.5 (in float64)."""
    out = []
    for L in levels:
        half_l = (L - 1) * (1 - eps) / 2
        offset = 0.5 if L % 2 == 0 else 0.0
        shift = math.atanh(offset / half_l)
        lo, hi = -(L // 2), (L - 1) // 2 if L % 2 else L // 2 - 1
        edges = [
            math.atanh((k + 0.5 + offset) / half_l) - shift
            for k in range(lo, hi)
            if abs((k + 0.5 + offset) / half_l) < 1
        ]
        out.append(torch.tensor(edges, dtype=torch.float64))
    return out


@needs_kernel
@pytest.mark.parametrize("levels", [[8, 5, 5, 5], [7, 6, 3], [16, 9]])
def test_bin_edges_bit_identical(levels) -> None:
    """Inputs within a few ulps of every bin edge: where a 1-ulp tanh difference
    would flip a code. Both paths must still agree exactly."""
    D = len(levels)
    columns = []
    for edges in bin_edges(levels):
        e = edges.float()
        nbrs = [e]
        up, down = e.clone(), e.clone()
        for _ in range(16):
            up = torch.nextafter(up, torch.tensor(math.inf))
            down = torch.nextafter(down, torch.tensor(-math.inf))
            nbrs += [up.clone(), down.clone()]
        columns.append(torch.cat(nbrs))
    n = max(len(c) for c in columns)
    z = torch.zeros(n, D)
    for d, col in enumerate(columns):
        z[:, d] = col.repeat(n // len(col) + 1)[:n]
    fast, ref = pair(levels)
    assert_same(fast, ref, z)
    # the probe really sits on the edges: bound(z) within a few ulps of k + 0.5
    t = ref.constants.tensors()
    x = torch.tanh(z + t.shift) * t.half_l - t.offset
    dist = (x - torch.floor(x) - 0.5).abs()
    assert bool((dist.min(dim=0).values < 1e-5).all())
    digits = ref.indices_to_digits(ref(z).indices)
    assert len(torch.unique(digits[:, 0])) >= levels[0] - 1


@needs_kernel
def test_nan_input_raises_clear_error() -> None:
    fast = FSQ([8, 5, 5, 5], fast=True)
    z = torch.randn(100, 4)
    z[17, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        fast(z)
    z[17, 2] = float("-inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        fast(z.requires_grad_())


@needs_kernel
def test_nonfinite_without_check_matches_reference() -> None:
    fast, ref = pair([8, 5, 5, 5], check_finite=False)
    z = torch.randn(200, 4)
    z[3, 1] = float("inf")
    z[5, 0] = float("-inf")
    z[9, 3] = float("nan")
    a, b = fast(z), ref(z)
    torch.testing.assert_close(a.quantized, b.quantized, equal_nan=True, rtol=0, atol=0)
    assert torch.equal(a.indices, b.indices)


def _saved_for_backward(fsq: FSQ, z: torch.Tensor) -> list[torch.Tensor]:
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        fsq(z)
    return saved


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_saved_for_backward(dtype: torch.dtype, forward_mode: str) -> None:
    """Bin-edge mode keeps the input itself; tanh mode one float32 tensor."""
    fast = FSQ([8, 5, 5, 5], fast=True)
    z = torch.randn(4096, 4, dtype=dtype, requires_grad=True)
    saved = _saved_for_backward(fast, z)
    assert len(saved) == 1
    same = saved[0].untyped_storage().data_ptr() == z.untyped_storage().data_ptr()
    if forward_mode != "tanh":
        assert same
    else:
        assert not same and saved[0].dtype == torch.float32 and saved[0].numel() == z.numel()


@needs_kernel
def test_levels_above_64_use_the_tanh_mode() -> None:
    fast = FSQ([65, 3], fast=True)  # no bin edges for a level above 64
    fast2, ref = pair([65, 3])
    assert_same(fast2, ref, torch.randn(999, 2) * 2)
    z = torch.randn(4096, 2, requires_grad=True)
    saved = _saved_for_backward(fast, z)
    assert len(saved) == 1
    assert saved[0].dtype == torch.float32 and saved[0].numel() == z.numel()
    assert saved[0].untyped_storage().data_ptr() != z.untyped_storage().data_ptr()


@needs_kernel
def test_inference_saves_nothing_and_has_no_graph() -> None:
    fast = FSQ([8, 5, 5, 5], fast=True)
    with torch.no_grad():
        out = fast(torch.randn(64, 4, requires_grad=True))
    assert out.quantized.grad_fn is None


@needs_kernel
def test_training_dither_steps_aside() -> None:
    fast = FSQ([8, 5, 5, 5], fast=True, dither=0.5)
    z = torch.randn(16, 4)
    assert not fast.train()._may_fuse()
    assert fast.eval()._may_fuse() and fast._fused_forward(z) is not None
    assert fast._fused_forward(z.double()) is None


@needs_kernel
def test_compile_uses_reference_ops_and_matches() -> None:
    torch._dynamo.reset()
    fast = FSQ([8, 5, 5, 5], fast=None)
    z = torch.randn(64, 4)
    compiled = torch.compile(fast, backend="aot_eager", fullgraph=True)
    a, b = compiled(z), fast(z)
    assert torch.equal(a.indices, b.indices)
    assert torch.equal(a.quantized, b.quantized)


def test_missing_compiler_falls_back_with_one_log_line(monkeypatch, tmp_path, caplog) -> None:
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("FSQKIT_CACHE_DIR", str(tmp_path))
    build._reset_for_tests()
    try:
        with caplog.at_level(logging.WARNING, logger="fsqkit.fast"):
            auto, ref = FSQ([8, 5, 5, 5]), FSQ([8, 5, 5, 5], fast=False)
            z = torch.randn(50, 4)
            a, b = auto(z), ref(z)
            auto(z)
        assert torch.equal(a.indices, b.indices) and torch.equal(a.quantized, b.quantized)
        lines = [r for r in caplog.records if r.name == "fsqkit.fast"]
        assert len(lines) == 1 and "reference path" in lines[0].getMessage()
        assert build.get_cpu_kernel() is None
        with pytest.raises(RuntimeError, match="unavailable"):
            FSQ([8, 5, 5, 5], fast=True)(z)
    finally:
        monkeypatch.undo()
        build._reset_for_tests()


def test_env_switch_disables_kernel(monkeypatch) -> None:
    monkeypatch.setenv("FSQKIT_NO_FAST_KERNEL", "1")
    build._reset_for_tests()
    try:
        assert build.get_cpu_kernel() is None
        assert "FSQKIT_NO_FAST_KERNEL" in (build.unavailable_reason() or "")
    finally:
        monkeypatch.undo()
        build._reset_for_tests()


def test_fast_argument_is_validated() -> None:
    with pytest.raises(TypeError, match="fast must be"):
        FSQ([8, 5, 5, 5], fast="yes")  # type: ignore[arg-type]
