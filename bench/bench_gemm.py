"""pytest-benchmark suite: forgegrad SGEMM vs numpy (OpenBLAS) vs torch, grouped by shape.

Run (numpy at its usual speed needs the OpenBLAS variables unset, in the command only):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \\
        python -m pytest bench/bench_gemm.py --benchmark-only --benchmark-group-by=group

Every test pins all runtimes to the same thread count (1 and 2) and writes into a preallocated
output; transposed operands are views. The same workloads as `python -m forgegrad.bench gemm`.
"""
import numpy as np
import pytest

from forgegrad.bench import gemm as suite
from forgegrad.bench._timing import optional_import, pinned_threads
from forgegrad.kernels import bmm, matmul

torch = optional_import("torch")
RUNTIMES = ["forgegrad", "numpy"] + (["torch"] if torch is not None else [])
THREADS = [1, 2]

GEMMS = list(suite._workloads(quick=False))


@pytest.fixture(params=THREADS, ids=lambda t: f"t{t}")
def pinned(request):
    with pinned_threads(request.param):
        yield request.param


def _gemm_fn(runtime, m, k, n, ta, tb):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    opa, opb = (a.T if ta else a), (b.T if tb else b)
    out = np.empty((m, n), np.float32)
    if runtime == "forgegrad":
        return lambda: matmul(a, b, out=out, trans_a=ta, trans_b=tb)
    if runtime == "numpy":
        return lambda: np.matmul(opa, opb, out=out)
    ta_, tb_, to_ = torch.from_numpy(opa), torch.from_numpy(opb), torch.from_numpy(out)
    return lambda: torch.matmul(ta_, tb_, out=to_)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("shape", GEMMS, ids=lambda w: suite._name(*w).replace(" ", "_"))
def test_gemm(benchmark, pinned, shape, runtime):
    fn = _gemm_fn(runtime, *shape)
    benchmark.group = f"gemm {suite._name(*shape)} threads={pinned}"
    benchmark.extra_info["gflop"] = 2e-9 * shape[0] * shape[1] * shape[2]
    benchmark(fn)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("shape", suite.BATCHED, ids=lambda w: "x".join(map(str, w)))
def test_bmm(benchmark, pinned, shape, runtime):
    bs, m, k, n = shape
    rng = np.random.default_rng(0)
    a = rng.standard_normal((bs, m, k)).astype(np.float32)
    b = rng.standard_normal((bs, k, n)).astype(np.float32)
    out = np.empty((bs, m, n), np.float32)
    if runtime == "forgegrad":
        fn = lambda: bmm(a, b, out=out)  # noqa: E731
    elif runtime == "numpy":
        fn = lambda: np.matmul(a, b, out=out)  # noqa: E731
    else:
        ta_, tb_, to_ = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(out)
        fn = lambda: torch.bmm(ta_, tb_, out=to_)  # noqa: E731
    benchmark.group = f"bmm {bs}x({m}x{k}x{n}) threads={pinned}"
    benchmark.extra_info["gflop"] = 2e-9 * bs * m * n * k
    benchmark(fn)
