"""UViM's oracle and stage II under ``torchrun --nproc_per_node=2`` (gloo, CPU):
both runs finish, rank 0 alone reports and writes, and the result loads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from fsqkit.training import load_checkpoint, read_metrics

COMMON = [
    "--num-train", "32", "--num-val", "8", "--batch-size", "4", "--steps", "3",
    "--log-every", "1", "--device", "cpu", "--no-progress",
]  # fmt: skip


def _torchrun(tmp_path, args: list[str]) -> subprocess.CompletedProcess:
    script = tmp_path / "entry.py"
    script.write_text("import sys; from fsqkit.cli import main; sys.exit(main())")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(script), *args,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _train_steps(out: str) -> list[int]:
    rows = read_metrics(os.path.join(out, "metrics.jsonl"))
    return [r["step"] for r in rows if r["split"] == "train"]


@pytest.mark.distributed
def test_uvim_oracle_and_stage2_under_torchrun(tmp_path):
    oracle, full = str(tmp_path / "oracle"), str(tmp_path / "full")
    proc = _torchrun(tmp_path, [
        "uvim", "train-oracle", "--task", "depth", "--data", "scenes", "--image-size", "16",
        "--base-channels", "8", "--channel-mult", "1,2", *COMMON, "--out", oracle,
    ])  # fmt: skip
    assert proc.stdout.count("oracle val:") == 1, proc.stdout  # rank 0 alone reports
    assert load_checkpoint(oracle).step == 3 and _train_steps(oracle) == [1, 2, 3]

    proc = _torchrun(tmp_path, [
        "uvim", "train", "--oracle", oracle, "--dim", "16", "--depth", "1", "--heads", "2",
        *COMMON, "--out", full,
    ])  # fmt: skip
    assert proc.stdout.count(" val:") == 1, proc.stdout
    assert load_checkpoint(full).step == 3 and _train_steps(full) == [1, 2, 3]

    from fsqkit.uvim import UViM

    model = UViM.load(full)
    depth = model.predict(torch.rand(2, 3, 16, 16))
    assert depth.shape[0] == 2 and torch.isfinite(depth).all()
