"""conv2d forward and forward+backward: forgegrad vs torch, threads pinned on both sides.

Run (the OPENBLAS variables are unset only for benchmarks):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \
        python -m pytest bench/bench_conv.py --benchmark-group-by=group
FG_BENCH_THREADS="1,2" (default "1") picks the thread counts. Each group holds one shape, pass and
thread count, so forgegrad and torch sit side by side.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from forgegrad.kernels.conv import conv2d_backward, conv2d_forward

# name: (input shape, weight shape); all 3x3, stride 1, padding 1
SHAPES = {
    "x32x64x32x32_w64": ((32, 64, 32, 32), (64, 64, 3, 3)),
    "x64x1x28x28_w32": ((64, 1, 28, 28), (32, 1, 3, 3)),
    "x64x32x14x14_w64": ((64, 32, 14, 14), (64, 32, 3, 3)),
}
BENCH_THREADS_DEFAULT = "1"  # FG_BENCH_THREADS overrides; `nthreads`: bench/conftest.py


def _data(shape):
    xs, ws = SHAPES[shape]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(xs).astype(np.float32)
    w = (rng.standard_normal(ws) * 0.1).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    gy = rng.standard_normal((xs[0], ws[0], xs[2], xs[3])).astype(np.float32)
    return x, w, b, gy


def _forgegrad(pass_, x, w, b, gy):
    if pass_ == "fwd":
        return lambda: conv2d_forward(x, w, b, padding=1)

    def fwd_bwd():
        conv2d_forward(x, w, b, padding=1)
        conv2d_backward(x, w, gy, padding=1)
    return fwd_bwd


def _torch(pass_, x, w, b, gy):
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    tgy = torch.tensor(gy)
    if pass_ == "fwd":
        def fwd():
            with torch.no_grad():
                F.conv2d(tx, tw, tb, padding=1)
        return fwd

    def fwd_bwd():
        tx.grad = tw.grad = tb.grad = None
        F.conv2d(tx, tw, tb, padding=1).backward(tgy)
    return fwd_bwd


@pytest.mark.parametrize("impl", ["forgegrad", "torch"])
@pytest.mark.parametrize("pass_", ["fwd", "fwd_bwd"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_conv2d(benchmark, nthreads, shape, pass_, impl):
    benchmark.group = f"conv2d {shape} {pass_} {nthreads}t"
    fn = (_forgegrad if impl == "forgegrad" else _torch)(pass_, *_data(shape))
    fn()  # warm-up (allocations, torch's primitive cache)
    benchmark.pedantic(fn, rounds=7, iterations=1, warmup_rounds=1)
