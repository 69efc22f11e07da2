"""SIGKILL at 10 random moments in a row (start-up, mid-step, mid-checkpoint),
resuming each time: the run ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import random
import signal
import time

import pytest

from fsqkit.cli import main
from tests.single_thread import one_thread  # noqa: F401
from tests.tiny_run import assert_same_weights, logged_steps, start, train_args, wait_for_step

STEPS = 600


@pytest.mark.slow
def test_ten_kills_then_resume_is_bit_identical(tmp_path):
    full, out = str(tmp_path / "full"), str(tmp_path / "run")
    assert main(train_args(full, STEPS)) == 0
    rng = random.Random(0)
    progress, kills = 0, 0
    for _ in range(10):
        proc = start(train_args(out, STEPS, "--resume", "--ckpt-every", "3"))
        try:
            if rng.random() < 0.8:  # most kills after training got going, some in start-up
                wait_for_step(proc, out, progress + 1)
            time.sleep(rng.uniform(0.0, 0.4))
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=60)
        finally:
            proc.kill()
        kills += proc.returncode == -signal.SIGKILL
        progress = max(logged_steps(out), default=0)
    assert kills == 10 and progress < STEPS, "a run finished before its kill"
    assert main(train_args(out, STEPS, "--resume")) == 0
    assert_same_weights(full, out)
    assert logged_steps(out) == list(range(1, STEPS + 1))
