"""Shared by the pytest-benchmark suites, which are thin wrappers over the workloads of
forgegrad.bench (the single source of the shapes and timed calls; `forgegrad bench` times the same
workloads in interleaved rounds). Every runtime is pinned to the same thread count through
forgegrad.bench._timing.pinned_threads (forgegrad, torch and numpy's BLAS).

  nthreads      one test per thread count in FG_BENCH_THREADS (comma-separated); a suite without
                the variable runs its BENCH_THREADS_DEFAULT ("1" when it sets none)
  run_workload  run_workload(workload, runtime, rounds=None): benchmark one runtime of a
                forgegrad.bench.Workload at `nthreads` (grouped by workload and thread count, so
                the runtimes of one row sit side by side)
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


@pytest.fixture
def run_workload(benchmark, nthreads):
    def run(workload, runtime, rounds=None):
        fn = workload.make(nthreads)[runtime]
        if fn is None:  # an optional runtime (torch, onnxruntime) that is not installed here
            pytest.skip(f"{runtime} is not installed")
        benchmark.group = f"{workload.name} {nthreads}t"
        benchmark.extra_info.update(workload.info)
        fn()  # warm-up: allocations, lazy state, torch's primitive cache
        if rounds is None:
            benchmark(fn)
        else:
            benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)
        if workload.flop is not None and benchmark.stats is not None:  # None with --benchmark-disable
            benchmark.extra_info["gflops"] = round(workload.flop / benchmark.stats.stats.mean / 1e9, 1)
    return run
