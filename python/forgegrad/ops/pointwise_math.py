"""torch's basic pointwise float math: floor, ceil, log1p, expm1, log2, log10, exp2, rsqrt, reciprocal, square, tan,
sinh, cosh, asin, acos, atan, asinh, acosh, atanh, sinc, logit(eps), i0 (and special_i1, its derivative); and the
two-input float_power and ldexp.
Forward in numpy, gradients from torch's formulas (derivatives.yaml) through the machinery of
ops/_pointwise_base.py, so that one formula gives backward and the double-backward rule.

dtypes as torch's: floor, ceil return an integer input unchanged; square keeps an integer dtype (a bool becomes
int64, as torch's pow); the others compute an integer input in float32; float_power always computes and returns
float64 (its gradient comes back in each input's dtype).
"""
from __future__ import annotations

import math

import numpy as np

from . import _meta as M
from . import _samples as S
from . import _special_onnx as _bessel_onnx
from ._pointwise_base import PointwiseFunction, Spec, cast, is_arr, register
from .pointwise_more import _Binary, _c, _onnx_nodes, _Unary, _unary_onnx
from .registry import BadInput, Sample

_LN2, _LN10 = math.log(2), math.log(10)


def _fn(ns, name, x):
    """np.<name>(x) on the numpy pass, x.<name>() on the Tensor (double-backward) pass."""
    return getattr(x, name)() if hasattr(x, "_data") else getattr(np, name)(x)


# ---- samples: a few odd shapes each (the generated checks run every one in CI) ----------------------------
def _samples(low=-2.0, high=2.0, edges=()):
    def make(*shape, seed=0):
        return S.rand(*shape, seed=seed, low=low, high=high)

    def samples():
        out = [Sample((make(3, 7),)), Sample((make(2, 5, 9, seed=1),))]
        if edges:  # exact values inside the domain that the ops treat specially (0, integers, halves)
            out.append(Sample((np.asarray(edges, np.float32).reshape(1, -1),), name="edges"))
        return out
    return samples


def _step_samples():
    rng = np.random.default_rng(5)
    x = (rng.integers(-6, 7, size=(4, 9)) * 0.5).astype(np.float32)  # exact halves and integers, zeros
    return [Sample((x,), name="halves"), Sample((S.rand(2, 5, 7, seed=1) * 3,))]


def _register_unary(name, fwd, grads, *, floating=True, onnx=None, gaps=None, samples=None, tol=(1e-5, 1e-5),
                    zero_grad=False, uses_out=False, torch_fn=None):
    cls = type(f"{name.title().replace('_', '')}Function", (_Unary,),
               {"__module__": __name__, "__doc__": f"torch.{name}(input)."})
    return register(name, cls, Spec(fwd, grads, floating=floating, zero_grad=zero_grad, uses_out=uses_out),
                    samples=samples or _samples(), onnx=onnx, gaps=gaps or {}, tol=tol,
                    torch=torch_fn or (lambda torch, x: getattr(torch, name)(x)))


def _node(op_type):
    return _unary_onnx(lambda ctx, dt, x: ctx.node(op_type, [x]))


def _zero(ns, g, a, out, kw):
    return (g * 0,)


# ---- floor, ceil: integers unchanged, a zero gradient --------------------------------------------------
def _rounding(fn, name):
    def run(x):
        if x.dtype == np.bool_:
            raise TypeError(f"{name}(): not implemented for bool tensors (as in torch)")
        return fn(x) if x.dtype.kind == "f" else x.copy()
    return run


def _rounding_onnx(op_type):
    # ONNX's Floor / Ceil take floats only; an integer input is returned unchanged, as the forward does
    return _unary_onnx(lambda ctx, dt, x: ctx.node(op_type if np.dtype(dt).kind == "f" else "Identity", [x]))


FloorFunction = _register_unary("floor", _rounding(np.floor, "floor"), _zero, floating=False, zero_grad=True,
                                samples=_step_samples, onnx=_rounding_onnx("Floor"))
