"""torch's pointwise math ops with broadcasting, torch's dtype promotion and gradients: atan2, hypot, logaddexp,
logaddexp2, xlogy, copysign, remainder, fmod, floor_divide, lerp; erf, erfc, erfinv, lgamma, digamma, sign, frac,
trunc, round(decimals), nan_to_num, deg2rad, rad2deg. The gradient formulas are torch's (derivatives.yaml): e.g.
atan2's gradient at (0, 0) is 0 as torch 2.13's, copysign's gradient is 0 at a zero input, remainder's gradient
for ``other`` is ``-floor(input / other)``. See ops/_pointwise_base.py for the shared machinery.
"""
from __future__ import annotations

import math

import numpy as np

from . import _samples as S
from . import _special as sp
from . import _special_gamma as _gamma
from ._onnx_pointwise import copysign_onnx, floor_divide_onnx, remainder_onnx
from ._onnx_special import digamma_onnx, erfinv_onnx, lgamma_onnx
from ._pointwise_base import PointwiseFunction, Spec, register
from .registry import BadInput, Sample

_SQRT_PI = math.sqrt(math.pi)


# ---- samples --------------------------------------------------------------------------------------
def _binary_samples(make_b=S.rand, grad=None):
    def samples():
        return [Sample((S.rand(3, 7), make_b(3, 7, seed=1)), grad=grad),
                Sample((S.rand(2, 1, 9), make_b(5, 1, seed=1)), name="broadcast both", grad=grad),
                Sample((S.rand(4, 5), make_b(5, seed=2)), name="broadcast other", grad=grad),
                Sample((S.rand(*S.LARGE, seed=3), make_b(*S.LARGE, seed=4)), name="large", grad=grad)]
    return samples


def _away_from_zero(*shape, seed=0):
    x = S.rand(*shape, seed=seed, low=0.3, high=2.5)
    return np.where(np.random.default_rng(seed + 9).random(shape) < 0.5, -x, x).astype(np.float32)


def _unary_samples(make=S.rand, extra=()):
    def samples():
        return [Sample((make(3, 7),)), Sample((make(2, 5, 9, seed=1),)), Sample((make(1, seed=2),)),
                Sample((make(*S.LARGE, seed=3),), name="large"), *extra]
    return samples


def _bad_broadcast():
    return [BadInput((S.rand(3, 4), S.rand(5, 4)), {}, ValueError, "broadcast")]


def _onnx_nodes(build):
    """An ONNX mapping from ``build(ctx, x, y) -> value`` over the op's inputs in the output's dtype."""
    def mapping(ctx, op):
        dt = op.out_dtype()
        names = list(op.args)[:2]
        ins = [op.input(n, dt) for n in names if op.args.get(n) is not None]
        return [build(ctx, dt, *ins)]
    return mapping


def _c(ctx, dt, v):
    # dtype= given: ctx.const makes an unqualified float64 constant float32 (then a float64 graph fails the checker)
    return ctx.const(np.asarray(v, dt), dtype=dt)


# ---- two-input ops ----------------------------------------------------------------------------------
class _Binary(PointwiseFunction):
    @classmethod
    def forward(cls, ctx, input, other):
        return cls._run(ctx, (input, other), {})

    @classmethod
    def backward(cls, ctx, g):
        return cls._backward(ctx, g)


def _binary(name, fwd, grads, torch_fn, *, floating=True, onnx=None, gaps=None, samples=None, tol=(1e-5, 1e-5),
            zero_grad=False, uses_out=False):
    cls = type(f"{name.title().replace('_', '')}Function", (_Binary,), {"__module__": __name__,
                                                                          "__doc__": f"torch.{name}(input, other)."})
    return register(name, cls, Spec(fwd, grads, floating=floating, n=2, zero_grad=zero_grad, uses_out=uses_out),
                    samples=samples or _binary_samples(), torch=lambda torch, a, b: torch_fn(torch)(a, b),
                    bad_inputs=_bad_broadcast, onnx=onnx, gaps=gaps or {}, tol=tol)


