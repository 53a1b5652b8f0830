"""The `adam` suite: one optimizer step of forgegrad.optim against torch.optim.

Workloads: Adam over 10,000,000 float32 parameters in four tensors (3 x 2500x1000 and one of
2.5M; the update streams ~28 bytes per parameter), the same with SGD (momentum, nesterov), and
Adam over the 6 parameters of a 784-256-128-10 MLP (per-step overhead). torch runs its fused CPU
kernel (``fused=True``) and the foreach path; forgegrad runs its fused multi-tensor kernel.
Each runtime keeps its own parameters and state; a step's cost does not depend on their values.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

from forgegrad import nn, optim, tensor

from . import suite
from ._timing import compare, optional_import, pinned_threads

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


def _row(name, shapes, threads, torch, ours, theirs, repeat, min_time):
    fns = {"forgegrad": _ours(shapes, ours)}
    for label, make in theirs.items():
        fns[label] = _theirs(torch, shapes, make) if torch is not None else None
    with pinned_threads(threads):
        sec = compare(fns, repeat=repeat, min_time=min_time)
    return {"workload": name, "threads": threads, "seconds": sec}


@suite("adam")
def adam_suite(threads: Sequence[int], quick: bool) -> List[dict]:
    torch = optional_import("torch")
    repeat, min_time = (5, 0.02) if quick else (9, 0.05)
    T = torch.optim if torch is not None else None
    rows = []
    for t in threads:
        rows.append(_row("adam 10M params", BIG, t, torch, lambda ps: optim.Adam(ps, lr=1e-3),
                         {"torch_fused": lambda ps: T.Adam(ps, lr=1e-3, fused=True),
                          "torch_foreach": lambda ps: T.Adam(ps, lr=1e-3, foreach=True)}, repeat, min_time))
        kw = dict(lr=1e-3, momentum=0.9, nesterov=True)
        rows.append(_row("sgd momentum 10M params", BIG, t, torch, lambda ps: optim.SGD(ps, **kw),
                         {"torch_fused": lambda ps: T.SGD(ps, **kw, fused=True),
                          "torch_foreach": lambda ps: T.SGD(ps, **kw, foreach=True)}, repeat, min_time))
        rows.append(_row("adam mlp 6 params", MLP, t, torch, lambda ps: optim.Adam(ps, lr=1e-3),
                         {"torch_fused": lambda ps: T.Adam(ps, lr=1e-3, fused=True),
                          "torch_foreach": lambda ps: T.Adam(ps, lr=1e-3, foreach=True)}, repeat, min_time))
    return rows
