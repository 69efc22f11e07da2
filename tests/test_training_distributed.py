"""The train-tokenizer command under `torchrun --nproc_per_node=2` (gloo, CPU)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from fsqkit.training import load_checkpoint, read_metrics


@pytest.mark.distributed
def test_two_process_ddp_training(tmp_path):
    out = tmp_path / "ddp"
    code = "import sys; from fsqkit.cli import main; sys.exit(main())"
    script = tmp_path / "entry.py"
    script.write_text(code)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(script), "train-tokenizer", "--data", "embedded", "--train-images", "64",
        "--val-images", "16", "--image-size", "16", "--base-channels", "8", "--channel-mult", "1,2",
        "--batch-size", "4", "--steps", "4", "--log-every", "1", "--out", str(out),
        "--device", "cpu", "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # Rank 0 alone prints the summary and writes the files.
    assert proc.stdout.count("val: PSNR") == 1 and "2 process(es)" in proc.stdout
    ck = load_checkpoint(str(out))
    assert ck.step == 4
    train = [r for r in read_metrics(str(out / "metrics.jsonl")) if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    # DDP kept both replicas bit-identical (checked across ranks by checksum) ...
    assert "DDP replicas identical after training: True" in proc.stdout
    # ... and training moved them away from the (seeded) init.
    from fsqkit.tokenizer import Tokenizer, TokenizerConfig

    torch.manual_seed(0)
    init = Tokenizer(TokenizerConfig.from_dict(ck.config["tokenizer"])).state_dict()
    assert any(not torch.equal(init[k], v) for k, v in ck.weights["tokenizer"].items())
