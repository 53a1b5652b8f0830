"""linear of bfloat16 tensors with a graph (_op_dispatch._bf16_linear sends it here): one node in place of the five
the generic bfloat16 path records (three casts to float32, the float32 linear, the cast of its result back).

Forward: _C.bf16.linear; backward: dX = dY W and dW = dY^T X, each float32 product rounded once to bfloat16, and the
bias gradient as float32 column sums of dY, rounded. Two arithmetics, by _C.bf16.gemm_path():
- "avx512_bf16" (a CPU with AVX512_BF16, SIMD path avx512): the products on the vdpbf16ps GEMM (forgegrad/sbgemm.h:
  float32 accumulation of exact bfloat16 products, denormals flushed, the same bits at any thread count), like
  torch's bfloat16 GEMMs; within bfloat16 rounding of the generic path, not its bits;
- "float32": the float32 kernels on the widened operands: the arrays, kernels and roundings of the generic path, so
  the values and gradients are its bits.
Either way the graph keeps the bfloat16 operands (half the memory of the float32 copies the generic path saves).
"""
from __future__ import annotations

import math

import numpy as np

from .. import _C
from .. import dtypes as _dtypes
from ..autograd import Function
from ..kernels.activation import column_sums as _column_sums

_F32 = np.dtype(np.float32)


def _wide(a):
    return None if a is None else _dtypes.astype(a, _F32)


class Bf16LinearFunction(Function):
    """y = x @ weight.T + bias, every tensor bfloat16 (x (..., in_features), weight (out_features, in_features))."""

    exact_dtype = True  # bfloat16 in, bfloat16 out: no float32 promotion of the results

    @staticmethod
    def forward(ctx, x, weight, bias=None):
        needs = ctx.needs_input_grad
        ctx.save_for_backward(x if needs[1] else None, weight if needs[0] else None)
        ctx.shapes = (x.shape, weight.shape)
        ctx.has_bias = bias is not None
        x2 = np.ascontiguousarray(x).reshape(math.prod(x.shape[:-1]), weight.shape[1])
        y = _C.bf16.linear(x2, np.ascontiguousarray(weight), None if bias is None else np.ascontiguousarray(bias))
        return y.view(_dtypes._BF16).reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        x_shape, w_shape = ctx.shapes
        needs = ctx.needs_input_grad
        if _C.bf16.gemm_path() == "avx512_bf16":
            return _native_backward(g, x, weight, x_shape, w_shape, needs, ctx.has_bias)
        # (an operand whose gradient is not asked for is not read: an uninitialised array stands in for the
        # kernel's shape checks)
        x32 = _wide(x) if x is not None else np.empty(x_shape, _F32)
        w32 = _wide(weight) if weight is not None else np.empty(w_shape, _F32)
        gx, gw, gb = _C.gemm.linear_backward(_wide(g), x32, w32, needs[0], needs[1], ctx.has_bias and needs[2])
        bf16 = _dtypes._BF16
        return (None if gx is None else _dtypes.astype(gx, bf16), None if gw is None else _dtypes.astype(gw, bf16),
                None if gb is None else _dtypes.astype(gb, bf16))

    @staticmethod
    def differentiable_backward(ctx, args, kwargs, g):  # (create_graph: forgegrad._create_graph)
        """The same gradients with Tensor ops (float32 products rounded to bfloat16), so they differentiate again."""
        x, weight = args[0], args[1]
        needs = ctx.needs_input_grad
        n, k = weight.shape
        g32 = g.float().reshape(-1, n)
        gx = (g32 @ weight.float()).reshape(x.shape).to(x.dtype) if needs[0] else None
        gw = (g32.t() @ x.float().reshape(-1, k)).to(weight.dtype) if needs[1] else None
        gb = g32.sum(0).to(args[2].dtype) if len(args) > 2 and needs[2] else None
        return gx, gw, gb


