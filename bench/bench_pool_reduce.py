"""Global average pooling and sum / mean over the trailing spatial axes (the head of a ResNet / MobileNet):
forgegrad vs torch through each library's public ops, threads pinned on both sides.

Run (the OPENBLAS variables are unset only for benchmarks):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \
        python -m pytest bench/bench_pool_reduce.py --benchmark-group-by=group --benchmark-columns=min,median
FG_BENCH_THREADS="1,2" (default "1") picks the thread counts.

Groups, per shape (N x C x H x W): adaptive_avg_pool2d(x, 1), x.mean((2, 3)) and avg_pool2d(x, (H, W)) forward
under no_grad, and adaptive_avg_pool2d(x, 1).sum().backward(). forgegrad runs them as rows of H * W contiguous
floats summed many rows a vector pass (cpp/kernels/per_isa/reduce_rows.cpp).
"""
import numpy as np
import pytest
import torch

import forgegrad as fg

BENCH_THREADS_DEFAULT = "1"  # FG_BENCH_THREADS overrides; `nthreads`: bench/conftest.py
RUNTIMES = ["forgegrad", "torch"]
SHAPES = [(64, 512, 7, 7), (32, 2048, 7, 7), (8, 64, 56, 56), (256, 1280, 1, 1), (128, 3, 17, 17)]
FORWARDS = {
    "adaptive_avg_pool2d": lambda lib, t: lib.nn.functional.adaptive_avg_pool2d(t, 1),
    "mean23": lambda lib, t: t.mean((2, 3)),
    "avg_pool2d": lambda lib, t: lib.nn.functional.avg_pool2d(t, tuple(t.shape[2:])),
}


def _input(runtime, shape, grad):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    t = fg.tensor(x) if runtime == "forgegrad" else torch.from_numpy(x)
    return t.requires_grad_(True) if grad else t


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("op", sorted(FORWARDS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_global_pool_forward(benchmark, nthreads, runtime, op, shape):
    lib = fg if runtime == "forgegrad" else torch
    t, f = _input(runtime, shape, False), FORWARDS[op]

    def run():
        with lib.no_grad():
            return f(lib, t)

    benchmark.group = f"{op} fwd {'x'.join(map(str, shape))} threads={nthreads}"
    benchmark(run)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_global_pool_forward_backward(benchmark, nthreads, runtime, shape):
    lib = fg if runtime == "forgegrad" else torch
    t = _input(runtime, shape, True)

    def step():
        t.grad = None
        lib.nn.functional.adaptive_avg_pool2d(t, 1).sum().backward()

    benchmark.group = f"adaptive_avg_pool2d fwd+bwd {'x'.join(map(str, shape))} threads={nthreads}"
    benchmark(step)