def _atan2_grads(ns, g, a, out, kw):
    x, y = a
    d = x * x + y * y
    zero = (ns.val(x) == 0) & (ns.val(y) == 0)  # torch 2.13 masks the 0/0 at the origin to a 0 gradient
    d = ns.where(zero, 1.0, d)
    return ns.where(zero, 0.0, g * y / d), ns.where(zero, 0.0, -g * x / d)


def _atan2_onnx(ctx, dt, y, x):
    """atan(y / x), moved by pi where x < 0 (sign of y), and +-pi/2 where x == 0 (the quadrant rule)."""
    zero = _c(ctx, dt, 0)
    base = ctx.node("Atan", [ctx.node("Div", [y, x])])
    ypos = ctx.node("Cast", [ctx.node("GreaterOrEqual", [y, zero])], to=1 if dt == np.float32 else 11)
    shift = ctx.node("Mul", [ctx.node("Sub", [ctx.node("Mul", [ypos, _c(ctx, dt, 2)]), _c(ctx, dt, 1)]),
                             _c(ctx, dt, math.pi)])
    left = ctx.node("Add", [base, shift])
    res = ctx.node("Where", [ctx.node("Less", [x, zero]), left, base])
    half = ctx.node("Mul", [ctx.node("Sign", [y]), _c(ctx, dt, math.pi / 2)])
    return ctx.node("Where", [ctx.node("Equal", [x, zero]), half, res])


Atan2Function = _binary("atan2", np.arctan2, _atan2_grads, lambda t: t.atan2, onnx=_onnx_nodes(_atan2_onnx))
HypotFunction = _binary(
    "hypot", np.hypot, lambda ns, g, a, out, kw: (g * a[0] / out, g * a[1] / out), lambda t: t.hypot, uses_out=True,
    onnx=_onnx_nodes(lambda ctx, dt, x, y: ctx.node("Sqrt", [ctx.node("Add", [ctx.node("Mul", [x, x]),
                                                                              ctx.node("Mul", [y, y])])])))


def _logaddexp_onnx(base):
    def build(ctx, dt, x, y):
        m = ctx.node("Max", [x, y])
        d = ctx.node("Neg", [ctx.node("Abs", [ctx.node("Sub", [x, y])])])
        if base == 2:
            d = ctx.node("Mul", [d, _c(ctx, dt, math.log(2))])
        t = ctx.node("Log", [ctx.node("Add", [_c(ctx, dt, 1), ctx.node("Exp", [d])])])
        return ctx.node("Add", [m, t if base != 2 else ctx.node("Div", [t, _c(ctx, dt, math.log(2))])])
    return build


LogaddexpFunction = _binary(
    "logaddexp", np.logaddexp,
    lambda ns, g, a, out, kw: (g / (ns.exp(a[1] - a[0]) + 1), g / (ns.exp(a[0] - a[1]) + 1)),
    lambda t: t.logaddexp, onnx=_onnx_nodes(_logaddexp_onnx(math.e)))
Logaddexp2Function = _binary(
    "logaddexp2", np.logaddexp2,
    lambda ns, g, a, out, kw: (g / (ns.exp((a[1] - a[0]) * math.log(2)) + 1),
                               g / (ns.exp((a[0] - a[1]) * math.log(2)) + 1)),
    lambda t: t.logaddexp2, onnx=_onnx_nodes(_logaddexp_onnx(2)))


def _xlogy(x, y):
    return np.where((x == 0) & ~np.isnan(y), np.zeros((), x.dtype), x * np.log(y))


def _xlogy_grads(ns, g, a, out, kw):
    x, y = a
    # torch's: log(other), but 0 where input == 0 and other <= 0 (where the log is -inf or NaN)
    gx = ns.where((ns.val(x) == 0) & (ns.val(y) <= 0), 0.0, g * ns.log(y))
    return gx, g * x / y


def _xlogy_samples():
    x = S.rand(4, 6)
    x[0, :3] = 0
    return [Sample((x, S.positive(4, 6, seed=1))), Sample((S.rand(2, 1, 5), S.positive(3, 1, seed=2)), name="bcast"),
            Sample((S.rand(*S.LARGE, seed=3), S.positive(*S.LARGE, seed=4)), name="large")]


