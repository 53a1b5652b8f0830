"""Optimizer steps: forgegrad vs torch.optim, threads pinned on both sides.

Run (the OPENBLAS variables are unset only for benchmarks):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \
        python -m pytest bench/bench_optim.py --benchmark-group-by=group --benchmark-columns=min,median,mean
FG_BENCH_THREADS="1,2" (default) picks the thread counts.

Groups:
  adam 10M params: one Adam step over 10,000,000 float32 parameters in four large tensors
    (3 x 2500x1000 and one of 2.5M). The update streams ~16 bytes/param in (param, grad,
    exp_avg, exp_avg_sq) and ~12 out, so 28 bytes/param / time is the bandwidth reached.
    Compared with torch.optim.Adam(fused=True) and (foreach=True).
  sgd 10M params: SGD with momentum and nesterov, same tensors (torch fused and foreach).
  adam mlp6: Adam over the 6 parameters of a 784-256-128-10 MLP (~235k values): per-step
    Python overhead; forgegrad with one kernel call per group (default) and one per parameter
    (foreach=False), torch fused and default (single-tensor on CPU).
"""

import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import optim

BENCH_THREADS_DEFAULT = "1,2"  # FG_BENCH_THREADS overrides; `nthreads`: bench/conftest.py
BIG_SHAPES = [(2500, 1000)] * 3 + [(2_500_000,)]
MLP_SHAPES = [(256, 784), (256,), (128, 256), (128,), (10, 128), (10,)]


def _arrays(shapes):
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [(1e-2 * rng.standard_normal(s)).astype(np.float32) for s in shapes]
    return params, grads


def _forgegrad_opt(shapes, make):
    params, grads = _arrays(shapes)
    ps = [fg.nn.Parameter(p) for p in params]
    for p, g in zip(ps, grads):
        p.grad = fg.tensor(g)
    return make(ps)


def _torch_opt(shapes, make):
    params, grads = _arrays(shapes)
    ps = [torch.nn.Parameter(torch.from_numpy(p)) for p in params]
    for p, g in zip(ps, grads):
        p.grad = torch.from_numpy(g)
    return make(ps)


ADAM_IMPLS = {
    "forgegrad": lambda s: _forgegrad_opt(s, lambda ps: optim.Adam(ps, lr=1e-3)),
    "torch_fused": lambda s: _torch_opt(s, lambda ps: torch.optim.Adam(ps, lr=1e-3, fused=True)),
    "torch_foreach": lambda s: _torch_opt(s, lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=True)),
}
SGD_KW = dict(lr=1e-3, momentum=0.9, nesterov=True)
SGD_IMPLS = {
    "forgegrad": lambda s: _forgegrad_opt(s, lambda ps: optim.SGD(ps, **SGD_KW)),
    "torch_fused": lambda s: _torch_opt(s, lambda ps: torch.optim.SGD(ps, **SGD_KW, fused=True)),
    "torch_foreach": lambda s: _torch_opt(s, lambda ps: torch.optim.SGD(ps, **SGD_KW, foreach=True)),
}
MLP_IMPLS = {
    "forgegrad": lambda s: _forgegrad_opt(s, lambda ps: optim.Adam(ps, lr=1e-3)),
    "forgegrad_per_param": lambda s: _forgegrad_opt(s, lambda ps: optim.Adam(ps, lr=1e-3, foreach=False)),
    "torch_fused": lambda s: _torch_opt(s, lambda ps: torch.optim.Adam(ps, lr=1e-3, fused=True)),
    "torch_default": lambda s: _torch_opt(s, lambda ps: torch.optim.Adam(ps, lr=1e-3)),
}


def _run(benchmark, opt, rounds):
    opt.step()  # allocates the state
    opt.step()
    benchmark.pedantic(opt.step, rounds=rounds, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("impl", list(ADAM_IMPLS))
def test_adam_10M(benchmark, nthreads, impl):
    benchmark.group = f"adam 10M params {nthreads}t"
    benchmark.extra_info["bytes_per_step"] = 28 * sum(int(np.prod(s)) for s in BIG_SHAPES)
    _run(benchmark, ADAM_IMPLS[impl](BIG_SHAPES), rounds=15)


@pytest.mark.parametrize("impl", list(SGD_IMPLS))
def test_sgd_10M(benchmark, nthreads, impl):
    benchmark.group = f"sgd momentum 10M params {nthreads}t"
    _run(benchmark, SGD_IMPLS[impl](BIG_SHAPES), rounds=15)


@pytest.mark.parametrize("impl", list(MLP_IMPLS))
def test_adam_mlp6(benchmark, nthreads, impl):
    benchmark.group = f"adam mlp6 {nthreads}t"
    _run(benchmark, MLP_IMPLS[impl](MLP_SHAPES), rounds=200)
