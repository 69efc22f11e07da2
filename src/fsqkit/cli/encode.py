"""``fsqkit encode``: images -> token indices.

Two forms:

- ``fsqkit encode FILES_OR_FOLDERS --checkpoint RUN --out OUT.npy``: a few image
  files -> one ``.npy`` array ``(N, h, w)`` (+ ``OUT.npy.json``, the inputs).
- ``fsqkit encode --checkpoint RUN --data SPEC --out DIR``: a whole data set
  (``folder:PATH``, ``wds:PATTERN``, the built-ins), streamed and batched on the
  GPU when there is one, into token shards ``DIR/train/`` and ``DIR/val/`` for
  ``fsqkit train-maskgit --tokens DIR``. Resumable (existing shards are kept);
  under ``torchrun`` each rank encodes a share.
"""

from __future__ import annotations

import argparse
import json
import os

from fsqkit.cli.data_args import add_stream_args, stream_options_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "encode",
        help="encode images (files or a whole data set) to token indices",
        description="Encode image files (or every image in a folder) with a trained tokenizer "
        "into one .npy array (N, h, w) at OUT (and the list of inputs at OUT + '.json'); or, "
        "with --data, a whole data set into token shards OUT/train and OUT/val (int16 .npy "
        "where the codebook fits, labels, manifest.json with the tokenizer's fingerprint) for "
        "`fsqkit train-maskgit --tokens OUT`. Images are resized (short side) and "
        "center-cropped to the tokenizer's image size. --data encoding is streamed, batched, "
        "on the GPU when there is one, resumable (rerun the same command), and runs under "
        "`torchrun --nproc_per_node=N` (each rank encodes a share).",
    )
    p.add_argument("inputs", nargs="*", help="image files or folders (without --data)")
    p.add_argument("--checkpoint", required=True, help="run directory or checkpoint directory")
    p.add_argument("--out", required=True, help="output .npy file, or with --data an output folder")
    p.add_argument(
        "--image-size", type=int, default=None, help="default: the tokenizer's training size"
    )
    d = p.add_argument_group("data sets (--data)")
    d.add_argument(
        "--data", default=None, help="data spec: folder:PATH, wds:PATTERN, embedded, ..."
    )
    d.add_argument("--splits", default="train,val", help="splits to encode (default train,val)")
    d.add_argument("--seed", type=int, default=0, help="seed of the held-out validation split")
    d.add_argument("--batch-size", type=int, default=256)
    d.add_argument(
        "--shard-size", type=int, default=8192, help="images per token shard (folders, built-ins)"
    )
    d.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in an OUT that holds tokens of another tokenizer or data set",
    )
    d.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_stream_args(p, augment=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.data is not None:
        if args.inputs:
            raise ValueError("give either image files/folders or --data, not both")
        return _run_data(args)
    if not args.inputs:
        raise ValueError("nothing to encode: give image files/folders, or --data SPEC")
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


def _run_data(args: argparse.Namespace) -> int:
    import time

    from fsqkit.data.bad_files import BadFiles
    from fsqkit.maskgit.tokens import encode_split
    from fsqkit.tokenizer import Tokenizer
    from fsqkit.training import distributed_session

    if args.out.endswith(".npy"):
        raise ValueError(f"with --data, --out is a folder (token shards), got {args.out!r}")
    if args.image_size is not None:
        raise ValueError(
            "--image-size applies to image files; --data encodes at the tokenizer's size"
        )
    splits = [s for s in args.splits.split(",") if s]
    if not splits or any(s not in ("train", "val") for s in splits):
        raise ValueError(f"--splits must list train and/or val, got {args.splits!r}")
    opts = stream_options_from_args(args)
    with distributed_session(args.device) as info:
        tok = Tokenizer.load(args.checkpoint, map_location=str(info.device))
        bad = BadFiles(opts["max_bad_files"], quiet=not info.is_main)
        extra = {
            "tokenizer_path": os.path.abspath(args.checkpoint),
            "tokenizer_config": tok.cfg.to_dict(),
        }
        for split in splits:
            t0 = time.perf_counter()
            shards = encode_split(
                tok, args.data, split, os.path.join(args.out, split), seed=args.seed,
                val_data=opts["val_data"], bad=bad, cache_dir=args.out,
                workers=opts["workers"] if opts["workers"] is not None else _default_workers(),
                part_size=args.shard_size, batch_size=args.batch_size, dist=info,
                overwrite=args.overwrite, progress=not args.no_progress, extra=extra,
            )  # fmt: skip
            if info.is_main:
                h, w = shards.grid
                print(
                    f"{split}: {len(shards)} images -> {len(shards.manifest['shards'])} shard(s) "
                    f"of {h}x{w} {shards.manifest['dtype']} tokens in {os.path.join(args.out, split)} "
                    f"({time.perf_counter() - t0:.1f} s, {info.world_size} process(es), "
                    f"{bad.count} bad file(s) skipped)"
                )
    return 0


def _default_workers() -> int:
    from fsqkit.data import default_workers

    return default_workers()
