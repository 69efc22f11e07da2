"""``fsqkit train-maskgit`` under ``torchrun --nproc_per_node=2`` (gloo on CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

from fsqkit.maskgit.train import load_maskgit
from fsqkit.tokenizer import Tokenizer, TokenizerConfig
from fsqkit.training import read_metrics


@pytest.mark.distributed
def test_two_process_training(tmp_path) -> None:
    tok = str(tmp_path / "tok")
    cfg = TokenizerConfig(
        quantizer_kwargs={"levels": [5, 3]},
        image_size=16,
        base_channels=8,
        channel_mult=(1, 2, 2),
        norm_groups=4,
    )
    Tokenizer(cfg).save(tok)
    out = str(tmp_path / "mg")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += [
        "-m",
        "fsqkit.cli",
        "train-maskgit",
        "--tokenizer",
        tok,
        "--data",
        "digits",
        "--steps",
        "3",
    ]
    cmd += [
        "--out",
        out,
        "--dim",
        "16",
        "--depth",
        "1",
        "--heads",
        "2",
        "--batch-size",
        "4",
        "--no-progress",
    ]
    cmd += ["--device", "cpu", "--log-every", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Own session, so a hang can be cleaned up with the workers torchrun started.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, stdout[-2000:] + stderr[-4000:]
    assert stdout.count("MaskGIT K=15") == 1  # only rank 0 reports
    model, _ = load_maskgit(out)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    records = read_metrics(os.path.join(out, "metrics.jsonl"))
    assert [r["step"] for r in records if r["split"] == "train"] == [
        1,
        2,
        3,
    ]  # rank 0 logs once per step
