"""The differentiable functions of torch.special that forgegrad had no op for: ndtr, log_ndtr, ndtri, erfcx, i0e, i1e,
entr, xlog1py, zeta, gammainc, gammaincc and polygamma (the op behind fg.polygamma, fg.special.polygamma / psi).

Forward: numpy ports of torch 2.13's algorithms (ops/_special_gamma.py, ops/_special_bessel.py) in float64, results
in the input's dtype. Gradients: torch's formulas (derivatives.yaml), written once for backward and for the
double-backward rule (ops/_pointwise_base.py). zeta, gammainc and gammaincc have no derivative for ``input`` in torch
(its backward raises "the derivative for ... is not implemented"); neither has forgegrad's. The Bessel functions and
orthogonal polynomials torch does not differentiate are in ops/special_more.py.
"""
from __future__ import annotations

import math

import numpy as np

from . import _samples as S
from . import _special_bessel as B
from . import _special_gamma as G
from . import _special_onnx as _bessel_onnx
from ._onnx_special import ndtri_onnx
from ._pointwise_base import PointwiseFunction, Spec, differentiable_rule, register
from .pointwise_more import _Binary, _c, _onnx_nodes, _Unary, _unary_onnx
from .registry import BadInput, Sample

_SQRT_2PI = math.sqrt(2 * math.pi)


def _in(fn):
    """fn computed in float64 on an array of the op's dtype, returned in that dtype."""
    return lambda *arrays: fn(*arrays).astype(arrays[0].dtype, copy=False)


def _eps(ns, x):
    return float(np.finfo(ns.val(x).dtype).eps)


def _samples(low=-3.0, high=3.0, edges=()):
    def samples():
        out = [Sample((S.rand(3, 7, low=low, high=high),)), Sample((S.rand(2, 5, 9, seed=1, low=low, high=high),)),
               Sample((S.rand(*S.LARGE, seed=3, low=low, high=high),), name="large")]
        if edges:
            out.append(Sample((np.asarray(edges, np.float32).reshape(1, -1),), name="edges"))
        return out
    return samples


def _unary(name, fwd, grads, *, samples, onnx=None, gaps=None, uses_out=True, tol=(1e-5, 1e-5)):
    cls = type(f"Special{name.title().replace('_', '')}Function", (_Unary,),
               {"__module__": __name__, "__doc__": f"torch.special.{name}(input)."})
    return register(f"special_{name}", cls, Spec(_in(fwd), grads, uses_out=uses_out), samples=samples,
                    torch=lambda torch, x: getattr(torch.special, name)(x), onnx=onnx, gaps=gaps or {}, tol=tol)


# ---- normal distribution, erfcx ----------------------------------------------------------------------------
def _ndtr_grads(ns, g, a, out, kw):
    x = a[0]
    return (g * ns.exp(x * x * -0.5) * (1 / _SQRT_2PI),)


def _ndtr_onnx(ctx, dt, x):
    erf = ctx.node("Erf", [ctx.node("Mul", [x, _c(ctx, dt, math.sqrt(0.5))])])
    return ctx.node("Mul", [ctx.node("Add", [erf, _c(ctx, dt, 1)]), _c(ctx, dt, 0.5)])


SpecialNdtrFunction = _unary("ndtr", G.ndtr, _ndtr_grads, samples=_samples(edges=(0.0, -9.0, 9.0)), uses_out=False,
                             onnx=_unary_onnx(_ndtr_onnx))
SpecialLogNdtrFunction = _unary(
    "log_ndtr", G.log_ndtr, lambda ns, g, a, out, kw: (g * ns.exp(-(out + a[0] * a[0] * 0.5)) * (1 / _SQRT_2PI),),
    samples=_samples(-8.0, 4.0, (0.0, -1.0, -20.0)),
    gaps={"onnx": "below x = -1 log_ndtr needs erfcx (log(ndtr) underflows), which ONNX does not have"})
SpecialNdtriFunction = _unary(
    "ndtri", G.ndtri, lambda ns, g, a, out, kw: (g * ns.exp(out * out * 0.5) * _SQRT_2PI,),
    samples=_samples(0.02, 0.98, (0.5, 0.1, 0.9, 1e-10, 1 - 2 ** -20, 0.0, 1.0)), tol=(1e-4, 1e-5),
    onnx=ndtri_onnx)
SpecialErfcxFunction = _unary(
    "erfcx", G.erfcx, lambda ns, g, a, out, kw: (g * (a[0] * out * 2.0 - 2.0 / math.sqrt(math.pi)),),
    samples=_samples(-3.0, 8.0, (0.0, 30.0, -2.0)),
    gaps={"onnx": "ONNX has no erfcx, and exp(x^2) erfc(x) over ONNX's Erf cancels to 0 beyond x ~ 4"})


# ---- exponentially scaled modified Bessel functions ---------------------------------------------------------
def _i0e_grads(ns, g, a, out, kw):
    x = a[0]
    return (g * (ns.call("special_i1e", x) - ns.sign(x) * out),)