XlogyFunction = _binary(
    "xlogy", _xlogy, _xlogy_grads, lambda t: t.xlogy, samples=_xlogy_samples,
    onnx=_onnx_nodes(lambda ctx, dt, x, y: ctx.node("Where", [
        ctx.node("Equal", [x, _c(ctx, dt, 0)]), _c(ctx, dt, 0), ctx.node("Mul", [x, ctx.node("Log", [y])])])))


def _copysign_grads(ns, g, a, out, kw):
    x, _ = a
    xv = ns.val(x)
    # torch's result / input: +-1, 0 at a zero input, NaN at an infinite or NaN input
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = ns.where(xv == 0, 0.0, ns.const(ns.val(out) / xv, g))
    return g * ratio, None


CopysignFunction = _binary(
    "copysign", np.copysign, _copysign_grads, lambda t: t.copysign, uses_out=True,
    onnx=copysign_onnx)


def _int_checked(fn, name):
    """``fn`` raising ZeroDivisionError for an integer division by zero (torch's; numpy gives 0 silently)."""
    def checked(x, y):
        if x.dtype.kind in "iu" and np.any(np.asarray(y) == 0):
            raise ZeroDivisionError(f"{name}: integer division by zero")
        return fn(x, y)
    return checked


def _floor_quotient(x, y):
    """torch's div(x, y, rounding_mode="floor"): floor(x / y), but where x or y is infinite (or x / y is not
    finite) numpy's floor_divide, which has torch's fmod-based values there (NaN for an infinite x, -1 for a
    finite x over an infinite y of the other sign); floor_divide is 30x slower, so only then."""
    q = np.floor(x / y)
    if not (np.isfinite(q).all() and np.isfinite(y).all()):
        with np.errstate(all="ignore"):
            q = np.floor_divide(x, y)
    return q


def _remainder_grads(ns, g, a, out, kw):
    x, y = a
    return g, -g * ns.const(_floor_quotient(ns.val(x), ns.val(y)), g)


def _fmod_grads(ns, g, a, out, kw):
    x, y = a
    return g, -g * ns.const(np.trunc(ns.val(x) / ns.val(y)), g)


RemainderFunction = _binary(
    "remainder", _int_checked(np.remainder, "remainder"), _remainder_grads, lambda t: t.remainder, floating=False,
    samples=_binary_samples(_away_from_zero), tol=(1e-4, 1e-4), onnx=remainder_onnx)
FmodFunction = _binary(
    "fmod", _int_checked(np.fmod, "fmod"), _fmod_grads, lambda t: t.fmod, floating=False,
    samples=_binary_samples(_away_from_zero), tol=(1e-4, 1e-4),
    onnx=lambda ctx, op: [ctx.node("Mod", [op.input("input", op.out_dtype()), op.input("other", op.out_dtype())],
                                   fmod=1)])


_floor_divide = _int_checked(np.floor_divide, "floor_divide")


FloorDivideFunction = _binary(
    "floor_divide", _floor_divide, None, lambda t: t.floor_divide, floating=False,
    samples=_binary_samples(_away_from_zero, grad=()),
    onnx=floor_divide_onnx,
    gaps={"backward": "torch defines no derivative for floor_divide (its backward raises, so does forgegrad's)"})


# ---- lerp ----------------------------------------------------------------------------------------------
def _lerp(x, e, w):
    # torch's formula (exact at both ends): x + w (e - x) for |w| < 0.5, else e - (e - x)(1 - w)
    return np.where(np.abs(w) < 0.5, x + w * (e - x), e - (e - x) * (1 - w))


def _lerp_grads(ns, g, a, out, kw):
    x, e, w = a
    return g * (1 - w), g * w, g * (e - x)


class LerpFunction(PointwiseFunction):
    """torch.lerp(input, end, weight): ``weight`` a number or a tensor, broadcast with the others."""

    @classmethod
    def forward(cls, ctx, input, end, weight):
        return cls._run(ctx, (input, end, weight), {})

    @classmethod
    def backward(cls, ctx, g):
        return cls._backward(ctx, g)


