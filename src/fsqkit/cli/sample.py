"""``fsqkit sample``: generate images with a trained MaskGIT model and its tokenizer."""

from __future__ import annotations

import argparse
import math


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample",
        help="sample images from a MaskGIT model (stage II)",
        description="Iterative parallel decoding (cosine schedule, choice temperature, optional "
        "classifier-free guidance), decoded through the tokenizer the model was trained on. "
        "Saves an image grid, optionally the token arrays. Deterministic for a --seed.",
    )
    p.add_argument("--maskgit", required=True, help="MaskGIT run or checkpoint directory")
    p.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer to decode with (default: the one it was trained on)",
    )
    p.add_argument("--num", type=int, default=64, help="number of samples")
    p.add_argument(
        "--class",
        dest="class_label",
        type=int,
        default=None,
        help="class label (conditional models)",
    )
    p.add_argument("--steps", type=int, default=12, help="decoding steps T")
    p.add_argument("--guidance", type=float, default=0.0, help="classifier-free guidance scale α")
    p.add_argument(
        "--temperature", type=float, default=1.0, help="token sampling temperature (0: greedy)"
    )
    p.add_argument(
        "--choice-temperature",
        type=float,
        default=4.5,
        help="confidence noise scale, annealed to 0",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", default="samples.png", help="PNG grid")
    p.add_argument(
        "--save-tokens", default=None, help="also save the tokens (N, h, w) to this .npy file"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--raw-weights",
        action="store_true",
        help="sample with the last optimizer step's weights, not the run's EMA (if it kept one)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from fsqkit.data.io import save_image_grid
    from fsqkit.maskgit.sampling import sample_tokens
    from fsqkit.maskgit.train import load_pipeline

    if args.num < 1:
        raise ValueError(f"--num must be >= 1, got {args.num}")
    if args.save_tokens and not args.save_tokens.endswith(".npy"):
        raise ValueError(f"--save-tokens must end in .npy, got {args.save_tokens!r}")
    model, tokenizer = load_pipeline(
        args.maskgit, args.tokenizer, map_location=args.device, ema=not args.raw_weights
    )
    tokens = sample_tokens(
        model,
        args.num,
        args.class_label,
        num_steps=args.steps,
        guidance=args.guidance,
        choice_temperature=args.choice_temperature,
        temperature=args.temperature,
        seed=args.seed,
        batch_size=args.batch_size,
    )
    images = torch.cat(
        [
            tokenizer.decode(tokens[i : i + 256].to(args.device)).cpu()
            for i in range(0, len(tokens), 256)
        ]
    )
    cols = math.ceil(math.sqrt(args.num))
    pad = cols * math.ceil(args.num / cols) - args.num
    padded = torch.cat([images, torch.ones(pad, *images.shape[1:])])
    save_image_grid(list(padded.split(cols)), args.out)
    if args.save_tokens:
        np.save(args.save_tokens, tokens.numpy().astype(np.int32))
    what = f"class {args.class_label}" if args.class_label is not None else "no class"
    print(
        f"{args.num} samples ({what}, {args.steps} steps, guidance {args.guidance}) -> {args.out}"
    )
    return 0
