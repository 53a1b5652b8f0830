"""The `adam` suite: one optimizer step of forgegrad.optim against torch.optim.

Workloads: Adam over 10,000,000 float32 parameters in four tensors (3 x 2500x1000 and one of
2.5M; the update streams ~28 bytes per parameter), the same with SGD (momentum, nesterov), and
Adam over the 6 parameters of a 784-256-128-10 MLP (per-step overhead). torch runs its fused CPU
kernel (``fused=True``) and the foreach path (and, on the MLP row, its default single-tensor loop);
forgegrad runs its fused multi-tensor kernel (and, on the MLP row, one kernel call per parameter).
Each runtime keeps its own parameters and state; a step's cost does not depend on their values.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

from forgegrad import nn, optim, tensor

from . import Workload, suite, time_workloads
from ._timing import optional_import

BIG = [(2500, 1000)] * 3 + [(2_500_000,)]
MLP = [(256, 784), (256,), (128, 256), (128,), (10, 128), (10,)]


def _arrays(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return ([rng.standard_normal(s).astype(np.float32) for s in shapes],
            [(1e-2 * rng.standard_normal(s)).astype(np.float32) for s in shapes])


def _ours(shapes, make):
    params, grads = _arrays(shapes)
    ps = [nn.Parameter(p) for p in params]
    for p, g in zip(ps, grads):
        p.grad = tensor(g)
    opt = make(ps)
    opt.step()  # allocate the state outside the timing
    return opt.step


def _theirs(torch, shapes, make):
    params, grads = _arrays(shapes)
    ps = [torch.nn.Parameter(torch.from_numpy(p)) for p in params]
    for p, g in zip(ps, grads):
        p.grad = torch.from_numpy(g)
    opt = make(ps)
    opt.step()
    return opt.step


def _fns(shapes, ours: dict, theirs: dict):
    """{runtime: one optimizer step}; ``theirs`` (torch.optim) are None when torch is not installed."""
    torch = optional_import("torch")
    fns = {label: _ours(shapes, make) for label, make in ours.items()}
    for label, make in theirs.items():
        fns[label] = _theirs(torch, shapes, lambda ps, make=make: make(torch.optim, ps)) if torch is not None else None
    return fns


def _workload(name, shapes, ours, theirs, **info):
    return Workload(name, tuple(ours) + tuple(theirs), lambda _threads: _fns(shapes, ours, theirs), info=info)


def workloads(quick: bool = False) -> List[Workload]:
    adam = {"forgegrad": lambda ps: optim.Adam(ps, lr=1e-3)}
    torch_adam = {"torch_fused": lambda T, ps: T.Adam(ps, lr=1e-3, fused=True),
                  "torch_foreach": lambda T, ps: T.Adam(ps, lr=1e-3, foreach=True)}
    kw = dict(lr=1e-3, momentum=0.9, nesterov=True)
    # the update streams param, grad, exp_avg, exp_avg_sq in (16 bytes) and three of them out (12)
    return [
        _workload("adam 10M params", BIG, adam, torch_adam, bytes_per_step=28 * sum(int(np.prod(s)) for s in BIG)),
        _workload("sgd momentum 10M params", BIG, {"forgegrad": lambda ps: optim.SGD(ps, **kw)},
                  {"torch_fused": lambda T, ps: T.SGD(ps, **kw, fused=True),
                   "torch_foreach": lambda T, ps: T.SGD(ps, **kw, foreach=True)}),
        # per-step overhead: one kernel call per group (default) or per parameter (foreach=False);
        # torch's default on CPU is the single-tensor loop
        _workload("adam mlp 6 params", MLP,
                  {**adam, "forgegrad_per_param": lambda ps: optim.Adam(ps, lr=1e-3, foreach=False)},
                  {**torch_adam, "torch_default": lambda T, ps: T.Adam(ps, lr=1e-3)}),
    ]


@suite("adam")
def adam_suite(threads: Sequence[int], quick: bool) -> List[dict]:
    repeat, min_time = (5, 0.02) if quick else (9, 0.05)
    return time_workloads(workloads(quick), threads, repeat, min_time)
