"""ResidualFSQ's per-stage scale, measured: relative error of the reconstruction
of the bounded value ``x`` after 1..S stages, per level, for ``stage_scale="L-1"``
(stages decompose a uniform grid) and ``"L"`` (minimax; vector-quantize-pytorch's
convention), and how many distinct values one dimension can take.

    python benchmarks/residual_scale.py                # levels [8, 5, 5, 3], 6 stages
    python benchmarks/residual_scale.py --levels 8 8 8 --stages 4

Relative error: RMS of ``decode(first n stages) - x`` over RMS of ``x``, on
``--samples`` inputs ``2 * N(0, 1)`` (seeded).
"""

from __future__ import annotations

import argparse
import sys

import torch

from fsqkit import ResidualFSQ


def relative_errors(levels: list[int], stages: int, scale: str, samples: int) -> torch.Tensor:
    """``(stages, D)``: relative RMS error after ``n = 1..stages`` stages, per dimension."""
    q = ResidualFSQ(levels, num_stages=stages, stage_scale=scale).eval()
    z = 2 * torch.randn(samples, len(levels), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x = q.bounded(z).double()
        indices = q(z).indices
        rms = x.square().mean(0).sqrt()
        rows = [
            (q.indices_to_codes(indices, n).double() - x).square().mean(0).sqrt() / rms
            for n in range(1, stages + 1)
        ]
    return torch.stack(rows)


def distinct_values(level: int, stages: int, scale: str) -> int:
    """How many distinct values one dimension with ``level`` levels reaches."""
    q = ResidualFSQ([level], num_stages=stages, stage_scale=scale, symmetric=level == 2)
    idx = torch.cartesian_prod(*[torch.arange(level)] * stages).reshape(-1, stages)
    return len(torch.unique(q.indices_to_codes(idx)[:, 0]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--levels", type=int, nargs="+", default=[8, 5, 5, 3])
    p.add_argument("--stages", type=int, default=6)
    p.add_argument("--samples", type=int, default=200_000)
    args = p.parse_args(argv)
    levels, stages = args.levels, args.stages
    print(f"levels {levels}, relative RMS error of x after n stages, {args.samples} samples")
    errors = {s: relative_errors(levels, stages, s, args.samples) for s in ("L-1", "L")}
    head = " | ".join(f"L={v} {s}" for v in levels for s in ("L-1", "L"))
    print(f"| stages | {head} |")
    print("|---" * (1 + 2 * len(levels)) + "|")
    for n in range(stages):
        cells = " | ".join(
            f"{errors[s][n, d]:.2e}" for d in range(len(levels)) for s in ("L-1", "L")
        )
        print(f"| {n + 1} | {cells} |")
    counts = min(stages, 4)
    print(f"\ndistinct values of one dimension after {counts} stages:")
    for v in sorted(set(levels)):
        print(f"  L={v}: 'L-1' {distinct_values(v, counts, 'L-1')}, 'L' {distinct_values(v, counts, 'L')}"
              f" (of {v}^{counts} = {v**counts} index combinations)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