def _native_backward(g, x, weight, x_shape, w_shape, needs, has_bias):
    """The gradients on the vdpbf16ps GEMM: dX = dY W, dW = dY^T X (bfloat16 operands, float32 sums rounded once)."""
    bf16 = _dtypes._BF16
    n, k = w_shape
    rows = math.prod(x_shape[:-1])
    g2 = np.ascontiguousarray(g if g.dtype == bf16 else _dtypes.astype(g, bf16)).reshape(rows, n)
    gx = gw = gb = None
    if needs[0]:
        gx = _C.bf16.gemm(g2, np.ascontiguousarray(weight)).view(bf16).reshape(x_shape)
    if needs[1]:
        x2 = np.ascontiguousarray(x).reshape(rows, k)
        gw = _C.bf16.gemm(g2, x2, trans_a=True).view(bf16)
    if has_bias and needs[2]:
        gb = _dtypes.astype(_column_sums(_dtypes.astype(g2, _F32)), bf16)
    return gx, gw, gb


class Bf16MatmulFunction(Function):
    """a @ b of bfloat16 tensors on the vdpbf16ps GEMM (_op_dispatch._bf16_matmul sends it here only where
    _C.bf16.gemm_path() is "avx512_bf16"): a (..., M, K) with b (K, N) (a's leading dimensions as rows of one
    product), or a (B, M, K) with b (B, K, N); each float32 product rounded once to bfloat16."""

    exact_dtype = True

    @staticmethod
    def forward(ctx, a, b):
        needs = ctx.needs_input_grad
        ctx.save_for_backward(a if needs[1] else None, b if needs[0] else None)
        ctx.shapes = (a.shape, b.shape)
        return _matmul(np.ascontiguousarray(a), np.ascontiguousarray(b))

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        a_shape, b_shape = ctx.shapes
        needs = ctx.needs_input_grad
        bf16 = _dtypes._BF16
        g = np.ascontiguousarray(g if g.dtype == bf16 else _dtypes.astype(g, bf16))
        k, n = b_shape[-2], b_shape[-1]
        if len(b_shape) == 2:  # a's rows flattened: dA = dY B^T, dB = A^T dY
            rows = math.prod(a_shape[:-1])
            g = g.reshape(rows, n)
            ga = _C.bf16.gemm(g, np.ascontiguousarray(b), trans_b=True) if needs[0] else None
            gb = _C.bf16.gemm(np.ascontiguousarray(a).reshape(rows, k), g, trans_a=True) if needs[1] else None
        else:  # batched: the same per entry
            ga = _C.bf16.gemm(g, np.ascontiguousarray(b), trans_b=True) if needs[0] else None
            gb = _C.bf16.gemm(np.ascontiguousarray(a), g, trans_a=True) if needs[1] else None
        return (None if ga is None else ga.view(bf16).reshape(a_shape),
                None if gb is None else gb.view(bf16).reshape(b_shape))

    @staticmethod
    def differentiable_backward(ctx, args, kwargs, g):  # (create_graph: forgegrad._create_graph)
        """The same gradients with Tensor ops (float32 products rounded to bfloat16), so they differentiate again."""
        a, b = args[0], args[1]
        needs = ctx.needs_input_grad
        g32 = g.float()
        ga = (g32 @ b.float().transpose(-1, -2)).to(a.dtype) if needs[0] else None
        if not needs[1]:
            gb = None
        elif b.ndim == 2:
            gb = (a.float().reshape(-1, b.shape[0]).t() @ g32.reshape(-1, b.shape[1])).to(b.dtype)
        else:
            gb = (a.float().transpose(-1, -2) @ g32).to(b.dtype)
        return ga, gb


def _matmul(a, b):
    """a @ b for C-contiguous bfloat16 arrays of Bf16MatmulFunction's shapes, as bfloat16."""
    if b.ndim == 2:
        y = _C.bf16.gemm(a.reshape(math.prod(a.shape[:-1]), a.shape[-1]), b)
        return y.view(_dtypes._BF16).reshape(*a.shape[:-1], b.shape[1])
    return _C.bf16.gemm(a, b).view(_dtypes._BF16)


def matmul_shapes_ok(a_shape, b_shape) -> bool:
    """Whether Bf16MatmulFunction takes these shapes: a (..., M, K) @ b (K, N), or (B, M, K) @ (B, K, N)."""
    if len(a_shape) < 2 or len(b_shape) < 2 or a_shape[-1] != b_shape[-2]:
        return False
    return len(b_shape) == 2 or (len(a_shape) == len(b_shape) == 3 and a_shape[0] == b_shape[0])
