"""Sums / means over middle axes: mean pooling over a sequence (``x.mean(1)`` of (B, T, C)), ``x.sum(1)`` of NCHW,
a permuted view reduced in memory order, and the backward: forgegrad vs numpy vs torch, threads pinned.

Interleaved rounds at 1 thread, best of each by thread CPU time (one process; what the README quotes; CPU time, as
the machine this was tuned on is shared and wall times there count other processes' time slices):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python python bench/bench_reduce_mid.py [rounds]
pytest-benchmark (FG_BENCH_THREADS="1,2" picks the thread counts):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \\
        python -m pytest bench/bench_reduce_mid.py --benchmark-group-by=group --benchmark-columns=min,median

forgegrad runs these on sum_mid_f32 (cpp/kernels/per_isa/reduce_rows.cpp; float64 accumulation in a fixed order),
the permuted view on sum_rows (its reduction is over its memory's trailing axis).
"""
import sys
import time

import numpy as np
import pytest
import torch

import forgegrad as fg

BENCH_THREADS_DEFAULT = "1"  # FG_BENCH_THREADS overrides; `nthreads`: bench/conftest.py
RUNTIMES = ["forgegrad", "numpy", "torch"]
# (name, input shape, permutation of the stored array or None, reduction, dim)
CASES = [
    ("mean1 32x128x768", (32, 128, 768), None, "mean", 1),
    ("sum1 64x512x14x14", (64, 512, 14, 14), None, "sum", 1),
    ("sum1 8x1000x64", (8, 1000, 64), None, "sum", 1),
    ("mean1 16x5000x64", (16, 5000, 64), None, "mean", 1),
    ("sum12 32x64x7x7x16", (32, 64, 7, 7, 16), None, "sum", (1, 2)),
    ("mean1 8x128x2048", (8, 128, 2048), None, "mean", 1),
    ("mean1 of (32,768,128).transpose(1,2)", (32, 768, 128), (0, 2, 1), "mean", 1),
]


_ARRAYS = {}


def _input(runtime, shape, perm, grad=False):
    # one array per shape that every runtime reads in place (fg.from_numpy, torch.from_numpy): the same cache state
    # for all in the interleaved rounds, where a copy of its own had favoured whichever pair shared one
    x = _ARRAYS.setdefault(shape, np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    if runtime == "numpy":
        return x if perm is None else x.transpose(perm)
    t = fg.from_numpy(x) if runtime == "forgegrad" else torch.from_numpy(x)
    t = t.requires_grad_(True) if grad else t
    return t if perm is None else t.permute(*perm)


def _forward(runtime, shape, perm, op, dim):
    t = _input(runtime, shape, perm)
    if runtime == "numpy":
        return lambda: getattr(t, op)(dim)
    lib = fg if runtime == "forgegrad" else torch

    def run():
        with lib.no_grad():
            return getattr(t, op)(dim)
    return run


def _forward_backward(runtime, shape):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    t = (fg.tensor(x) if runtime == "forgegrad" else torch.from_numpy(x)).requires_grad_(True)

    def step():
        t.grad = None
        t.mean(1).sum().backward()
    return step


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0].replace(" ", "-"))
def test_reduce_mid_forward(benchmark, nthreads, runtime, case):
    name, shape, perm, op, dim = case
    benchmark.group = f"{name} fwd threads={nthreads}"
    benchmark(_forward(runtime, shape, perm, op, dim))


@pytest.mark.parametrize("runtime", ["forgegrad", "torch"])
def test_reduce_mid_forward_backward(benchmark, nthreads, runtime):
    benchmark.group = f"mean1 32x128x768 fwd+bwd threads={nthreads}"
    benchmark(_forward_backward(runtime, (32, 128, 768)))


def main(rounds=25):
    from forgegrad.bench._timing import best_of_interleaved, pinned_threads

    with pinned_threads(1):
        rows = [(f"{name} fwd", {r: _forward(r, shape, perm, op, dim) for r in RUNTIMES})
                for name, shape, perm, op, dim in CASES]
        rows.append(("mean1 32x128x768 fwd+bwd", {r: _forward_backward(r, (32, 128, 768))
                                                  for r in ("forgegrad", "torch")}))
        for name, fns in rows:  # the runtimes alternate round by round (a shared, noisy machine)
            best, _ = best_of_interleaved(fns, rounds, warmup=1, clock=time.thread_time)
            ours = best["forgegrad"]
            print(f"{name:42s} " + "  ".join(f"{r} {best[r] * 1e3:7.3f} ms" for r in fns)
                  + "  | " + "  ".join(f"{ours and best[r] / ours:.2f}x {r}" for r in fns if r != "forgegrad"))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 25)
