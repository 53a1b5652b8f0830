"""The functions of torch.special that torch does not differentiate (their outputs have no grad_fn; so have
forgegrad's): bessel_j0/j1/y0/y1, modified_bessel_i0/i1/k0/k1, scaled_modified_bessel_k0/k1, spherical_bessel_j0,
airy_ai and the orthogonal polynomials (chebyshev_polynomial_t/u/v/w, shifted_chebyshev_polynomial_t/u/v/w,
hermite_polynomial_h/he, laguerre_polynomial_l, legendre_polynomial_p).

Forward: numpy ports of torch 2.13's algorithms (ops/_special_bessel.py, ops/_special_poly.py) in float64, results in
the inputs' promoted dtype (integers compute in the default float dtype, as torch's).
"""
from __future__ import annotations

import numpy as np

from . import _samples as S
from . import _special_bessel as B
from . import _special_onnx as _bessel_onnx
from . import _special_poly as P
from ._pointwise_base import Spec, register
from .pointwise_more import _Binary, _c, _Unary, _unary_onnx
from .registry import BadInput, Sample
from .special import _samples

_NO_GRAD = "torch defines no derivative for it (its output has no grad_fn); forgegrad's output does not require grad"


def _in(fn):
    return lambda *arrays: fn(*arrays).astype(arrays[0].dtype, copy=False)


def _unary(name, fwd, samples, onnx=None, tol=(1e-5, 1e-5)):
    cls = type(f"Special{name.title().replace('_', '')}Function", (_Unary,),
               {"__module__": __name__, "__doc__": f"torch.special.{name}(input) (not differentiable, as torch's).",
                "non_differentiable_outputs": (0,)})
    gaps = {"backward": _NO_GRAD}
    return register(f"special_{name}", cls, Spec(_in(fwd), None), samples=samples, onnx=onnx, gaps=gaps, tol=tol,
                    torch=lambda torch, x: getattr(torch.special, name)(x))


def _spherical_j0_onnx(ctx, dt, x):
    z = ctx.node("Mul", [x, x])
    poly = _c(ctx, dt, 1.0 / 6227020800.0)
    for c in (-1.0 / 39916800.0, 1.0 / 362880.0, -1.0 / 5040.0, 1.0 / 120.0, -1.0 / 6.0):
        poly = ctx.node("Add", [_c(ctx, dt, c), ctx.node("Mul", [z, poly])])
    series = ctx.node("Add", [_c(ctx, dt, 1.0), ctx.node("Mul", [z, poly])])
    small = ctx.node("Less", [ctx.node("Abs", [x]), _c(ctx, dt, 0.5)])
    safe = ctx.node("Where", [small, _c(ctx, dt, 1.0), x])
    val = ctx.node("Where", [small, series, ctx.node("Div", [ctx.node("Sin", [safe]), safe])])
    return ctx.node("Where", [ctx.node("IsInf", [x]), _c(ctx, dt, 0.0), val])


O = _bessel_onnx
for _name, _fn, _smp, _onnx in (
        ("bessel_j0", B.bessel_j0, _samples(-20.0, 20.0, (0.0, 5.0, -5.0, 1e-6)), O.mapping(O.bessel_j, 0)),
        ("bessel_j1", B.bessel_j1, _samples(-20.0, 20.0, (0.0, 5.0, -5.0)), O.mapping(O.bessel_j, 1)),
        ("bessel_y0", B.bessel_y0, _samples(0.05, 20.0, (5.0, 1.0)), O.mapping(O.bessel_y, 0)),
        ("bessel_y1", B.bessel_y1, _samples(0.05, 20.0, (5.0, 1.0)), O.mapping(O.bessel_y, 1)),
        ("modified_bessel_k0", B.modified_bessel_k0, _samples(0.05, 12.0, (2.0, 1.0)), O.mapping(O.bessel_k, 0)),
        ("modified_bessel_k1", B.modified_bessel_k1, _samples(0.05, 12.0, (2.0, 1.0)), O.mapping(O.bessel_k, 1)),
        ("scaled_modified_bessel_k0", B.scaled_modified_bessel_k0, _samples(0.05, 12.0, (2.0, 1.0)),
         O.mapping(O.scaled_bessel_k, 0)),
        ("scaled_modified_bessel_k1", B.scaled_modified_bessel_k1, _samples(0.05, 12.0, (2.0, 1.0)),
         O.mapping(O.scaled_bessel_k, 1)),
        ("airy_ai", B.airy_ai, _samples(-8.0, 8.0, (0.0, 2.09, -2.09)), O.airy_mapping)):
    globals()[f"Special{_name.title().replace('_', '')}Function"] = _unary(_name, _fn, _smp, onnx=_onnx)
