"""UViM prediction speed: ``UViM.predict`` (the fast path) against its reference
path (``fast=False``: the general token decoder on full ``(B, S, K)`` logits and
every network on the whole batch, the code before the fast path), same model,
same scenes, same run, alternating.

The models have the UViM demo's layout (32x32 scenes, base 16, ``1,2,2``: 8x8
tokens; stage II width 64, depth 2, 4 masked decoding steps) with seeded random
weights: prediction cost does not depend on the weights. Prints per path the
median wall time of ``--repeats`` calls, scenes/s, user and system CPU seconds
per call, and the speed-up; checks that both paths give the same predictions.

    python benchmarks/bench_uvim_predict.py                       # 512 scenes, one thread
    python benchmarks/bench_uvim_predict.py --decoder autoregressive --scenes 128
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from fsqkit.data.dense import build_dense_dataset
from fsqkit.uvim import Oracle, OracleConfig, Stage2Config, TokenPredictor, UViM
from fsqkit.uvim.presets import quantizer_spec


def build_model(task: str, quantizer: str, decoder: str) -> UViM:
    torch.manual_seed(0)
    name, kwargs, latent = quantizer_spec(quantizer)
    ocfg = OracleConfig(
        task=task, quantizer=name, quantizer_kwargs=kwargs, latent_channels=latent,
        image_size=32, base_channels=16, channel_mult=(1, 2, 2),
    )  # fmt: skip
    oracle = Oracle(ocfg)
    s2 = Stage2Config.from_oracle(
        ocfg, oracle.codebook_size, dim=64, depth=2, decode_steps=4, decoder=decoder
    )
    return UViM(oracle, TokenPredictor(s2)).eval()


def timed(
    model: UViM, images: torch.Tensor, fast: bool
) -> tuple[float, float, float, torch.Tensor]:
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    out = model.predict(images, fast=fast)
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    return wall, r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenes", type=int, default=512)
    p.add_argument("--task", default="depth", choices=["depth", "colorize", "panoptic"])
    p.add_argument("--quantizer", default="fsq", help="fsq (4375 codes), vq or vq_split (4096)")
    p.add_argument("--decoder", default="masked", choices=["masked", "autoregressive"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the demo uses 1)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = build_model(args.task, args.quantizer, args.decoder)
    images = build_dense_dataset("scenes", "val", num=args.scenes).batch(slice(None)).image
    model.predict(images[:32])  # warm-up of both paths
    model.predict(images[:32], fast=False)
    runs: dict[str, list[tuple[float, float, float]]] = {"reference": [], "fast": []}
    outputs = {}
    for _ in range(args.repeats):
        for name, fast in (("reference", False), ("fast", True)):
            wall, user, system, outputs[name] = timed(model, images, fast)
            runs[name].append((wall, user, system))
    same = torch.equal(outputs["reference"], outputs["fast"])
    diff = (outputs["reference"].double() - outputs["fast"].double()).abs().max().item()
    print(
        f"UViM.predict, {args.scenes} scenes of 32x32, task {args.task}, {args.quantizer} "
        f"({model.oracle.codebook_size} codes), {args.decoder} decoder, {args.threads} "
        f"thread(s), median of {args.repeats}"
    )
    print("| path | s per call | scenes/s | user s | system s |")
    print("|---|---|---|---|---|")
    med = {}
    for name, rows in runs.items():
        med[name] = [statistics.median(r[i] for r in rows) for i in range(3)]
        wall, user, system = med[name]
        print(f"| {name} | {wall:.2f} | {args.scenes / wall:.0f} | {user:.2f} | {system:.2f} |")
    print(f"speed-up (reference / fast): {med['reference'][0] / med['fast'][0]:.2f}x")
    print(f"same predictions: {same} (max abs difference {diff:.3g})")


if __name__ == "__main__":
    main()
