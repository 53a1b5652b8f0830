"""Attention on cuda composed from forgegrad's GPU kernels (batched SGEMM, the softmax row kernel,
pointwise ops): the GPU twin of ops/_attention_math.py, for what the fused kernel does not do
(dropout, whose keep mask must be kept for backward; Gemma 2's score softcap). It materialises the
(N, L, S) weights.

Arrays are DeviceArrays: q (N, L, E), k (N, S, E), v (N, S, Ev); ``mask`` is the additive float32
mask as [1 or N, L, S] (ops/attention.py's _cuda_mask) or None. The keep mask is drawn on the host
(ops._util.dropout_keep), so a seeded run drops the same weights on the CPU and on the GPU.
"""
from __future__ import annotations

import numpy as np

from .. import _C
from . import _cuda_nn as CN
from ._cuda_pointwise import _act_backward, _act_forward
from ._util import dropout_keep


def _cuda():
    # imported on first use: importing forgegrad.cuda registers the device, which `import forgegrad`
    # leaves until cuda is asked for
    from .. import cuda
    return cuda


def _mm(a, b):
    return _C.cuda_gemm.matmul(a, b, bool(_cuda().matmul_allow_tf32))


def _t(a):
    """a (N, R, C) transposed to (N, C, R), a new contiguous array."""
    return _cuda().permute(a, (0, 2, 1))


def forward(q, k, v, mask, is_causal, scale, dropout_p, softcap=None):
    """(out (N, L, Ev), saved state for backward). ``softcap``: the scaled scores s become
    softcap * tanh(s / softcap) before the mask, as the CPU's."""
    K = CN.kernels()
    L, S = q.shape[1], k.shape[1]
    s = _mm(CN.pw("mul", q, scale), _t(k))  # q scaled first, as the CPU's composed path
    th = None
    if softcap is not None:
        th = _act_forward(_C.activation.TANH, CN.pw("div", s, softcap))
        s = CN.pw("mul", th, softcap)
    if is_causal:  # top-left aligned: query i sees keys j <= i
        bias = np.where(np.tri(L, S, dtype=bool), np.float32(0), np.float32(-np.inf)).astype(np.float32)
        s = CN.pw("add", s, _cuda().to_device(bias, q.device))
    if mask is not None:
        s = CN.pw("add", s, mask)
    p = K.softmax(s, -1)
    if mask is not None:
        # rows whose scores are all -inf (every key masked) give 0 where softmax gives NaN, as torch's
        # _safe_softmax; a row NaN from its inputs stays NaN (as the CPU's composed path)
        n = q.shape[0]
        all_neg_inf = _cuda().to_device(np.full((n, L, 1), -np.inf, np.float32), q.device)
        masked = K.reduce("count_eq", s, [2], True, 1.0, False, all_neg_inf)
        p = K.where(K.compare("eq", masked, float(S)), 0.0, p)
    keep = _cuda().to_device(dropout_keep(tuple(p.shape), dropout_p), q.device)
    return _mm(CN.pw("mul", p, keep), v), (p, keep, th)


def backward(g, q, k, v, saved, scale):
    """(dq, dk, dv, d(scores + mask)) for out's gradient g (N, L, Ev)."""
    K = CN.kernels()
    p, keep, th = saved
    dv = _mm(_t(CN.pw("mul", p, keep)), g)
    dp = CN.pw("mul", _mm(g, _t(v)), keep)
    dmask = ds = K.softmax_backward(p, dp, -1)  # rows of p that are 0 give 0
    if th is not None:  # through the cap: d(c * tanh(x / c)) / dx = 1 - tanh(x / c)^2
        ds = _act_backward(_C.activation.TANH, ds, th)
    dq = CN.pw("mul", _mm(ds, k), scale)
    dk = _mm(_t(ds), CN.pw("mul", q, scale))
    return dq, dk, dv, dmask
