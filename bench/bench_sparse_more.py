"""dense (64 x 4096) @ sparse (4096 x 4096) and sparse @ sparse (4096 x 4096, both at the same density), float32,
forgegrad vs torch, COO and CSR, 1 thread each side: a quick table of the min over interleaved rounds (ms).
dense @ sparse runs the SpMM kernel on S^T; sparse @ sparse the SpGEMM kernel (cpp/kernels/spgemm.cpp; bench_spgemm.py
compares it with its former numpy path).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python python bench/bench_sparse_more.py
"""
import time

import numpy as np
import torch

import forgegrad as fg

N = 4096
B = 64


def _sparse(density, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((N, N)).astype(np.float32) * (rng.random((N, N)) < density)
    return fg.tensor(a), torch.tensor(a)


def _best(fns, rounds=5):
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            best[k] = min(best[k], time.perf_counter() - t0)
    return {k: round(v * 1e3, 2) for k, v in best.items()}


def main():
    fg.set_num_threads(1)
    torch.set_num_threads(1)
    d = np.random.default_rng(1).standard_normal((B, N)).astype(np.float32)
    fd, td = fg.tensor(d), torch.tensor(d)
    for density in (0.001, 0.01):
        fa, ta = _sparse(density, 2)
        fb, tb = _sparse(density, 3)
        fcsr, fcoo, tcsr, tcoo = fa.to_sparse_csr(), fa.to_sparse(), ta.to_sparse_csr(), ta.to_sparse()
        fcsr2, fcoo2, tcsr2, tcoo2 = fb.to_sparse_csr(), fb.to_sparse(), tb.to_sparse_csr(), tb.to_sparse()
        print(f"density {density}: dense @ sparse (64x4096 @ 4096x4096), ms",
              _best({"fg_csr": lambda: fd @ fcsr, "fg_coo": lambda: fd @ fcoo, "torch_csr": lambda: td @ tcsr,
                     "torch_coo": lambda: td @ tcoo}))
        print(f"density {density}: sparse @ sparse (4096^2 each), ms",
              _best({"fg_csr": lambda: fcsr @ fcsr2, "fg_coo": lambda: fcoo @ fcoo2,
                     "torch_csr": lambda: tcsr @ tcsr2, "torch_coo": lambda: tcoo @ tcoo2}, rounds=3))


if __name__ == "__main__":
    main()
