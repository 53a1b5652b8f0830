"""MNIST-shape CNN training step (LeNet: conv32-pool-conv64-pool-fc128-fc10, cross-entropy, Adam,
batch 64, 1x28x28): forgegrad vs torch with the same weights and data, threads pinned on both sides.

Run (the OPENBLAS variables are unset only for benchmarks):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \
        python -m pytest bench/bench_cnn.py --benchmark-group-by=group
FG_BENCH_THREADS="1,2" (default "1") picks the thread counts; each group holds one thread count, so
forgegrad and torch sit side by side. The workload is forgegrad.bench.cnn's (the `cnn` suite of
`python -m forgegrad.bench cnn --threads 1 2`).
"""
import pytest

from forgegrad.bench import cnn

BENCH_THREADS_DEFAULT = "1"  # FG_BENCH_THREADS overrides; `nthreads`, `run_workload`: bench/conftest.py


@pytest.mark.parametrize("workload,runtime", [(w, r) for w in cnn.workloads() for r in w.runtimes], ids=str)
def test_cnn_train_step(run_workload, workload, runtime):
    run_workload(workload, runtime, rounds=10)
