"""MatMul and Linear (Gemm with transB=1 on 2-D input, MatMul + Add otherwise)."""
from __future__ import annotations

import numpy as np

from ...ops import linalg as L
from . import register


@register(L.MatMulFunction)
def map_matmul(ctx, op):
    return [ctx.node("MatMul", [op.input("a"), op.input("b")])]  # numpy semantics, 1-D included


@register(L.LinearFunction)
def map_linear(ctx, op):
    x, w = op.input("x"), op.input("weight")
    b = op.input("bias") if op.attr("bias") is not None else None
    if op.args["x"].ndim == 2:
        return [ctx.node("Gemm", [x, w, b], transB=1)]
    # (..., in) @ W^T: a parameter is stored transposed once (named "<key>.T"), anything else
    # goes through a Transpose node
    arr = ctx.constants.get(w)
    if arr is not None:
        key = ("transposed", w)
        if key not in ctx.memo:
            ctx.memo[key] = ctx.const(np.ascontiguousarray(arr.T), hint=f"{w}.T")
        wt = ctx.memo[key]
    else:
        wt = ctx.node("Transpose", [w], perm=[1, 0])
    y = ctx.node("MatMul", [x, wt])
    return [y if b is None else ctx.node("Add", [y, b])]
