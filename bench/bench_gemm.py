"""pytest-benchmark suite: forgegrad SGEMM vs numpy (OpenBLAS) vs torch, grouped by shape.

Run (numpy at its usual speed needs the OpenBLAS variables unset, in the command only):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \\
        python -m pytest bench/bench_gemm.py --benchmark-only --benchmark-group-by=group

The workloads are forgegrad.bench.gemm's (the `forgegrad bench gemm` suite): every runtime writes
into a preallocated output; transposed operands are views. FG_BENCH_THREADS="1,2" (default) picks
the thread counts, pinned on every runtime.
"""
import pytest

from forgegrad.bench import gemm

BENCH_THREADS_DEFAULT = "1,2"  # FG_BENCH_THREADS overrides; `nthreads`, `run_workload`: bench/conftest.py


@pytest.mark.parametrize("workload,runtime", [(w, r) for w in gemm.workloads() for r in w.runtimes], ids=str)
def test_gemm(run_workload, workload, runtime):
    run_workload(workload, runtime)
