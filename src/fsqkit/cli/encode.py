"""``fsqkit encode``: image files -> a ``.npy`` array of token indices."""

from __future__ import annotations

import argparse
import json
import os


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "encode",
        help="encode images to token indices (.npy)",
        description="Encode image files (or every image in a folder) with a trained tokenizer. "
        "Images are resized (short side) and center-cropped to the tokenizer's image size. "
        "Writes an int array (N, h, w) to OUT and the list of inputs to OUT + '.json'.",
    )
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--checkpoint", required=True, help="run directory or checkpoint directory")
    p.add_argument("--out", required=True, help="output .npy file")
    p.add_argument(
        "--image-size", type=int, default=None, help="default: the tokenizer's training size"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from fsqkit.data.io import expand_image_paths, load_image
    from fsqkit.tokenizer import Tokenizer

    if not args.out.endswith(".npy"):
        raise ValueError(f"--out must end in .npy, got {args.out!r}")
    tok = Tokenizer.load(args.checkpoint)
    size = args.image_size or tok.cfg.image_size
    files = expand_image_paths(args.inputs)
    images = torch.stack([load_image(f, size) for f in files])
    indices = torch.cat([tok.encode(images[i : i + 64]) for i in range(0, len(images), 64)])
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    np.save(args.out, indices.numpy())
    with open(args.out + ".json", "w") as f:
        json.dump({"inputs": files, "checkpoint": args.checkpoint, "image_size": size}, f, indent=2)
    print(f"encoded {len(files)} image(s) -> {args.out} {tuple(indices.shape)} {indices.dtype}")
    return 0