def _lerp_samples():
    return [Sample((S.rand(3, 7), S.rand(3, 7, seed=1), S.rand(3, 7, seed=2, low=-0.5, high=1.5))),
            Sample((S.rand(2, 1, 5), S.rand(4, 1, seed=1), 0.3), name="scalar weight"),
            Sample((S.rand(4, 5), S.rand(5, seed=1), 0.75), name="scalar weight >= 0.5"),
            Sample((S.rand(*S.LARGE), S.rand(*S.LARGE, seed=1), S.rand(257, seed=2)), name="large")]


LerpFunction = register(
    "lerp", LerpFunction, Spec(_lerp, _lerp_grads, n=3), flops=4, samples=_lerp_samples,
    torch=lambda torch, a, b, w: torch.lerp(a, b, w),
    bad_inputs=lambda: [BadInput((S.rand(3, 4), S.rand(5, 4), 0.5), {}, ValueError, "broadcast")],
    onnx=lambda ctx, op: [ctx.node("Add", [op.input("input", op.out_dtype()), ctx.node("Mul", [
        op.input("weight", op.out_dtype()),
        ctx.node("Sub", [op.input("end", op.out_dtype()), op.input("input", op.out_dtype())])])])],
    tol=(1e-5, 1e-5))


# ---- one-input ops -------------------------------------------------------------------------------
class _Unary(PointwiseFunction):
    @classmethod
    def forward(cls, ctx, input):
        return cls._run(ctx, (input,), {})

    @classmethod
    def backward(cls, ctx, g):
        return cls._backward(ctx, g)


def _unary(name, fwd, grads, *, floating=True, onnx=None, gaps=None, samples=None, tol=(1e-5, 1e-5),
           zero_grad=False, torch_fn=None, base=_Unary, bad=None, uses_out=False):
    cls = type(f"{name.title().replace('_', '')}Function", (base,), {"__module__": __name__,
                                                                       "__doc__": f"torch.{name}(input)."})
    return register(name, cls, Spec(fwd, grads, floating=floating, zero_grad=zero_grad, uses_out=uses_out),
                    samples=samples or
                    _unary_samples(), torch=torch_fn or (lambda torch, x, **kw: getattr(torch, name)(x, **kw)),
                    onnx=onnx, gaps=gaps or {}, tol=tol, bad_inputs=bad)


def _unary_onnx(build):
    def mapping(ctx, op):
        dt = op.out_dtype()
        return [build(ctx, dt, op.input("input", dt))]
    return mapping


def _erf_grad(ns, g, a, out, kw):
    x = a[0]
    return (g * ns.exp(-(x * x)) * (2 / _SQRT_PI),)


ErfFunction = _unary("erf", sp.erf, _erf_grad, onnx=_unary_onnx(lambda ctx, dt, x: ctx.node("Erf", [x])))
ErfcFunction = _unary(
    "erfc", sp.erfc, lambda ns, g, a, out, kw: (-_erf_grad(ns, g, a, out, kw)[0],),
    onnx=_unary_onnx(lambda ctx, dt, x: ctx.node("Sub", [_c(ctx, dt, 1), ctx.node("Erf", [x])])))
ErfinvFunction = _unary(
    "erfinv", sp.erfinv, lambda ns, g, a, out, kw: (g * ns.exp(out * out) * (_SQRT_PI / 2),),
    samples=_unary_samples(lambda *s, seed=0: S.rand(*s, seed=seed, low=-0.95, high=0.95)), tol=(1e-4, 1e-5),
    uses_out=True, onnx=erfinv_onnx)


def _lgamma(x):
    return sp.gammaln(x) if x.dtype.kind == "f" else sp.gammaln(x.astype(np.float32))


def _digamma(x):
    # torch's series (ops/_special_gamma.py, numpy only): signed infinities at +-0, NaN at negative integers
    return _gamma.digamma(x).astype(x.dtype if x.dtype.kind == "f" else np.float32)


