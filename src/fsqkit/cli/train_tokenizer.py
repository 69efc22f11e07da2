"""``fsqkit train-tokenizer``: train an image tokenizer (FSQ, VQ, residual variants).

Runs single-process, or under ``torchrun --nproc_per_node=N`` with
DistributedDataParallel (gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

import argparse
import json
import os

from fsqkit.cli.arg_types import int_list
from fsqkit.cli.data_args import add_stream_args, stream_options_from_args
from fsqkit.cli.run_args import (
    add_preset_arg,
    add_run_args,
    apply_preset,
    trainer_config_from_args,
)
from fsqkit.data import DATA_SPECS


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Quantizer and architecture flags (shared with ``fsqkit demo``)."""
    g = p.add_argument_group("quantizer")
    g.add_argument(
        "--quantizer", default="fsq", help="registered quantizer name (fsq, vq, residual_fsq, ...)"
    )
    g.add_argument(
        "--levels", type=int_list, default=[8, 5, 5, 5], help="FSQ levels (default 8,5,5,5)"
    )
    g.add_argument(
        "--codebook-size", type=int, default=1024, help="VQ codebook size (default 1024)"
    )
    g.add_argument(
        "--codebook-dim",
        type=int,
        default=None,
        help="VQ code dimension (default: latent channels)",
    )
    g.add_argument(
        "--latent-channels",
        type=int,
        default=None,
        help="encoder output channels for VQ (default 32)",
    )
    g.add_argument(
        "--vq-learning", choices=["ema", "loss"], default="loss", help="VQ codebook learning"
    )
    g.add_argument("--commitment-weight", type=float, default=0.25)
    g.add_argument("--entropy-weight", type=float, default=0.1)
    g.add_argument("--entropy-temperature", type=float, default=0.01)
    g.add_argument(
        "--quantizer-kwargs", default=None, help="JSON object of extra quantizer arguments"
    )
    a = p.add_argument_group("architecture")
    a.add_argument("--image-size", type=int, default=32)
    a.add_argument("--base-channels", type=int, default=32)
    a.add_argument(
        "--channel-mult",
        type=int_list,
        default=None,
        help="per-stage multipliers, e.g. 1,2,2 (f=4)",
    )
    a.add_argument(
        "--factor",
        type=int,
        default=4,
        choices=[2, 4, 8, 16],
        help="down-sampling factor f (if no --channel-mult)",
    )
    a.add_argument("--num-res-blocks", type=int, default=1)


def model_config_from_args(args: argparse.Namespace):
    from fsqkit.tokenizer import TokenizerConfig

    extra = json.loads(args.quantizer_kwargs) if args.quantizer_kwargs else {}
    if not isinstance(extra, dict):
        raise ValueError(f"--quantizer-kwargs must be a JSON object, got {args.quantizer_kwargs!r}")
    latent = args.latent_channels
    if "fsq" in args.quantizer:
        qkw = {"levels": list(args.levels)}
    else:
        latent = latent or 32
        qkw = {
            "codebook_size": args.codebook_size,
            "codebook_dim": args.codebook_dim,
            "commitment_weight": args.commitment_weight,
            "entropy_weight": args.entropy_weight,
            "entropy_temperature": args.entropy_temperature,
            "learning": args.vq_learning,
        }
    qkw.update(extra)
    mult = (
        tuple(args.channel_mult)
        if args.channel_mult
        else TokenizerConfig.channel_mult_for(args.factor)
    )
    return TokenizerConfig(
        quantizer=args.quantizer,
        quantizer_kwargs=qkw,
        latent_channels=latent,
        image_size=args.image_size,
        base_channels=args.base_channels,
        channel_mult=mult,
        num_res_blocks=args.num_res_blocks,
    )


