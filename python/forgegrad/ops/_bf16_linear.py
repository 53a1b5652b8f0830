"""linear of bfloat16 tensors with a graph (_op_dispatch._bf16_linear sends it here): one node in place of the five
the generic bfloat16 path records (three casts to float32, the float32 linear, the cast of its result back).

Forward: _C.bf16.linear, which widens the operands as it reads them and rounds the float32 result once. Backward:
the float32 linear_backward kernel on the widened gradient and operands, each gradient rounded once to its input's
bfloat16. Those are the arrays, kernels and roundings of the generic path, so the values and gradients are its bits;
the graph keeps the bfloat16 operands (half the memory of the float32 copies the generic path saves).
"""
from __future__ import annotations

import math

import numpy as np

from .. import _C
from .. import dtypes as _dtypes
from ..autograd import Function

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
