"""Int8 speed (issue 15): forgegrad's int8 GEMM and dynamic-int8 MLP vs forgegrad fp32 and onnxruntime.

The workloads are forgegrad.bench.int8's (the row names say which int8 path ran); threads are pinned
on every side for each count in FG_BENCH_THREADS (default "1,2").

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \
        python3 -m pytest bench/bench_int8.py --benchmark-only --benchmark-group-by=group
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python python3 -m forgegrad.bench int8 --threads 1 2
"""
import numpy as np
import pytest

from forgegrad.bench import int8

BENCH_THREADS_DEFAULT = "1,2"  # FG_BENCH_THREADS overrides; `nthreads`, `run_workload`: bench/conftest.py


@pytest.mark.parametrize("workload,runtime", [(w, r) for w in int8.workloads() for r in w.runtimes], ids=str)
def test_int8(run_workload, workload, runtime):
    run_workload(workload, runtime, rounds=200 if "512" in workload.name else 2000)


def test_workloads_agree():
    """The benchmarked computations are the same: exact GEMM integers, and the int8 MLP within one
    output quantization step of onnxruntime's own dynamic-int8 model (both quantize the same weights)."""
    pytest.importorskip("onnxruntime")
    g = int8.gemm_fns(33, 40, 70, 1)
    colsum = g["weights"].astype(np.int64).sum(1)
    np.testing.assert_array_equal(g["forgegrad"]() - 128 * colsum, g["onnxruntime"]()[0])
    m = int8.mlp_fns(8, 1)
    ours, theirs, fp32 = m["forgegrad"]().data, m["onnxruntime"]()[0], m["fg fp32"]().data
    assert np.abs(ours - fp32).max() < 0.05 * np.abs(fp32).max()
    assert np.abs(theirs - fp32).max() < 0.05 * np.abs(fp32).max()
