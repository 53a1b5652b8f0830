"""conv2d and ConvTranspose2d forward and forward+backward: forgegrad vs torch, threads pinned on both sides.

Run (the OPENBLAS variables are unset only for benchmarks):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \
        python -m pytest bench/bench_conv.py --benchmark-group-by=group
FG_BENCH_THREADS="1,2" (default "1") picks the thread counts. Each group holds one shape, pass and
thread count, so forgegrad and torch sit side by side. The workloads are forgegrad.bench.conv's
(the `forgegrad bench conv` suite) and forgegrad.bench.conv_transpose's (`forgegrad bench conv_transpose`:
DCGAN generator layers).
"""
import pytest

from forgegrad.bench import conv, conv_transpose

BENCH_THREADS_DEFAULT = "1"  # FG_BENCH_THREADS overrides; `nthreads`, `run_workload`: bench/conftest.py


@pytest.mark.parametrize("workload,runtime", [(w, r) for w in conv.workloads() for r in w.runtimes], ids=str)
def test_conv2d(run_workload, workload, runtime):
    run_workload(workload, runtime, rounds=7)


@pytest.mark.parametrize("workload,runtime", [(w, r) for w in conv_transpose.workloads() for r in w.runtimes], ids=str)
def test_conv_transpose2d(run_workload, workload, runtime):
    run_workload(workload, runtime, rounds=7)
