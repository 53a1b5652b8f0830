"""Adaptive average / max pooling to sizes > 1 (VGG's 7x7 head, Inception's 17 -> 3, overlapping 9 -> 4):
forgegrad vs torch through each library's public ops, threads pinned on both sides.

Run (the OPENBLAS variables are unset only for benchmarks):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \
        python -m pytest bench/bench_adaptive_pool.py --benchmark-group-by=group --benchmark-columns=min,median
FG_BENCH_THREADS="1,2" (default "1") picks the thread counts.

Groups, per (shape, output size) and op: the forward under no_grad, and the forward + .sum().backward().
forgegrad runs them on cpp/kernels/per_isa/adaptive_pool.cpp (the max's backward on max_pool2d's scatter).
"""
import numpy as np
import pytest
import torch

import forgegrad as fg

BENCH_THREADS_DEFAULT = "1"  # FG_BENCH_THREADS overrides; `nthreads`: bench/conftest.py
RUNTIMES = ["forgegrad", "torch"]
CASES = [((64, 512, 14, 14), 7), ((32, 256, 17, 17), 3), ((8, 64, 56, 56), 7), ((16, 32, 9, 9), 4)]
OPS = {
    "adaptive_avg_pool2d": lambda lib, t, o: lib.nn.functional.adaptive_avg_pool2d(t, o),
    "adaptive_max_pool2d": lambda lib, t, o: lib.nn.functional.adaptive_max_pool2d(t, o),
}


def _id(case):
    shape, out = case
    return f"{'x'.join(map(str, shape))}->{out}x{out}"


def _input(runtime, shape, grad):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    t = fg.tensor(x) if runtime == "forgegrad" else torch.from_numpy(x)
    return t.requires_grad_(True) if grad else t


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_adaptive_pool_forward(benchmark, nthreads, runtime, op, case):
    lib = fg if runtime == "forgegrad" else torch
    shape, out = case
    t, f = _input(runtime, shape, False), OPS[op]

    def run():
        with lib.no_grad():
            return f(lib, t, out)

    benchmark.group = f"{op} fwd {_id(case)} threads={nthreads}"
    benchmark(run)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_adaptive_pool_forward_backward(benchmark, nthreads, runtime, op, case):
    lib = fg if runtime == "forgegrad" else torch
    shape, out = case
    t, f = _input(runtime, shape, True), OPS[op]

    def step():
        t.grad = None
        f(lib, t, out).sum().backward()

    benchmark.group = f"{op} fwd+bwd {_id(case)} threads={nthreads}"
    benchmark(step)