SpecialModifiedBesselI0Function = _unary("modified_bessel_i0", B.modified_bessel_i0, _samples(-12.0, 12.0, (0.0, 8.0)),
                                         onnx=_bessel_onnx.mapping(_bessel_onnx.bessel_i, 0))
SpecialModifiedBesselI1Function = _unary("modified_bessel_i1", B.modified_bessel_i1, _samples(-12.0, 12.0, (0.0, 8.0)),
                                         onnx=_bessel_onnx.mapping(_bessel_onnx.bessel_i, 1))
SpecialSphericalBesselJ0Function = _unary(
    "spherical_bessel_j0", B.spherical_bessel_j0, _samples(-10.0, 10.0, (0.0, 0.5, -0.25)),
    onnx=_unary_onnx(_spherical_j0_onnx))


# ---- orthogonal polynomials: (input, n) ------------------------------------------------------------------------
def _poly_samples(low=-1.2, high=1.2):
    def samples():
        rng = np.random.default_rng(11)
        ns = rng.integers(0, 12, size=(3, 7)).astype(np.int64)
        return [Sample((S.rand(3, 7, low=low, high=high), ns), name="int64 degrees (ONNX: Python degrees only)",
                       onnx=False),
                Sample((S.rand(2, 1, 9, seed=1, low=low, high=high), np.arange(5, dtype=np.float32).reshape(5, 1)),
                       name="broadcast float degrees", onnx=False),
                Sample((S.rand(3, 5, seed=4, low=low, high=high), 3), name="python int degree 3"),
                Sample((S.rand(4, 6, seed=2, low=low, high=high), 9), name="python int degree (closed form)"),
                Sample((S.rand(*S.LARGE, seed=3, low=low, high=high), 7.0), name="large")]
    return samples


def _hermite(fn):
    def run(x, n):
        return fn(x, n, limit=128 if x.dtype == np.float32 else 512).astype(x.dtype, copy=False)  # torch's limits
    return run


_POLYS = {f"chebyshev_polynomial_{k}": (lambda k: lambda x, n: P.chebyshev_polynomial(x, n, k))(k) for k in "tuvw"}
_POLYS.update({f"shifted_chebyshev_polynomial_{k}": (lambda k: lambda x, n: P.chebyshev_polynomial(x, n, k, True))(k)
               for k in "tuvw"})
_POLYS.update(laguerre_polynomial_l=P.laguerre_polynomial_l, legendre_polynomial_p=P.legendre_polynomial_p)


def _poly(name, fwd, samples, tol=(1e-4, 1e-4)):
    cls = type(f"Special{name.title().replace('_', '')}Function", (_Binary,),
               {"__module__": __name__, "non_differentiable_outputs": (0,),
                "__doc__": f"torch.special.{name}(input, n) (not differentiable, as torch's)."})
    cls.forward = classmethod(lambda cls, ctx, input, n: cls._run(ctx, (input, n), {}))
    return register(f"special_{name}", cls, Spec(fwd, None, n=2), samples=samples, tol=tol,
                    torch=lambda torch, x, n: getattr(torch.special, name)(x, n),
                    gaps={"backward": _NO_GRAD}, onnx=_bessel_onnx.polynomial_mapping(name),
                    bad_inputs=lambda: [BadInput((S.rand(3, 4), S.rand(5, 4)), {}, ValueError, "broadcast")])


for _name, _fn in _POLYS.items():
    _smp = _poly_samples(-0.2, 1.2) if _name.startswith("shifted") else _poly_samples()
    globals()[f"Special{_name.title().replace('_', '')}Function"] = _poly(_name, _in(_fn), _smp)
# H_n(x) reaches ~1e3 on [-2, 2]: near its zeros torch's float32 recurrence is off by ~1e-4 absolute
SpecialHermitePolynomialHFunction = _poly("hermite_polynomial_h", _hermite(P.hermite_polynomial_h),
                                          _poly_samples(-2.0, 2.0), tol=(1e-4, 1e-3))
SpecialHermitePolynomialHeFunction = _poly("hermite_polynomial_he", _hermite(P.hermite_polynomial_he),
                                           _poly_samples(-2.0, 2.0))
