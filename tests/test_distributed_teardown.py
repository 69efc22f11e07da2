"""The teardown check-in (fsqkit.training.distributed) on an in-process store."""

from __future__ import annotations

import logging
import threading

import pytest
import torch.distributed as dist

from fsqkit.training import distributed_session
from fsqkit.training.distributed import _check_in


def test_check_in_waits_for_every_rank():
    store = dist.HashStore()
    done = threading.Event()

    def rank0():
        _check_in(store, "k", world=2, timeout_s=30)
        done.set()

    t = threading.Thread(target=rank0)
    t.start()
    assert not done.wait(0.3)  # rank 1 has not checked in: rank 0 waits
    _check_in(store, "k", world=2, timeout_s=30)
    assert done.wait(10)
    t.join()


def test_check_in_counts_whole_groups_from_an_earlier_run():
    store = dist.HashStore()
    store.add("k", 2)  # a finished teardown of the same two ranks (elastic restart)
    done = threading.Event()
    t = threading.Thread(target=lambda: (_check_in(store, "k", 2, 30), done.set()))
    t.start()
    assert not done.wait(0.3)  # 3 of 4: the old group's count does not release it
    _check_in(store, "k", 2, 30)
    assert done.wait(10)
    t.join()


def test_check_in_gives_up_after_timeout_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="fsqkit.training.distributed"):
        _check_in(dist.HashStore(), "k", world=3, timeout_s=0.2)
    assert "not every rank checked in" in caplog.text


def test_check_in_returns_when_the_store_is_gone():
    class Gone:
        def add(self, key, n):
            raise RuntimeError("connection reset by peer")

    _check_in(Gone(), "k", world=2, timeout_s=30)  # no exception, no wait


def test_session_without_torchrun_is_single_process(monkeypatch):
    for v in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(v, raising=False)
    with distributed_session("cpu") as info:
        assert info.world_size == 1 and not info.distributed
    with pytest.raises(KeyError), distributed_session("cpu"):
        raise KeyError("the exception leaves unchanged")
