"""Stress cases for every attention entry point, checked against a float64 numpy reference.

A case is a small JSON dict (drawn by test_fuzz_attention.py's hypothesis strategy): an entry point, the shapes
(query and key lengths on and around the kernels' tile edges, Whisper's 1500 encoder positions, runs of 4096 keys
and more, head dims in and out of the vector widths), the masking (causal, additive or bool masks of every
broadcast form, fully masked rows, soft caps), the layout (views of a growing KV cache, transposed views), the
SIMD path and the thread count, and a seed for the values. ``run_case`` builds the arrays, calls the entry point
and compares every output with the reference; the ``*_bad`` entries break one argument (a block id of -1 or past
the pool, a length past the table, an offset past the mask, an empty sequence, a wrong shape) and must get a clear
TypeError / ValueError. ``python attention_stress.py`` answers cases one JSON line at a time on stdin, as
fuzz_worker.py does, so a crash or a hang ends the child, not the test run.

Entry points: ``_C.attention.attention_forward`` / ``attention_backward`` (mask through offsets and row strides),
``kernels.attention.attention_forward`` / ``attention_backward`` on strided views, the packed causal kernels,
``_C.attention.paged_decode`` (through ``kernels.attention.paged_attention_decode``; bias, window, soft cap), and
the public op ``nn.functional.scaled_dot_product_attention`` with its gradients.
"""
from __future__ import annotations

import json
import math
import os
import sys
import traceback

import numpy as np

import forgegrad as fg
import forgegrad.nn.functional as F
from forgegrad import _C
from forgegrad.kernels import attention as KA

HEAD_DIMS = (1, 2, 3, 5, 7, 8, 15, 16, 17, 24, 31, 32, 33, 40, 48, 63, 64, 65, 80, 96, 100, 112, 128, 129, 256)
# on and around the tiles: 6-row microkernel groups, 32-row query tiles, 48-row tasks, 64-key blocks, the
# whole-row kernels' limit of 256, Whisper's 448 decoder positions
LENGTHS = (1, 2, 3, 5, 6, 7, 13, 31, 32, 33, 47, 48, 49, 63, 64, 65, 95, 127, 128, 129, 200, 255, 256, 257, 300, 448)
LONG = (513, 1500, 4096, 4097)
ENTRIES = ("c", "c_bad", "strided", "packed", "paged", "paged_bad", "op", "op_bad")
ISAS = ("avx512", "avx2", "scalar")
BUDGET = 3e7  # N * L * S * (E + Ev) of one case: the float64 reference's products stay well under a second
ALLOWED = (TypeError, ValueError)


class Failure(Exception):
    def __init__(self, outcome, detail):
        super().__init__(detail)
        self.outcome = outcome


