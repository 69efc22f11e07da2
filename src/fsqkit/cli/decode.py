"""``fsqkit decode``: a ``.npy`` array of token indices -> PNG images."""

from __future__ import annotations

import argparse
import os


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "decode",
        help="decode token indices (.npy) to PNG images",
        description="Decode an integer array (N, h, w) written by `fsqkit encode` (or by a "
        "stage-II model) with a trained tokenizer; writes OUT/000000.png, ...",
    )
    p.add_argument("tokens", help=".npy file of integer indices (N, h, w) or (h, w)")
    p.add_argument("--checkpoint", required=True, help="run directory or checkpoint directory")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from fsqkit.data.io import save_image
    from fsqkit.tokenizer import Tokenizer

    if not os.path.isfile(args.tokens):
        raise FileNotFoundError(f"token file {args.tokens!r} does not exist")
    try:
        arr = np.load(args.tokens, allow_pickle=False)
    except (ValueError, EOFError, OSError) as err:  # garbage, empty or truncated file
        raise ValueError(
            f"cannot read {args.tokens!r} as a .npy array: {err or type(err).__name__}"
        ) from None
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{args.tokens!r} must hold integer token indices, got dtype {arr.dtype}")
    tok = Tokenizer.load(args.checkpoint)
    idx = torch.from_numpy(arr.astype(np.int64))
    if idx.ndim == 2:
        idx = idx[None]
    os.makedirs(args.out, exist_ok=True)
    n = 0
    for i in range(0, idx.shape[0], 64):
        for img in tok.decode(idx[i : i + 64]):
            save_image(img, os.path.join(args.out, f"{n:06d}.png"))
            n += 1
    print(f"decoded {n} image(s) -> {args.out}/")
    return 0
