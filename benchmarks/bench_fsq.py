"""Benchmark FSQ: fsqkit (fused fast path and reference path) vs
vector-quantize-pytorch's FSQ vs one ``torch.tanh`` pass (the floor: tanh is the
one transcendental FSQ must compute), all measured in the same run.

    python benchmarks/bench_fsq.py                 # CPU: (2^20, 4) and (64, 4, 64, 64)
    python benchmarks/bench_fsq.py --device cuda   # also prints achieved GB/s
    python benchmarks/bench_fsq.py --quick         # tiny shapes, smoke test

Timings are medians over ``--repeats`` rounds after ``--warmup`` rounds; the
candidates are interleaved round by round, in an order shuffled every round, so
that load on a shared machine and the page faults left by a previous candidate
hit them alike. Ratios are what to compare across machines: ``x tanh`` = time / one
tanh pass over the same tensor (fp32), ``peer/ours`` = vector-quantize-pytorch's
time / ours. "Saved for backward" is the memory the autograd graph keeps between
forward and backward (unique storages, measured with saved_tensors_hooks).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from fsqkit import FSQ

LEVELS = [8, 5, 5, 5]
SHAPES = {
    "full": [("(2^20, 4)", (2**20, 4), False), ("(64, 4, 64, 64)", (64, 4, 64, 64), True)],
    "quick": [("(4096, 4)", (4096, 4), False), ("(2, 4, 16, 16)", (2, 4, 16, 16), True)],
    # GPU: the CPU shapes, then sizes far beyond the L2 cache for the roofline
    "gpu": [
        ("(2^20, 4)", (2**20, 4), False),
        ("(64, 4, 64, 64)", (64, 4, 64, 64), True),
        ("(2^24, 4)", (2**24, 4), False),
        ("(256, 4, 128, 128)", (256, 4, 128, 128), True),
    ],
}


@dataclass
class Candidate:
    name: str
    module: torch.nn.Module | None  # None: the tanh floor
    dtype: torch.dtype = torch.float32
    peer: bool = False


def _peer_module(channel_first: bool) -> torch.nn.Module | None:
    try:
        from vector_quantize_pytorch import FSQ as PeerFSQ
    except ImportError:
        return None
    return PeerFSQ(levels=LEVELS, channel_first=channel_first)


def _call(c: Candidate, z: torch.Tensor) -> torch.Tensor:
    """Quantized output of candidate ``c`` (indices are computed too)."""
    if c.module is None:
        return torch.tanh(z)
    if c.peer:
        # the peer wants (b, n, d) or channel-first images; (N, D) becomes (1, N, D)
        out, _ = c.module(z.unsqueeze(0) if z.ndim == 2 else z)
        return out.view(z.shape)
    return c.module(z).quantized


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time_rounds(
    fns: dict[str, Callable[[], object]],
    device: torch.device,
    warmup: int,
    repeats: int,
    stat: str = "median",
) -> dict[str, float]:
    """Seconds per function (median or min over rounds), rounds interleaved.

    The order is shuffled every round (seeded), so that each candidate follows
    every other one alike: a call right after one that allocated and freed a lot
    (the reference path, the peer) pays fresh page faults for its outputs, which,
    with a fixed order, would always hit the same candidates."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    order = random.Random(0)
    for r in range(warmup + repeats):
        order.shuffle(names)
        for name in names:
            fn = fns[name]
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    reduce = statistics.median if stat == "median" else min
    return {k: reduce(v) for k, v in times.items()}


