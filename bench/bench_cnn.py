"""MNIST-shape CNN (LeNet: conv32-pool-conv64-pool-fc128-fc10, 1x28x28): the training step
(cross-entropy, Adam, batch 64) against torch and inference at batch 1 and 16 against torch and
onnxruntime, with the same weights and data, threads pinned on every side.

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
def test_cnn(run_workload, workload, runtime):
    run_workload(workload, runtime, rounds=10 if "step" in workload.name else 200)
