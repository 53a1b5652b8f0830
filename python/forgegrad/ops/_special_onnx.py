"""ONNX graphs of the modified Bessel functions of the first kind (i0, i1, i0e, i1e and torch.special's
modified_bessel_i0/i1): the Chebyshev expansions of ops/_special_bessel.py written as Mul/Sub/Add nodes (Clenshaw's
recurrence over torch's coefficients), the two branches |x| <= 8 and |x| > 8 joined by a Where."""
from __future__ import annotations

import numpy as np

from ._special_tables import TABLES


def _c(ctx, dt, v):
    return ctx.const(np.asarray(v, dt), dtype=dt)


def _chbevl(ctx, dt, y, coeffs):
    b0, b1 = _c(ctx, dt, coeffs[0]), _c(ctx, dt, 0.0)
    b2 = b1
    for co in coeffs[1:]:
        b2, b1 = b1, b0
        b0 = ctx.node("Add", [ctx.node("Sub", [ctx.node("Mul", [y, b1]), b2]), _c(ctx, dt, co)])
    return ctx.node("Mul", [ctx.node("Sub", [b0, b2]), _c(ctx, dt, 0.5)])


def scaled_i(ctx, dt, x, order):
    """exp(-|x|) I_order(x): torch's i0e / i1e."""
    ax = ctx.node("Abs", [x])
    tab = f"I{order}"
    near = _chbevl(ctx, dt, ctx.node("Sub", [ctx.node("Div", [ax, _c(ctx, dt, 2.0)]), _c(ctx, dt, 2.0)]),
                   TABLES[f"{tab}_A"])
    if order == 1:
        near = ctx.node("Mul", [near, ax])
    far = _chbevl(ctx, dt, ctx.node("Sub", [ctx.node("Div", [_c(ctx, dt, 32.0), ax]), _c(ctx, dt, 2.0)]),
                  TABLES[f"{tab}_B"])
    far = ctx.node("Div", [far, ctx.node("Sqrt", [ax])])
    v = ctx.node("Where", [ctx.node("LessOrEqual", [ax, _c(ctx, dt, 8.0)]), near, far])
    if order == 1:
        v = ctx.node("Where", [ctx.node("Less", [x, _c(ctx, dt, 0.0)]), ctx.node("Neg", [v]), v])
    return v


def bessel_i(ctx, dt, x, order):
    """I_order(x) = exp(|x|) i{order}e(x), as torch's i0 / i1."""
    return ctx.node("Mul", [ctx.node("Exp", [ctx.node("Abs", [x])]), scaled_i(ctx, dt, x, order)])


def mapping(fn, order):
    def onnx(ctx, op):
        dt = op.out_dtype()
        return [fn(ctx, dt, op.input("input", dt), order)]
    return onnx
