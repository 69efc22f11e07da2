"""SIGINT / SIGTERM during training: finish the step, checkpoint, exit 130 / 143,
and ``--resume`` ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from fsqkit.cli import main
from fsqkit.training import load_checkpoint, read_metrics
from fsqkit.training.signals import StopSignals
from tests.single_thread import one_thread  # noqa: F401
from tests.tiny_run import assert_same_weights, start, train_args, wait_for_step

STEPS = 150


def test_first_signal_only_sets_a_flag_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals(announce=False) as stop:
        assert signal.getsignal(signal.SIGTERM) is not before
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)  # within repeat_after_s: the same delivery
        assert stop.received == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_second_ctrl_c_stops_at_once():
    with pytest.raises(KeyboardInterrupt), StopSignals(announce=False, repeat_after_s=0) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.received == signal.SIGINT
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # the handler runs between bytecodes
            pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_signal_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with StopSignals(announce=False):
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("full") / "run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the subprocesses (module fixtures run before one_thread)
    try:
        assert main(train_args(out, STEPS)) == 0
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_to_a_cli_run_then_resume_is_bit_identical(tmp_path, uninterrupted, sig):
    out = str(tmp_path / "run")
    proc = start(train_args(out, STEPS))
    try:
        assert wait_for_step(proc, out, 1) >= 1, "training did not start"
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, stderr[-3000:]
    assert "Traceback" not in stderr
    assert "finishing this step, then saving a checkpoint" in stderr
    stopped = load_checkpoint(out).step
    assert 1 <= stopped < STEPS, "the run ended before the signal arrived"
    name = signal.Signals(sig).name
    assert f"{name} received: stopped after step {stopped}" in stderr
    # The printed command resumes the run exactly.
    resume = stderr.split("resume with: ")[1].strip()
    assert resume.startswith("fsqkit train-tokenizer ") and resume.endswith(" --resume")
    assert main(resume.split()[1:]) == 0
    assert load_checkpoint(out).step == STEPS
    assert_same_weights(uninterrupted, out)
    train = [r for r in read_metrics(os.path.join(out, "metrics.jsonl")) if r["split"] == "train"]
    assert [r["step"] for r in train] == list(range(1, STEPS + 1))
