"""Optimizer steps: forgegrad vs torch.optim, threads pinned on both sides.

Run (the OPENBLAS variables are unset only for benchmarks):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \
        python -m pytest bench/bench_optim.py --benchmark-group-by=group --benchmark-columns=min,median,mean
FG_BENCH_THREADS="1,2" (default) picks the thread counts.

The workloads are forgegrad.bench.adam's (the `forgegrad bench adam` suite):
  adam 10M params: one Adam step over 10,000,000 float32 parameters in four large tensors; the
    update streams ~28 bytes/param (extra_info["bytes_per_step"] / time is the bandwidth reached).
    Compared with torch.optim.Adam(fused=True) and (foreach=True).
  sgd momentum 10M params: SGD with momentum and nesterov, same tensors.
  adam mlp 6 params: Adam over the 6 parameters of a 784-256-128-10 MLP: per-step Python overhead.
"""
import pytest

from forgegrad.bench import adam

BENCH_THREADS_DEFAULT = "1,2"  # FG_BENCH_THREADS overrides; `nthreads`, `run_workload`: bench/conftest.py


@pytest.mark.parametrize("workload,runtime", [(w, r) for w in adam.workloads() for r in w.runtimes], ids=str)
def test_optimizer_step(run_workload, workload, runtime):
    run_workload(workload, runtime, rounds=200 if "mlp" in workload.name else 15)
