"""Tuning aid for the Triton FSQ kernels (GPU only): achieved GB/s of the forward
and backward kernels (2-D tiles of several sizes and warp counts, and the opt-in
1-D row programs, ``gpu.ROW_KERNELS``), next to plain
Triton streaming kernels that bound what the layout can reach, and the fixed
per-call cost of the module. Kernel times: CUDA events around back-to-back
calls (see :func:`bench`).

    python benchmarks/triton_variants.py
"""

from __future__ import annotations

from functools import partial

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from fsqkit import FSQ
from fsqkit.quantizers._fsq_backends import gpu as fsq_gpu
from fsqkit.quantizers._fsq_backends.fused import layout


@triton.jit
def _stream2(a_ptr, b_ptr, out_ptr, n, BLOCK: tl.constexpr, TANH: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    a = tl.load(a_ptr + offs, mask=m, other=0.0)
    b = tl.load(b_ptr + offs, mask=m, other=0.0)
    if TANH:
        t = libdevice.tanh(a)
        r = b * (1.0 - t * t)
    else:
        r = a * b
    tl.store(out_ptr + offs, r, mask=m)


def bench(fn, iters: int = 20) -> float:
    """Seconds per call of ``fn``: CUDA events around ``iters`` back-to-back calls
    after three warm-up calls (host overhead overlaps the GPU work). A fixed count,
    not ``triton.testing.do_bench``: a session's do_bench of the FSQ kernels did
    not finish within its time limit, for a reason not found yet."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters * 1e-3


def report(label: str, gbs: float, copy: float) -> None:
    print(f"{label:55s} {gbs:8.0f} GB/s  {100 * gbs / copy:4.0f}% of copy", flush=True)


def copy_bandwidth(dev: torch.device) -> float:
    src = torch.empty(2**28, device=dev)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / bench(partial(dst.copy_, src)) / 1e9


def main() -> None:
    dev = torch.device("cuda")
    copy = copy_bandwidth(dev)
    print(f"{torch.cuda.get_device_name(dev)}: copy {copy:.0f} GB/s", flush=True)
    for label, shape, cf in (
        ("(2^24, 4)", (2**24, 4), False),
        ("(256, 4, 128, 128)", (256, 4, 128, 128), True),
    ):
        f = FSQ([8, 5, 5, 5], channel_first=cf).to(dev)
        z = torch.randn(shape, device=dev) * 2
        g = torch.randn(shape, device=dev)
        n = z.numel()
        out = torch.empty_like(z)
        for tanh in (False, True):
            for block in (1024, 4096):
                launch = _stream2[(triton.cdiv(n, block),)]
                t = bench(partial(launch, z, g, out, n, BLOCK=block, TANH=tanh))
                kind = "1-D stream +tanh" if tanh else "1-D stream"
                report(f"{label} {kind} {block}", 12 * n / t / 1e9, copy)
        x, geometry, _ = layout(z, f.channel_first)
        fma = fsq_gpu.probe(dev)
        configs = [("tiles", 4096, 8), ("rows", 1024, 4), ("tiles", 1024, 4), ("rows", 2048, 4),
                   ("tiles", 2048, 4), ("rows", 512, 4), ("tiles", 8192, 8)]  # fmt: skip
        for kind, size, warps in configs:
            fsq_gpu.ROW_KERNELS = kind == "rows"
            fsq_gpu.ROW_BLOCK = size
            fsq_gpu.TILE_ELEMENTS, fsq_gpu.NUM_WARPS = size, warps
            spec = fsq_gpu.GpuSpec(f.constants, dev, geometry, bool(fma))
            tf = bench(partial(spec.forward, x, torch.float32))
            tb = bench(partial(spec.backward, g, x, torch.float32))
            name = f"{kind} {size}" + (f" warps {warps}" if kind == "tiles" else "")
            report(f"{label} forward {name}", (8 * n + n) / tf / 1e9, copy)
            report(f"{label} backward {name}", 12 * n / tb / 1e9, copy)
        fsq_gpu.ROW_KERNELS, fsq_gpu.ROW_BLOCK = False, 1024
        fsq_gpu.TILE_ELEMENTS, fsq_gpu.NUM_WARPS = 4096, None
    # fixed cost per module call at a small size (host side dominates)
    small = torch.randn(2**20, 4, device=dev)
    for check in (True, False):
        f = FSQ([8, 5, 5, 5], check_finite=check).to(dev)
        ref = FSQ([8, 5, 5, 5], check_finite=check, fast=False).to(dev)
        with torch.no_grad():
            print(
                f"(2^20, 4) module call, check_finite={check}: fsqkit "
                f"{bench(lambda f=f: f(small)) * 1e6:.0f} us, reference "
                f"{bench(lambda r=ref: r(small)) * 1e6:.0f} us"
            )


if __name__ == "__main__":
    main()
