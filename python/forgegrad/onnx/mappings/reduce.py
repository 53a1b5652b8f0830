"""Reductions: Sum Mean Amax Amin MaxDim MinDim (values + ArgMax/ArgMin indices)."""
from __future__ import annotations

from ...ops import reduce as R
from ...ops._util import normalize_axis
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


register(R.Sum)(_reduce("ReduceSum"))
register(R.Mean)(_reduce("ReduceMean", cast_to_out=True))  # mean of ints is float
register(R.Amax)(_reduce("ReduceMax"))
register(R.Amin)(_reduce("ReduceMin"))


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


register(R.MaxDim)(_value_index("ReduceMax", "ArgMax"))
register(R.MinDim)(_value_index("ReduceMin", "ArgMin"))