def add_train_args(p: argparse.ArgumentParser) -> None:
    t = p.add_argument_group("training")
    t.add_argument("--data", default="embedded", help=f"data spec: {', '.join(DATA_SPECS)}")
    t.add_argument("--steps", type=int, default=1000)
    t.add_argument("--batch-size", type=int, default=32, help="per process")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--recon-loss", default="l2", choices=["l1", "l2", "l1+l2"])
    t.add_argument(
        "--disc-weight", type=float, default=0.0, help="PatchGAN hinge loss weight (0: off)"
    )
    t.add_argument(
        "--disc-start", type=int, default=1000, help="step after which the GAN loss is on"
    )
    t.add_argument("--perceptual-weight", type=float, default=0.0)
    t.add_argument(
        "--perceptual-weights", default=None, help="local torchvision VGG16 weights file"
    )
    t.add_argument("--seed", type=int, default=0)
    t.add_argument(
        "--fid",
        choices=["none", "auto", "inception", "random-conv"],
        default="none",
        help="reconstruction FID + precision/recall in each evaluation (auto: Inception-v3 "
        "when installed, pip install 'fsqkit[fid]'; else random-conv features)",
    )
    t.add_argument(
        "--train-images", type=int, default=None, help="embedded: number of training crops"
    )
    t.add_argument(
        "--val-images",
        type=int,
        default=None,
        help="embedded: number of validation crops; folder/wds: evaluate only the first N",
    )
    add_stream_args(p)


def train_config_from_args(args: argparse.Namespace, **fields):
    """``TokenizerTrainConfig`` from the flags; ``fields``: more config fields
    (a preset's values that have no flag)."""
    from fsqkit.tokenizer import TokenizerTrainConfig

    return TokenizerTrainConfig(
        **fields,
        data=args.data,
        num_train_images=args.train_images,
        num_val_images=args.val_images,
        batch_size=args.batch_size,
        lr=args.lr,
        recon_loss=args.recon_loss,
        disc_weight=args.disc_weight,
        disc_start=args.disc_start,
        perceptual_weight=args.perceptual_weight,
        perceptual_weights=args.perceptual_weights,
        seed=args.seed,
        fid=args.fid,
        **stream_options_from_args(args),
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-tokenizer",
        help="train an image tokenizer (stage I)",
        description="Train a VQGAN-style image tokenizer with an FSQ or VQ bottleneck. "
        "Works under `torchrun --nproc_per_node=N` (DDP). Writes OUT/metrics.jsonl, "
        "OUT/recon.png and atomic checkpoints in OUT/checkpoints/.",
    )
    from fsqkit.tokenizer.presets import PRESETS

    add_preset_arg(p, PRESETS)
    add_model_args(p)
    add_train_args(p)
    p.add_argument("--out", required=True, help="run directory")
    add_run_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fsqkit.tokenizer import train_tokenizer
    from fsqkit.tokenizer.model import describe
    from fsqkit.training import distributed_session, replicas_in_sync

    preset = None
    settings: dict = {}
    if args.preset:
        from fsqkit.tokenizer.presets import PRESETS

        preset = PRESETS[args.preset]
        settings = apply_preset(args, preset)
    model_cfg = model_config_from_args(args)
    train_cfg = train_config_from_args(args, **(preset.train if preset else {}))
    trainer_cfg = trainer_config_from_args(args, **settings)
    if preset is not None and int(os.environ.get("RANK", "0")) == 0:
        from fsqkit.tokenizer.presets import describe_preset
        from fsqkit.training.presets import preset_banner

        gan = args.disc_weight > 0
        line = describe_preset(preset, model_cfg, trainer_cfg.precision, args.batch_size, gan)
        print(preset_banner(line, preset, args.batch_size, trainer_cfg.grad_accum))
    with distributed_session(args.device) as info:
        result = train_tokenizer(model_cfg, train_cfg, trainer_cfg, info)
        in_sync = replicas_in_sync(result.model, info)  # collective: every rank
        if info.is_main:
            if info.distributed:
                print(f"DDP replicas identical after training: {in_sync}")
            m = result.metrics
            print(describe(result.model))
            print(
                f"val: PSNR {m['psnr']:.2f} dB  SSIM {m['ssim']:.4f}  usage {m['usage']:.1%}  "
                f"perplexity {m['perplexity']:.1f}  ({result.train_seconds:.1f} s training, "
                f"{info.world_size} process(es)) -> {args.out}"
            )
    return 0
