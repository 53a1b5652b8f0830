"""Orthogonal polynomials at high degree: forgegrad (the C++ recurrence _C.special_poly) vs torch.special, threads
pinned on both sides.

Run (the OPENBLAS variables are unset only for benchmarks):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \
        python -m pytest bench/bench_special_poly.py --benchmark-group-by=group --benchmark-columns=min,median,mean
FG_BENCH_THREADS="1,2" picks the thread counts (default 1).

1,024 points in [-0.9, 0.9] at degree 10,000 in float64: the recurrence's cost is the degree (10^7 steps per call);
torch runs the same recurrence (Legendre, Laguerre) in C++.
"""
import numpy as np
import pytest
import torch

import forgegrad as fg

BENCH_THREADS_DEFAULT = "1"
RUNTIMES = ["forgegrad", "torch"]
POLYS = ["legendre_polynomial_p", "laguerre_polynomial_l"]
DEGREE = 10_000


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("name", POLYS)
def test_polynomial_high_degree(benchmark, nthreads, runtime, name):
    x = np.linspace(-0.9, 0.9, 1024)
    if runtime == "forgegrad":
        fn, args = getattr(fg.special, name), (fg.tensor(x), DEGREE)
    else:
        fn, args = getattr(torch.special, name), (torch.from_numpy(x), DEGREE)
    benchmark.group = f"{name} x(1024) n={DEGREE} float64 threads={nthreads}"
    fn(*args)
    benchmark(fn, *args)