CeilFunction = _register_unary("ceil", _rounding(np.ceil, "ceil"), _zero, floating=False, zero_grad=True,
                               samples=_step_samples, onnx=_rounding_onnx("Ceil"))


# ---- logs and exponentials --------------------------------------------------------------------------
_LOG1P_NAN_IS_DEFAULT = {}


def _log1p(x):
    """np.log1p. Elements below -1 are computed at 0 (times a 0/1 mask; a masked write or np.where is branchy and
    slow on scattered elements) and divided by that 0: the CPU's default NaN, which is the NaN numpy's log1p returns
    there (checked once per dtype). libm's invalid-argument path is several times slower than the log itself."""
    dt = x.dtype
    if dt.kind != "f" or x.size < 4096 or x.min() >= -1:  # NaN data: min is NaN and takes the path below
        return np.log1p(x)
    if dt not in _LOG1P_NAN_IS_DEFAULT:
        with np.errstate(all="ignore"):
            zero = np.zeros(1, dt)
            _LOG1P_NAN_IS_DEFAULT[dt] = (np.log1p(dt.type(-2)).tobytes() == (zero / zero).tobytes()
                                         == np.log1p(-np.inf * zero).tobytes())
    if not _LOG1P_NAN_IS_DEFAULT[dt]:
        return np.log1p(x)
    keep = (x >= -1) | (x != x)  # NaN inputs go through log1p unchanged
    keep = keep.view(np.uint8)
    out = np.log1p(x * keep)  # a NaN for -inf * 0, which log1p keeps
    return np.divide(out, keep, out=out)


Log1pFunction = _register_unary(
    "log1p", _log1p, lambda ns, g, a, out, kw: (g / (a[0] + 1),), samples=_samples(-0.9, 3.0, (0.0, -0.5, 1e-7)),
    onnx=_unary_onnx(lambda ctx, dt, x: ctx.node("Log", [ctx.node("Add", [x, _c(ctx, dt, 1)])])), tol=(1e-5, 1e-6))
Expm1Function = _register_unary(
    "expm1", np.expm1, lambda ns, g, a, out, kw: (g * (out + 1),), uses_out=True,
    samples=_samples(edges=(0.0, 1e-6, -1e-6)),
    onnx=_unary_onnx(lambda ctx, dt, x: ctx.node("Sub", [ctx.node("Exp", [x]), _c(ctx, dt, 1)])), tol=(1e-5, 1e-6))
Log2Function = _register_unary(
    "log2", np.log2, lambda ns, g, a, out, kw: (g / (a[0] * _LN2),), samples=_samples(0.05, 5.0, (1.0, 2.0, 0.5)),
    onnx=_unary_onnx(lambda ctx, dt, x: ctx.node("Div", [ctx.node("Log", [x]), _c(ctx, dt, _LN2)])))
Log10Function = _register_unary(
    "log10", np.log10, lambda ns, g, a, out, kw: (g / (a[0] * _LN10),), samples=_samples(0.05, 5.0, (1.0, 10.0)),
    onnx=_unary_onnx(lambda ctx, dt, x: ctx.node("Div", [ctx.node("Log", [x]), _c(ctx, dt, _LN10)])))
Exp2Function = _register_unary(
    "exp2", np.exp2, lambda ns, g, a, out, kw: (g * out * _LN2,), uses_out=True, samples=_samples(-4.0, 4.0),
    onnx=_unary_onnx(lambda ctx, dt, x: ctx.node("Pow", [_c(ctx, dt, 2), x])))


# ---- powers: rsqrt, reciprocal, square ----------------------------------------------------------------
def _rsqrt(x):
    return np.reciprocal(np.sqrt(x))  # -0.0 gives -inf, as torch's 1 / sqrt(-0.0)


def _reciprocal(x):
    return np.reciprocal(x)


