"""SIGTERM to a 2-process ``torchrun`` run (to ``torchrun``, which forwards it,
or to rank 1 alone): both ranks stop at the same step, exactly one checkpoint is
written, both exit with 143 and none hangs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from fsqkit.training import load_checkpoint, read_metrics
from tests.tiny_run import ENV, train_args, wait_for_step

ENTRY = """
import os, sys
from fsqkit.cli import main
out, rank = sys.argv[sys.argv.index("--out") + 1], os.environ["RANK"]
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, f"pid-{rank}"), "w") as f:
    f.write(str(os.getpid()))
rc = main()
with open(os.path.join(out, f"rc-{rank}"), "w") as f:
    f.write(str(rc))
sys.exit(rc)
"""


@pytest.mark.distributed
@pytest.mark.parametrize("target", ["torchrun", "rank1"])
def test_sigterm_stops_both_ranks_at_one_step_with_one_checkpoint(tmp_path, target):
    out = str(tmp_path / "ddp")
    script = tmp_path / "entry.py"
    script.write_text(ENTRY)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(script), *train_args(out, 2000),
    ]  # fmt: skip
    # Own session, so a hang can be cleaned up with the workers torchrun started.
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert wait_for_step(proc, out, 2, timeout=180) >= 2, "training did not start"
        if target == "torchrun":
            proc.send_signal(signal.SIGTERM)  # torchrun forwards it to both workers
        else:  # rank 0 gets no signal: it stops because rank 1 did
            with open(os.path.join(out, "pid-1")) as f:
                os.kill(int(f.read()), signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    rcs = {}
    for rank in (0, 1):
        with open(os.path.join(out, f"rc-{rank}")) as f:
            rcs[rank] = int(f.read())
    assert rcs == {0: 143, 1: 143}, stderr[-4000:]
    step = load_checkpoint(out).step
    assert 2 <= step < 2000
    assert stderr.count("SIGTERM received: stopped after step") == 1  # rank 0 alone reports
    assert f"stopped after step {step}, saved" in stderr
    assert "resume with: torchrun --standalone --nproc_per_node=2 -m fsqkit.cli" in stderr
    assert "Traceback (most recent call last)" not in stderr.split("resume with:")[0]
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == ["latest", f"step-{step:06d}"]
    assert ("finishing this step" in stderr) == (target == "torchrun")  # rank 0 announces
    train = [r for r in read_metrics(os.path.join(out, "metrics.jsonl")) if r["split"] == "train"]
    assert train[-1]["step"] == step
