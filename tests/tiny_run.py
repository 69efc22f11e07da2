"""A tiny ``fsqkit train-tokenizer`` run (seconds on one CPU thread) for tests of
the trainer's interrupt / resume / checkpoint safety, in-process or as a real
subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import torch

from fsqkit.training import load_checkpoint, read_metrics

TINY_ARGS = [
    "--data", "embedded", "--train-images", "64", "--val-images", "16", "--image-size", "16",
    "--base-channels", "8", "--channel-mult", "1,2", "--batch-size", "4", "--log-every", "1",
    "--device", "cpu", "--no-progress",
]  # fmt: skip
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def train_args(out: str, steps: int, *extra: str) -> list[str]:
    """``train-tokenizer`` arguments of the tiny run into ``out``."""
    return ["train-tokenizer", *TINY_ARGS, "--steps", str(steps), "--out", out, *extra]


def start(args: list[str]) -> subprocess.Popen:
    """``fsqkit ARGS`` as a subprocess (one torch thread), stdout/stderr piped."""
    cmd = [sys.executable, "-m", "fsqkit.cli", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def logged_steps(out: str) -> list[int]:
    """The training steps logged in ``out/metrics.jsonl`` so far (none if no file)."""
    path = os.path.join(out, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    return [r["step"] for r in read_metrics(path) if r.get("split") == "train"]


def wait_for_step(proc: subprocess.Popen, out: str, step: int, timeout: float = 120) -> int:
    """Wait until the run in ``out`` has logged training step ``step`` or later
    (or the process has ended); returns the newest logged step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        steps = logged_steps(out)
        if steps and steps[-1] >= step:
            return steps[-1]
        time.sleep(0.01)
    return -1


def weights(run: str) -> dict[str, torch.Tensor]:
    """The tokenizer weights of ``run``'s latest checkpoint."""
    return load_checkpoint(run).weights["tokenizer"]


def assert_same_weights(a: str, b: str) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k, v in wa.items():
        assert torch.equal(v, wb[k]), f"{k} differs between {a} and {b}"
