"""``fsqkit train-maskgit``: train a MaskGIT transformer (stage II) on a tokenizer's tokens.

Runs single-process, or under ``torchrun --nproc_per_node=N`` with
DistributedDataParallel, through the same trainer as ``train-tokenizer``.
"""

from __future__ import annotations

import argparse
import os

from fsqkit.cli.data_args import add_stream_args, stream_options_from_args
from fsqkit.cli.run_args import (
    add_preset_arg,
    add_run_args,
    apply_preset,
    trainer_config_from_args,
)
from fsqkit.data import DATA_SPECS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-maskgit",
        help="train a MaskGIT transformer on a tokenizer's tokens (stage II)",
        description="Encode a data set once through a trained tokenizer (cached in OUT/tokens as "
        "token shards), or read token shards written by `fsqkit encode` (--tokens DIR, "
        "memory-mapped), then "
        "train a bidirectional masked-token transformer on the token grids. Vocabulary size and "
        "sequence length come from the tokenizer. Class-conditional when the data has labels "
        "(10%% of labels dropped for classifier-free guidance). Writes OUT/metrics.jsonl and "
        "atomic checkpoints in OUT/checkpoints/. Works under `torchrun --nproc_per_node=N`.",
    )
    from fsqkit.maskgit.presets import PRESETS

    add_preset_arg(p, PRESETS)
    p.add_argument(
        "--tokenizer",
        default=None,
        help="trained tokenizer (run or checkpoint directory); with --tokens, default: the "
        "one the shards were encoded with",
    )
    p.add_argument(
        "--data", default="digits", help=f"data spec: {', '.join(DATA_SPECS)} (default digits)"
    )
    p.add_argument(
        "--tokens",
        default=None,
        help="token shards from `fsqkit encode --data SPEC --out DIR` (DIR/train, DIR/val), "
        "read memory-mapped instead of encoding --data",
    )
    p.add_argument(
        "--tokens-in-memory",
        action="store_true",
        help="load --tokens into memory instead of memory-mapping them (same batches)",
    )
    p.add_argument(
        "--val-images",
        type=int,
        default=None,
        help="evaluate on the first N validation images (default: all; embedded: crop count)",
    )
    add_stream_args(p, augment=False)
    p.add_argument("--out", required=True, help="run directory")
    m = p.add_argument_group("model")
    m.add_argument("--dim", type=int, default=256)
    m.add_argument("--depth", type=int, default=4)
    m.add_argument("--heads", type=int, default=4)
    m.add_argument("--mlp-ratio", type=float, default=4.0)
    m.add_argument("--dropout", type=float, default=0.1)
    m.add_argument(
        "--unconditional", action="store_true", help="ignore labels even if the data has them"
    )
    t = p.add_argument_group("training")
    t.add_argument("--steps", type=int, default=2000)
    t.add_argument("--batch-size", type=int, default=64, help="per process")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--warmup-steps", type=int, default=50)
    t.add_argument("--weight-decay", type=float, default=0.045)
    t.add_argument("--label-smoothing", type=float, default=0.1)
    t.add_argument(
        "--label-drop", type=float, default=0.1, help="fraction of labels replaced by 'no class'"
    )
    t.add_argument(
        "--min-mask-fraction",
        type=float,
        default=0.45,
        help="at least this fraction of tokens is masked per example (paper: 0.45)",
    )
    t.add_argument("--seed", type=int, default=0)
    t.add_argument(
        "--fid-samples",
        type=int,
        default=0,
        help="sample N images in each evaluation for FID/precision/recall (default 0: off)",
    )
    t.add_argument(
        "--fid",
        choices=["auto", "inception", "random-conv"],
        default="auto",
        help="features of --fid-samples (auto: Inception-v3 when installed, pip install "
        "'fsqkit[fid]'; else random-conv)",
    )
    add_run_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fsqkit.maskgit.schedule import r_min_for_fraction
    from fsqkit.maskgit.train import MaskGITTrainConfig, train_maskgit
    from fsqkit.training import distributed_session

    preset = None
    settings: dict = {}
    if args.preset:
        from fsqkit.maskgit.presets import PRESETS

        preset = PRESETS[args.preset]
        settings = apply_preset(args, preset)
    arch = {
        "dim": args.dim,
        "depth": args.depth,
        "heads": args.heads,
        "mlp_ratio": args.mlp_ratio,
        "dropout": args.dropout,
    }
    if not args.tokenizer and not args.tokens:
        raise ValueError("give --tokenizer (to encode --data) or --tokens DIR")
    train_cfg = MaskGITTrainConfig(
        data=args.data,
        tokens=args.tokens or "",
        tokens_in_memory=args.tokens_in_memory,
        num_val_images=args.val_images,
        tokenizer=args.tokenizer or "",
        class_conditional=False if args.unconditional else None,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        r_min=r_min_for_fraction(args.min_mask_fraction),
        label_smoothing=args.label_smoothing,
        label_drop=args.label_drop,
        seed=args.seed,
        fid_samples=args.fid_samples,
        fid=args.fid,
        **stream_options_from_args(args),
        **(preset.train if preset else {}),
    )
    trainer_cfg = trainer_config_from_args(args, **settings)
    if preset is not None and int(os.environ.get("RANK", "0")) == 0:
        _describe(preset, arch, train_cfg, trainer_cfg, args.batch_size)
    with distributed_session(args.device) as info:
        result = train_maskgit(arch, train_cfg, trainer_cfg, info)
        if info.is_main:
            c, m = result.model.config, result.metrics
            kind = f"{c.num_classes} classes" if c.num_classes else "unconditional"
            print(
                f"MaskGIT K={c.codebook_size} grid={c.grid[0]}x{c.grid[1]} {kind} dim={c.dim} depth={c.depth}: "
                f"val loss {m['val_loss']:.3f}, masked acc {m['val_masked_acc']:.1%}, "
                f"{m['bits_per_image']:.1f} bits/image (raw {m['raw_bits_per_image']:.1f}) "
                f"({result.train_seconds:.1f} s training, {info.world_size} process(es)) -> {args.out}"
            )
    return 0


def _describe(preset, arch: dict, train_cfg, trainer_cfg, batch_size: int) -> None:
    """Print the preset's parameter count, memory per image and chosen values
    (before the tokens are encoded, a conditional model is counted with
    ImageNet's 1000 classes)."""
    import torch

    from fsqkit.maskgit.presets import describe_preset
    from fsqkit.maskgit.train import config_from_tokenizer
    from fsqkit.tokenizer import Tokenizer, TokenizerConfig
    from fsqkit.training import load_checkpoint
    from fsqkit.training.presets import preset_banner

    saved = load_checkpoint(train_cfg.tokenizer, weights_only=True).config["tokenizer"]
    tok_cfg = TokenizerConfig.from_dict(saved)
    with torch.device("meta"):
        codebook = Tokenizer(tok_cfg).codebook_size
    classes = 0 if train_cfg.class_conditional is False else 1000
    cfg = config_from_tokenizer(tok_cfg, codebook, classes, **arch)
    line = describe_preset(preset, cfg, trainer_cfg.precision, batch_size)
    print(preset_banner(line, preset, batch_size, trainer_cfg.grad_accum))
