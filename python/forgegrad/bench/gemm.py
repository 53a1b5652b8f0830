"""The `gemm` suite: forgegrad.kernels.matmul / bmm against numpy (OpenBLAS) and torch.

Workloads: square products, the MLP layer shapes (M, K, N) = (64, 784, 256), (64, 256, 128),
(256, 64, 784), (784, 64, 256) in each transpose combination (forward and backward GEMMs of a
training step), skinny products (GEMV-like) and a batch of small matrices. Every runtime writes
into a preallocated output and reads the same arrays (transposed operands as views), so the table
compares kernels, not allocation.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

from forgegrad.kernels import bmm, matmul

from . import suite
from ._timing import compare, optional_import, pinned_threads

SQUARE = (256, 512, 1024, 2048)
NETWORK = ((64, 784, 256), (64, 256, 128), (256, 64, 784), (784, 64, 256))
TRANSPOSES = ((False, False), (True, False), (False, True), (True, True))
SKINNY = ((1, 784, 256), (8, 784, 256), (64, 256, 10), (256, 784, 1))
BATCHED = ((64, 32, 64, 32), (16, 128, 64, 128))  # (batch, M, K, N)


def _workloads(quick: bool):
    for n in SQUARE[:3] if quick else SQUARE:
        yield (n, n, n, False, False)
    for m, k, n in NETWORK:
        for ta, tb in TRANSPOSES[:2] if quick else TRANSPOSES:
            yield (m, k, n, ta, tb)
    for m, k, n in SKINNY[:2] if quick else SKINNY:
        yield (m, k, n, False, False)


def _name(m, k, n, ta, tb) -> str:
    return f"{m}x{k}x{n} {'T' if ta else 'N'}{'T' if tb else 'N'}"


def _gemm_row(m, k, n, ta, tb, threads, torch, rng, repeat, min_time) -> dict:
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    opa, opb = (a.T if ta else a), (b.T if tb else b)
    out = np.empty((m, n), np.float32)
    fns = {
        "forgegrad": lambda: matmul(a, b, out=out, trans_a=ta, trans_b=tb),
        "numpy": lambda: np.matmul(opa, opb, out=out),
        "torch": None,
    }
    if torch is not None:
        ta_, tb_, to_ = torch.from_numpy(opa), torch.from_numpy(opb), torch.from_numpy(out)
        fns["torch"] = lambda: torch.matmul(ta_, tb_, out=to_)
    with pinned_threads(threads):
        sec = compare(fns, repeat=repeat, min_time=min_time)
    return {"workload": _name(m, k, n, ta, tb), "threads": threads, "seconds": sec,
            "flop": 2.0 * m * n * k}


def _bmm_row(bs, m, k, n, threads, torch, rng, repeat, min_time) -> dict:
    a = rng.standard_normal((bs, m, k)).astype(np.float32)
    b = rng.standard_normal((bs, k, n)).astype(np.float32)
    out = np.empty((bs, m, n), np.float32)
    fns = {"forgegrad": lambda: bmm(a, b, out=out), "numpy": lambda: np.matmul(a, b, out=out),
           "torch": None}
    if torch is not None:
        ta_, tb_, to_ = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(out)
        fns["torch"] = lambda: torch.bmm(ta_, tb_, out=to_)
    with pinned_threads(threads):
        sec = compare(fns, repeat=repeat, min_time=min_time)
    return {"workload": f"bmm {bs}x({m}x{k}x{n})", "threads": threads, "seconds": sec,
            "flop": 2.0 * bs * m * n * k}


@suite("gemm")
def gemm_suite(threads: Sequence[int], quick: bool) -> List[dict]:
    torch = optional_import("torch")
    rng = np.random.default_rng(0)
    repeat, min_time = (5, 0.01) if quick else (9, 0.03)
    rows = []
    for w in _workloads(quick):
        for t in threads:
            rows.append(_gemm_row(*w, t, torch, rng, repeat, min_time))
    for w in BATCHED[:1] if quick else BATCHED:
        for t in threads:
            rows.append(_bmm_row(*w, t, torch, rng, repeat, min_time))
    return rows