def _i1e_grads(ns, g, a, out, kw):
    # torch's i1e_backward: i0e(x) - i1e(x) (sgn(x) + 1/x), 1/2 where not |x| > eps (NaN included, as torch's mask)
    x = a[0]
    tiny = ~(np.abs(ns.val(x)) > _eps(ns, x))
    safe = ns.where(tiny, 1.0, x)
    return (g * ns.where(tiny, 0.5, ns.call("special_i0e", safe) - out * (ns.sign(safe) + 1 / safe)),)


SpecialI0eFunction = _unary("i0e", B.i0e, _i0e_grads, samples=_samples(-12.0, 12.0, (0.0, 8.0, -8.0)),
                            onnx=_bessel_onnx.mapping(_bessel_onnx.scaled_i, 0))
SpecialI1eFunction = _unary("i1e", B.i1e, _i1e_grads, samples=_samples(-12.0, 12.0, (0.0, 8.0, -8.0)),
                            onnx=_bessel_onnx.mapping(_bessel_onnx.scaled_i, 1))


# ---- entr ---------------------------------------------------------------------------------------------------
def _entr(x):
    with np.errstate(all="ignore"):
        out = np.where(x > 0, -x * np.log(np.where(x > 0, x, 1)), np.where(x == 0, 0.0, -np.inf))
    return np.where(np.isnan(x), x, out)


def _entr_onnx(ctx, dt, x):
    zero = _c(ctx, dt, 0)
    pos = ctx.node("Greater", [x, zero])
    safe = ctx.node("Where", [pos, x, _c(ctx, dt, 1)])
    val = ctx.node("Neg", [ctx.node("Mul", [safe, ctx.node("Log", [safe])])])
    rest = ctx.node("Where", [ctx.node("Equal", [x, zero]), zero, _c(ctx, dt, -np.inf)])
    rest = ctx.node("Where", [ctx.node("IsNaN", [x]), x, rest])
    return ctx.node("Where", [pos, val, rest])


SpecialEntrFunction = _unary(
    "entr", lambda x: _entr(x.astype(np.float64)), lambda ns, g, a, out, kw: (g * -(ns.log(a[0]) + 1),),
    samples=_samples(0.05, 4.0, (1.0, 0.5)), uses_out=False, onnx=_unary_onnx(_entr_onnx))


# ---- polygamma(n, input) ----------------------------------------------------------------------------------
class PolygammaFunction(PointwiseFunction):
    """torch.polygamma(n, input): the n-th derivative of digamma (the op takes input first; fg.polygamma and
    Tensor.polygamma(n) keep torch's argument orders)."""

    @classmethod
    def forward(cls, ctx, input, n=0):
        from .._validate import check_int
        n = check_int(n, "n")
        if n < 0:
            raise ValueError(f"polygamma(): n must be non-negative, got {n}")
        if n >= 2 ** 31:  # torch's kernel takes n as a 32-bit int: n wraps there and its results are NaN
            raise ValueError(f"polygamma(): n must be below 2**31, got {n}")
        return cls._run(ctx, (input,), {"n": n})

    @classmethod
    def backward(cls, ctx, g):
        return cls._backward(ctx, g)


def _polygamma_samples():
    return [Sample((S.positive(3, 7),), {"n": 0}, "n=0"), Sample((S.positive(2, 5, 9, seed=1),), {"n": 1}, "n=1"),
            Sample((S.positive(4, 6, seed=2),), {"n": 2}, "n=2"), Sample((S.positive(3, 5, seed=3),), {"n": 3}, "n=3"),
            Sample((S.rand(*S.LARGE, seed=4, low=0.3, high=6.0),), {"n": 1}, "large")]
    # negative inputs: near the poles torch's float32 series loses digits; tests/test_special.py checks them in float64


PolygammaFunction = register(
    "polygamma", PolygammaFunction,
    Spec(lambda x, n=0: G.polygamma(n, x).astype(x.dtype, copy=False),
         lambda ns, g, a, out, kw: (g * ns.call("polygamma", a[0], kw["n"] + 1),)),
    samples=_polygamma_samples, torch=lambda torch, x, n=0: torch.polygamma(n, x), tol=(1e-4, 1e-5),
    gaps={"onnx": "ONNX has no digamma or zeta function"},
    bad_inputs=lambda: [BadInput((S.positive(2, 3),), {"n": 1.5}, TypeError, "n"),
                        BadInput((S.positive(2, 3),), {"n": -1}, ValueError, "n"),
                        BadInput((S.positive(2, 3),), {"n": 2 ** 31}, ValueError, "n")])


# ---- two inputs: xlog1py, zeta, gammainc, gammaincc ---------------------------------------------------------
def _xlog1py(x, y):
    with np.errstate(all="ignore"):
        return np.where((x == 0) & ~np.isnan(y), np.zeros((), x.dtype), x * np.log1p(y))


def _xlog1py_grads(ns, g, a, out, kw):
    x, y = a
    log1p = ns.call("log1p", y) if hasattr(y, "_data") else np.log1p(y)
    # torch's: 0 where input == 0 and other <= -1 (where log1p is -inf or NaN)
    return ns.where((ns.val(x) == 0) & (ns.val(y) <= -1), 0.0, g * log1p), g * x / (y + 1)


