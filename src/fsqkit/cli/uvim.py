"""``fsqkit uvim``: UViM-style dense prediction (depth, colorization, panoptic
segmentation) on FSQ/VQ tokens.

Subcommands: ``train-oracle`` (stage I), ``train`` (stage II on an oracle; the
run is the full model), ``train-direct`` (the no-token baseline), ``predict``,
``eval`` and ``demo``. Training commands run under ``torchrun`` like every
other fsqkit trainer and share the run flags (``--resume`` etc.).
"""

from __future__ import annotations

import argparse
import json

from fsqkit.cli.arg_types import int_list
from fsqkit.cli.run_args import (
    add_preset_arg,
    add_run_args,
    apply_preset,
    trainer_config_from_args,
)


def _preset_settings(args: argparse.Namespace, command: str) -> dict:
    """Apply ``--preset`` (if any) to ``args``; the trainer step settings."""
    if not getattr(args, "preset", None):
        return {}
    from fsqkit.uvim.presets import run_presets

    return apply_preset(args, run_presets()[command][args.preset])


def _describe_preset(args: argparse.Namespace, command: str, model_cfg, trainer_cfg) -> None:
    import os

    if not getattr(args, "preset", None) or os.environ.get("RANK", "0") != "0":
        return
    from fsqkit.training.presets import preset_banner
    from fsqkit.uvim.presets import describe_run_preset, run_presets

    preset = run_presets()[command][args.preset]
    line = describe_run_preset(preset, model_cfg, trainer_cfg.precision, args.batch_size)
    print(preset_banner(line, preset, args.batch_size, trainer_cfg.grad_accum))


def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data and optimisation")
    g.add_argument(
        "--data",
        default=None,
        help="scenes, embedded, nyu:PATH, pairs:PATH or coco-panoptic:JSON,LABEL_DIR,IMAGE_DIR "
        "(default: scenes for depth and panoptic, embedded for colorize; stage II: the oracle's)",
    )
    g.add_argument("--num-train", type=int, default=None, help="generated items (default 2048)")
    g.add_argument("--num-val", type=int, default=None, help="generated items (default 256)")
    g.add_argument("--steps", type=int, default=1000)
    g.add_argument("--batch-size", type=int, default=32, help="per process")
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--seed", type=int, default=0)


def _add_arch_args(p: argparse.ArgumentParser) -> None:
    a = p.add_argument_group("architecture")
    a.add_argument("--task", default="depth", help="depth, colorize or panoptic")
    a.add_argument(
        "--max-instances",
        type=int,
        default=None,
        help="panoptic: most thing instances per image (default 4 for scenes, 16 otherwise)",
    )
    a.add_argument("--image-size", type=int, default=32)
    a.add_argument("--base-channels", type=int, default=32)
    a.add_argument(
        "--channel-mult",
        type=int_list,
        default=[1, 2, 2],
        help="per-stage multipliers (default 1,2,2: tokens at 1/4 resolution)",
    )


def _add_quantizer_args(p: argparse.ArgumentParser) -> None:
    q = p.add_argument_group("quantizer")
    q.add_argument("--quantizer", default="fsq", help="registered quantizer name (fsq, vq, ...)")
    q.add_argument("--levels", type=int_list, default=[7, 5, 5, 5, 5], help="FSQ levels")
    q.add_argument("--codebook-size", type=int, default=4096, help="VQ codes (default 4096)")
    q.add_argument("--latent-channels", type=int, default=None, help="VQ bottleneck width (32)")
    q.add_argument("--split-codes", action="store_true", help="VQ: UViM's code splitting")
    q.add_argument("--quantizer-kwargs", default=None, help="JSON object of extra arguments")


def _train_config(args: argparse.Namespace, task: str):
    from fsqkit.uvim.train import UViMTrainConfig

    data = args.data or ("embedded" if task == "colorize" else "scenes")
    return UViMTrainConfig(
        data=data,
        num_train=args.num_train,
        num_val=args.num_val,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
    )


def _task_options(args: argparse.Namespace) -> dict:
    """Task options from the data source (a COCO JSON's classes) and ``--max-instances``."""
    from fsqkit.uvim.tasks import dense_task_options

    options = dense_task_options(args.data or "") if args.task == "panoptic" else {}
    if args.max_instances is not None:
        options["max_instances"] = args.max_instances
    elif options:
        options["max_instances"] = 16
    return options


