"""Run independent jobs side by side in worker processes.

Small CPU models use a second core poorly from one process; two processes with
one thread each did better on our 2-core machine (the demo's two tokenizers:
105 ms per pair of steps side by side, 126 ms one after the other with two
threads each; 1.2x). The demo and the UViM demo train their models this way.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def _set_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    # NumPy's BLAS too (e.g. the eigendecomposition in the Fréchet distance): a
    # worker computes with the same thread count whichever process starts it.
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)


def available_cores() -> int:
    """CPU cores this process may run on (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def run_side_by_side(
    fn: Callable[..., T],
    jobs: dict[str, tuple[Any, ...]],
    threads_each: int = 1,
    max_workers: int | None = None,
) -> dict[str, T]:
    """``{name: fn(*args)}`` for every job, in worker processes with
    ``threads_each`` torch threads each; ``max_workers`` processes (default: one
    per job, all at the same time) take the jobs in order.

    ``fn`` and its arguments must be picklable (``fn`` a module-level function).
    Processes are started with ``spawn`` (no inherited torch state). An exception
    in a job is re-raised here after all jobs have ended; Ctrl-C reaches the
    workers too (same process group), and this waits for them to stop.
    """
    if threads_each < 1:
        raise ValueError(f"threads_each must be >= 1, got {threads_each}")
    if max_workers is not None and max_workers < 1:
        raise ValueError(f"max_workers must be >= 1, got {max_workers}")
    if not jobs:
        return {}
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=min(len(jobs), max_workers or len(jobs)),
        mp_context=ctx,
        initializer=_set_threads,
        initargs=(threads_each,),
    ) as pool:
        futures = {name: pool.submit(fn, *args) for name, args in jobs.items()}
        # Wait for every job before raising, so no worker is left writing a run.
        errors = [f.exception() for f in futures.values()]
        for err in errors:
            if err is not None:
                raise err
        return {name: f.result() for name, f in futures.items()}


def side_by_side_threads(enabled: bool, jobs: int) -> int:
    """Torch threads per job if ``jobs`` jobs run side by side in worker processes
    (half of this process's threads each for two jobs), or 0 if they run one
    after the other here: side by side is off, there is one job, or this
    process has fewer than 2 threads or cores."""
    threads = torch.get_num_threads()
    if not enabled or jobs < 2 or min(threads, available_cores()) < 2:
        return 0
    return max(1, threads // jobs)


def describe(threads_each: int) -> str:
    """How :func:`run_jobs` runs, for progress lines."""
    return f"side by side, {threads_each} thread(s) each" if threads_each else "one after the other"


def run_jobs(
    fn: Callable[..., T], jobs: dict[str, tuple[Any, ...]], side_by_side: bool
) -> dict[str, T]:
    """``{name: fn(*args)}``: side by side in worker processes where
    :func:`side_by_side_threads` allows it, otherwise one after the other here."""
    each = side_by_side_threads(side_by_side, len(jobs))
    if each:
        return run_side_by_side(fn, jobs, threads_each=each)
    return {name: fn(*args) for name, args in jobs.items()}
