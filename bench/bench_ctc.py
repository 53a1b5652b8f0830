"""CTC loss forward + backward: forgegrad (F.ctc_loss, C++ kernel _C.ctc) vs torch's CPU kernel, threads pinned
on both sides.

Run (the OPENBLAS variables are unset only for benchmarks):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \
        python -m pytest bench/bench_ctc.py --benchmark-group-by=group --benchmark-columns=min,median,mean
FG_BENCH_THREADS="1,2" picks the thread counts (default 1).

One step of a recogniser's loss: log_probs (T=200, N=16, C=32) leaf, targets padded (N, S=40) with target
lengths 20-40 and input lengths 150-200, reduction 'mean', loss and backward (the gradient of log_probs).
forgegrad runs its recursions in float64, torch in float32.
"""
import numpy as np
import pytest
import torch

import forgegrad as fg

BENCH_THREADS_DEFAULT = "1"
RUNTIMES = ["forgegrad", "torch"]
T, N, C, S = 200, 16, 32, 40


def _inputs():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((T, N, C))
    lp = (z - np.log(np.exp(z).sum(-1, keepdims=True))).astype(np.float32)
    targets = rng.integers(1, C, (N, S))
    return lp, targets, rng.integers(150, T + 1, N), rng.integers(20, S + 1, N)


def _step(runtime):
    lp, targets, il, tl = _inputs()
    if runtime == "forgegrad":
        args = (fg.tensor(targets), fg.tensor(il), fg.tensor(tl))

        def step():
            x = fg.tensor(lp, requires_grad=True)
            fg.nn.functional.ctc_loss(x, *args).backward()
            return x.grad
        return step
    targs = (torch.from_numpy(targets), torch.from_numpy(il), torch.from_numpy(tl))

    def step():
        x = torch.from_numpy(lp).requires_grad_()
        torch.nn.functional.ctc_loss(x, *targs).backward()
        return x.grad
    return step


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_ctc_forward_backward(benchmark, nthreads, runtime):
    fn = _step(runtime)
    benchmark.group = f"ctc_loss fwd+bwd T={T} N={N} C={C} S={S} threads={nthreads}"
    fn()
    benchmark(fn)