def _square(x):
    return (x.astype(np.int64) if x.dtype == np.bool_ else x) ** 2  # torch: pow(bool, 2) is int64


RsqrtFunction = _register_unary(
    "rsqrt", _rsqrt, lambda ns, g, a, out, kw: (g * out * out * out * -0.5,), uses_out=True,
    samples=_samples(0.1, 4.0, (1.0, 4.0, 0.25)),
    onnx=_unary_onnx(lambda ctx, dt, x: ctx.node("Div", [_c(ctx, dt, 1), ctx.node("Sqrt", [x])])))


def _away_from_zero(*shape, seed=0):
    x = S.rand(*shape, seed=seed, low=0.3, high=2.5)
    return np.where(np.random.default_rng(seed + 9).random(shape) < 0.5, -x, x).astype(np.float32)


def _reciprocal_samples():
    return [Sample((_away_from_zero(3, 7),)), Sample((_away_from_zero(2, 5, 9, seed=1),))]


ReciprocalFunction = _register_unary(
    "reciprocal", _reciprocal, lambda ns, g, a, out, kw: (-g * out * out,), uses_out=True,
    samples=_reciprocal_samples, onnx=_node("Reciprocal"))
SquareFunction = _register_unary(
    "square", _square, lambda ns, g, a, out, kw: (g * a[0] * 2,), floating=False, samples=_samples(-3.0, 3.0),
    onnx=_unary_onnx(lambda ctx, dt, x: ctx.node("Mul", [x, x])))


def _square_meta(input):
    dt = input.dtype if input.dtype != np.bool_ else np.dtype(np.int64)
    return M.MetaArray(input.shape, dt)


SquareFunction.op.meta = _square_meta


# ---- trigonometric and hyperbolic ---------------------------------------------------------------------
def _rsqrt_t(v):
    """1 / sqrt(v) on either pass (an array, or a Tensor of the double-backward rule)."""
    return 1 / _fn(None, "sqrt", v)


TanFunction = _register_unary(
    "tan", np.tan, lambda ns, g, a, out, kw: (g * (out * out + 1),), uses_out=True, samples=_samples(-1.3, 1.3),
    onnx=_node("Tan"), tol=(1e-5, 1e-5))
SinhFunction = _register_unary(
    "sinh", np.sinh, lambda ns, g, a, out, kw: (g * ns.call("cosh", a[0]),), samples=_samples(-3.0, 3.0, (0.0,)),
    onnx=_node("Sinh"))
CoshFunction = _register_unary(
    "cosh", np.cosh, lambda ns, g, a, out, kw: (g * ns.call("sinh", a[0]),), samples=_samples(-3.0, 3.0, (0.0,)),
    onnx=_node("Cosh"))
AsinFunction = _register_unary(
    "asin", np.arcsin, lambda ns, g, a, out, kw: (g * _rsqrt_t(1 - a[0] * a[0]),),
    samples=_samples(-0.95, 0.95, (0.0, 0.5, -0.5)), onnx=_node("Asin"), tol=(1e-5, 1e-5))
AcosFunction = _register_unary(
    "acos", np.arccos, lambda ns, g, a, out, kw: (-g * _rsqrt_t(1 - a[0] * a[0]),),
    samples=_samples(-0.95, 0.95, (0.0, 0.5, -0.5)), onnx=_node("Acos"), tol=(1e-5, 1e-5))
AtanFunction = _register_unary(
    "atan", np.arctan, lambda ns, g, a, out, kw: (g / (a[0] * a[0] + 1),), samples=_samples(-4.0, 4.0, (0.0, 1.0)),
    onnx=_node("Atan"))
AsinhFunction = _register_unary(
    "asinh", np.arcsinh, lambda ns, g, a, out, kw: (g * _rsqrt_t(a[0] * a[0] + 1),),
    samples=_samples(-4.0, 4.0, (0.0,)), onnx=_node("Asinh"))
