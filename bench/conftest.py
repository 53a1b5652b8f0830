"""Shared by the pytest-benchmark suites: every runtime pinned to the same thread count through
forgegrad.bench._timing.pinned_threads (forgegrad, torch and numpy's BLAS), as the
`python -m forgegrad.bench` suites do.

  nthreads    one test per thread count in FG_BENCH_THREADS (comma-separated); a suite without
              the variable runs its BENCH_THREADS_DEFAULT ("1" when it sets none)
  one_thread  everything pinned to 1 thread for a module (`pytestmark = usefixtures(...)`)
"""
import os

import pytest

from forgegrad.bench._timing import pinned_threads


def pytest_generate_tests(metafunc):
    if "nthreads" in metafunc.fixturenames:
        default = getattr(metafunc.module, "BENCH_THREADS_DEFAULT", "1")
        counts = [int(t) for t in os.environ.get("FG_BENCH_THREADS", default).split(",")]
        metafunc.parametrize("nthreads", counts, ids=lambda t: f"{t}t", indirect=True)


@pytest.fixture
def nthreads(request):
    with pinned_threads(request.param):
        yield request.param


@pytest.fixture(scope="module")
def one_thread():
    with pinned_threads(1):
        yield
