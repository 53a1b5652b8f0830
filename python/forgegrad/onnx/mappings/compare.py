"""Comparisons, casts and argmax/argmin (forgegrad.ops.compare): Less LessOrEqual Greater
GreaterOrEqual Equal Not(Equal), Cast, ArgMax ArgMin."""
from __future__ import annotations

import numpy as np

from ...ops import compare as C
from ...ops._logic_common import cast, promote
from .._context import onnx_dtype
from . import register

_ONNX_COMPARISON = {"lt": "Less", "le": "LessOrEqual", "gt": "Greater", "ge": "GreaterOrEqual", "eq": "Equal"}


@register(C.CompareFunction)
def map_compare(ctx, op):
    name = op.attr("op")
    # both sides in torch's promoted dtype, as the kernel compares (int64 tensor < 0.5 in float32; uint8 > -1 with
    # -1 wrapped to 255)
    raw = [v._data if hasattr(v, "_data") else v for v in (op.attr("a"), op.attr("b"))]
    dt = promote(*raw)
    if dt == np.float64:
        dt = np.dtype(np.float32)  # float64 is exported as float32
    if dt == np.bool_ and name not in ("eq", "ne"):
        dt = np.dtype(np.int32)  # Less/Greater(...) take no bool inputs: False < True as 0 < 1
    a, b = (ctx.const(cast(v, promote(*raw)).astype(dt)) if isinstance(v, (int, float, np.number)) else op.input(k, dt)
            for k, v in zip("ab", raw))
    if name == "ne":
        return [ctx.node("Not", [ctx.node("Equal", [a, b])])]
    if name not in _ONNX_COMPARISON:
        raise op.unsupported(f"unknown comparison {name!r}")
    return [ctx.node(_ONNX_COMPARISON[name], [a, b])]


@register(C.CastFunction)
def map_cast(ctx, op):
    # the output's dtype, not the requested one: a cast to float64 is stored (and exported) as float32
    return [ctx.node("Cast", [op.input("a")], to=onnx_dtype(op.out_dtype()))]


def _arg_extreme(onnx_op):
    def mapping(ctx, op):
        x = op.input("a")
        x_t = op.args["a"]
        if x_t.dtype == np.bool_:  # ArgMax/ArgMin take no bool input
            x = ctx.cast(x, np.int32)
        dim, keep = op.attr("dim"), bool(op.attr("keepdim"))
        if x_t.ndim == 0:  # the index into a single value
            return [ctx.const(np.zeros((), np.int64))]
        # numpy / torch return the first extreme index: select_last_index=0
        if dim is None:  # over the flattened input
            y = ctx.node(onnx_op, [ctx.node("Reshape", [x, ctx.ints([-1])])], axis=0, keepdims=0,
                         select_last_index=0)
            if keep:
                y = ctx.node("Reshape", [y, ctx.ints([1] * x_t.ndim)])
            return [y]
        axis = int(dim) % x_t.ndim
        return [ctx.node(onnx_op, [x], axis=axis, keepdims=int(keep), select_last_index=0)]
    mapping.__name__ = f"map_{onnx_op.lower()}"
    return mapping


register(C.ArgMaxFunction)(_arg_extreme("ArgMax"))
register(C.ArgMinFunction)(_arg_extreme("ArgMin"))