AcoshFunction = _register_unary(
    "acosh", np.arccosh, lambda ns, g, a, out, kw: (g * _rsqrt_t(a[0] * a[0] - 1),),  # torch's (x^2 - 1)^-1/2
    samples=_samples(1.05, 4.0, (2.0, 3.0)), onnx=_node("Acosh"), tol=(1e-5, 1e-5))
AtanhFunction = _register_unary(
    "atanh", np.arctanh, lambda ns, g, a, out, kw: (g / (1 - a[0] * a[0]),),
    samples=_samples(-0.95, 0.95, (0.0, 0.5)), onnx=_node("Atanh"), tol=(1e-5, 1e-5))


# ---- sinc, logit, i0 -----------------------------------------------------------------------------------
def _sinc(x):
    if x.dtype == np.float16:  # torch's kernel computes half in float (opmath): pi x rounded to half left 3e-4 at 1
        return _sinc(x.astype(np.float32)).astype(np.float16)
    px = x * x.dtype.type(math.pi)
    return np.where(x == 0, x.dtype.type(1), np.sin(px) / np.where(x == 0, x.dtype.type(1), px))


def _sinc_grads(ns, g, a, out, kw):
    x = a[0]
    v = ns.val(x)
    zero = v * v * v.dtype.type(math.pi) == 0  # torch's mask: where its denominator pi x^2 is 0 (x == 0, or tiny)
    xs = ns.where(zero, 1.0, x)  # no 0/0 where the gradient is masked
    px = xs * math.pi
    d = (_fn(ns, "cos", px) * px - _fn(ns, "sin", px)) / (xs * xs * math.pi)
    return (ns.where(zero, 0.0, g * d),)


def _sinc_onnx(ctx, dt, x):
    px = ctx.node("Mul", [x, _c(ctx, dt, math.pi)])
    zero = ctx.node("Equal", [x, _c(ctx, dt, 0)])
    safe = ctx.node("Where", [zero, _c(ctx, dt, 1), px])
    return ctx.node("Where", [zero, _c(ctx, dt, 1), ctx.node("Div", [ctx.node("Sin", [safe]), safe])])


# no 0 in the samples: torch's second derivative there is NaN (its masked 0/0), forgegrad's 0 (the rule's mask);
# the value and gradient at 0 are checked in tests/test_torch_pointwise_math.py
SincFunction = _register_unary("sinc", _sinc, _sinc_grads, samples=_samples(-3.0, 3.0, (1.0, -2.0, 0.5)),
                               onnx=_unary_onnx(_sinc_onnx), tol=(1e-5, 1e-5))


class LogitFunction(PointwiseFunction):
    """torch.logit(input, eps=None): log(p / (1 - p)), with p clamped to [eps, 1 - eps] when eps is given."""

    @classmethod
    def forward(cls, ctx, input, eps=None):
        from .._validate import check_float
        return cls._run(ctx, (input,), {"eps": None if eps is None else check_float(eps, "eps")})

    @classmethod
    def backward(cls, ctx, g):
        return cls._backward(ctx, g)


def _logit(x, eps=None):
    if eps is not None and eps >= 0:  # torch: a negative eps is no clamp
        lo, hi = x.dtype.type(eps), x.dtype.type(1 - eps)
        x = np.where(x < lo, lo, np.where(x > hi, hi, x))  # torch's order: eps > 0.5 (lo > hi) gives lo below lo
    return np.log(x / (1 - x))


def _logit_grads(ns, g, a, out, kw):
    x, eps = a[0], kw.get("eps")
    v = ns.val(x)
    d = g / (x * (1 - x))
    if eps is None or eps < 0:  # torch's: NaN outside [0, 1]
        return (ns.where((v < 0) | (v > 1), math.nan, d),)
    return (ns.where((v < eps) | (v > 1 - eps), 0.0, d),)  # clamped: flat outside


