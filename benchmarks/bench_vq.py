"""VQ forward+backward time and peak memory: fsqkit.VectorQuantizer vs
vector-quantize-pytorch's VectorQuantize (comparison only), same run, same data.

Each (implementation, K) runs in its own subprocess, so peak memory is honest:
``peak`` is the process's ru_maxrss after the timed steps minus its RSS just
before the first forward (torch import, model and inputs excluded). Timing is the
median of ``--repeats`` train-mode forward+backward steps after one warm-up.
Ratios are fsqkit / vector-quantize-pytorch (< 1 means fsqkit is faster/leaner).

    python benchmarks/bench_vq.py                     # N=8192, D=256, K=2^10..2^16
    python benchmarks/bench_vq.py --memory-check      # fsqkit only: N=65536, D=256, K=2^16
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

from proc_memory import rss_kib


def _child(impl: str, k: int, n: int, d: int, repeats: int) -> None:
    import torch

    torch.manual_seed(0)
    if impl == "fsqkit":
        from fsqkit import VectorQuantizer

        vq = VectorQuantizer(d, k, commitment_weight=0.25)
        step = lambda z: vq(z)
        loss_of = lambda out: out.quantized.square().mean() + out.aux_loss
    else:
        from vector_quantize_pytorch import VectorQuantize

        vq = VectorQuantize(dim=d, codebook_size=k, decay=0.99, commitment_weight=0.25)
        step = lambda z: vq(z)
        loss_of = lambda out: out[0].square().mean() + out[2].sum()
    vq.train()
    z = torch.randn(1, n, d, requires_grad=True)
    base = rss_kib()
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        loss_of(step(z)).backward()
        if i:
            times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    print(json.dumps({"time_s": statistics.median(times), "peak_mib": peak / 1024}))


def _measure(impl: str, k: int, n: int, d: int, repeats: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", impl, str(k), str(n), str(d), str(repeats)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr else "failed"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        impl, k, n, d, r = sys.argv[2:7]
        _child(impl, int(k), int(n), int(d), int(r))
        return
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=8192, help="vectors per batch")
    p.add_argument("--d", type=int, default=256, help="vector dimension")
    p.add_argument("--ks", default="10,12,14,16", help="log2 codebook sizes")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--memory-check", action="store_true", help="fsqkit only, N=65536, K=2^16")
    a = p.parse_args()
    if a.memory_check:
        r = _measure("fsqkit", 2**16, 65536, a.d, 1)
        print(f"fsqkit N=65536 D={a.d} K=2^16: {r}")
        return
    print(f"N={a.n} D={a.d}, train-mode forward+backward, median of {a.repeats}")
    print(
        f"{'K':>7} {'fsqkit s':>9} {'vqp s':>9} {'t ratio':>8} {'fsqkit MiB':>11} {'vqp MiB':>9} {'mem ratio':>9}"
    )
    for e in (int(x) for x in a.ks.split(",")):
        ours = _measure("fsqkit", 2**e, a.n, a.d, a.repeats)
        theirs = _measure("vqp", 2**e, a.n, a.d, a.repeats)
        if "error" in ours or "error" in theirs:
            print(f"  2^{e}: fsqkit {ours}  vector-quantize-pytorch {theirs}")
            continue
        print(
            f"   2^{e:<3} {ours['time_s']:9.3f} {theirs['time_s']:9.3f} "
            f"{ours['time_s'] / theirs['time_s']:8.2f} {ours['peak_mib']:11.0f} "
            f"{theirs['peak_mib']:9.0f} {ours['peak_mib'] / max(theirs['peak_mib'], 1e-9):9.2f}"
        )


if __name__ == "__main__":
    main()
