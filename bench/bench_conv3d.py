"""Conv3d forward and forward+backward: forgegrad vs torch, threads pinned on both sides, at a 3-D U-Net layer
(N=2, 32 -> 32 channels, 16x32x32, kernel 3, padding 1).

Run (the OPENBLAS variables are unset only for benchmarks):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \
        python -m pytest bench/bench_conv3d.py --benchmark-group-by=group
FG_BENCH_THREADS="1,2" (default "1") picks the thread counts. The workloads are forgegrad.bench.conv3d's (the
`forgegrad bench conv3d` suite).
"""
import pytest

from forgegrad.bench import conv3d

BENCH_THREADS_DEFAULT = "1"  # FG_BENCH_THREADS overrides; `nthreads`, `run_workload`: bench/conftest.py


@pytest.mark.parametrize("workload,runtime", [(w, r) for w in conv3d.workloads() for r in w.runtimes], ids=str)
def test_conv3d(run_workload, workload, runtime):
    run_workload(workload, runtime, rounds=5)
