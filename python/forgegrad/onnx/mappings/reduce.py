"""Reductions: Sum Mean Amax Amin MaxDim MinDim (values + ArgMax/ArgMin indices), Var; CumSum."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto

from ...ops import reduce as R
from ...ops import stats as ST
from ...ops._util import normalize_axis
from .._symbolic import Dyn
from . import register


def _reduce(onnx_op, cast_to_out=False):
    def mapping(ctx, op):
        x = op.input("a", op.out_dtype() if cast_to_out else None)
        axes = normalize_axis(op.attr("dim"), op.args["a"].ndim)
        if not axes:  # an empty axis list reduces nothing (ONNX would reduce everything)
            return [x]
        return [ctx.reduce(onnx_op, x, axes, bool(op.attr("keepdim")))]
    mapping.__name__ = f"map_{onnx_op.lower()}"
    return mapping


register(R.SumFunction)(_reduce("ReduceSum"))
register(R.MeanFunction)(_reduce("ReduceMean", cast_to_out=True))  # mean of ints is float
register(R.AmaxFunction)(_reduce("ReduceMax"))
register(R.AminFunction)(_reduce("ReduceMin"))


@register(R.CumsumFunction)
def map_cumsum(ctx, op):
    x = op.input("a", op.out_dtype())  # bool and int32 run as int64, as the op sums them
    if op.args["a"].ndim == 0:
        return [ctx.node("Identity", [x])]
    axis = normalize_axis(op.attr("dim"), op.args["a"].ndim)[0]
    return [ctx.node("CumSum", [x, ctx.const(np.int64(axis))])]


def _value_index(reduce_op, arg_op):
    def mapping(ctx, op):
        x = op.input("a")
        (axis,) = normalize_axis(op.attr("dim"), op.args["a"].ndim)
        keep = bool(op.attr("keepdim"))
        vals = ctx.reduce(reduce_op, x, [axis], keep)
        # numpy's argmax/argmin return the first extreme index: select_last_index=0
        idx = ctx.node(arg_op, [x], axis=axis, keepdims=int(keep), select_last_index=0)
        return [vals, idx]
    mapping.__name__ = f"map_{arg_op.lower()}"
    return mapping


register(R.MaxDimFunction)(_value_index("ReduceMax", "ArgMax"))
register(R.MinDimFunction)(_value_index("ReduceMin", "ArgMin"))


@register(ST.VarFunction)
def map_var(ctx, op):
    """sum((x - ReduceMean(x))^2) / (n - 1 or n), as the op computes it. n is a constant when the
    reduced axes are static, else the product of their sizes read from Shape(x) at run time (so a
    variance over the batch axis divides by the batch size of the run, not the example's)."""
    x = op.input("a", np.float32)
    axes = ST.reduced_axes(op.attr("dim"), op.args["a"].ndim)
    keep = bool(op.attr("keepdim"))
    correction = 1 if op.attr("unbiased") else 0
    d = ctx.node("Sub", [x, ctx.reduce("ReduceMean", x, axes, True)])
    ss = ctx.reduce("ReduceSum", ctx.node("Mul", [d, d]), axes, keep)
    dims = op.in_dims("a")
    if any(isinstance(dims[a], Dyn) for a in axes):
        sizes = ctx.node("Gather", [ctx.node("Shape", [x]), ctx.ints(axes)], axis=0)
        n = ctx.node("Cast", [ctx.reduce("ReduceProd", sizes, [0], False)], to=TensorProto.FLOAT)
        dof = ctx.node("Sub", [n, ctx.const(np.float32(correction))]) if correction else n
    else:
        n = 1
        for a in axes:
            n *= int(dims[a])
        dof = ctx.const(np.float32(n - correction))
    return [ctx.node("Div", [ss, dof])]


@register(ST.StdFunction)
def map_std(ctx, op):
    """Sqrt of the variance, mapped as map_var does."""
    return [ctx.node("Sqrt", map_var(ctx, op))]
