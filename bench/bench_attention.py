"""Scaled dot-product attention: forgegrad's fused kernels vs torch's
scaled_dot_product_attention, threads pinned on both sides.

Run (the OPENBLAS variables are unset only for benchmarks):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \
        python -m pytest bench/bench_attention.py --benchmark-group-by=group --benchmark-columns=min,median,mean
FG_BENCH_THREADS="1,2" (default) picks the thread counts.

The workloads are forgegrad.bench.attention's (the `forgegrad bench attention` suite): causal
forward + backward (q, k, v gradients) and forward alone at B=4, H=8, T=512, D=64, and forward +
backward without a mask; causal soft-capped (Gemma 2) forward + backward, fused vs the composed
Tensor path vs torch composing it; extra_info["gflops"] counts the 7 (2 forward) products of a flash
kernel.
"""
import pytest

from forgegrad.bench import attention

BENCH_THREADS_DEFAULT = "1,2"  # FG_BENCH_THREADS overrides; `nthreads`, `run_workload`: bench/conftest.py


@pytest.mark.parametrize("workload,runtime", [(w, r) for w in attention.workloads() for r in w.runtimes], ids=str)
def test_attention(run_workload, workload, runtime):
    run_workload(workload, runtime, rounds=10)
