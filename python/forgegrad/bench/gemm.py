"""The `gemm` suite: forgegrad.kernels.matmul / bmm against numpy (OpenBLAS) and torch.

Workloads: square products, the MLP layer shapes (M, K, N) = (64, 784, 256), (64, 256, 128),
(256, 64, 784), (784, 64, 256) in each transpose combination (forward and backward GEMMs of a
training step), skinny products (GEMV-like), batch-1 decode GEMVs over a Linear weight and a batch
of small matrices. Every runtime writes into a preallocated output and reads the same arrays
(transposed operands as views), so the table compares kernels, not allocation.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

from forgegrad.kernels import bmm, matmul

from . import Workload, suite, time_workloads
from ._timing import optional_import

SQUARE = (256, 512, 1024, 2048)
NETWORK = ((64, 784, 256), (64, 256, 128), (256, 64, 784), (784, 64, 256))
TRANSPOSES = ((False, False), (True, False), (False, True), (True, True))
SKINNY = ((1, 784, 256), (8, 784, 256), (64, 256, 10), (256, 784, 1))
# Batch-1 decode GEMVs, x (1, K) @ W.T with W a row-major (N, K) Linear weight (NT): GPT-2's c_fc and
# its tied 50257 x 768 LM head (154 MB, streamed from memory on every call).
DECODE = ((1, 768, 3072), (1, 768, 50257))
BATCHED = ((64, 32, 64, 32), (16, 128, 64, 128))  # (batch, M, K, N)
RUNTIMES = ("forgegrad", "numpy", "torch")


def _shapes(quick: bool):
    for n in SQUARE[:3] if quick else SQUARE:
        yield (n, n, n, False, False)
    for m, k, n in NETWORK:
        for ta, tb in TRANSPOSES[:2] if quick else TRANSPOSES:
            yield (m, k, n, ta, tb)
    for m, k, n in SKINNY[:2] if quick else SKINNY:
        yield (m, k, n, False, False)
    for m, k, n in DECODE[:1] if quick else DECODE:
        yield (m, k, n, False, True)


def _name(m, k, n, ta, tb) -> str:
    return f"{m}x{k}x{n} {'T' if ta else 'N'}{'T' if tb else 'N'}"


def _gemm_fns(m, k, n, ta, tb):
    torch = optional_import("torch")
    rng = np.random.default_rng(0)
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
    return fns


def _bmm_fns(bs, m, k, n):
    torch = optional_import("torch")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((bs, m, k)).astype(np.float32)
    b = rng.standard_normal((bs, k, n)).astype(np.float32)
    out = np.empty((bs, m, n), np.float32)
    fns = {"forgegrad": lambda: bmm(a, b, out=out), "numpy": lambda: np.matmul(a, b, out=out), "torch": None}
    if torch is not None:
        ta_, tb_, to_ = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(out)
        fns["torch"] = lambda: torch.bmm(ta_, tb_, out=to_)
    return fns


def workloads(quick: bool = False) -> List[Workload]:
    """Every GEMM shape and transpose combination, then the batched products."""
    out = [Workload(_name(*w), RUNTIMES, lambda _threads, w=w: _gemm_fns(*w), flop=2.0 * w[0] * w[1] * w[2])
           for w in _shapes(quick)]
    out += [Workload(f"bmm {bs}x({m}x{k}x{n})", RUNTIMES, lambda _threads, w=(bs, m, k, n): _bmm_fns(*w),
                     flop=2.0 * bs * m * n * k)
            for bs, m, k, n in (BATCHED[:1] if quick else BATCHED)]
    return out


@suite("gemm")
def gemm_suite(threads: Sequence[int], quick: bool) -> List[dict]:
    repeat, min_time = (5, 0.01) if quick else (9, 0.03)
    return time_workloads(workloads(quick), threads, repeat, min_time)
