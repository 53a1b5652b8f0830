"""Sparse (4096 x 4096) @ dense (4096 x 64), float32, at 1 %, 5 % and 20 % density: forgegrad.sparse.mm on CSR
(cpp/kernels/per_isa/spmm.cpp) and on COO (coalesced: converted to CSR per call), torch.sparse.mm on CSR and COO,
and the dense SGEMM of the same matrix (forgegrad and torch); plus forgegrad's and torch's forward + backward
(the dense operand's gradient and the sparse one's values). Threads pinned on both sides.

Run (the OPENBLAS variables are unset only for benchmarks):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \\
        python -m pytest bench/bench_sparse.py --benchmark-group-by=group --benchmark-columns=min,median
FG_BENCH_THREADS="1,2" (default "1") picks the thread counts. A quick table (min of interleaved rounds):
    PYTHONPATH=python python bench/bench_sparse.py [threads ...]
"""
import sys
import time

import numpy as np
import pytest
import torch

import forgegrad as fg

BENCH_THREADS_DEFAULT = "1"  # FG_BENCH_THREADS overrides; `nthreads`: bench/conftest.py
M = K = 4096
N = 64
DENSITIES = [0.01, 0.05, 0.2]
KINDS = ["fg_csr", "fg_coo", "torch_csr", "torch_coo", "fg_dense", "torch_dense"]


def _operands(density):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((M, K)).astype(np.float32)
    a *= rng.random((M, K)) < density
    b = rng.standard_normal((K, N)).astype(np.float32)
    return a, b


def make(kind, density, grad=False):
    """A no-argument function computing (and with grad, differentiating) sparse @ dense the ``kind`` way."""
    a, b = _operands(density)
    if kind.startswith("fg"):
        lib, dense_a = fg, fg.tensor(a)
        sa = {"csr": dense_a.to_sparse_csr(), "coo": dense_a.to_sparse(), "dense": dense_a}[kind[3:]]
        tb = fg.tensor(b)
        mm = fg.matmul if kind == "fg_dense" else fg.sparse.mm
    else:
        lib, dense_a = torch, torch.from_numpy(a)
        sa = {"csr": dense_a.to_sparse_csr(), "coo": dense_a.to_sparse(), "dense": dense_a}[kind[6:]]
        tb = torch.from_numpy(b)
        mm = torch.matmul if kind == "torch_dense" else torch.sparse.mm
    if not grad:
        def run():
            with lib.no_grad():
                return mm(sa, tb)
        return run
    sa.requires_grad_(True)
    tb.requires_grad_(True)

    def run_grad():
        sa.grad = tb.grad = None
        mm(sa, tb).sum().backward()
    return run_grad


def _id(d):
    return f"{int(d * 100)}pct"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("density", DENSITIES, ids=_id)
def test_spmm_forward(benchmark, nthreads, kind, density):
    fn = make(kind, density)
    fn()
    benchmark.group = f"spmm {M}x{K}@{K}x{N} {_id(density)} {nthreads}t"
    benchmark(fn)


@pytest.mark.parametrize("kind", ["fg_coo", "torch_coo"])  # torch's CSR sparse.mm has no sparse gradient
@pytest.mark.parametrize("density", DENSITIES, ids=_id)
def test_spmm_forward_backward(benchmark, nthreads, kind, density):
    fn = make(kind, density, grad=True)
    fn()
    benchmark.group = f"spmm fwd+bwd {M}x{K}@{K}x{N} {_id(density)} {nthreads}t"
    benchmark(fn)


def _table(threads, rounds=5):
    from forgegrad.bench._timing import pinned_threads
    print(f"sparse ({M}x{K}) @ dense ({K}x{N}) float32, ms (min of {rounds} interleaved rounds)")
    cols = KINDS + ["fg_coo fwd+bwd", "torch_coo fwd+bwd"]
    print(f"{'threads':>7} {'density':>7} " + " ".join(f"{c:>17}" for c in cols))
    for t in threads:
        with pinned_threads(t):
            for d in DENSITIES:
                fns = [make(k, d) for k in KINDS] + [make("fg_coo", d, True), make("torch_coo", d, True)]
                best = [float("inf")] * len(fns)
                for _ in range(rounds):
                    for i, fn in enumerate(fns):
                        t0 = time.perf_counter()
                        fn()
                        best[i] = min(best[i], time.perf_counter() - t0)
                print(f"{t:>7} {int(d * 100):>6}% " + " ".join(f"{b * 1e3:>17.2f}" for b in best))


if __name__ == "__main__":
    _table([int(a) for a in sys.argv[1:]] or [1, 2])
