"""Attention composed from forgegrad's kernels: batched GEMM for q k^T and P v, the softmax row
kernel, numpy for masking. It materialises the (N, L, S) weights, so it is the path for what the
fused C++ kernel does not do (dropout: its mask must be kept for backward).

Arrays: q (N, L, E), k (N, S, E), v (N, S, Ev), C-contiguous float32; ``mask`` is the user's
attn_mask (bool or float32, broadcastable to batch + (L, S)); N = prod(batch).
"""
from __future__ import annotations

import numpy as np

from ..kernels import bmm as _bmm
from ..kernels import softmax as _KS
from ._util import dropout_keep

_F32 = np.dtype(np.float32)


def _mm(a, b):
    """Batched product: the float32 kernel, numpy's matmul for float64 (correct, not fast)."""
    return _bmm(a, b) if a.dtype == _F32 else np.matmul(a, b)


def _softmax(s):
    if s.dtype == _F32:
        return _KS.softmax(s, out=s)
    with np.errstate(invalid="ignore"):  # a fully masked row: NaN, as the kernel's
        e = np.exp(s - s.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)


def _softmax_backward(dp, p):
    if dp.dtype == _F32:
        return _KS.softmax_backward(dp, p, out=dp)
    return p * (dp - (dp * p).sum(axis=-1, keepdims=True))


def _add_mask(s, mask, batch, is_causal):
    """Scores s (N, L, S) with the causal or user mask applied, in place."""
    n, L, S = s.shape
    if is_causal:
        s[:, ~np.tri(L, S, dtype=bool)] = -np.inf  # top-left aligned: query i sees keys j <= i
    if mask is not None:
        view = s.reshape(batch + (L, S))
        if mask.dtype == np.bool_:  # -inf added, not assigned, as torch: a NaN or inf score stays NaN
            np.add(view, -np.inf, out=view, where=~mask)
        else:
            view += mask


def forward(q, k, v, mask, batch, is_causal, scale, dropout_p, softcap=None):
    """(out (N, L, Ev), saved state for backward). ``softcap``: the scaled scores s become
    softcap * tanh(s / softcap) before the mask (Gemma 2)."""
    s = _mm(q * q.dtype.type(scale), np.swapaxes(k, -1, -2))  # q scaled first, as torch (overflows no sooner)
    th = None
    if softcap is not None:
        cap = s.dtype.type(softcap)
        th = np.tanh(s / cap)  # divided by the cap, as transformers
        np.multiply(th, cap, out=s)
    _add_mask(s, mask, batch, is_causal)
    # rows with every score -inf (every key masked) give 0, as torch's _safe_softmax (softmax gives NaN there);
    # a row NaN from its inputs stays NaN
    empty = (s == -np.inf).all(axis=-1, keepdims=True) if mask is not None else None
    p = _softmax(s)
    if empty is not None and empty.any():
        np.copyto(p, 0.0, where=np.broadcast_to(empty, p.shape))
    keep = None
    pd = p
    if dropout_p > 0.0:
        keep = dropout_keep(p.shape, dropout_p, p.dtype)
        pd = p * keep
    return _mm(pd, v), (p, keep, th)


def backward(g, q, k, v, saved, mask, batch, is_causal, scale, want_mask):
    """(dq, dk, dv, d_scores-with-mask or None) for out's gradient g (N, L, Ev)."""
    p, keep, th = saved
    pd = p if keep is None else p * keep
    dv = _mm(np.swapaxes(pd, -1, -2), g)
    dp = _mm(g, np.swapaxes(v, -1, -2))
    if keep is not None:
        dp *= keep
    ds = _softmax_backward(dp, p)  # d(scores + mask); rows of p that are 0 give 0
    dmask = ds.copy() if want_mask else None
    if th is not None:  # through the cap: d(c * tanh(x / c)) / dx = 1 - tanh(x / c)^2
        ds *= 1 - th * th
    dq = _mm(ds, k)
    dq *= dq.dtype.type(scale)
    dk = _mm(np.swapaxes(ds, -1, -2), q * q.dtype.type(scale))
    return dq, dk, dv, dmask
