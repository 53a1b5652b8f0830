"""ONNX mappings of the integer ops ONNX has no operator for: signed bitwise shifts (ONNX's BitShift is unsigned
only) and gcd / lcm (a Loop of Mod).

Shifts run in uint64: the operand is sign-extended to int64 and cast (C's modular conversion), shifted by BitShift
and cast back to the op's dtype (truncating, as the kernel's store). A right shift of a negative value shifts
``-1 - a`` (its bitwise complement, never overflowing) and complements back: torch's arithmetic shift. Amounts
outside [0, bits) give 0 (-1 for a negative value shifted right), as the kernel. Any opset (BitShift is opset 11)."""
from __future__ import annotations

import numpy as np

_I64, _U64 = np.dtype(np.int64), np.dtype(np.uint64)


def shift_onnx(left):
    def mapping(ctx, op):
        dt = np.dtype(op.out_dtype())
        if dt.kind not in "iu":
            raise op.unsupported(f"shift of {dt}: integers only")
        bits = dt.itemsize * 8
        a = ctx.cast(op.input("input", dt), _I64)
        s = ctx.cast(op.input("other", dt), _I64)
        zero, minus_one = ctx.const(np.asarray(0, _I64)), ctx.const(np.asarray(-1, _I64))
        ok = ctx.node("And", [ctx.node("GreaterOrEqual", [s, zero]),
                              ctx.node("Less", [s, ctx.const(np.asarray(bits, _I64))])])
        s_u = ctx.cast(ctx.node("Where", [ok, s, zero]), _U64)
        if left:
            out = ctx.cast(ctx.node("BitShift", [ctx.cast(a, _U64), s_u], direction="LEFT"), _I64)
            return [ctx.cast(ctx.node("Where", [ok, out, zero]), dt)]  # (onnxruntime has no int8 / int16 Where)
        neg = ctx.node("Less", [a, zero]) if dt.kind == "i" else None
        mag = a if neg is None else ctx.node("Where", [neg, ctx.node("Sub", [minus_one, a]), a])
        r = ctx.cast(ctx.node("BitShift", [ctx.cast(mag, _U64), s_u], direction="RIGHT"), _I64)
        fill = zero
        if neg is not None:
            r = ctx.node("Where", [neg, ctx.node("Sub", [minus_one, r]), r])
            fill = ctx.node("Where", [neg, minus_one, zero])
        return [ctx.cast(ctx.node("Where", [ok, r, fill]), dt)]
    return mapping


def _gcd(ctx, a, b, dt):
    """Euclid's loop on |a|, |b| with C's remainder (Mod fmod=1), as the kernel: a Loop until every a is 0."""
    from onnx import TensorProto, helper  # (onnx is imported only when exporting)
    t = {np.dtype(np.int64): TensorProto.INT64, np.dtype(np.int32): TensorProto.INT32}.get(dt, TensorProto.INT64)
    zeros = ctx.node("Add", [ctx.node("Mul", [a, ctx.const(np.asarray(0, dt))]),
                             ctx.node("Mul", [b, ctx.const(np.asarray(0, dt))])])  # the broadcast shape
    a0 = ctx.node("Add", [ctx.node("Abs", [a]), zeros])
    b0 = ctx.node("Add", [ctx.node("Abs", [b]), zeros])
    names = {k: ctx.fresh(f"gcd_{k}") for k in ("it", "cond", "a", "b", "cond_out", "a_out", "b_out", "live",
                                                  "safe", "rem", "live_i", "any", "zero", "one")}
    n = names
    body_nodes = [
        helper.make_node("Constant", [], [n["zero"]], value=helper.make_tensor("z", t, [], [0])),
        helper.make_node("Constant", [], [n["one"]], value=helper.make_tensor("o", t, [], [1])),
        helper.make_node("Equal", [n["a"], n["zero"]], [n["live"] + "_eq"]),
        helper.make_node("Not", [n["live"] + "_eq"], [n["live"]]),
        helper.make_node("Where", [n["live"], n["a"], n["one"]], [n["safe"]]),
        helper.make_node("Mod", [n["b"], n["safe"]], [n["rem"]], fmod=1),
        helper.make_node("Where", [n["live"], n["rem"], n["a"]], [n["a_out"]]),
        helper.make_node("Where", [n["live"], n["a"], n["b"]], [n["b_out"]]),
        helper.make_node("Equal", [n["a_out"], n["zero"]], [n["live_i"] + "_eq"]),
        helper.make_node("Not", [n["live_i"] + "_eq"], [n["live_i"] + "_b"]),
        helper.make_node("Cast", [n["live_i"] + "_b"], [n["live_i"]], to=TensorProto.INT32),
        helper.make_node("ReduceMax", [n["live_i"]], [n["any"]], keepdims=0),
        helper.make_node("Cast", [n["any"]], [n["cond_out"]], to=TensorProto.BOOL),
    ]
    body = helper.make_graph(
        body_nodes, ctx.fresh("gcd_step"),
        [helper.make_tensor_value_info(n["it"], TensorProto.INT64, []),
         helper.make_tensor_value_info(n["cond"], TensorProto.BOOL, []),
         helper.make_tensor_value_info(n["a"], t, None), helper.make_tensor_value_info(n["b"], t, None)],
        [helper.make_tensor_value_info(n["cond_out"], TensorProto.BOOL, []),
         helper.make_tensor_value_info(n["a_out"], t, None), helper.make_tensor_value_info(n["b_out"], t, None)])
    # an empty tensor has no element left to reduce: the loop starts only if some a is not 0
    start = ctx.node("Cast", [ctx.reduce("ReduceMax", ctx.cast(ctx.node("Not", [ctx.node("Equal", [
        ctx.node("Reshape", [a0, ctx.ints([-1])]), ctx.const(np.asarray(0, dt))])]), np.int32), [0], False)],
        to=TensorProto.BOOL)
    _, g = ctx.node("Loop", [ctx.const(np.asarray(200, np.int64)), start, a0, b0], outputs=2, body=body)
    return g


def _int_dtype(op):
    dt = np.dtype(op.out_dtype())
    if dt not in (np.dtype(np.int64), np.dtype(np.int32)):
        raise op.unsupported(f"{op.fn_cls.op.name} of {dt}: the ONNX mapping takes int32 / int64")
    return dt


def gcd_onnx(ctx, op):
    dt = _int_dtype(op)
    return [_gcd(ctx, op.input("input", dt), op.input("other", dt), dt)]


def lcm_onnx(ctx, op):
    """|a / gcd * b| (exact division; the product wraps in the dtype, as the kernel's), 0 where gcd is 0."""
    dt = _int_dtype(op)
    a, b = op.input("input", dt), op.input("other", dt)
    g = _gcd(ctx, a, b, dt)
    zero = ctx.const(np.asarray(0, dt))
    is0 = ctx.node("Equal", [g, zero])
    q = ctx.node("Div", [a, ctx.node("Where", [is0, ctx.const(np.asarray(1, dt)), g])])
    return [ctx.node("Where", [is0, zero, ctx.node("Abs", [ctx.node("Mul", [q, b])])])]
