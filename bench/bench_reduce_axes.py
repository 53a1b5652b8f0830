"""Sums / means over non-adjacent axes (``x.sum((1, 3))`` of NCHW, ``x.mean((0, 2, 4))``) and of sliced views
(``x[:, :, 1:-1, 1:-1].mean((2, 3))``), and one backward: forgegrad vs numpy vs torch, threads pinned.

Interleaved rounds at 1 thread, best of each by thread CPU time (one process; what the README quotes; CPU time, as
the machine this was tuned on is shared and wall times there count other processes' time slices):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python python bench/bench_reduce_axes.py [rounds]
(``--simd avx2`` runs forgegrad's AVX2 kernels on an AVX-512 machine)
pytest-benchmark (FG_BENCH_THREADS="1,2" picks the thread counts):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \\
        python -m pytest bench/bench_reduce_axes.py --benchmark-group-by=group --benchmark-columns=min,median

forgegrad runs these on sum_axes_f32 (cpp/kernels/per_isa/reduce_axes.cpp; float64 accumulation in a fixed order);
numpy on its float32 adds (float64 past 4096 values a sum, forgegrad's numpy path does the same).
"""
import sys
import time

import numpy as np
import pytest
import torch

import forgegrad as fg

BENCH_THREADS_DEFAULT = "1"  # FG_BENCH_THREADS overrides; `nthreads`: bench/conftest.py
RUNTIMES = ["forgegrad", "numpy", "torch"]


def _crop(t):
    return t[:, :, 1:-1, 1:-1]


def _cols(t):
    return t[:, :500]


# (name, stored shape, view of it or None, reduction, dim)
CASES = [
    ("sum(1,3) 64x64x28x28", (64, 64, 28, 28), None, "sum", (1, 3)),
    ("sum(0,2) 64x64x28x28", (64, 64, 28, 28), None, "sum", (0, 2)),
    ("mean(0,2,4) 8x16x8x16x32", (8, 16, 8, 16, 32), None, "mean", (0, 2, 4)),
    ("sum(1,3) 16x32x16x64", (16, 32, 16, 64), None, "sum", (1, 3)),
    ("sum(0,2) 4x256x8x256", (4, 256, 8, 256), None, "sum", (0, 2)),
    ("sum(0,2) 64x128x64x3", (64, 128, 64, 3), None, "sum", (0, 2)),
    ("sum(1,3) 64x128x64x3", (64, 128, 64, 3), None, "sum", (1, 3)),
    ("mean(2,3) of 32x64x30x30[:,:,1:-1,1:-1]", (32, 64, 30, 30), _crop, "mean", (2, 3)),
    ("mean(0,2,3) of 16x64x32x32[:,:,1:-1,1:-1]", (16, 64, 32, 32), _crop, "mean", (0, 2, 3)),
    ("sum(1) of 256x1024[:, :500]", (256, 1024), _cols, "sum", 1),
]

_ARRAYS = {}


def _input(runtime, shape, view, grad=False):
    # one array per shape that every runtime reads in place (fg.from_numpy, torch.from_numpy): the same cache state
    # for all in the interleaved rounds
    x = _ARRAYS.setdefault(shape, np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    if runtime == "numpy":
        t = x
    else:
        t = fg.from_numpy(x) if runtime == "forgegrad" else torch.from_numpy(x)
        t = t.requires_grad_(True) if grad else t
    return t if view is None else view(t)


def _forward(runtime, shape, view, op, dim):
    t = _input(runtime, shape, view)
    if runtime == "numpy":
        return lambda: getattr(t, op)(dim)
    lib = fg if runtime == "forgegrad" else torch

    def run():
        with lib.no_grad():
            return getattr(t, op)(dim)
    return run


def _forward_backward(runtime, shape, dim):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    t = (fg.tensor(x) if runtime == "forgegrad" else torch.from_numpy(x)).requires_grad_(True)

    def step():
        t.grad = None
        t.mean(dim).sum().backward()
    return step


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0].replace(" ", "-"))
def test_reduce_axes_forward(benchmark, nthreads, runtime, case):
    name, shape, view, op, dim = case
    benchmark.group = f"{name} fwd threads={nthreads}"
    benchmark(_forward(runtime, shape, view, op, dim))


@pytest.mark.parametrize("runtime", ["forgegrad", "torch"])
def test_reduce_axes_forward_backward(benchmark, nthreads, runtime):
    benchmark.group = f"mean(1,3) 32x64x28x28 fwd+bwd threads={nthreads}"
    benchmark(_forward_backward(runtime, (32, 64, 28, 28), (1, 3)))


def main(rounds=25):
    from forgegrad.bench._timing import best_of_interleaved, pinned_threads

    with pinned_threads(1):
        rows = [(f"{name} fwd", {r: _forward(r, shape, view, op, dim) for r in RUNTIMES})
                for name, shape, view, op, dim in CASES]
        rows.append(("mean(1,3) 32x64x28x28 fwd+bwd", {r: _forward_backward(r, (32, 64, 28, 28), (1, 3))
                                                       for r in ("forgegrad", "torch")}))
        for name, fns in rows:  # the runtimes alternate round by round (a shared, noisy machine)
            best, _ = best_of_interleaved(fns, rounds, warmup=1, clock=time.thread_time)
            ours = best["forgegrad"]
            print(f"{name:48s} " + "  ".join(f"{r} {best[r] * 1e3:7.3f} ms" for r in fns)
                  + "  | " + "  ".join(f"{ours and best[r] / ours:.2f}x {r}" for r in fns if r != "forgegrad"))


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--simd" in args:  # forgegrad's kernels on another ISA path (e.g. avx2 on an AVX-512 machine)
        i = args.index("--simd")
        fg.set_simd(args[i + 1])
        del args[i:i + 2]
    main(int(args[0]) if args else 25)