LgammaFunction = _unary(
    "lgamma", _lgamma, lambda ns, g, a, out, kw: (g * ns.call("digamma", a[0]),),
    samples=_unary_samples(lambda *s, seed=0: S.rand(*s, seed=seed, low=-3.7, high=5.0)), tol=(1e-4, 1e-4),
    onnx=lgamma_onnx)
DigammaFunction = _unary(
    "digamma", _digamma, lambda ns, g, a, out, kw: (g * ns.call("polygamma", a[0], 1),),  # trigamma (ops/special.py)
    samples=_unary_samples(S.positive), tol=(1e-4, 1e-4), onnx=digamma_onnx)


def _sign(x):
    if x.dtype == np.bool_:
        return x.copy()  # numpy has no sign for bool; torch's is the identity
    return np.where(np.isnan(x), np.zeros((), x.dtype), np.sign(x)) if x.dtype.kind == "f" else np.sign(x)


def _zero(ns, g, a, out, kw):
    return (g * 0,)


def _ties_samples():
    rng = np.random.default_rng(5)
    x = (rng.integers(-6, 7, size=(4, 9)) * 0.5).astype(np.float32)  # exact halves and integers, zeros
    return [Sample((x,), name="halves"), Sample((S.rand(2, 5, 7, seed=1) * 3,)),
            Sample((S.rand(*S.LARGE, seed=3) * 4,), name="large")]


SignFunction = _unary("sign", _sign, _zero, floating=False, zero_grad=True, samples=_ties_samples,
                      onnx=_unary_onnx(lambda ctx, dt, x: ctx.node("Sign", [x])))
SgnFunction = _unary("sgn", _sign, _zero, floating=False, zero_grad=True, samples=_ties_samples,
                     torch_fn=lambda torch, x: torch.sign(x),  # torch.sgn's gradient is a ZeroTensor numpy refuses
                     onnx=_unary_onnx(lambda ctx, dt, x: ctx.node("Sign", [x])))


def _trunc_onnx(ctx, dt, x):
    if np.dtype(dt).kind != "f":  # ONNX's Floor takes floats only; trunc of an integer is itself
        return ctx.node("Identity", [x])
    return ctx.node("Mul", [ctx.node("Sign", [x]), ctx.node("Floor", [ctx.node("Abs", [x])])])


TruncFunction = _unary("trunc", np.trunc, _zero, floating=False, zero_grad=True, samples=_ties_samples,
                       onnx=_unary_onnx(_trunc_onnx))
FracFunction = _unary("frac", lambda x: x - np.trunc(x), lambda ns, g, a, out, kw: (g,), floating=False,
                      samples=_ties_samples,
                      onnx=_unary_onnx(lambda ctx, dt, x: ctx.node("Sub", [x, _trunc_onnx(ctx, dt, x)])))
Deg2radFunction = _unary("deg2rad", lambda x: x * x.dtype.type(math.pi / 180),
                         lambda ns, g, a, out, kw: (g * (math.pi / 180),),
                         onnx=_unary_onnx(lambda ctx, dt, x: ctx.node("Mul", [x, _c(ctx, dt, math.pi / 180)])))
Rad2degFunction = _unary("rad2deg", lambda x: x * x.dtype.type(180 / math.pi),
                         lambda ns, g, a, out, kw: (g * (180 / math.pi),),
                         onnx=_unary_onnx(lambda ctx, dt, x: ctx.node("Mul", [x, _c(ctx, dt, 180 / math.pi)])))


# ---- round(decimals), nan_to_num -------------------------------------------------------------------
def _round(x, decimals=0):
    if x.dtype.kind != "f" or decimals == 0:
        return np.round(x) if x.dtype.kind == "f" else x.copy()
    # torch: nearbyint(x * 10^d) / 10^d (d > 0), nearbyint(x / 10^-d) * 10^-d (d < 0); half to even
    ten = x.dtype.type(10.0 ** abs(decimals))
    return np.round(x * ten) / ten if decimals > 0 else np.round(x / ten) * ten


