"""forgegrad.topk over a vocabulary (k in 1, 10, 50, 1000 on (64, 32000) and (1, 50257) float32 logits) and
forgegrad.sort of (256, 4096) float32 along the last dim: forgegrad's C++ path (_C.topk), its numpy path (the same
functions with the kernel switched off) and torch, threads pinned on all sides. Forward only (no grad).

Run (the OPENBLAS variables are unset only for benchmarks):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \
        python -m pytest bench/bench_topk.py --benchmark-group-by=group --benchmark-columns=min,median,mean
FG_BENCH_THREADS="1" (default) picks the thread counts.
"""
import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import _topk_kernel

BENCH_THREADS_DEFAULT = "1"  # FG_BENCH_THREADS overrides; `nthreads`: bench/conftest.py
RUNTIMES = ["forgegrad", "forgegrad-numpy", "torch"]
TOPK = [((64, 32000), k) for k in (1, 10, 50, 1000)] + [((1, 50257), k) for k in (1, 10, 50, 1000)]
SORT_SHAPE = (256, 4096)


@pytest.fixture
def numpy_path(monkeypatch, request):
    """Switches the C++ path off for the runtime forgegrad-numpy (the path before the kernel)."""
    if request.node.callspec.params["runtime"] == "forgegrad-numpy":
        monkeypatch.setattr(_topk_kernel, "usable", lambda *a: False)


def _logits(shape):
    return (np.random.default_rng(0).standard_normal(shape) * 3).astype(np.float32)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("shape,k", TOPK, ids=lambda p: "x".join(map(str, p)) if isinstance(p, tuple) else str(p))
def test_topk(benchmark, nthreads, numpy_path, runtime, shape, k):
    x = _logits(shape)
    if runtime == "torch":
        tx = torch.from_numpy(x)
        fn = lambda: torch.topk(tx, k, dim=-1)  # noqa: E731
    else:
        fx = fg.tensor(x)
        fn = lambda: fg.topk(fx, k, dim=-1)  # noqa: E731
    benchmark.group = f"topk k={k} {'x'.join(map(str, shape))} threads={nthreads}"
    fn()
    benchmark(fn)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("stable", [False, True], ids=["sort", "stable"])
def test_sort(benchmark, nthreads, numpy_path, runtime, stable):
    x = _logits(SORT_SHAPE)
    if runtime == "torch":
        tx = torch.from_numpy(x)
        fn = lambda: torch.sort(tx, dim=-1, stable=stable)  # noqa: E731
    else:
        fx = fg.tensor(x)
        fn = lambda: fg.sort(fx, dim=-1, stable=stable)  # noqa: E731
    benchmark.group = f"sort stable={stable} {'x'.join(map(str, SORT_SHAPE))} threads={nthreads}"
    fn()
    benchmark(fn)