def _logit_samples():
    return [Sample((S.rand(3, 7, low=0.05, high=0.95),)),
            Sample((S.rand(2, 5, 9, seed=1, low=0.01, high=0.99),), {"eps": 0.1}, "eps=0.1 (some clamped)")]


def _logit_onnx(ctx, op):
    dt = op.out_dtype()
    x = op.input("input", dt)
    eps = op.attr("eps")
    if eps is not None and eps > 0.5:  # lo > hi: below lo gives lo, the rest hi (the forward's order)
        x = ctx.node("Where", [ctx.node("Less", [x, _c(ctx, dt, eps)]), _c(ctx, dt, eps), _c(ctx, dt, 1 - eps)])
    elif eps is not None and eps >= 0:
        x = ctx.node("Clip", [x, _c(ctx, dt, eps), _c(ctx, dt, 1 - eps)])
    return [ctx.node("Log", [ctx.node("Div", [x, ctx.node("Sub", [_c(ctx, dt, 1), x])])])]


LogitFunction = register(
    "logit", LogitFunction, Spec(_logit, _logit_grads), samples=_logit_samples,
    torch=lambda torch, x, eps=None: torch.logit(x, eps=eps), onnx=_logit_onnx, tol=(1e-5, 1e-5),
    bad_inputs=lambda: [BadInput((S.rand(2, 3, low=0.1, high=0.9),), {"eps": "0.1"}, TypeError, "eps")])


def _i1(x):
    from ._special_bessel import i1  # torch's Chebyshev expansions in float64 (numpy only)
    return i1(x).astype(x.dtype)


def _i0(x):
    return np.i0(x.astype(np.float64)).astype(x.dtype)  # numpy's i0 in float64: float32 within 1 ulp of torch's


I0Function = _register_unary(
    "i0", _i0, lambda ns, g, a, out, kw: (g * ns.call("special_i1", a[0]),), samples=_samples(-4.0, 4.0, (0.0,)),
    tol=(1e-5, 1e-5), onnx=_bessel_onnx.mapping(_bessel_onnx.bessel_i, 0))


def _i1_grads(ns, g, a, out, kw):
    # torch's i1_backward: i0(x) - i1(x) / x, 1/2 where not |x| > eps (NaN included, as torch's mask)
    x = a[0]
    tiny = ~(np.abs(ns.val(x)) > np.finfo(ns.val(x).dtype).eps)
    safe = ns.where(tiny, 1.0, x)  # as torch's safe_self: no NaN reaches the double backward through i0(x)
    return (g * ns.where(tiny, 0.5, ns.call("i0", safe) - out / safe),)


# torch.special.i1 (forgegrad.special.i1), the derivative of i0: an op, so that i0 differentiates twice
I1Function = _register_unary(
    "special_i1", _i1, _i1_grads, uses_out=True, samples=_samples(-4.0, 4.0, (0.0, 1.0)), tol=(1e-5, 1e-5),
    torch_fn=lambda torch, x: torch.special.i1(x), onnx=_bessel_onnx.mapping(_bessel_onnx.bessel_i, 1))


# ---- two inputs: float_power, ldexp ----------------------------------------------------------------------
class FloatPowerFunction(PointwiseFunction):
    """torch.float_power(input, exponent): pow computed and returned in float64 whatever the inputs' dtypes
    (the gradient of each input comes back in its own dtype)."""

    @classmethod
    def forward(cls, ctx, input, exponent):
        dts = [a.dtype if is_arr(a) else None for a in (input, exponent)]
        args = [cast(a, np.float64) if is_arr(a) else a for a in (input, exponent)]
        out = cls._run(ctx, tuple(args), {})
        ctx.in_dtypes = dts
        return out

    @classmethod
    def backward(cls, ctx, g):
        grads = cls._backward(ctx, g)
        return tuple(None if gi is None else gi.astype(dt, copy=False) if dt is not None and dt.kind == "f" else None
                     for gi, dt in zip(grads, ctx.in_dtypes))


