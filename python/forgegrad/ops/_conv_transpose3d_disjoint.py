"""float32 conv_transpose3d whose kernel equals its stride (no padding, output_padding or dilation, one group):
the windows do not overlap, so output element (co, d * kD + a, h * kH + b, w * kW + c) is one dot product over the
input channels, x[:, d, h, w] . weight[:, co, a, b, c], and nothing else adds to it.

Per image that is one sgemm, weight (C_in, C_out * kD * kH * kW)^T @ x (C_in, D * H * W), whose rows are then
scattered tap by tap into the output's interleaved positions (a copy: no sums to order). The backward gathers the
output gradient the other way once, into G (C_out * kD * kH * kW, D * H * W) per image, and both gradients are
sgemms on it: input weight @ G, weight sum over images of x @ G^T. Every sum is an sgemm's over channels (or
positions), so the results are the same bits at any thread count. Replaces the generic path's zero fill, vol2col
panels and per-tap adds (k2 s2 32 -> 16 on N=2 8x16x16: forward about 1.2 -> 0.7 ms, backward 1.3 -> 0.9 ms).
"""
from __future__ import annotations

import itertools

import numpy as np

from .. import _C


def applies(x, w, geo) -> bool:
    k = tuple(w.shape[2:])
    return (x.dtype == np.float32 and w.dtype == np.float32 and x.ndim == 5 and geo.groups == 1
            and tuple(geo.stride) == k and not any(geo.padding) and not any(geo.output_padding)
            and all(d == 1 for d in geo.dilation) and x.shape[0] > 0)


def _taps(k):
    return itertools.product(*(range(n) for n in k))


def _interleaved(a, N, C, spatial, k):
    """a (N, C, *out) viewed as (N, C, D, kD, H, kH, W, kW)."""
    return a.reshape((N, C) + tuple(v for pair in zip(spatial, k) for v in pair))


def forward(x, w):
    N, Ci = x.shape[:2]
    spatial, Co, k = tuple(x.shape[2:]), w.shape[1], tuple(w.shape[2:])
    K, P = int(np.prod(k)), int(np.prod(spatial))
    wm = np.ascontiguousarray(w).reshape(Ci, Co * K)
    xm = np.ascontiguousarray(x).reshape(N, Ci, P)
    y = np.empty((N, Co) + tuple(n * kk for n, kk in zip(spatial, k)), np.float32)
    yv = _interleaved(y, N, Co, spatial, k)
    t = np.empty((Co * K, P), np.float32)
    tv = t.reshape((Co,) + k + spatial)
    for n in range(N):
        _C.gemm.sgemm(wm, xm[n], t, True, False, 1.0, 0.0)
        for a, b, c in _taps(k):
            yv[n, :, :, a, :, b, :, c] = tv[:, a, b, c]
    return y


def backward(g, x, w, need_input, need_weight):
    """(grad input or None, grad weight or None) for the output gradient g."""
    N, Ci = x.shape[:2]
    spatial, Co, k = tuple(x.shape[2:]), w.shape[1], tuple(w.shape[2:])
    K, P = int(np.prod(k)), int(np.prod(spatial))
    gv = _interleaved(np.ascontiguousarray(g, np.float32), N, Co, spatial, k)
    cols = np.empty((N, Co * K, P), np.float32)
    np.copyto(cols.reshape((N, Co) + k + spatial), gv.transpose(0, 1, 3, 5, 7, 2, 4, 6))  # one pass: faster here
    wm = np.ascontiguousarray(w).reshape(Ci, Co * K)
    gx = gw = None
    if need_input:
        gx = np.empty((N, Ci, P), np.float32)
        for n in range(N):
            _C.gemm.sgemm(wm, cols[n], gx[n], False, False, 1.0, 0.0)
        gx = gx.reshape(x.shape)
    if need_weight:
        xm = np.ascontiguousarray(x).reshape(N, Ci, P)
        gw = np.empty((Ci, Co * K), np.float32)
        for n in range(N):
            _C.gemm.sgemm(xm[n], cols[n], gw, False, True, 1.0, 1.0 if n else 0.0)
        gw = gw.reshape(w.shape)
    return gx, gw