def _fit(case):
    """Shrinks the pair count, then the query count, until the case is within BUDGET."""
    n, L, S, E, Ev = (case[k] for k in ("N", "L", "S", "E", "Ev"))
    while n > 1 and n * L * S * (E + Ev) > BUDGET:
        n -= 1
    if n * L * S * (E + Ev) > BUDGET:
        L = max(1, int(BUDGET // (S * (E + Ev))))
    return n, L


# ---- the reference ------------------------------------------------------------------------------------------
def _scores(q, k, scale, causal, mask, softcap):
    """(scores, tanh) in float64: q (N, L, E), k (N, S, E); mask (N, L, S) additive or None."""
    s = (q.astype(np.float64) * scale) @ k.astype(np.float64).transpose(0, 2, 1)  # matmul: BLAS, einsum is not
    th = None
    if softcap:
        th = np.tanh(s / softcap)
        s = th * softcap
    if causal:
        s = np.where(np.tri(s.shape[1], s.shape[2], dtype=bool), s, -np.inf)
    if mask is not None:
        s = s + mask
    return s, th


def ref_forward(q, k, v, scale, causal=False, mask=None, softcap=None):
    """(out, lse, P, th): a row with no key gets out 0 and lse -inf (the kernels' and torch's result)."""
    s, th = _scores(q, k, scale, causal, mask, softcap)
    m = s.max(axis=-1, keepdims=True)
    empty = m == -np.inf
    p = np.exp(s - np.where(empty, 0.0, m))
    p[np.broadcast_to(empty, p.shape)] = 0.0
    l = p.sum(axis=-1, keepdims=True)
    p = p / np.where(l > 0, l, 1.0)
    out = p @ v.astype(np.float64)
    with np.errstate(divide="ignore"):
        lse = np.where(empty, -np.inf, m + np.log(np.where(l > 0, l, 1.0)))[..., 0]
    return out, lse, p, th


def ref_backward(g, q, k, v, scale, causal=False, mask=None, softcap=None):
    out, _, p, th = ref_forward(q, k, v, scale, causal, mask, softcap)
    g = g.astype(np.float64)
    dv = p.transpose(0, 2, 1) @ g
    dp = g @ v.astype(np.float64).transpose(0, 2, 1)
    ds = p * (dp - (g * out).sum(-1, keepdims=True))
    if th is not None:
        ds = ds * (1 - th * th)
    dq = (ds @ k.astype(np.float64)) * scale
    dk = ds.transpose(0, 2, 1) @ (q.astype(np.float64) * scale)
    # the size of the terms each gradient sums: dS = P * (dP - D) cancels (to 0 with one key), so float32's error
    # is relative to these, not to the result
    size = p * (np.abs(dp) + np.abs((g * out).sum(-1, keepdims=True)))
    qa, ka = np.abs(q.astype(np.float64) * scale), np.abs(k.astype(np.float64))
    bounds = (size @ ka * scale, size.transpose(0, 2, 1) @ qa, p.transpose(0, 2, 1) @ np.abs(g))
    return (dq, dk, dv), bounds


def close(got, want, what, rtol=2e-3, atol=2e-4, bound=None):
    """got within the tolerance of want; ``bound``: the size of the terms each element sums (a gradient's), which
    float32's rounding error is relative to where they cancel."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        raise Failure("mismatch", f"{what}: shape {got.shape}, reference {want.shape}")
    finite = want[np.isfinite(want)]
    tol = atol * max(1.0, float(np.abs(finite).max(initial=0.0)))
    if bound is not None:
        tol = np.maximum(tol, 1e-4 * np.asarray(bound, np.float64).reshape(want.shape))
    if not np.allclose(got, want, rtol=rtol, atol=tol, equal_nan=True):
        bad = ~np.isclose(got, want, rtol=rtol, atol=tol, equal_nan=True)
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise Failure("mismatch", f"{what}: {int(bad.sum())} of {want.size} values differ; at {idx} "
                                  f"{got[idx]!r} vs reference {want[idx]!r}")


def _expect_error(fn, what):
    try:
        fn()
    except ALLOWED as e:
        if not str(e).strip():
            raise Failure("bad-error", f"{what}: {type(e).__name__} without a message") from None
        return "error", f"{type(e).__name__}: {str(e)[:160]}"
    except Exception as e:  # noqa: BLE001  any other type is a failure of the boundary checks
        raise Failure("bad-error", f"{what}: {type(e).__name__}: {e}") from None
    raise Failure("accepted", f"{what}: no error")


# ---- masks as the kernel reads them ----------------------------------------------------------------------------
def _c_mask(rng, kind, n, L, S, full_rows):
    """(data, offsets, row_stride, dense (n, L, S)) for the binding's mask form, or Nones."""
    if kind == "none":
        return None, None, 0, None
    if kind == "full":  # one (L, S) block per pair
        rows, mrs, blocks = L, S, n
    elif kind == "shared":  # one (L, S) for every pair
        rows, mrs, blocks = L, S, 1
    elif kind == "row":  # a key-padding row per pair, broadcast over the queries
        rows, mrs, blocks = 1, 0, n
    else:  # "strided": rows further apart than S, blocks at random offsets of a larger buffer
        rows, mrs, blocks = L, S + int(rng.integers(1, 9)), n
    span = (rows - 1) * mrs + S
    size = span * blocks + int(rng.integers(0, 17))
    data = rng.standard_normal(size).astype(np.float32)
    data[rng.random(size) < 0.3] = -np.inf
    if kind == "strided":
        offsets = rng.integers(0, size - span + 1, n).astype(np.int64)
    else:
        offsets = (np.arange(n, dtype=np.int64) % blocks) * span
    dense = np.empty((n, L, S), np.float32)
    for i in range(n):
        for r in range(L):
            o = offsets[i] + (r if mrs else 0) * mrs
            dense[i, r] = data[o:o + S]
    if full_rows:  # a query row with every key masked: out 0, lse -inf, no gradient
        r = int(rng.integers(0, rows))
        for i in range(n):
            o = offsets[i] + r * mrs
            data[o:o + S] = -np.inf
        dense = np.empty((n, L, S), np.float32)
        for i in range(n):
            for r2 in range(L):
                o = offsets[i] + r2 * mrs
                dense[i, r2] = data[o:o + S]
    return data, offsets, mrs, dense


def _qkv(rng, n, L, S, E, Ev, big):
    q = rng.standard_normal((n, L, E)).astype(np.float32) * np.float32(big)
    k = rng.standard_normal((n, S, E)).astype(np.float32) * np.float32(big)
    v = rng.standard_normal((n, S, Ev)).astype(np.float32)
    return q, k, v


def _softcap(case):
    return case["softcap"] or None


# ---- entry points ------------------------------------------------------------------------------------------------
def run_c(case, rng):
    """_C.attention.attention_forward / attention_backward with every mask layout."""
    n, L = _fit(case)
    S, E, Ev, causal = case["S"], case["E"], case["Ev"], case["causal"]
    scale = case["scale"] or 1.0 / math.sqrt(E)
    q, k, v = _qkv(rng, n, L, S, E, Ev, 3.0 if case["softcap"] else 1.0)
    data, offsets, mrs, dense = _c_mask(rng, case["mask"], n, L, S, case["full_rows"])
    cap = case["softcap"]
    out = np.full((n, L, Ev), np.nan, np.float32)
    lse = np.full((n, L), np.nan, np.float32)
    _C.attention.attention_forward(q, k, v, scale, causal, data, offsets, mrs, out, lse, cap)
    want, want_lse, _, _ = ref_forward(q, k, v, scale, causal, dense, cap or None)
    close(out, want, "out")
    close(lse, want_lse, "lse")
    if case["backward"]:
        g = rng.standard_normal((n, L, Ev)).astype(np.float32)
        dq, dk, dv = (np.full(a.shape, np.nan, np.float32) for a in (q, k, v))
        _C.attention.attention_backward(q, k, v, out, g, lse, scale, causal, data, offsets, mrs, dq, dk, dv, cap)
        refs, bounds = ref_backward(g, q, k, v, scale, causal, dense, cap or None)
        for got, ref, b, name in zip((dq, dk, dv), refs, bounds, ("dq", "dk", "dv")):
            close(got, ref, name, bound=b)
    return "equal", f"N={n} L={L} S={S} E={E} Ev={Ev}"


def run_c_bad(case, rng):
    """One broken argument of the _C bindings: a clear error, never a read outside an array."""
    n, L, S, E, Ev = 2, min(case["L"], 70), min(case["S"], 70), min(case["E"], 40), min(case["Ev"], 40)
    q, k, v = _qkv(rng, n, L, S, E, Ev, 1.0)
    out, lse = np.empty((n, L, Ev), np.float32), np.empty((n, L), np.float32)
    data, offsets, mrs, _ = _c_mask(rng, "full", n, L, S, False)
    which = int(rng.integers(0, 9))
    args = dict(q=q, k=k, v=v, scale=0.5, causal=case["causal"], mask=data, mask_offsets=offsets,
                mask_row_stride=mrs, out=out, lse=lse)
    span = (L - 1) * mrs + S
    if which == 0:
        args["mask_offsets"] = offsets.copy()  # the last pair's last row one past the buffer
        args["mask_offsets"][-1] = data.size - span + 1
    elif which == 1:
        args["mask_offsets"] = offsets.copy()
        args["mask_offsets"][-1] = -1
    elif which == 2:
        args["mask_row_stride"] = -1
    elif which == 3:
        args["mask_row_stride"] = 1 << 62  # (L - 1) * stride overflows int64 when L > 2
    elif which == 4:
        args["q"] = np.empty((n, 0, E), np.float32)
    elif which == 5:
        args["k"], args["v"] = np.empty((n, 0, E), np.float32), np.empty((n, 0, Ev), np.float32)
    elif which == 6:
        args["mask_offsets"] = offsets[:-1]
    elif which == 7:
        args["v"] = v[:, :max(S - 1, 0)]
    else:  # a buffer that ends inside the last pair's block
        args["mask"] = data[:int(offsets.max()) + span - 1]
    if which == 3 and L <= 2:
        args["mask_row_stride"] = -5
    return _expect_error(lambda: _C.attention.attention_forward(**args), f"attention_forward bad #{which}")


def _cache_view(rng, a, room):
    """a (n, T, D) as the first T rows of a larger cache (n, T + room, D): strided rows of a growing KV cache."""
    n, T, D = a.shape
    cache = rng.standard_normal((n, T + room, D)).astype(np.float32)
    cache[:, :T] = a
    return cache[:, :T]


def run_strided(case, rng):
    """kernels.attention on views (a KV cache's first rows, transposed (T, n, D) storage) and a prepared mask."""
    n, L = _fit(case)
    S, E, Ev, causal = case["S"], case["E"], case["Ev"], case["causal"]
    scale = case["scale"] or 1.0 / math.sqrt(E)
    q, k, v = _qkv(rng, n, L, S, E, Ev, 1.0)
    qv = np.ascontiguousarray(q.transpose(1, 0, 2)).transpose(1, 0, 2)  # (n, L, E) over (L, n, E) storage
    kv, vv = _cache_view(rng, k, int(rng.integers(1, 40))), _cache_view(rng, v, int(rng.integers(1, 40)))
    mask = KA.prepare_mask(None if case["mask"] == "none" else rng.random((1, S)) > 0.2, (n,), L, S)
    dense = None if mask is None else np.broadcast_to(mask.data.reshape(1, 1, S), (n, L, S))
    cap = _softcap(case)
    out, lse = KA.attention_forward(qv, kv, vv, scale, causal, mask, softcap=cap)
    want, want_lse, _, _ = ref_forward(q, k, v, scale, causal, dense, cap)
    close(out, want, "out")
    close(lse, want_lse, "lse")
    if case["backward"]:
        g = rng.standard_normal((n, L, Ev)).astype(np.float32)
        got = KA.attention_backward(g[:, :, ::-1][:, :, ::-1], qv, kv, vv, out, lse, scale, causal, mask, softcap=cap)
        refs, bounds = ref_backward(g, q, k, v, scale, causal, dense, cap)
        for a, ref, b, name in zip(got, refs, bounds, ("dq", "dk", "dv")):
            close(a, ref, name, bound=b)
    return "equal", f"N={n} L={L} S={S} E={E} Ev={Ev}"


def run_packed(case, rng):
    """attention_forward_packed / attention_backward_packed against per-head causal attention."""
    heads = 1 + case["N"] % 4
    B = 1 + case["N"] // 4 % 2
    D = case["E"]
    T = case["L"]
    while B * heads * T * T * 2 * D > BUDGET and T > 1:
        T = max(1, T // 2)
    C = heads * D
    qkv = rng.standard_normal((B, T, 3 * C)).astype(np.float32)
    scale = case["scale"] or None
    out, lse, split = KA.attention_forward_packed(qkv, heads, scale)
    s = 1.0 / math.sqrt(D) if scale is None else scale

    def per_head(part):  # (B, T, C) columns of q, k or v -> (B * heads, T, D)
        return qkv[:, :, part * C:(part + 1) * C].reshape(B, T, heads, D).transpose(0, 2, 1, 3).reshape(-1, T, D)
    q, k, v = per_head(0), per_head(1), per_head(2)
    want, want_lse, _, _ = ref_forward(q, k, v, s, True)
    close(out, want.reshape(B, heads, T, D).transpose(0, 2, 1, 3).reshape(B, T, C), "out")
    close(lse, want_lse, "lse")
    if case["backward"]:
        g = rng.standard_normal((B, T, C)).astype(np.float32)
        g3 = g.reshape(B, T, heads, D).transpose(0, 2, 1, 3).reshape(-1, T, D)
        dqkv = KA.attention_backward_packed(g, split, out, lse, heads, scale)
        parts, bounds = ref_backward(g3, q, k, v, s, True)

        def packed(arrays):  # per-head (B * heads, T, D) gradients laid out as qkv
            return np.concatenate([a.reshape(B, heads, T, D).transpose(0, 2, 1, 3).reshape(B, T, C)
                                   for a in arrays], -1)
        close(dqkv, packed(parts), "dqkv", bound=packed(bounds))
    return "equal", f"B={B} heads={heads} T={T} D={D}"


def _paged_setup(case, rng):
    """Pools, tables (ids past each row's blocks: -1 or garbage, never read), lengths, per the case."""
    B = 1 + case["N"] % 5
    Hkv, rep = 1 + case["N"] % 3, 1 + case["Ev"] % 4
    D = case["E"]
    BT = (1, 2, 3, 4, 7, 8, 16, 17, 32)[case["L"] % 9]
    longest = max(1, min(case["S"], int(BUDGET // (B * Hkv * rep * 2 * D))))
    width = -(-longest // BT) + int(rng.integers(0, 3))
    lengths = rng.integers(1, width * BT + 1, B).astype(np.int64)
    lengths[int(rng.integers(0, B))] = min(longest, width * BT)
    blocks = int(B * width // 2 + 1 + rng.integers(0, 4))
    k_pool = rng.standard_normal((blocks, Hkv, BT, D)).astype(np.float32)
    v_pool = rng.standard_normal((blocks, Hkv, BT, D)).astype(np.float32)
    tables = rng.integers(0, blocks, (B, width)).astype(np.int64)
    for b in range(B):  # past a row's blocks: anything
        used = -(-int(lengths[b]) // BT)
        tables[b, used:] = rng.choice(np.array([-1, blocks, 1 << 40, -(1 << 40)], np.int64), width - used)
    q = rng.standard_normal((B, Hkv, rep, D)).astype(np.float32)
    return q, k_pool, v_pool, tables, lengths


def ref_paged(q, k_pool, v_pool, tables, lengths, scale, softcap, window, bias):
    B, Hkv, rep, D = q.shape
    BT = k_pool.shape[2]
    out = np.empty(q.shape, np.float64)
    for b in range(B):
        n = int(lengths[b])
        lo = n - window if window and n > window else 0
        pos = np.arange(lo, n)
        ids = tables[b, pos // BT]
        for h in range(Hkv):
            keys = k_pool[ids, h, pos % BT].astype(np.float64)
            vals = v_pool[ids, h, pos % BT].astype(np.float64)
            s = q[b, h].astype(np.float64) @ keys.T * scale  # (rep, n - lo)
            if softcap:
                s = softcap * np.tanh(s / softcap)
            if bias is not None:
                dist = np.minimum(n - 1 - pos, bias.shape[1] - 1)
                s = s + bias[h * rep:(h + 1) * rep][:, dist]
            p = np.exp(s - s.max(-1, keepdims=True))
            out[b, h] = (p / p.sum(-1, keepdims=True)) @ vals
    return out


def run_paged(case, rng):
    q, k_pool, v_pool, tables, lengths = _paged_setup(case, rng)
    Hkv, rep, D = q.shape[1:]
    scale = case["scale"] or 1.0 / math.sqrt(D)
    cap = _softcap(case)
    window = int(rng.integers(1, int(lengths.max()) + 3)) if case["causal"] else None
    bias = None
    if case["mask"] != "none":
        bias = rng.standard_normal((Hkv * rep, int(rng.integers(1, 2 * int(lengths.max()) + 2)))).astype(np.float32)
    out = KA.paged_attention_decode(q, k_pool, v_pool, tables, lengths, scale, cap, window, bias)
    close(out, ref_paged(q, k_pool, v_pool, tables, lengths, scale, cap, window, bias), "out")
    return "equal", f"q {q.shape} pool {k_pool.shape} lengths {lengths.tolist()[:5]}"


def run_paged_bad(case, rng):
    q, k_pool, v_pool, tables, lengths = _paged_setup(case, rng)
    blocks, width, BT = k_pool.shape[0], tables.shape[1], k_pool.shape[2]
    b = int(rng.integers(0, len(lengths)))
    which = int(rng.integers(0, 8))
    args = dict(q=q, k_pool=k_pool, v_pool=v_pool, tables=tables.copy(), lengths=lengths.copy(), scale=0.3)
    if which == 0:
        args["tables"][b, int(rng.integers(0, -(-int(lengths[b]) // BT)))] = -1
    elif which == 1:
        args["tables"][b, int(rng.integers(0, -(-int(lengths[b]) // BT)))] = blocks + int(rng.integers(0, 3))
    elif which == 2:
        args["lengths"][b] = width * BT + int(rng.integers(1, 5))  # a context past the table
    elif which == 3:
        args["lengths"][b] = -int(rng.integers(0, 3))
    elif which == 4:
        args["bias"] = np.zeros((q.shape[1] * q.shape[2] + 1, 3), np.float32)
    elif which == 5:
        args["bias"] = np.zeros((q.shape[1] * q.shape[2], 0), np.float32)
    elif which == 6:
        args["lengths"] = lengths[:-1] if len(lengths) > 1 else np.zeros(0, np.int64)
    else:
        args["window"] = -int(rng.integers(1, 4))
    return _expect_error(lambda: KA.paged_attention_decode(**args), f"paged_attention_decode bad #{which}")


# ---- the public op -------------------------------------------------------------------------------------------------
def _op_mask(rng, kind, batch, L, S, dtype):
    """A user attn_mask of a broadcast shape (bool, or float of the query's dtype), and its additive dense form
    (batch + (L, S))."""
    if kind == "none":
        return None, None
    shapes = [(S,), (L, S), (1, S), (L, 1), batch + (L, S), batch[:-1] + (1, L, S), batch[:-1] + (1, 1, S)]
    shape = shapes[int(rng.integers(0, len(shapes)))]
    if kind in ("full", "strided"):
        m = rng.random(shape) > 0.25
        dense = np.where(m, 0.0, -np.inf)
    else:
        m = rng.standard_normal(shape).astype(dtype)
        m[rng.random(shape) < 0.2] = -np.inf
        dense = m.astype(np.float64)
    return m, np.broadcast_to(dense, batch + (L, S))


def run_op(case, rng):
    """scaled_dot_product_attention on Tensors: broadcast batch axes, grouped-query heads, KV-cache views, every
    mask form; output and the gradients of q, k, v against the reference."""
    n, L = _fit(case)
    S, E, Ev = case["S"], case["E"], case["Ev"]
    B, Hkv = 1 + n % 2, 1 + n // 2 % 2
    groups = 1 + case["Ev"] % 3 if case["mask"] != "full" else 1
    H = Hkv * groups
    causal = case["causal"] and case["mask"] == "none"
    f64 = case["seed"] % 11 == 0
    dtype = np.float64 if f64 else np.float32
    q = rng.standard_normal((B, H, L, E)).astype(dtype)
    cache_len = S + int(rng.integers(0, 30))  # keys/values as the first S places of a cache (B, Hkv, max, D)
    kc = rng.standard_normal((B, Hkv, cache_len, E)).astype(dtype)
    vc = rng.standard_normal((B, Hkv, cache_len, Ev)).astype(dtype)
    k, v = kc[:, :, :S], vc[:, :, :S]
    mask, dense = _op_mask(rng, case["mask"], (B, H), L, S, dtype)
    scale = case["scale"] or None
    grad = case["backward"]
    # without gradients, float32 views wrapped as the models' KV caches hand them over (Tensor._wrap of a slice)
    tq, tk, tv = (fg.Tensor._wrap(a) if not grad and not f64 else fg.tensor(a, requires_grad=grad)
                  for a in (q, k, v))
    tm = None if mask is None else fg.tensor(mask)
    out = F.scaled_dot_product_attention(tq, tk, tv, tm, is_causal=causal, scale=scale, enable_gqa=groups > 1,
                                         softcap=_softcap(case))
    s = 1.0 / math.sqrt(E) if scale is None else scale
    kr, vr = np.repeat(k, groups, axis=1), np.repeat(v, groups, axis=1)

    def flat(a):  # (B, H, R, C) -> (B * H, R, C)
        return a.reshape((-1,) + a.shape[-2:])
    d3 = None if dense is None else flat(np.ascontiguousarray(dense))
    want, _, _, _ = ref_forward(flat(q), flat(kr), flat(vr), s, causal, d3, _softcap(case))
    tol = dict(rtol=1e-9, atol=1e-9) if f64 and not _softcap(case) else {}
    close(out.numpy(), want.reshape(B, H, L, Ev), "out", **tol)
    if grad:
        g = rng.standard_normal((B, H, L, Ev)).astype(dtype)
        (out * fg.tensor(g)).sum().backward()
        (dq, dk, dv), (bq, bk, bv) = ref_backward(flat(g), flat(q), flat(kr), flat(vr), s, causal, d3, _softcap(case))

        def heads(a, width):  # the repeated heads' gradients summed back to their key/value head
            return a.reshape(B, Hkv, groups, S, width).sum(2)
        close(tq.grad.numpy(), dq.reshape(B, H, L, E), "dq", bound=bq, **tol)
        close(tk.grad.numpy(), heads(dk, E), "dk", bound=heads(bk, E), **tol)
        close(tv.grad.numpy(), heads(dv, Ev), "dv", bound=heads(bv, Ev), **tol)
    return "equal", f"B={B} H={H} Hkv={Hkv} L={L} S={S} E={E} Ev={Ev} {np.dtype(dtype).name}"


def run_op_bad(case, rng):
    """Empty sequences give an empty or zero output of the right shape; mismatched arguments a clear error."""
    L, S, E = min(case["L"], 40), min(case["S"], 40), min(case["E"], 40)
    which = int(rng.integers(0, 6))
    q = fg.tensor(rng.standard_normal((2, 3, L, E)).astype(np.float32))
    k = fg.tensor(rng.standard_normal((2, 3, S, E)).astype(np.float32))
    v = fg.tensor(rng.standard_normal((2, 3, S, E)).astype(np.float32))
    if which in (0, 1):  # no queries, or no keys: torch gives an empty output, or zeros (no key to attend to)
        if which == 0:
            q = fg.tensor(np.zeros((2, 3, 0, E), np.float32))
        else:
            k, v = fg.tensor(np.zeros((2, 3, 0, E), np.float32)), fg.tensor(np.zeros((2, 3, 0, E), np.float32))
        try:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=case["causal"]).numpy()
        except ALLOWED as e:
            return "error", f"{type(e).__name__}: {str(e)[:160]}"
        want_shape = (2, 3, 0 if which == 0 else L, E)
        if out.shape != want_shape or (out.size and not (np.isnan(out).all() or (out == 0).all())):
            raise Failure("mismatch", f"empty sequence #{which}: shape {out.shape}, want {want_shape}")
        return "equal", f"empty #{which}"
    if which == 2:
        return _expect_error(lambda: F.scaled_dot_product_attention(q, k, fg.tensor(np.zeros((2, 3, S + 1, E),
                                                                                             np.float32))), "v length")
    if which == 3:
        return _expect_error(lambda: F.scaled_dot_product_attention(q, fg.tensor(np.zeros((2, 3, S, E + 1),
                                                                                          np.float32)), v), "k dim")
    if which == 4:
        m = fg.tensor(np.ones((L + 1, S), bool))
        return _expect_error(lambda: F.scaled_dot_product_attention(q, k, v, m), "mask shape")
    kv = fg.tensor(np.zeros((2, 2, S, E), np.float32))  # 3 query heads over 2 key/value heads
    return _expect_error(lambda: F.scaled_dot_product_attention(q, kv, kv, enable_gqa=True), "gqa heads")


RUNNERS = {"c": run_c, "c_bad": run_c_bad, "strided": run_strided, "packed": run_packed, "paged": run_paged,
           "paged_bad": run_paged_bad, "op": run_op, "op_bad": run_op_bad}


def run_case(case):
    """(outcome, detail) of one case; Failure for a mismatch or a wrong error."""
    threads, isa = fg.get_num_threads(), fg.get_simd()
    try:
        try:
            fg.set_simd(case["isa"])
        except ValueError:  # a CPU without the path: the best one it has
            pass
        fg.set_num_threads(case["threads"])
        rng = np.random.default_rng(case["seed"])
        return RUNNERS[case["entry"]](case, rng)
    finally:
        fg.set_num_threads(threads)
        fg.set_simd(isa)


def main():
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything else printed goes to stderr, off the protocol
    sys.stdout = sys.stderr
    proto.write(json.dumps({"ready": True, "targets": list(ENTRIES)}) + "\n")
    for line in sys.stdin:
        case = json.loads(line)
        try:
            outcome, detail = run_case(case)
            reply = {"ok": True, "outcome": outcome, "detail": detail}
        except Failure as f:
            reply = {"ok": False, "outcome": f.outcome, "detail": str(f)}
        except MemoryError as e:
            reply = {"ok": True, "outcome": "unverified", "detail": f"MemoryError: {e}"}
        except Exception:  # noqa: BLE001  an unexpected exception is a failure of the entry point or the harness
            reply = {"ok": False, "outcome": "exception", "detail": traceback.format_exc()[-2000:]}
        proto.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
