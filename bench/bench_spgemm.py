"""sparse @ sparse (CSR @ CSR, float32, both operands of one size and density): forgegrad's C++ SpGEMM
(cpp/kernels/spgemm.cpp, through fg.mm on CSR tensors), its former numpy path (_spgemm.spgemm_reference, the same
result) and torch's CSR @ CSR (torch.mm), threads pinned on both sides.

Run (the OPENBLAS variables are unset only for benchmarks):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \\
        python -m pytest bench/bench_spgemm.py --benchmark-group-by=group --benchmark-columns=min,median
FG_BENCH_THREADS="1,2" (default "1") picks the thread counts. A quick table (min and median of interleaved rounds,
plus the process CPU time of forgegrad's kernel and of torch, which a busy machine inflates less than wall time):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python python bench/bench_spgemm.py [threads ...]
"""
import statistics
import sys
import time

import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad.sparse import _spgemm

BENCH_THREADS_DEFAULT = "1"  # FG_BENCH_THREADS overrides; `nthreads`: bench/conftest.py
SIZES = [(2000, 0.01), (4096, 0.01), (10000, 0.001)]  # (n, density): n x n @ n x n
KINDS = ["fg_kernel", "fg_numpy", "torch_csr"]


def _pair(n, density, seed):
    """The same random n x n float32 CSR matrix (duplicates summed) as a forgegrad and a torch tensor."""
    rng = np.random.default_rng(seed)
    nnz = int(n * n * density)
    ind = np.stack([rng.integers(0, n, nnz), rng.integers(0, n, nnz)])
    vals = rng.standard_normal(nnz).astype(np.float32)
    t = torch.sparse_coo_tensor(torch.from_numpy(ind), torch.from_numpy(vals), (n, n)).coalesce().to_sparse_csr()
    f = fg.sparse_csr_tensor(t.crow_indices().numpy(), t.col_indices().numpy(), t.values().numpy(), (n, n))
    return f, t


def make(kind, n, density):
    (fa, ta), (fb, tb) = _pair(n, density, 1), _pair(n, density, 2)
    if kind == "fg_kernel":
        return lambda: fg.mm(fa, fb)
    if kind == "fg_numpy":  # the path sparse @ sparse took before the kernel
        a, b = fa._data, fb._data
        return lambda: _spgemm.spgemm_reference(a, b)

    def run():
        with torch.no_grad():
            return torch.mm(ta, tb)
    return run


def _id(size):
    return f"{size[0]}_{size[1] * 100:g}pct"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", SIZES, ids=_id)
def test_spgemm(benchmark, nthreads, kind, size):
    fn = make(kind, *size)
    fn()
    benchmark.group = f"spgemm csr {_id(size)} {nthreads}t"
    benchmark(fn)


def _table(threads, rounds=7):
    from forgegrad.bench._timing import pinned_threads
    print(f"CSR @ CSR float32 (n x n @ n x n), ms: wall min / median of {rounds} interleaved rounds, then process "
          "CPU time (min) of each")
    print(f"{'threads':>7} {'n':>6} {'density':>8} " + " ".join(f"{k:>15}" for k in KINDS) + " " +
          " ".join(f"{k + ' cpu':>15}" for k in KINDS))
    for t in threads:
        with pinned_threads(t):
            for n, d in SIZES:
                fns = [make(k, n, d) for k in KINDS]
                wall, cpu = [[] for _ in fns], [[] for _ in fns]
                for fn in fns:
                    fn()
                for _ in range(rounds):
                    for i, fn in enumerate(fns):
                        t0, c0 = time.perf_counter(), time.process_time()
                        fn()
                        wall[i].append(time.perf_counter() - t0)
                        cpu[i].append(time.process_time() - c0)
                cells = [f"{min(w) * 1e3:.1f} / {statistics.median(w) * 1e3:.1f}" for w in wall]
                print(f"{t:>7} {n:>6} {d * 100:>7g}% " + " ".join(f"{c:>15}" for c in cells) + " " +
                      " ".join(f"{min(c) * 1e3:>15.1f}" for c in cpu))

if __name__ == "__main__":
    _table([int(a) for a in sys.argv[1:]] or [1])
