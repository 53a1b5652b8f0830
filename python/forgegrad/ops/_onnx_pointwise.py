"""ONNX mappings of pointwise ops with no single ONNX operator: fmax / fmin (NaN ignored), remainder and
floor_divide (numpy's divmod from C's fmod, so exact multiples round as the kernel's; a zero result may lose its
minus sign in onnxruntime), signbit and copysign (a zero's
sign read from the sign of 1 / x: -0.0 gives -inf), isclose (torch's rule).

Not reproducible: the sign bit of a NaN (ONNX has no bit view), so signbit(-NaN) is exported as false and
copysign(x, -NaN) as |x|."""
from __future__ import annotations

import numpy as np


def _dtype(op, *names):
    return np.result_type(*[getattr(op.args[n], "dtype", None) or np.asarray(op.args[n]).dtype for n in names])


def fminmax_onnx(onnx_op):
    """Max / Min, but where one side is NaN the other (both NaN: NaN)."""
    def mapping(ctx, op):
        dt = op.out_dtype()
        a, b = op.input("a", dt), op.input("b", dt)
        r = ctx.node(onnx_op, [a, b])
        if np.dtype(dt).kind != "f":
            return [r]
        return [ctx.node("Where", [ctx.node("IsNaN", [a]), b, ctx.node("Where", [ctx.node("IsNaN", [b]), a, r])])]
    return mapping


def _c(ctx, dt, v):
    return ctx.const(np.asarray(v, dt), dtype=dt)


def _c_remainder_adjusted(ctx, dt, a, b):
    """(C remainder, whether its sign differs from b's: floor division moves it by b)."""
    zero = _c(ctx, dt, 0)
    mod = ctx.node("Mod", [a, b], fmod=1)
    differs = ctx.node("And", [ctx.node("Not", [ctx.node("Equal", [mod, zero])]),
                               ctx.node("Xor", [ctx.node("Less", [b, zero]), ctx.node("Less", [mod, zero])])])
    return mod, differs


def remainder_onnx(ctx, op):
    """numpy's remainder: fmod, plus b where the signs differ (integers: Mod, Python's sign rule)."""
    dt = np.dtype(op.out_dtype())
    a, b = op.input("input", dt), op.input("other", dt)
    if dt.kind != "f":
        return [ctx.node("Mod", [a, b], fmod=0)]
    mod, differs = _c_remainder_adjusted(ctx, dt, a, b)
    return [ctx.node("Where", [differs, ctx.node("Add", [mod, b]), mod])]


def floor_divide_onnx(ctx, op):
    """numpy's npy_divmod: div = (a - fmod(a, b)) / b, less 1 where the remainder's sign differs from b's, floored
    and rounded up past .5; a / b where b is 0 (integers: truncating Div less 1 where the signs differ)."""
    dt = np.dtype(op.out_dtype())
    a, b = op.input("input", dt), op.input("other", dt)
    one = _c(ctx, dt, 1)
    mod, differs = _c_remainder_adjusted(ctx, dt, a, b)
    if dt.kind != "f":
        q = ctx.node("Div", [a, b])
        return [ctx.node("Where", [differs, ctx.node("Sub", [q, one]), q])]
    zero = _c(ctx, dt, 0)
    div = ctx.node("Div", [ctx.node("Sub", [a, mod]), b])
    div = ctx.node("Where", [differs, ctx.node("Sub", [div, one]), div])
    fl = ctx.node("Floor", [div])
    fl = ctx.node("Where", [ctx.node("Greater", [ctx.node("Sub", [div, fl]), _c(ctx, dt, 0.5)]),
                            ctx.node("Add", [fl, one]), fl])
    # (numpy gives a zero quotient the sign of a / b; onnxruntime's Where and Mul return +0.0 for -0.0 here, so a
    # zero quotient may be exported as 0.0 where the kernel has -0.0: equal as numbers)
    return [ctx.node("Where", [ctx.node("Equal", [b, zero]), ctx.node("Div", [a, b]), fl])]


def _signbit(ctx, x, dt):
    zero = _c(ctx, dt, 0)
    neg_zero = ctx.node("And", [ctx.node("Equal", [x, zero]),
                                ctx.node("Less", [ctx.node("Div", [_c(ctx, dt, 1), x]), zero])])
    return ctx.node("Or", [ctx.node("Less", [x, zero]), neg_zero])


def signbit_onnx(ctx, op):
    dt = np.dtype(op.args["input"].dtype)
    x = op.input("input")
    if dt.kind != "f":
        return [ctx.node("Less", [x, ctx.const(np.asarray(0, dt))])]
    return [_signbit(ctx, x, dt)]


def copysign_onnx(ctx, op):
    dt = np.dtype(op.out_dtype())
    a, b = op.input("input", dt), op.input("other", dt)
    mag = ctx.node("Abs", [a])
    return [ctx.node("Where", [_signbit(ctx, b, dt), ctx.node("Neg", [mag]), mag])]


def isclose_onnx(ctx, op):
    """a == b, or both finite with |a - b| <= atol + rtol * |b| (in the inputs' dtype; integers in double), or
    both NaN with equal_nan; bools: equality."""
    dt = np.dtype(_dtype(op, "input", "other"))
    a, b = op.input("input", dt), op.input("other", dt)
    eq = ctx.node("Equal", [a, b])
    if dt == np.bool_:
        return [eq]
    rtol, atol = float(op.attr("rtol", 1e-5)), float(op.attr("atol", 1e-8))
    ft = dt if dt.kind == "f" else np.dtype(np.float64)
    af, bf = ctx.cast(a, ft), ctx.cast(b, ft)

    def finite(v):
        return ctx.node("Not", [ctx.node("Or", [ctx.node("IsNaN", [v]), ctx.node("IsInf", [v])])])
    diff = ctx.node("Abs", [ctx.node("Sub", [af, bf])])
    bound = ctx.node("Add", [_c(ctx, ft, atol), ctx.node("Mul", [_c(ctx, ft, rtol), ctx.node("Abs", [bf])])])
    close = ctx.node("And", [ctx.node("And", [finite(af), finite(bf)]), ctx.node("LessOrEqual", [diff, bound])])
    out = ctx.node("Or", [eq, close])
    if op.attr("equal_nan", False) and dt.kind == "f":
        out = ctx.node("Or", [out, ctx.node("And", [ctx.node("IsNaN", [a]), ctx.node("IsNaN", [b])])])
    return [out]
