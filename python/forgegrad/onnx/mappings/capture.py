"""Mappings of the export-time stand-ins for comparisons, argmax/argmin and casts (see _capture)."""
from __future__ import annotations

import numpy as np

from .. import _capture as C
from .._context import onnx_dtype
from . import register


@register(C.Compare)
def map_compare(ctx, op):
    a_t, b_t = op.attr("a"), op.attr("b")
    # compare in the promoted dtype, as numpy does
    dt = np.result_type(a_t.dtype if hasattr(a_t, "dtype") else a_t, b_t.dtype if hasattr(b_t, "dtype") else b_t)
    if dt == np.float64:
        dt = np.dtype(np.float32)
    a, b = op.input("a", dt), op.input("b", dt)
    name = op.attr("op")
    if name == "NotEqual":
        return [ctx.node("Not", [ctx.node("Equal", [a, b])])]
    return [ctx.node(name, [a, b])]


@register(C.ArgExtreme)
def map_arg_extreme(ctx, op):
    x = op.input("a")
    dim, keep = op.attr("dim"), bool(op.attr("keepdim"))
    if dim is None:  # numpy flattens first
        x = ctx.node("Reshape", [x, ctx.ints([-1])])
        y = ctx.node(op.attr("op"), [x], axis=0, keepdims=0, select_last_index=0)
        if keep:
            y = ctx.node("Reshape", [y, ctx.ints([1] * op.args["a"].ndim)])
        return [y]
    return [ctx.node(op.attr("op"), [x], axis=int(dim) % op.args["a"].ndim, keepdims=int(keep), select_last_index=0)]


@register(C.Cast)
def map_cast(ctx, op):
    return [ctx.node("Cast", [op.input("a")], to=onnx_dtype(op.attr("dtype")))]
