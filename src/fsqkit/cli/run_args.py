"""Run-directory flags shared by the training commands (``--resume``, ``--overwrite``,
``--eval-every``, ``--ckpt-every``, ``--ckpt-minutes``, ``--keep-checkpoints``,
``--log-every``, ``--device``, ``--no-progress``), the optimisation-step flags
(``--precision``, ``--compile``, ``--ema``, ``--grad-accum``) and the
:class:`~fsqkit.training.TrainerConfig` they give."""

from __future__ import annotations

import argparse


def add_run_args(p: argparse.ArgumentParser) -> None:
    """Add the "run" argument group (``--out`` is added by the command itself)."""
    r = p.add_argument_group("run")
    r.add_argument(
        "--resume", action="store_true", help="continue from OUT's newest intact checkpoint"
    )
    r.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in an OUT that holds an earlier run (deletes its checkpoints)",
    )
    r.add_argument(
        "--eval-every", type=int, default=0, help="evaluate every N steps (0: at the end)"
    )
    r.add_argument(
        "--ckpt-every", type=int, default=0, help="also checkpoint every N steps (0: off)"
    )
    r.add_argument(
        "--ckpt-minutes",
        type=float,
        default=10.0,
        help="checkpoint every M minutes of wall time (default 10; 0: off); always at the "
        "end and on SIGINT/SIGTERM",
    )
    r.add_argument(
        "--keep-checkpoints", type=int, default=3, help="checkpoints kept on disk (default 3)"
    )
    r.add_argument("--log-every", type=int, default=10)
    r.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_step_args(p)


def add_step_args(p: argparse.ArgumentParser) -> None:
    """Add the "optimisation step" group: precision, compile, EMA, accumulation."""
    s = p.add_argument_group("optimisation step")
    s.add_argument(
        "--precision",
        choices=["fp32", "bf16", "fp16"],
        default=None,
        help="autocast precision (default fp32; fp16 adds a gradient scaler; bf16/fp16 also "
        "use channels-last conv nets and fused optimizers)",
    )
    s.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="torch.compile the trainable modules (falls back to eager with one line)",
    )
    s.add_argument(
        "--ema",
        type=float,
        default=None,
        metavar="DECAY",
        help="keep an EMA of the weights (e.g. 0.999): saved in checkpoints, used for "
        "evaluation, sampling and loading (default: off)",
    )
    s.add_argument(
        "--grad-accum",
        type=int,
        default=None,
        metavar="N",
        help="accumulate N micro-batches of --batch-size per optimizer step (default 1)",
    )


def step_settings_from_args(args: argparse.Namespace) -> dict:
    """``TrainerConfig`` step settings given on the command line (unset ones omitted,
    so a preset's values stay)."""
    given = {
        "precision": getattr(args, "precision", None),
        "compile": getattr(args, "compile", None),
        "ema_decay": getattr(args, "ema", None),
        "grad_accum": getattr(args, "grad_accum", None),
    }
    return {k: v for k, v in given.items() if v is not None}


def trainer_config_from_args(args: argparse.Namespace, **defaults):
    """``TrainerConfig`` from ``--out``, ``--steps`` and the run flags; ``defaults``:
    step settings (e.g. a preset's) that flags given on the command line override."""
    from fsqkit.training import TrainerConfig

    return TrainerConfig(
        **{**defaults, **step_settings_from_args(args)},
        out_dir=args.out,
        steps=args.steps,
        eval_every=args.eval_every,
        ckpt_every=args.ckpt_every,
        ckpt_minutes=args.ckpt_minutes,
        keep_checkpoints=args.keep_checkpoints,
        log_every=args.log_every,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )


def add_preset_arg(p: argparse.ArgumentParser, presets: dict) -> None:
    """``--preset NAME`` whose help lists every preset in one line each."""
    from fsqkit.training.presets import presets_help

    p.add_argument(
        "--preset",
        choices=list(presets),
        default=None,
        help="the paper's configuration by name; flags given override its values. "
        + presets_help(presets),
    )


def flag_given(args: argparse.Namespace, dest: str) -> bool:
    """Whether ``--<dest>`` appeared on the command line."""
    flag = "--" + dest.replace("_", "-")
    return any(a == flag or a.startswith(flag + "=") for a in getattr(args, "argv", []))


def apply_preset(args: argparse.Namespace, preset) -> dict:
    """Fill ``args`` from ``preset.args`` where the flag was not given; check the
    preset's required flags; return the trainer step settings (preset values,
    then flags; ``grad_accum`` from the preset's global batch and the world size
    unless ``--grad-accum`` is given)."""
    import os

    from fsqkit.training.presets import grad_accum_for

    missing = [d for d in preset.required if not flag_given(args, d)]
    if missing:
        flags = ", ".join("--" + d.replace("_", "-") for d in missing)
        raise ValueError(f"--preset {preset.name} needs {flags} (e.g. --data folder:/imagenet/train)")
    for dest, value in preset.args.items():
        if not flag_given(args, dest):
            setattr(args, dest, list(value) if isinstance(value, (list, tuple)) else value)
    settings = dict(preset.trainer)
    if preset.global_batch and args.grad_accum is None:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        settings["grad_accum"] = grad_accum_for(preset.global_batch, args.batch_size, world)
    return settings
