"""Elementwise arithmetic: Add Sub Mul Div Pow Neg Exp Log Sqrt Abs Clamp Where.

Inputs are cast to the op's output dtype first: numpy promotes (int64 / int64 -> float, int + 0.5
-> float) where ONNX would not (integer Div truncates)."""
from __future__ import annotations

import numpy as np

from ...ops import elementwise as E
from ...tensor import Tensor
from . import register


def _binary(onnx_op):
    def mapping(ctx, op):
        dt = op.out_dtype()
        return [ctx.node(onnx_op, [op.input("a", dt), op.input("b", dt)])]
    mapping.__name__ = f"map_{onnx_op.lower()}"
    return mapping


for _cls, _onnx in ((E.AddFunction, "Add"), (E.SubFunction, "Sub"), (E.MulFunction, "Mul"), (E.DivFunction, "Div")):
    register(_cls)(_binary(_onnx))


@register(E.PowFunction)
def map_pow(ctx, op):
    dt = op.out_dtype()
    b = op.attr("b")
    if not isinstance(b, Tensor) and np.ndim(b) == 0:
        if b == 2:  # x*x is exact where Pow may go through exp/log
            a = op.input("a", dt)
            return [ctx.node("Mul", [a, a])]
        if b == 0.5:
            return [ctx.node("Sqrt", [op.input("a", dt)])]
    return [ctx.node("Pow", [op.input("a", dt), op.input("b", dt)])]


def _unary(onnx_op):
    def mapping(ctx, op):
        return [ctx.node(onnx_op, [op.input("a", op.out_dtype())])]
    mapping.__name__ = f"map_{onnx_op.lower()}"
    return mapping


for _cls, _onnx in ((E.NegFunction, "Neg"), (E.ExpFunction, "Exp"), (E.LogFunction, "Log"),
                    (E.SqrtFunction, "Sqrt"), (E.AbsFunction, "Abs"), (E.SinFunction, "Sin"),
                    (E.CosFunction, "Cos")):
    register(_cls)(_unary(_onnx))


@register(E.ClampFunction)
def map_clamp(ctx, op):
    dt = op.out_dtype()
    x = op.input("a", dt)
    lo, hi = op.attr("min"), op.attr("max")
    if isinstance(lo, Tensor) or isinstance(hi, Tensor) or np.ndim(lo) or np.ndim(hi):
        # tensor bounds broadcast: Max/Min (Clip takes scalars only)
        if lo is not None:
            x = ctx.node("Max", [x, op.input("min", dt)])
        if hi is not None:
            x = ctx.node("Min", [x, op.input("max", dt)])
        return [x]
    return [ctx.node("Clip", [x, None if lo is None else op.input("min", dt),
                              None if hi is None else op.input("max", dt)])]


@register(E.WhereFunction)
def map_where(ctx, op):
    dt = op.out_dtype()
    return [ctx.node("Where", [op.input("cond", np.bool_), op.input("a", dt), op.input("b", dt)])]
