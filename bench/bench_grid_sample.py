"""F.grid_sample (bilinear and nearest, zeros / border / reflection padding) forward + backward (input and grid
gradients) of an 8x32x64x64 float32 input at a 64x64 grid from a random affine map: forgegrad's C++ path
(_C.grid_sample), its numpy path (the reference, the kernel switched off) and torch, threads pinned on all sides.

Run (the OPENBLAS variables are unset only for benchmarks):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \
        python -m pytest bench/bench_grid_sample.py --benchmark-group-by=group --benchmark-columns=min,median,mean
FG_BENCH_THREADS="1" (default) picks the thread counts.
"""
import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad.nn import functional as F
from forgegrad.ops import grid_sample as G

BENCH_THREADS_DEFAULT = "1"  # FG_BENCH_THREADS overrides; `nthreads`: bench/conftest.py
RUNTIMES = ["forgegrad", "forgegrad-numpy", "torch"]
SHAPE = (8, 32, 64, 64)
CASES = {
    "bilinear zeros": dict(mode="bilinear", padding_mode="zeros", align_corners=False),
    "bilinear border": dict(mode="bilinear", padding_mode="border", align_corners=False),
    "bilinear reflection ac": dict(mode="bilinear", padding_mode="reflection", align_corners=True),
    "nearest zeros": dict(mode="nearest", padding_mode="zeros", align_corners=False),
}


@pytest.fixture
def numpy_path(monkeypatch, request):
    """Switches the C++ path off for the runtime forgegrad-numpy."""
    if request.node.callspec.params["runtime"] == "forgegrad-numpy":
        monkeypatch.setattr(G, "_kernel", lambda *a: None)


def _inputs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(SHAPE).astype(np.float32)
    n, _, h, w = SHAPE
    theta = np.tile(np.array([[[0.9, 0.2, 0.05], [-0.15, 1.1, -0.1]]], np.float32), (n, 1, 1))
    theta += rng.uniform(-0.05, 0.05, theta.shape).astype(np.float32)
    grid = torch.nn.functional.affine_grid(torch.from_numpy(theta), [n, 1, h, w], align_corners=False).numpy()
    g = rng.standard_normal((n, SHAPE[1], h, w)).astype(np.float32)
    return x, grid, g


def _fn(runtime, case):
    x, grid, g = _inputs()
    kw = CASES[case]
    if runtime == "torch":
        tx, tg, tgo = torch.from_numpy(x).requires_grad_(), torch.from_numpy(grid).requires_grad_(), torch.from_numpy(g)

        def run_torch():
            tx.grad = tg.grad = None
            torch.nn.functional.grid_sample(tx, tg, **kw).backward(tgo)
        return run_torch
    fx, fgr, fgo = fg.tensor(x, requires_grad=True), fg.tensor(grid, requires_grad=True), fg.tensor(g)

    def run_fg():
        fx.grad = fgr.grad = None
        F.grid_sample(fx, fgr, **kw).backward(fgo)
    return run_fg


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("case", list(CASES))
def test_grid_sample(benchmark, nthreads, numpy_path, runtime, case):
    fn = _fn(runtime, case)
    fn()  # warm-up
    benchmark.group = f"grid_sample {case} fwd+bwd {'x'.join(map(str, SHAPE))} threads={nthreads}"
    benchmark(fn)
