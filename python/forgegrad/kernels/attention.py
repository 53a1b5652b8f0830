"""Fused scaled dot-product attention on numpy float32 stacks (the C++ kernels of
cpp/kernels/per_isa/attention.cpp): the (L, S) scores are never stored, forward keeps the row
logsumexp and backward recomputes the scores tile by tile. Sequences of up to 256 queries and keys
without a soft cap (``_C.attention.small_path``) run on cpp/kernels/per_isa/attention_small.cpp
instead: one (batch, head) pair's scores at a time fit in L2, so the softmax runs over whole rows
and the products cover the causal triangle in 6-row strips rather than 64-key tiles.

q (N, L, E), k (N, S, E), v (N, S, Ev) with N = batch x heads. A mask is prepared once by
:func:`prepare_mask` from the user's bool/float attn_mask broadcastable to batch + (L, S): the kernel
reads it through per-(batch, head) offsets, so a mask shared by the heads (or a key-padding row
shared by the queries) is neither copied per head nor per query.

The packed form (:func:`attention_forward_packed`) is causal self-attention straight from a
(B, T, 3C) q/k/v projection: one sequential pass in C++ splits the heads (kept for backward), the
output is written head-merged, (B, T, C), and backward writes the gradient laid out as qkv, so no
numpy head split / merge copies and no per-slice gradients are needed.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import numpy as np

from .. import _C
from .._validate import check_bool, check_float, check_int
from ._checks import as_f32

__all__ = ["Mask", "prepare_mask", "check_softcap", "attention_forward", "attention_backward",
           "attention_forward_packed", "attention_backward_packed", "paged_attention_decode"]


class Mask(NamedTuple):
    """An additive float32 mask: element (n, r, c) at ``data.flat[offsets[n] + r * row_stride + c]``."""

    data: np.ndarray
    offsets: np.ndarray
    row_stride: int


def prepare_mask(mask: Optional[np.ndarray], batch: tuple, L: int, S: int) -> Optional[Mask]:
    """The kernel's form of attn_mask (bool: True = takes part, becomes 0 / -inf; float32: added),
    broadcastable to batch + (L, S) (checked by the op)."""
    # the geometry is checked with or without a mask: a caller's bad L or S must not pass unnoticed
    # just because this call has no mask
    if not isinstance(batch, tuple) or any(isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 0
                                           for b in batch):
        raise TypeError(f"batch must be a tuple of sizes (ints >= 0), got {batch!r}")
    L = check_int(L, "L", low=1)
    S = check_int(S, "S", low=1)
    if mask is None:
        return None
    if not isinstance(mask, np.ndarray) or mask.dtype not in (np.bool_, np.float32):
        raise TypeError(f"mask must be None or a bool or float32 numpy.ndarray, got "
                        f"{getattr(mask, 'dtype', type(mask).__name__)}")
    try:  # to exactly batch + (L, S): a mask axis longer than batch's 1 would give offsets past N
        ok = np.broadcast_shapes(mask.shape, batch + (L, S)) == batch + (L, S)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"mask of shape {mask.shape} does not broadcast to {batch + (L, S)}")
    if mask.ndim > len(batch) + 2:
        raise ValueError(f"mask has more dimensions ({mask.ndim}) than batch + (L, S) ({len(batch) + 2})")
    if mask.dtype == np.bool_:
        m = np.where(mask, np.float32(0.0), np.float32(-np.inf))
    else:
        m = as_f32(mask, "attn_mask")
    m = m.reshape((1,) * (len(batch) + 2 - m.ndim) + m.shape)
    if m.shape[-1] != S:  # a column broadcast: stored once per (own batch, row)
        m = np.broadcast_to(m, m.shape[:-1] + (S,))
    m = np.ascontiguousarray(m)
    rows = m.shape[-2]
    row_stride = S if rows == L and L > 1 else 0
    own = m.shape[:-2]
    starts = (np.arange(math.prod(own), dtype=np.int64) * (rows * S)).reshape(own)
    offsets = np.ascontiguousarray(np.broadcast_to(starts, batch).reshape(-1))
    return Mask(m, offsets, row_stride)


def _stack(a, name):
    a = as_f32(a, name)
    if a.ndim != 3:
        raise ValueError(f"{name} must be 3-D (N, sequence, features), got shape {a.shape}")
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _scalars(scale, causal, mask):
    if mask is not None and not isinstance(mask, Mask):
        raise TypeError(f"mask must be None or a Mask from prepare_mask, got {type(mask).__name__}")
    return check_float(scale, "scale"), check_bool(causal, "causal"), mask if mask is not None else Mask(None, None, 0)


def check_softcap(softcap: Optional[float], who: str = "softcap") -> Optional[float]:
    """softcap as a float (None: no cap); a clear error for anything but a finite number > 0."""
    if not isinstance(who, str):  # the argument's name in the messages: anything else is a caller's slip
        raise TypeError(f"check_softcap: who must be a str (the argument's name), got {type(who).__name__}")
    if softcap is None:
        return None
    cap = check_float(softcap, who)
    if not 0 < cap < math.inf:
        raise ValueError(f"{who} must be a finite number > 0 or None, got {softcap!r}")
    return cap


def attention_forward(q, k, v, scale: float, causal: bool = False, mask: Optional[Mask] = None,
                      softcap: Optional[float] = None):
    """(out (N, L, Ev), lse (N, L)): out = softmax(q k^T * scale + mask) v; causal: query r sees keys c <= r.
    softcap (Gemma 2's attn_logit_softcapping): the scaled scores s become softcap * tanh(s / softcap) before
    the mask (lse is then that of the capped scores; pass the same softcap to attention_backward)."""
    scale, causal, m = _scalars(scale, causal, mask)
    cap = check_softcap(softcap) or 0.0
    q, k, v = _stack(q, "q"), _stack(k, "k"), _stack(v, "v")
    out = np.empty(q.shape[:2] + (v.shape[2],), np.float32)
    lse = np.empty(q.shape[:2], np.float32)
    _C.attention.attention_forward(q, k, v, scale, causal, m.data, m.offsets, m.row_stride, out, lse, cap)
    return out, lse


def attention_backward(grad_out, q, k, v, out, lse, scale: float, causal: bool = False, mask: Optional[Mask] = None,
                       softcap: Optional[float] = None):
    """(dq, dk, dv) of :func:`attention_forward` for the gradient of its output; softcap: the forward's
    (the scores are recomputed capped, and the gradient goes through the cap: times 1 - tanh(x / softcap)^2)."""
    scale, causal, m = _scalars(scale, causal, mask)
    cap = check_softcap(softcap) or 0.0
    q, k, v = _stack(q, "q"), _stack(k, "k"), _stack(v, "v")
    grad_out, out = _stack(grad_out, "grad_out"), _stack(out, "out")
    dq, dk, dv = np.empty_like(q), np.empty_like(k), np.empty_like(v)
    lse = np.ascontiguousarray(as_f32(lse, "lse"))
    _C.attention.attention_backward(q, k, v, out, grad_out, lse, scale, causal, m.data, m.offsets, m.row_stride, dq,
                                    dk, dv, cap)
    return dq, dk, dv


def _packed_scale(scale, qkv, heads):
    heads = check_int(heads, "heads", low=1)
    if qkv.shape[-1] % (3 * heads):
        raise ValueError(f"qkv's last dimension ({qkv.shape[-1]}) must be 3 x heads x head size, heads = {heads}")
    d = qkv.shape[-1] // (3 * heads)
    return heads, (1.0 / math.sqrt(d) if d else 1.0) if scale is None else check_float(scale, "scale")


def attention_forward_packed(qkv, heads: int, scale: Optional[float] = None):
    """(out (B, T, C), lse (B * heads, T), split (3, B * heads, T, D)): causal self-attention of qkv
    (B, T, 3C) = [q | k | v], each C = heads x D columns in head order (nanoGPT's c_attn output), out
    head-merged; scale 1/sqrt(D) when None. split holds q, k, v per head, for the backward."""
    qkv = _stack(qkv, "qkv")
    heads, scale = _packed_scale(scale, qkv, heads)
    b, t, c3 = qkv.shape
    out = np.empty((b, t, c3 // 3), np.float32)
    lse = np.empty((b * heads, t), np.float32)
    split = np.empty((3, b * heads, t, c3 // (3 * heads)), np.float32)
    _C.attention.attention_forward_packed(qkv, heads, scale, out, lse, split)
    return out, lse, split


def attention_backward_packed(grad_out, split, out, lse, heads: int, scale: Optional[float] = None):
    """dqkv (B, T, 3C), laid out as the forward's qkv, of :func:`attention_forward_packed` for grad_out
    (B, T, C), from the forward's split, out and lse."""
    split, out, grad_out = as_f32(split, "split"), _stack(out, "out"), _stack(grad_out, "grad_out")
    if split.ndim != 4 or split.shape[0] != 3:
        raise ValueError(f"split must be (3, B * heads, T, D), got shape {split.shape}")
    b, t, c = out.shape
    dqkv = np.empty((b, t, 3 * c), np.float32)
    heads, scale = _packed_scale(scale, dqkv, heads)
    lse = np.ascontiguousarray(as_f32(lse, "lse"))
    _C.attention.attention_backward_packed(np.ascontiguousarray(split), out, grad_out, lse, heads, scale, dqkv)
    return dqkv


def paged_attention_decode(q, k_pool, v_pool, tables, lengths, scale: float, softcap: Optional[float] = None,
                           window: Optional[int] = None, bias=None) -> np.ndarray:
    """Decode attention over a paged KV cache (serve/kv_pool.py): out (B, Hkv, rep, D) of the query rows
    q (B, Hkv, rep, D) (rep query heads per key/value head) against row b's first ``lengths[b]`` keys and values,
    its key at position p in block ``tables[b, p // block_tokens]``, place ``p % block_tokens`` of k_pool and v_pool
    (blocks, Hkv, block_tokens, D). window: only a row's last ``window`` keys (sliding-window layers); softcap as
    attention_forward's. bias: None, or a float32 (Hkv * rep, distances) table added to the scores by distance (T5's
    relative-position bias): query head ``h * rep + r`` of row b against position p gains ``bias[h * rep + r, d]``,
    d = lengths[b] - 1 - p (the query is the row's last position), after the scale and the cap; a distance past the
    table reads its last column (T5's buckets saturate: a table ``max_distance`` long covers any row). Each row reads
    only its own blocks (no padding), one thread per (row, head): the same bits at any thread count."""
    cap = check_softcap(softcap) or 0.0
    window = 0 if window is None else check_int(window, "window", low=1)
    q = np.ascontiguousarray(as_f32(q, "q"))
    k_pool, v_pool = as_f32(k_pool, "k_pool"), as_f32(v_pool, "v_pool")
    tables, lengths = np.asarray(tables), np.asarray(lengths)
    if tables.dtype.kind not in "iu":  # a float id would be truncated to another block
        raise TypeError(f"paged_attention_decode: tables must hold integer block ids, got dtype {tables.dtype}")
    if lengths.dtype.kind not in "iu":
        raise TypeError(f"paged_attention_decode: lengths must hold integers, got dtype {lengths.dtype}")
    tables = np.ascontiguousarray(tables, np.int64)
    lengths = np.ascontiguousarray(lengths, np.int64)
    if bias is not None:
        bias = np.ascontiguousarray(as_f32(bias, "bias"))
    out = np.empty(q.shape, np.float32)
    _C.attention.paged_decode(q, k_pool, v_pool, tables, lengths, check_float(scale, "scale"), cap, window, out, bias)
    return out
