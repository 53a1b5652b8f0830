"""MNIST-shape CNN training step (LeNet: conv32-pool-conv64-pool-fc128-fc10, cross-entropy, Adam,
batch 64, 1x28x28): forgegrad vs torch with the same weights and data, threads pinned on both sides.

Run (the OPENBLAS variables are unset only for benchmarks):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \
        python -m pytest bench/bench_cnn.py --benchmark-group-by=group
FG_BENCH_THREADS="1,2" (default "1") picks the thread counts; each group holds one thread count, so
forgegrad and torch sit side by side. The same workload is the `cnn` suite of
`python -m forgegrad.bench cnn --threads 1 2`.
"""
import os

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

import forgegrad as fg
from forgegrad.bench.cnn import cnn_step_fns

THREADS = [int(t) for t in os.environ.get("FG_BENCH_THREADS", "1").split(",")]


@pytest.fixture(params=THREADS, ids=lambda t: f"{t}t")
def nthreads(request):
    before_fg, before_torch = fg.get_num_threads(), torch.get_num_threads()
    fg.set_num_threads(request.param)
    torch.set_num_threads(request.param)
    with threadpool_limits(limits=request.param):
        yield request.param
    fg.set_num_threads(before_fg)
    torch.set_num_threads(before_torch)


@pytest.mark.parametrize("impl", ["forgegrad", "torch"])
def test_cnn_train_step(benchmark, nthreads, impl):
    benchmark.group = f"LeNet step b64 1x28x28 {nthreads}t"
    fn = cnn_step_fns(torch, np.random.default_rng(0))[impl]
    fn()  # warm-up (allocations, torch's primitive cache)
    fn()
    benchmark.pedantic(fn, rounds=10, iterations=1, warmup_rounds=1)