class RoundFunction(PointwiseFunction):
    """torch.round(input, decimals=0): half to even, as torch (and ONNX Round)."""

    @classmethod
    def forward(cls, ctx, input, decimals=0):
        from .._validate import check_int
        return cls._run(ctx, (input,), {"decimals": check_int(decimals, "decimals")})

    @classmethod
    def backward(cls, ctx, g):
        return cls._backward(ctx, g)


def _round_samples():
    return _ties_samples() + [Sample((S.rand(3, 8, seed=4) * 50,), {"decimals": 1}, "decimals=1"),
                              Sample((S.rand(5, 3, seed=6) * 500,), {"decimals": -2}, "decimals=-2", onnx=False)]


def _round_onnx(ctx, op):
    dt = op.out_dtype()
    d = int(op.attr("decimals", 0) or 0)
    x = op.input("input", dt)
    if d == 0:
        return [ctx.node("Round", [x])]
    ten = _c(ctx, dt, 10.0 ** d)
    return [ctx.node("Div", [ctx.node("Round", [ctx.node("Mul", [x, ten])]), ten])]


RoundFunction = register("round", RoundFunction, Spec(_round, _zero, floating=False, zero_grad=True),
                         samples=_round_samples, torch=lambda torch, x, decimals=0: torch.round(x, decimals=decimals),
                         onnx=_round_onnx, bad_inputs=lambda: [BadInput((S.rand(2, 3),), {"decimals": 1.5}, TypeError,
                                                                        "decimals")])


def _nan_to_num(x, nan=0.0, posinf=None, neginf=None):
    if x.dtype.kind != "f":
        return x.copy()
    info = np.finfo(x.dtype)
    return np.nan_to_num(x, nan=nan, posinf=info.max if posinf is None else posinf,
                         neginf=info.min if neginf is None else neginf)


class NanToNumFunction(PointwiseFunction):
    """torch.nan_to_num(input, nan=0.0, posinf=None, neginf=None): +-inf become the dtype's extremes by default;
    the gradient is zero where the input was not finite."""

    @classmethod
    def forward(cls, ctx, input, nan=0.0, posinf=None, neginf=None):
        from .._validate import check_float
        kw = {"nan": check_float(nan, "nan"), "posinf": None if posinf is None else check_float(posinf, "posinf"),
              "neginf": None if neginf is None else check_float(neginf, "neginf")}
        return cls._run(ctx, (input,), kw)

    @classmethod
    def backward(cls, ctx, g):
        return cls._backward(ctx, g)


def _nan_samples():
    x = S.rand(4, 7)
    x[0, 1], x[1, 2], x[2, 3] = np.nan, np.inf, -np.inf
    return [Sample((x,)), Sample((x,), {"nan": 1.5, "posinf": 9.0, "neginf": -7.0}, "explicit"),
            Sample((S.rand(*S.LARGE, seed=3),), name="large")]


def _nan_to_num_onnx(ctx, op):
    dt = op.out_dtype()
    info = np.finfo(dt)
    x = op.input("input", dt)
    pos, neg = op.attr("posinf"), op.attr("neginf")
    x = ctx.node("Where", [ctx.node("IsNaN", [x]), _c(ctx, dt, op.attr("nan", 0.0)), x])
    x = ctx.node("Where", [ctx.node("IsInf", [x], detect_negative=0), _c(ctx, dt, info.max if pos is None else pos), x])
    return [ctx.node("Where", [ctx.node("IsInf", [x], detect_positive=0), _c(ctx, dt, info.min if neg is None else neg),
                               x])]


NanToNumFunction = register(
    "nan_to_num", NanToNumFunction,
    Spec(_nan_to_num, lambda ns, g, a, out, kw: (g * ns.where(np.isfinite(ns.val(a[0])), 1.0, 0.0),), floating=False),
    samples=_nan_samples, torch=lambda torch, x, **kw: torch.nan_to_num(x, **kw), onnx=_nan_to_num_onnx,
    bad_inputs=lambda: [BadInput((S.rand(2, 3),), {"nan": "0"}, TypeError, "nan")])
