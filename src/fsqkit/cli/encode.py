"""``fsqkit encode``: image files -> a ``.npy`` array of token indices."""

from __future__ import annotations

import argparse
import json
import os

from fsqkit.data.files import IMAGE_EXTENSIONS


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


def _expand(inputs: list[str]) -> list[str]:
    files: list[str] = []
    for path in inputs:
        if os.path.isdir(path):
            found = sorted(
                os.path.join(path, f)
                for f in os.listdir(path)
                if f.lower().endswith(IMAGE_EXTENSIONS)
            )
            if not found:
                raise ValueError(f"no images found in folder {path!r}")
            files += found
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise FileNotFoundError(f"input {path!r} does not exist")
    return files


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from fsqkit.data.io import load_image
    from fsqkit.tokenizer import Tokenizer

    if not args.out.endswith(".npy"):
        raise ValueError(f"--out must end in .npy, got {args.out!r}")
    tok = Tokenizer.load(args.checkpoint)
    size = args.image_size or tok.cfg.image_size
    files = _expand(args.inputs)
    images = torch.stack([load_image(f, size) for f in files])
    indices = torch.cat([tok.encode(images[i : i + 64]) for i in range(0, len(images), 64)])
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    np.save(args.out, indices.numpy())
    with open(args.out + ".json", "w") as f:
        json.dump({"inputs": files, "checkpoint": args.checkpoint, "image_size": size}, f, indent=2)
    print(f"encoded {len(files)} image(s) -> {args.out} {tuple(indices.shape)} {indices.dtype}")
    return 0