def _oracle_config(args: argparse.Namespace):
    from fsqkit.uvim import OracleConfig
    from fsqkit.uvim.presets import quantizer_spec

    extra = json.loads(args.quantizer_kwargs) if args.quantizer_kwargs else {}
    if not isinstance(extra, dict):
        raise ValueError(f"--quantizer-kwargs must be a JSON object, got {args.quantizer_kwargs!r}")
    name, kwargs, latent = quantizer_spec(
        args.quantizer, args.levels, args.codebook_size, args.split_codes, args.latent_channels
    )
    return OracleConfig(
        task=args.task,
        task_options=_task_options(args),
        quantizer=name,
        quantizer_kwargs={**kwargs, **extra},
        latent_channels=latent,
        image_size=args.image_size,
        base_channels=args.base_channels,
        channel_mult=tuple(args.channel_mult),
    )


def _print_metrics(kind: str, result, out: str) -> None:
    m = " ".join(f"{k} {v:.4g}" for k, v in sorted(result.metrics.items()))
    print(f"{kind} val: {m}  ({result.train_seconds:.1f} s training) -> {out}")


def run_train_oracle(args: argparse.Namespace) -> int:
    from fsqkit.training import distributed_session
    from fsqkit.uvim import train_oracle

    settings = _preset_settings(args, "train-oracle")
    model_cfg, cfg = _oracle_config(args), _train_config(args, args.task)
    trainer_cfg = trainer_config_from_args(args, **settings)
    _describe_preset(args, "train-oracle", model_cfg, trainer_cfg)
    with distributed_session(args.device) as info:
        result = train_oracle(model_cfg, cfg, trainer_cfg, info)
        if info.is_main:
            _print_metrics("oracle", result, args.out)
    return 0


def run_train_direct(args: argparse.Namespace) -> int:
    from fsqkit.training import distributed_session
    from fsqkit.uvim import OracleConfig, train_direct

    model_cfg = OracleConfig(
        task=args.task,
        task_options=_task_options(args),
        image_size=args.image_size,
        base_channels=args.base_channels,
        channel_mult=tuple(args.channel_mult),
    )
    with distributed_session(args.device) as info:
        result = train_direct(
            model_cfg, _train_config(args, args.task), trainer_config_from_args(args), info
        )
        if info.is_main:
            _print_metrics("direct", result, args.out)
    return 0


