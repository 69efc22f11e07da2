"""An autouse fixture for test modules that train tiny models.

Tiny models gain nothing from a second thread, and on a shared, busy 2-core
machine two threads per process are many times slower than one (contention);
import it into a test module to run that module's tests with one torch thread:
``from tests.single_thread import one_thread  # noqa: F401``.
"""

from __future__ import annotations

import pytest
import torch
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):  # NumPy/SciPy BLAS too (eigh in the Fréchet distance)
        yield
    torch.set_num_threads(n)