def saved_bytes(c: Candidate, z: torch.Tensor) -> tuple[int, bool]:
    """Bytes kept for backward by one forward of ``c`` (unique storages), and
    whether the input's own storage is among them (it costs nothing extra)."""
    x = z.detach().clone().requires_grad_()
    storages: dict[int, int] = {}
    input_saved = False

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal input_saved
        st = t.untyped_storage()
        if st.data_ptr() == x.untyped_storage().data_ptr():
            input_saved = True
        else:
            storages[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _call(c, x)
    return sum(storages.values()), input_saved


def ideal_bytes(z: torch.Tensor, mode: str) -> int:
    """Bytes FSQ must move at the least: forward reads z and writes codes and
    int32 indices; backward reads the gradient and z (or anything of z's size
    that gives tanh) and writes the input gradient."""
    n, es = z.numel(), z.element_size()
    fwd = 2 * n * es + 4 * (n // len(LEVELS))
    if mode == "forward":
        return fwd
    return fwd + 3 * n * es


def copy_bandwidth(device: torch.device, nbytes: int = 2**30, repeats: int = 20) -> float:
    """Achievable memory bandwidth (GB/s, bytes read + written) of a large
    device-to-device copy: the roofline the fused kernels are held to."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    t = _time_rounds({"copy": lambda: dst.copy_(src)}, device, 3, repeats)["copy"]
    return 2 * nbytes / t / 1e9


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory in the process (no trimming, no mmap for
    blocks up to 32 MiB), so that an output does not pay fresh page faults
    because the previous candidate's temporaries were handed back to the kernel.
    Without it, medians of the large shapes are bimodal and depend on which
    candidate ran before (several ms on a 16 MiB output here). Applies to every
    candidate alike; ``--system-malloc`` keeps glibc's defaults."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_trim_threshold, 2**31 - 1) == 1
        return ok and libc.mallopt(m_mmap_threshold, 32 * 2**20) == 1
    except (OSError, AttributeError):
        return False


def run(args: argparse.Namespace) -> list[dict]:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows: list[dict] = []
    dtypes = [torch.float32] if args.fp32_only else [torch.float32, torch.bfloat16, torch.float16]
    roofline = copy_bandwidth(device) if device.type == "cuda" else None
    if roofline is not None:
        print(f"device-to-device copy: {roofline:.0f} GB/s (read + write): the roofline")
    shape_set = "quick" if args.quick else ("gpu" if device.type == "cuda" else "full")
    for label, shape, cf in SHAPES[shape_set]:
        z32 = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device) * 2.0
        ours = FSQ(LEVELS, channel_first=cf, fast=None).to(device)
        reference = FSQ(LEVELS, channel_first=cf, fast=False).to(device)
        peer = _peer_module(cf)
        cands = [Candidate("tanh (fp32)", None)]
        for dt in dtypes:
            tag = str(dt).replace("torch.", "")
            cands.append(Candidate(f"fsqkit {tag}", ours, dt))
            if not args.skip_reference:
                cands.append(Candidate(f"fsqkit reference {tag}", reference, dt))
            if peer is not None:
                cands.append(Candidate(f"vector-quantize-pytorch {tag}", peer.to(device), dt, True))
        inputs = {c.name: z32.to(c.dtype) for c in cands}
        for mode in ("forward", "forward+backward"):
            fns: dict[str, Callable[[], object]] = {}
            for c in cands:
                z = inputs[c.name]
                if mode == "forward" or c.module is None:
                    fns[c.name] = _forward_fn(c, z)
                else:
                    fns[c.name] = _fwd_bwd_fn(c, z)
            medians = _time_rounds(fns, device, args.warmup, args.repeats, args.stat)
            floor = medians["tanh (fp32)"]
            for c in cands:
                t = medians[c.name]
                row = {
                    "shape": label,
                    "mode": mode,
                    "impl": c.name,
                    "ms": t * 1e3,
                    "x_tanh": t / floor,
                }
                peer_name = "vector-quantize-pytorch " + c.name.split()[-1]
                if c.name.startswith("fsqkit") and peer_name in medians:
                    row["peer_over_ours"] = medians[peer_name] / t
                if roofline is not None:
                    z = inputs[c.name]
                    moved = 2 * z.numel() * 4 if c.module is None else ideal_bytes(z, mode)
                    row["GB/s"] = moved / t / 1e9
                    row["roofline"] = row["GB/s"] / roofline
                if mode == "forward+backward" and c.module is not None:
                    nbytes, input_saved = saved_bytes(c, inputs[c.name])
                    row["saved_MiB"] = nbytes / 2**20
                    row["saved_x_input"] = nbytes / (
                        inputs[c.name].numel() * inputs[c.name].element_size()
                    )
                    row["input_also_saved"] = input_saved
                rows.append(row)
    return rows


def _forward_fn(c: Candidate, z: torch.Tensor) -> Callable[[], object]:
    def fn() -> object:
        with torch.no_grad():
            return _call(c, z)

    return fn


def _fwd_bwd_fn(c: Candidate, z: torch.Tensor) -> Callable[[], object]:
    x = z.detach().clone().requires_grad_()
    grad = torch.randn_like(z)

    def fn() -> object:
        x.grad = None
        _call(c, x).backward(grad)
        return x.grad

    return fn


def format_table(rows: list[dict]) -> str:
    cols = ["shape", "mode", "impl", "ms", "x_tanh", "peer_over_ours", "saved_MiB", "saved_x_input"]
    if any("GB/s" in r for r in rows):
        cols += ["GB/s", "roofline"]
    head = {
        "x_tanh": "x tanh",
        "peer_over_ours": "peer/ours",
        "saved_MiB": "saved for bwd (MiB)",
        "saved_x_input": "saved / input",
        "roofline": "of copy GB/s",
    }
    lines = [
        "| " + " | ".join(head.get(c, c) for c in cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            if c == "roofline" and isinstance(v, float):
                v = f"{100 * v:.0f}%"
            elif isinstance(v, float):
                v = f"{v:.2f}"
            if c == "saved_MiB" and r.get("input_also_saved"):
                v = f"{v} (+input)"
            cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument(
        "--stat",
        choices=["median", "min"],
        default="median",
        help="min estimates the uncontended time on a busy shared machine",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--quick", action="store_true", help="tiny shapes (smoke test)")
    p.add_argument("--fp32-only", action="store_true")
    p.add_argument("--skip-reference", action="store_true", help="skip fsqkit's reference path")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.add_argument(
        "--system-malloc",
        action="store_true",
        help="keep glibc's default trimming (outputs then often pay fresh page faults)",
    )
    args = p.parse_args(argv)
    memory = "glibc malloc defaults"
    if not args.system_malloc and args.device == "cpu":
        memory = "freed memory kept (mallopt)" if keep_freed_memory() else memory
    from fsqkit.quantizers._fsq_backends.build import get_cpu_kernel

    if args.device == "cpu":
        kernel = get_cpu_kernel()
        path = f"fused CPU kernel: {f'yes (tanh = {kernel.tanh_name})' if kernel else 'no'}"
    else:
        from fsqkit.quantizers._fsq_backends.gpu import triton_kernels

        name = torch.cuda.get_device_name(torch.device(args.device))
        path = f"GPU {name}, Triton kernels: {'yes' if triton_kernels() else 'no'}"
    threads = args.threads or torch.get_num_threads()
    print(
        f"torch {torch.__version__}, device {args.device}, threads {threads}, levels {LEVELS}, "
        f"{args.stat} of {args.repeats} rounds, {path}, {memory}"
    )
    rows = run(args)
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
