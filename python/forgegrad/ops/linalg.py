"""Matrix products on forgegrad's SGEMM: MatMul (numpy/torch @ semantics) and Linear (x W^T + b)."""
from __future__ import annotations

import numpy as np

from .. import _C
from ..autograd import Function
from ..kernels import bmm as _bmm
from ..kernels import matmul as _mm
from ..kernels.activation import column_sums as _column_sums
from ._util import unbroadcast


def _check_float(a, name):
    if a.dtype != np.float32:
        raise TypeError(f"{name} must be float32, got {a.dtype}")


class MatMul(Function):
    """a @ b with torch.matmul's rules: 1-D operands are promoted and the added axis removed,
    batch dimensions broadcast."""

    @staticmethod
    def forward(ctx, a, b):
        _check_float(a, "matmul: a")
        _check_float(b, "matmul: b")
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError("matmul: both arguments need at least 1 dimension, got shapes "
                             f"{a.shape} and {b.shape}")
        ctx.save_for_backward(a, b)
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        if a2.shape[-1] != b2.shape[-2]:
            raise ValueError(f"matmul: shapes {a.shape} and {b.shape} cannot be multiplied "
                             f"({a2.shape[-1]} != {b2.shape[-2]})")
        if a2.ndim == 2 and b2.ndim == 2:
            y = _mm(a2, b2)
        else:
            y = _bmm(a2, b2)
        ctx.y2_shape = y.shape
        if a.ndim == 1:
            y = y[..., 0, :]
        if b.ndim == 1:
            y = y[..., 0]
        return y

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g2 = g.reshape(ctx.y2_shape)
        ga = gb = None
        if a2.ndim == 2 and b2.ndim == 2 and g2.ndim == 2:
            if ctx.needs_input_grad[0]:
                ga = _mm(g2, b2, trans_b=True)
            if ctx.needs_input_grad[1]:
                gb = _mm(a2, g2, trans_a=True)
        else:
            if ctx.needs_input_grad[0]:
                ga = unbroadcast(_bmm(g2, np.swapaxes(b2, -1, -2)), a2.shape)
            if ctx.needs_input_grad[1]:
                gb = unbroadcast(_bmm(np.swapaxes(a2, -1, -2), g2), b2.shape)
        if ga is not None:
            ga = ga.reshape(a.shape)
        if gb is not None:
            gb = gb.reshape(b.shape)
        return ga, gb


class Linear(Function):
    """y = x @ weight.T + bias for x (..., in_features), weight (out_features, in_features)."""

    @staticmethod
    def forward(ctx, x, weight, bias=None):
        # Checks, allocation, bias and GEMM in one C++ call (at batch 1 Python-side checks and
        # allocation cost as much as the layer's GEMV). Messages name "linear: input/weight/bias".
        out = _C.gemm.linear(x, weight, bias)
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        x2 = x.reshape(-1, weight.shape[1])
        g2 = g.reshape(-1, weight.shape[0])
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = _mm(g2, weight).reshape(x.shape)
        if ctx.needs_input_grad[1]:
            gw = _mm(g2, x2, trans_a=True)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = _column_sums(g2)  # fixed row order, one pass
        return gx, gw, gb
