"""The Triton kernels' indexing, layouts and formulas, checked on CPU through
Triton's interpreter (``TRITON_INTERPRET=1``) against the reference path: codes
and indices must match exactly (on these seeded inputs none lies within the
stand-in's error of a bin edge). The interpreter has no libdevice, so ``tanh``
there is an exp-based stand-in and gradients are compared to 1e-5 relative;
bit-exact results are checked on a GPU by ``test_fsq_gpu.py``. Skipped where
Triton is not installed (it is in the ``dev`` extra on x86-64 Linux)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

CASES = [
    # levels, shape, channel_first, symmetric, num_codebooks, dtype
    ([8, 5, 5, 5], (3001, 4), False, False, 1, "float32"),
    ([8, 5, 5, 5], (2, 4, 9, 13), True, False, 1, "float32"),
    ([7, 6, 5], (513, 3), False, False, 1, "float32"),
    ([8, 5, 5], (4, 33, 9), False, False, 3, "float32"),
    ([8, 5, 5], (2, 9, 5, 7), True, False, 3, "float32"),
    ([8, 5, 5, 5], (777, 4), False, True, 1, "float32"),
    ([7, 6, 2], (2, 3, 9, 13), True, True, 1, "float32"),
    ([16, 4], (100, 2), False, False, 1, "float16"),
    ([8, 5, 5, 5], (2, 4, 5, 7), True, False, 1, "bfloat16"),
]


def run_case(levels, shape, channel_first, symmetric, num_codebooks, dtype_name) -> str:
    """The fused path with the Triton specs (interpreted) against the reference;
    '' if all agree."""
    from fsqkit import FSQ
    from fsqkit.quantizers._fsq_backends import gpu as fsq_gpu
    from fsqkit.quantizers._fsq_backends.fused import layout, run_fused

    dtype = getattr(torch, dtype_name)
    ref = FSQ(levels, symmetric=symmetric, channel_first=channel_first,
              num_codebooks=num_codebooks, fast=False, check_finite=False)  # fmt: skip
    z = (torch.randn(shape) * 2.5).to(dtype)
    z.view(-1)[:4] = torch.tensor([float("inf"), float("-inf"), 0.0, float("nan")]).to(dtype)

    def spec_for(c, x, geometry, out_dtype, check):
        return fsq_gpu.GpuSpec(c, x.device, geometry, fma=True, out_dtype=out_dtype)

    z1, z2 = z.clone().requires_grad_(), z.clone().requires_grad_()
    codes, indices = run_fused(z1, ref.constants, channel_first, dtype, False, spec_for)
    out = ref(z2)
    g = torch.randn(shape).to(dtype)
    codes.backward(g)
    out.quantized.backward(g)
    problems = []
    # bf16/fp16 codes: the interpreter's float32 -> 16-bit cast may round differently
    # from the GPU's (round to nearest even); compare in float32 there.
    nan = torch.isnan(out.quantized)
    same_codes = torch.equal(torch.isnan(codes), nan) and (
        torch.equal(codes[~nan], out.quantized[~nan])
        if dtype == torch.float32
        else ((codes.float() - out.quantized.float())[~nan].abs().max().item() <= 2**-7)
    )
    if not same_codes:
        problems.append("codes")
    if not torch.equal(indices.long(), out.indices.long()):
        problems.append("indices")
    x, geometry, _ = layout(z, channel_first)
    checking = fsq_gpu.GpuSpec(ref.constants, x.device, geometry, fma=True, check=True)
    if not checking.run(x, keep=False)[3]:
        problems.append("nonfinite flag")
    finite = torch.isfinite(z2.grad)
    scale = z2.grad.float()[finite].abs().max().item()
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    error = (z1.grad.float() - z2.grad.float())[finite].abs().max().item()
    if not torch.equal(torch.isfinite(z1.grad), finite) or error > tol * scale:
        problems.append("gradient")
    return ",".join(problems)


def main() -> int:
    from fsqkit.quantizers._fsq_backends import gpu as fsq_gpu

    failures = []
    for rows in (False, True):  # the 2-D tile kernels and the opt-in row kernels
        fsq_gpu.ROW_KERNELS = rows
        torch.manual_seed(0)
        for case in CASES:
            problems = run_case(*case)
            print("rows" if rows else "tiles", case, problems or "ok")
            if problems:
                failures.append((rows, case, problems))
    return 1 if failures else 0


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
def test_triton_kernels_under_the_interpreter() -> None:
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run(
        [sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


if __name__ == "__main__":
    sys.exit(main())


def test_a_failing_probe_falls_back_with_one_log_line(monkeypatch, caplog) -> None:
    """Whatever breaks in the probe (an old Triton, a driver error) disables the
    CUDA kernels with a warning instead of failing the user's forward pass."""
    from fsqkit.quantizers._fsq_backends import gpu as fsq_gpu

    def broken(device):
        raise RuntimeError("no kernel for you")

    monkeypatch.setattr(fsq_gpu, "_run_probe", broken)
    monkeypatch.setattr(fsq_gpu, "_probed", {})
    with caplog.at_level("WARNING", logger="fsqkit.fast"):
        assert fsq_gpu.probe(torch.device("cpu")) is None
        assert fsq_gpu.probe(torch.device("cpu")) is None  # remembered, no second line
    lines = [r for r in caplog.records if "reference path" in r.getMessage()]
    assert len(lines) == 1 and "no kernel for you" in lines[0].getMessage()