def _binary_samples(make_a, make_b, grad=None, scalars=True):
    def samples():
        out = [Sample((make_a(3, 7), make_b(3, 7, seed=1)), grad=grad),
               Sample((make_a(2, 1, 9), make_b(5, 1, seed=2)), name="broadcast both", grad=grad),
               Sample((make_a(*S.LARGE, seed=3), make_b(*S.LARGE, seed=4)), name="large", grad=grad)]
        if scalars:
            out.append(Sample((make_a(4, 5), 1.5), name="python scalar other", grad=None if grad is None else ()))
        return out
    return samples


def _binary(name, fwd, grads, *, samples, onnx=None, gaps=None, tol=(1e-5, 1e-5), op_name=None, uses_out=False,
            no_input_grad=False):
    op_name = op_name or f"special_{name}"
    body = {"__module__": __name__, "__doc__": f"torch.special.{name}(input, other)."}
    if no_input_grad:  # torch: "the derivative for '<name>' is not implemented" when input needs a gradient
        def backward(cls, ctx, g):
            if ctx.needs_input_grad[0]:
                raise RuntimeError(f"the derivative for '{name}' with respect to input is not implemented (as in "
                                   "torch)")
            return cls._backward(ctx, g)
        body["backward"] = classmethod(backward)
    cls = type(f"Special{name.title().replace('_', '')}Function", (_Binary,), body)
    fields = {}
    if no_input_grad:
        rule = differentiable_rule(op_name)

        def refusing_rule(ctx, args, kwargs, g):
            if getattr(args[0], "requires_grad", False):
                raise RuntimeError(f"the derivative for '{name}' with respect to input is not implemented (as in "
                                   "torch)")
            return rule(ctx, args, kwargs, g)
        fields["differentiable_backward"] = refusing_rule
    return register(op_name, cls, Spec(_in(fwd), grads, n=2, uses_out=uses_out),
                    samples=samples, torch=lambda torch, a, b: getattr(torch.special, name)(a, b), onnx=onnx,
                    gaps=gaps or {}, tol=tol,
                    bad_inputs=lambda: [BadInput((S.positive(3, 4), S.positive(5, 4)), {}, ValueError, "broadcast")],
                    **fields)


def _xlog1py_onnx(ctx, dt, x, y):
    val = ctx.node("Mul", [x, ctx.node("Log", [ctx.node("Add", [y, _c(ctx, dt, 1)])])])
    keep = ctx.node("And", [ctx.node("Equal", [x, _c(ctx, dt, 0)]), ctx.node("Not", [ctx.node("IsNaN", [y])])])
    return ctx.node("Where", [keep, _c(ctx, dt, 0), val])


def _above_minus_one(*shape, seed=0):
    return S.rand(*shape, seed=seed, low=-0.9, high=3.0)


def _xlog1py_samples():
    base = _binary_samples(S.rand, _above_minus_one)()
    x = S.rand(4, 6)
    x[0, :3] = 0
    return base + [Sample((x, _above_minus_one(4, 6, seed=5)), name="zeros in input")]


SpecialXlog1pyFunction = _binary("xlog1py", _xlog1py, _xlog1py_grads, samples=_xlog1py_samples,
                                 onnx=_onnx_nodes(_xlog1py_onnx))


def _zeta_grads(ns, g, a, out, kw):
    x, q = a
    return None, g * -x * ns.call("special_zeta", x + 1.0, q)


def _zeta_x(*shape, seed=0):
    return S.rand(*shape, seed=seed, low=1.2, high=5.0)


SpecialZetaFunction = _binary(
    "zeta", G.zeta, _zeta_grads, samples=_binary_samples(_zeta_x, S.positive, grad=(1,)), no_input_grad=True,
    tol=(1e-4, 1e-5), gaps={"onnx": "ONNX has no zeta function (an unbounded sum)"})


def _gammainc_grads(sign):
    def grads(ns, g, a, out, kw):
        s, x = a
        d = ns.exp((s - 1) * ns.log(x) - x - ns.call("lgamma", s))
        return None, (g * d if sign > 0 else -g * d)
    return grads


_INC = {"onnx": "ONNX has no incomplete gamma function (its series and continued fraction need data-dependent "
                "loops)"}


def _gammainc_samples():
    mk = _binary_samples(S.positive, S.positive, grad=(1,), scalars=False)()
    a = S.rand(3, 8, seed=7, low=15.0, high=60.0)
    return mk + [Sample((a, a * S.rand(3, 8, seed=8, low=0.85, high=1.15)), name="a ~ x (asymptotic)", grad=(1,))]


SpecialGammaincFunction = _binary("gammainc", G.gammainc, _gammainc_grads(1), samples=_gammainc_samples,
                                  no_input_grad=True, tol=(1e-4, 1e-5), gaps=_INC)
SpecialGammainccFunction = _binary("gammaincc", G.gammaincc, _gammainc_grads(-1), samples=_gammainc_samples,
                                   no_input_grad=True, tol=(1e-4, 1e-5), gaps=_INC)
