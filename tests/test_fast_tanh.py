"""The kernel's fast tanh (fsq_cpu_tanh.c) returns MKL vmsTanh's bits, i.e.
``torch.tanh``'s, on every input class: the cases MKL does not round correctly,
the ones it hands to MKL, specials, tiny and large magnitudes, any length."""

from __future__ import annotations

import ctypes
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from fsqkit.quantizers._fsq_backends import build

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "check_fast_tanh.py"


def _kernel() -> build.CpuKernel | None:
    return build.get_cpu_kernel()


def _candidate_here() -> bool:
    """Where the fast tanh exists: an AVX-512 build with MKL's tanh."""
    k = _kernel()
    avx512 = torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    return k is not None and avx512 and k.tanh_name == "VMSTANH_64_"


def _on_here() -> bool:
    """Where it also passed the load-time check against this machine's vmsTanh
    (MKL takes other code paths on other CPUs, e.g. Intel's, and rounds
    differently there; the guard then leaves the fast tanh off)."""
    return _candidate_here() and _kernel().fast_tanh_verified


needs_fast_tanh = pytest.mark.skipif(
    not _on_here(),
    reason="fast tanh needs the AVX-512 kernel and MKL's tanh, and passes its load check "
    "only where MKL rounds as on the CPUs it was calibrated on",
)


@pytest.mark.skipif(
    not _candidate_here() or _on_here(), reason="only where the load check refused it"
)
def test_refusal_is_justified() -> None:
    """Where the load check turned the fast tanh off, forcing it on really does
    give other bits than torch.tanh on the check's own inputs (the refusal is
    not a false alarm), and switched off the kernel's tanh is torch's again."""
    k = _kernel()
    g = torch.Generator().manual_seed(4321)
    x = torch.cat([build._tanh_probe(), torch.rand(1 << 19, generator=g) * 20 - 10]).contiguous()
    try:
        assert build._switch_fast_tanh(k.lib, True)
        forced = kernel_tanh(x)
    finally:
        build._switch_fast_tanh(k.lib, False)
    ref = torch.tanh(x)
    assert not torch.equal(forced.view(torch.int32), ref.view(torch.int32))
    assert not k.fast_tanh
    assert_same_bits(kernel_tanh(x), ref)


def kernel_tanh(x: torch.Tensor) -> torch.Tensor:
    """The kernel's tanh primitive (the fast one unless switched off)."""
    x = x.contiguous()
    out = torch.empty_like(x)
    _kernel().lib.fsq_tanh(
        ctypes.c_void_p(x.data_ptr()), ctypes.c_void_p(out.data_ptr()), ctypes.c_int64(x.numel())
    )
    return out


def assert_same_bits(out: torch.Tensor, ref: torch.Tensor) -> None:
    same = (out.view(torch.int32) == ref.view(torch.int32)) | (out.isnan() & ref.isnan())
    bad = (~same).nonzero().flatten()
    assert bad.numel() == 0, f"{bad.numel()} differ, first inputs at {bad[:5].tolist()}"


@needs_fast_tanh
def test_on_where_expected() -> None:
    k = _kernel()
    assert k.fast_tanh_verified and k.fast_tanh


@needs_fast_tanh
def test_matches_torch_where_mkl_is_not_correctly_rounded() -> None:
    """The inputs on which MKL's result is not the correctly rounded tanh are the
    ones a correctly rounded fast path would get wrong; there must be some in
    the sample, and the kernel must reproduce MKL on every one."""
    g = torch.Generator().manual_seed(7)
    x = torch.rand(1 << 22, generator=g) * 9 - 4.5
    mkl = torch.tanh(x)
    correctly_rounded = torch.tanh(x.double()).float()
    odd = x[mkl != correctly_rounded]
    assert odd.numel() > 100
    assert _kernel().fast_tanh
    assert_same_bits(kernel_tanh(odd), torch.tanh(odd))
    assert_same_bits(kernel_tanh(x), mkl)


@needs_fast_tanh
def test_specials_tiny_and_large() -> None:
    tiny = torch.tensor([2.0**-125, 2.0**-126, 2.0**-130, 1e-45, 2.0**-124, 2.0**-13, 2.0**-12])
    large = torch.tensor([9.0, 9.01, 9.02, 9.1, 15.0, 19.99, 20.0, 20.01, 88.0, 3e38])
    special = torch.tensor([0.0, float("inf"), float("nan")])
    x = torch.cat([tiny, large, special])
    x = torch.cat([x, -x, torch.nextafter(x, torch.zeros(()))])
    x = torch.cat([x, (torch.rand(1 << 16) * 2 - 1) * 2.0**-100, torch.randn(1 << 16) * 1e-3])
    out = kernel_tanh(x)
    assert_same_bits(out, torch.tanh(x))
    assert out[x == 0].signbit().tolist() == x[x == 0].signbit().tolist()


@needs_fast_tanh
@pytest.mark.parametrize("n", [1, 15, 16, 17, 31, 2047, 2048, 2049, 16383, 16385, 40001])
def test_any_length(n: int) -> None:
    x = torch.randn(n) * 3
    assert_same_bits(kernel_tanh(x), torch.tanh(x))


@needs_fast_tanh
def test_switch_off_and_on() -> None:
    k = _kernel()
    x = torch.randn(50000) * 2
    try:
        assert k.set_fast_tanh(False) is False
        assert_same_bits(kernel_tanh(x), torch.tanh(x))
    finally:
        assert k.set_fast_tanh(True) is True


def test_cannot_be_forced_on_without_the_check() -> None:
    k = _kernel()
    if k is None:
        pytest.skip("no kernel here")
    was = (k.fast_tanh_verified, k.fast_tanh)
    try:
        k.fast_tanh_verified = False
        assert k.set_fast_tanh(True) is False
    finally:
        k.fast_tanh_verified = was[0]
        k.set_fast_tanh(was[1])


@needs_fast_tanh
def test_check_script_on_a_sample_of_all_floats(capsys) -> None:
    spec = importlib.util.spec_from_file_location("check_fast_tanh", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_fast_tanh"] = module
    spec.loader.exec_module(module)
    assert module.main(["--step", "1021"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1].split()
    stats = dict(zip(last[::2], map(int, last[1::2])))
    assert stats["differ"] == 0
    assert stats["checked"] > 4_000_000
    assert stats["mkl_not_correctly_rounded"] > 0
