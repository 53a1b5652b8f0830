"""MNIST-shape CNN training step (LeNet: conv32-pool-conv64-pool-fc128-fc10, cross-entropy, Adam,
batch 64, 1x28x28): forgegrad vs torch with the same weights and data, threads pinned on both sides.

Run (the OPENBLAS variables are unset only for benchmarks):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \
        python -m pytest bench/bench_cnn.py --benchmark-group-by=group
FG_BENCH_THREADS="1,2" (default "1") picks the thread counts; each group holds one thread count, so
forgegrad and torch sit side by side. The same workload is the `cnn` suite of
`python -m forgegrad.bench cnn --threads 1 2`.
"""

import numpy as np
import pytest
import torch

from forgegrad.bench.cnn import cnn_step_fns

BENCH_THREADS_DEFAULT = "1"  # FG_BENCH_THREADS overrides; `nthreads`: bench/conftest.py


@pytest.mark.parametrize("impl", ["forgegrad", "torch"])
def test_cnn_train_step(benchmark, nthreads, impl):
    benchmark.group = f"LeNet step b64 1x28x28 {nthreads}t"
    fn = cnn_step_fns(torch, np.random.default_rng(0))[impl]
    fn()  # warm-up (allocations, torch's primitive cache)
    fn()
    benchmark.pedantic(fn, rounds=10, iterations=1, warmup_rounds=1)