def _pow_grads(ns, g, a, out, kw):
    x, e = a
    xv, ev = ns.val(x), ns.val(e)
    gx = ns.where(ev == 0, 0.0, g * e * x ** (e - 1))  # torch's masks: 0 for a zero exponent,
    pos = xv > 0
    logx = ns.where(pos, ns.log(ns.where(pos, x, 1.0)), ns.where(xv == 0, -math.inf, math.nan))
    ge = ns.where((xv == 0) & (ev >= 0), 0.0, g * out * logx)  # and for a zero base with a non-negative exponent
    return gx, ge


def _float_power_rule(ctx, args, kwargs, g):
    from ._double_backward import _for, _is_t
    from ._pointwise_base import TENSOR
    x, e = (a.double() if _is_t(a) else float(a) for a in args[:2])
    out = _float_power_call(x, e)
    grads = _pow_grads(TENSOR, g, (x, e), out, {})
    return tuple(_for(a, gi.to(a.dtype)) if _is_t(a) and a.dtype.is_floating_point else None
                 for a, gi in zip(args[:2], grads))


def _float_power_call(x, e):
    from .registry import _OPS
    return _OPS["float_power"](x, e)


def _float_power_meta(input, exponent):
    return M.MetaArray(M.broadcast(*[a for a in (input, exponent) if is_arr(a)]).shape, np.dtype(np.float64))


def _float_power_samples():
    return [Sample((S.positive(3, 7), S.rand(3, 7, seed=1))),
            Sample((S.positive(2, 1, 9), S.rand(5, 1, seed=2)), name="broadcast"),
            Sample((S.rand(4, 5, seed=3), 2.0), name="scalar exponent")]


def _float_power_torch(torch, x, e):
    return torch.float_power(x, e)


FloatPowerFunction = register(
    "float_power", FloatPowerFunction, Spec(np.power, _pow_grads, n=2, uses_out=True), samples=_float_power_samples,
    torch=_float_power_torch, differentiable_backward=_float_power_rule, tol=(1e-5, 1e-6),
    bad_inputs=lambda: [BadInput((S.rand(3, 4), S.rand(5, 4)), {}, ValueError, "broadcast")],
    onnx=lambda ctx, op: [ctx.node("Pow", [op.input("input", np.float64), op.input("exponent", np.float64)])])
FloatPowerFunction.op.meta = _float_power_meta


def _ldexp_grads(ns, g, a, out, kw):
    x, o = a
    scale = ns.exp(o * _LN2)
    return g * scale, g * x * scale * _LN2


def _ldexp_samples():
    rng = np.random.default_rng(7)
    return [Sample((S.rand(3, 7), S.rand(3, 7, seed=1, low=-3, high=3))),
            # non-negative: torch 2.13's gradient for a negative integer exponent is 0 (it takes 2 ** other in
            # integers); forgegrad's is 2 ** other (tests/test_torch_pointwise_math.py)
            Sample((S.rand(2, 5, 9), rng.integers(0, 5, size=(2, 5, 9)).astype(np.int64)), name="int exponent")]


class LdexpFunction(_Binary):
    """torch.ldexp(input, other): input * 2 ** other (a float result, as torch's)."""


LdexpFunction.__module__ = __name__
LdexpFunction = register(
    "ldexp", LdexpFunction, Spec(lambda x, o: x * np.exp2(o), _ldexp_grads, n=2), samples=_ldexp_samples,
    torch=lambda torch, a, b: torch.ldexp(a, b), tol=(1e-5, 1e-5),
    bad_inputs=lambda: [BadInput((S.rand(3, 4), S.rand(5, 4)), {}, ValueError, "broadcast")],
    onnx=_onnx_nodes(lambda ctx, dt, x, o: ctx.node("Mul", [x, ctx.node("Pow", [_c(ctx, dt, 2), o])])))
