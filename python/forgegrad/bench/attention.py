"""The `attention` suite: scaled dot-product attention, forgegrad vs torch.nn.functional's.

Workloads (q, k, v of shape (B, H, T, D), float32):
  sdpa causal fwd+bwd B4 H8 T512 D64: F.scaled_dot_product_attention(q, k, v, is_causal=True) and
    the backward of all three inputs for a given output gradient, through each framework's autograd
    (forgegrad's fused kernels; torch's CPU flash-attention kernels). Gradients are reset to None
    before each step on both sides, so neither accumulates.
  sdpa causal fwd B4 H8 T512 D64: the forward alone, no graph (no_grad on both sides).
  sdpa fwd+bwd B4 H8 T512 D64: no mask (every key block, twice the work of the causal rows).
  sdpa causal fwd+bwd B1 H1 T2048 D64: one (batch, head) pair, fewer than the threads at 2 threads: the
    backward splits the pair over its key blocks and query tiles (7 tile products instead of 5, spread
    over the threads) where whole pairs would leave all but one thread idle.
  sdpa causal softcap fwd+bwd B4 H8 T512 D64: Gemma 2's soft-capped scores (cap 50, its
    attn_logit_softcapping): the fused kernels' forward and backward (F.scaled_dot_product_attention(...,
    softcap=50)) against the Tensor composition Gemma 2's training ran before them ("composed":
    batched GEMMs, tanh, a causal mask, softmax, all (B, H, T, T) scores stored; models/hf/gemma2.py's
    attend_softcapped_composed) and torch composing the same (torch's SDPA has no cap).
GFLOP/s count the products a flash kernel runs: 2 in forward (q k^T, P v), 5 in backward
(q k^T again, dO v^T, P^T dO, dS^T q, dS k), each 2*B*H*T*T*D FLOPs, halved when causal.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

from . import Workload, _scaling, suite, time_workloads
from ._timing import optional_import

SHAPE = (4, 8, 512, 64)
FEW_PAIRS_SHAPE = (1, 1, 2048, 64)
QUICK_SHAPE = (2, 4, 256, 64)


def _arrays(shape):
    rng = np.random.default_rng(0)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(4)]


def _ours(shape, causal, backward):
    import forgegrad as fg
    q, k, v, g = _arrays(shape)
    sdpa = fg.nn.functional.scaled_dot_product_attention
    if not backward:
        tq, tk, tv = fg.tensor(q), fg.tensor(k), fg.tensor(v)

        def forward():
            with fg.no_grad():
                return sdpa(tq, tk, tv, is_causal=causal)
        return forward
    ts = [fg.tensor(a, requires_grad=True) for a in (q, k, v)]
    tg = fg.tensor(g)

    def step():
        for t in ts:
            t.grad = None
        sdpa(*ts, is_causal=causal).backward(tg)
    return step


def _theirs(torch, shape, causal, backward):
    q, k, v, g = _arrays(shape)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    if not backward:
        tq, tk, tv = (torch.from_numpy(a) for a in (q, k, v))

        def forward():
            with torch.no_grad():
                return sdpa(tq, tk, tv, is_causal=causal)
        return forward
    ts = [torch.from_numpy(a).requires_grad_(True) for a in (q, k, v)]
    tg = torch.from_numpy(g)

    def step():
        for t in ts:
            t.grad = None
        sdpa(*ts, is_causal=causal).backward(tg)
    return step


CAP = 50.0  # Gemma 2's attn_logit_softcapping


def _softcap_fns(torch, shape):
    """Forward + backward of causal soft-capped attention: forgegrad fused, forgegrad composed, torch composed."""
    import forgegrad as fg
    from ..models.hf.gemma2 import attend_softcapped_composed
    q, k, v, g = _arrays(shape)
    scale = 1.0 / np.sqrt(shape[-1])
    sdpa = fg.nn.functional.scaled_dot_product_attention
    ts = [fg.tensor(a, requires_grad=True) for a in (q, k, v)]
    tg = fg.tensor(g)

    def fused():
        for t in ts:
            t.grad = None
        sdpa(*ts, is_causal=True, scale=scale, softcap=CAP).backward(tg)

    def composed():
        for t in ts:
            t.grad = None
        attend_softcapped_composed(*ts, None, scale, CAP).backward(tg)

    fns = {"forgegrad": fused, "composed": composed, "torch": None}
    if torch is not None:
        xs = [torch.from_numpy(a).requires_grad_(True) for a in (q, k, v)]
        xg = torch.from_numpy(g)
        t = shape[2]
        future = ~torch.ones(t, t, dtype=torch.bool).tril()

        def theirs():
            for x in xs:
                x.grad = None
            s = (xs[0] * scale) @ xs[1].transpose(-1, -2)
            s = (torch.tanh(s / CAP) * CAP).masked_fill(future, -float("inf"))
            (torch.softmax(s, dim=-1) @ xs[2]).backward(xg)
        fns["torch"] = theirs
    return fns


def _softcap_workload(shape):
    b, h, t, d = shape
    name = f"sdpa causal softcap fwd+bwd B{b} H{h} T{t} D{d}"
    return Workload(name, ("forgegrad", "composed", "torch"),
                    lambda _threads: _softcap_fns(optional_import("torch"), shape),
                    flop=7 * 2.0 * b * h * t * t * d * 0.5)


def _workload(shape, causal, backward):
    b, h, t, d = shape
    products = 7 if backward else 2
    flop = products * 2.0 * b * h * t * t * d * (0.5 if causal else 1.0)
    name = f"sdpa {'causal ' if causal else ''}{'fwd+bwd' if backward else 'fwd'} B{b} H{h} T{t} D{d}"

    def make(_threads):
        torch = optional_import("torch")
        return {"forgegrad": _ours(shape, causal, backward),
                "torch": _theirs(torch, shape, causal, backward) if torch is not None else None}
    return Workload(name, ("forgegrad", "torch"), make, flop=flop)


def workloads(quick: bool = False) -> List[Workload]:
    shape = QUICK_SHAPE if quick else SHAPE
    rows = [_workload(shape, True, True), _workload(shape, True, False)]
    if not quick:
        rows += [_workload(shape, False, True), _workload(FEW_PAIRS_SHAPE, True, True)]
    rows.append(_softcap_workload(shape))
    return rows


@suite("attention")
def attention_suite(threads: Sequence[int], quick: bool) -> List[dict]:
    repeat, min_time = (3, 0.02) if quick else (7, 0.2)
    return time_workloads(workloads(quick), threads, repeat, min_time)


def _by_length(t: int, _threads: int):
    shape = (1, 8, t, 64)
    torch = optional_import("torch")
    return {"forgegrad": _ours(shape, True, True),
            "torch": None if torch is None else _theirs(torch, shape, True, True)}


# `forgegrad bench scaling`: causal SDPA forward + backward by sequence length (B1 H8 D64)
_scaling.register(_scaling.Sweep(
    "attention", "SDPA causal forward + backward by sequence length, B1 H8 D64", "sequence length",
    (128, 256, 512, 1024, 2048, 4096), (128, 512, 1024), ("forgegrad", "torch"), _by_length,
    lambda t: (7 * 2.0 * 8 * t * t * 64 * 0.5 / 1e9, "GFLOP"), repeat=3, min_time=0.0))
