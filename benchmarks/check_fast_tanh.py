"""Check the fused kernel's fast tanh against ``torch.tanh`` on every float.

The fast tanh (``fsq_cpu_tanh.c``) claims MKL VML's exact bits: it computes
tanh in double precision and hands every lane within 0.03 ulp of a rounding
midpoint to ``vmsTanh``. This script runs it over all 2^32 bit patterns (about
three minutes on two cores) and prints how many results differ from
``torch.tanh`` (must be 0), how many lanes went to MKL, and, for calibration,
how far from a midpoint MKL's own non-correctly-rounded results lie.

    python benchmarks/check_fast_tanh.py [--step 1]
"""

from __future__ import annotations

import argparse
import ctypes
import sys
import time

import numpy as np
import torch

from fsqkit.quantizers._fsq_backends.build import get_cpu_kernel

BAND = 0.03  # AMBIGUOUS in fsq_cpu_tanh.c


def midpoint_distance(t: np.ndarray, r: np.ndarray) -> np.ndarray:
    """|t - r| in units of the spacing from float ``r`` towards ``t``, minus 1/2
    (0 = on the midpoint); ``t`` float64 >= 0, ``r`` its float32 rounding."""
    bits = r.view(np.int32)
    up = t > r.astype(np.float64)
    nb = np.where(up, bits + 1, bits - 1).astype(np.int32).view(np.float32)
    spacing = np.abs(nb.astype(np.float64) - r.astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs(np.abs(t - r.astype(np.float64)) / spacing - 0.5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--step", type=int, default=1, help="check every STEP-th bit pattern")
    ap.add_argument("--chunk-log2", type=int, default=24)
    args = ap.parse_args(argv)
    kernel = get_cpu_kernel()
    if kernel is None or not kernel.fast_tanh:
        print("the fast tanh is not available here (no kernel, no AVX-512, or it failed its check)")
        return 1
    chunk = 1 << args.chunk_log2
    t0 = time.time()
    checked = differ = to_mkl = mkl_not_cr = 0
    worst = 0.0
    for start in range(0, 1 << 32, chunk):
        bits = np.arange(start, start + chunk, args.step, dtype=np.uint64).astype(np.uint32)
        x = torch.from_numpy(bits.view(np.float32))
        ref = torch.tanh(x)
        out = torch.empty_like(x)
        kernel.lib.fsq_tanh(
            ctypes.c_void_p(x.data_ptr()),
            ctypes.c_void_p(out.data_ptr()),
            ctypes.c_int64(x.numel()),
        )
        same = (out.view(torch.int32) == ref.view(torch.int32)) | (out.isnan() & ref.isnan())
        differ += int((~same).sum())
        checked += x.numel()
        a = x.abs().double().numpy()
        fin = np.isfinite(a)
        t = np.tanh(a[fin])
        r = t.astype(np.float32)
        d = midpoint_distance(t, r)
        to_mkl += int((d < BAND).sum()) + int((~fin).sum())
        wrong = np.abs(ref.numpy()[fin]) != r  # MKL not correctly rounded
        if wrong.any():
            mkl_not_cr += int(wrong.sum())
            worst = max(worst, float(d[wrong].max()))
    print(f"checked {checked} bit patterns in {time.time() - t0:.0f} s")
    print(f"fast tanh differs from torch.tanh on: {differ}")
    print(
        f"lanes for vmsTanh (within {BAND} ulp of a midpoint, or NaN/inf): {to_mkl / checked:.2%}"
    )
    print(
        f"MKL not correctly rounded on {mkl_not_cr} inputs; farthest from a midpoint: {worst:.4f} ulp"
    )
    print(f"differ {differ} checked {checked} mkl_not_correctly_rounded {mkl_not_cr}")
    return 0 if differ == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