def run_train(args: argparse.Namespace) -> int:
    from fsqkit.training import distributed_session, load_checkpoint
    from fsqkit.uvim import load_oracle, train_stage2
    from fsqkit.uvim.config import Stage2Config

    settings = _preset_settings(args, "train")
    oracle = load_oracle(args.oracle)
    task = oracle.cfg.task
    if args.data is None:  # default: the data the oracle was trained on
        args.data = load_checkpoint(args.oracle, weights_only=True).config["train"]["data"]
    kwargs = dict(
        decoder=args.decoder,
        dim=args.dim,
        depth=args.depth,
        heads=args.heads,
        decode_steps=args.decode_steps,
    )
    trainer_cfg = trainer_config_from_args(args, **settings)
    if getattr(args, "preset", None):
        s2 = Stage2Config.from_oracle(oracle.cfg, oracle.codebook_size, **kwargs)
        _describe_preset(args, "train", s2, trainer_cfg)
    with distributed_session(args.device) as info:
        result = train_stage2(args.oracle, _train_config(args, task), trainer_cfg, info, **kwargs)
        if info.is_main:
            _print_metrics("full model", result, args.out)
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from fsqkit.uvim import load_uvim_model
    from fsqkit.uvim.files import predict_files

    model = load_uvim_model(args.model)
    from fsqkit.uvim import Oracle

    if isinstance(model, Oracle):
        raise ValueError(
            f"{args.model} is an oracle (it needs the true target); "
            f"pass a `fsqkit uvim train` or `train-direct` run"
        )
    written = predict_files(model, args.images, args.out, seed=args.seed)
    print(f"wrote {len(written)} prediction(s) (PNG + .npy) to {args.out}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from fsqkit.uvim.runs import evaluate_run

    metrics = evaluate_run(
        args.model,
        data=args.data,
        num_val=args.num,
        seed=args.seed,
        split=args.split,
        resamples=args.bootstrap,
    )
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from fsqkit.experiments.uvim_demo import run_uvim_demo, uvim_demo_config

    preset = "quick" if args.quick else "default"
    cfg = uvim_demo_config(
        preset,
        out=args.out,
        steps=args.steps,
        seed=args.seed,
        progress=not args.no_progress,
        tasks=tuple(args.tasks.split(",")) if args.tasks else None,
    )
    run_uvim_demo(cfg)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    top = sub.add_parser(
        "uvim",
        help="UViM-style dense prediction (depth, colorization, panoptic) on FSQ/VQ tokens",
        description="Stage I oracle (target autoencoder conditioned on the image, FSQ or VQ "
        "bottleneck), stage II (transformer predicting the tokens from the image), a direct "
        "baseline, prediction, evaluation and the demo.",
    )
    s = top.add_subparsers(dest="uvim_command", metavar="SUBCOMMAND")
    s.required = True

    from fsqkit.uvim.presets import run_presets

    presets = run_presets()
    p = s.add_parser("train-oracle", help="train a stage-I oracle")
    add_preset_arg(p, presets["train-oracle"])
    _add_arch_args(p)
    _add_quantizer_args(p)
    _add_data_args(p)
    p.add_argument("--out", required=True, help="run directory")
    add_run_args(p)
    p.set_defaults(func=run_train_oracle)

    p = s.add_parser("train", help="train stage II on an oracle (the run is the full model)")
    add_preset_arg(p, presets["train"])
    p.add_argument("--oracle", required=True, help="a train-oracle run directory")
    g = p.add_argument_group("stage II")
    g.add_argument("--decoder", choices=["masked", "autoregressive"], default="masked")
    g.add_argument("--dim", type=int, default=128)
    g.add_argument("--depth", type=int, default=3)
    g.add_argument("--heads", type=int, default=4)
    g.add_argument("--decode-steps", type=int, default=4, help="masked decoding steps")
    _add_data_args(p)
    p.add_argument("--out", required=True, help="run directory")
    add_run_args(p)
    p.set_defaults(func=run_train)

    p = s.add_parser("train-direct", help="train the direct (no-token) baseline")
    _add_arch_args(p)
    _add_data_args(p)
    p.add_argument("--out", required=True, help="run directory")
    add_run_args(p)
    p.set_defaults(func=run_train_direct)

    p = s.add_parser("predict", help="predict depth / colours / panoptic maps for image files")
    p.add_argument("--model", required=True, help="a `train` or `train-direct` run")
    p.add_argument("--images", nargs="+", required=True, help="image files or folders")
    p.add_argument("--out", required=True, help="output folder (PNG + .npy per image)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_predict)

    p = s.add_parser(
        "eval", help="evaluate a run on its validation or test data (JSON metrics with SEs)"
    )
    p.add_argument("--model", required=True, help="any UViM run (oracle, full, direct)")
    p.add_argument("--data", default=None, help="default: the run's training data source")
    p.add_argument(
        "--split",
        choices=["val", "test"],
        default="val",
        help="val, or test (scenes only: its own seed range, never trained or selected on)",
    )
    p.add_argument(
        "--num",
        "--num-val",
        dest="num",
        type=int,
        default=None,
        help="generated items to score (default: the run's val count; 2048 for test)",
    )
    p.add_argument(
        "--bootstrap",
        type=int,
        default=200,
        metavar="R",
        help="resamples for the standard errors <metric>_se (0: none; default 200)",
    )
    p.add_argument("--seed", type=int, default=None, help="default: the run's seed")
    p.set_defaults(func=run_eval)

    p = s.add_parser(
        "demo", help="FSQ vs VQ (with/without splitting) on depth, colorization and panoptic"
    )
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    p.add_argument("--steps", type=int, default=None, help="override the steps of every run")
    p.add_argument(
        "--tasks", default=None, help="comma-separated subset (default depth,colorize,panoptic)"
    )
    p.add_argument("--out", default="reports/uvim", help="report folder (default reports/uvim)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_demo)
