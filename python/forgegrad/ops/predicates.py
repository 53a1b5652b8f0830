"""torch's elementwise tests, each a bool tensor with no gradient: isnan, isinf, isfinite, isposinf, isneginf,
signbit (true for -0.0 too), isclose(input, other, rtol, atol, equal_nan) with torch's rule
``|input - other| <= atol + rtol * |other|`` (inf equals inf of the same sign). Integer and bool inputs: isnan/isinf
are all False, isfinite all True, as torch's."""
from __future__ import annotations

import numpy as np

from .._validate import check_bool, check_float
from . import _meta as M
from . import _samples as S
from ._onnx_pointwise import isclose_onnx, signbit_onnx
from ._pointwise_base import PointwiseFunction, Spec, register
from .registry import BadInput, Sample

_NO_GRAD = "its output is bool: there is no gradient to check"


def _special_samples():
    x = S.rand(4, 7)
    x[0, 1], x[1, 2], x[2, 3], x[3, 0], x[3, 4] = np.nan, np.inf, -np.inf, -0.0, 0.0
    return [Sample((x,), grad=()), Sample((S.rand(2, 5, 9, seed=1),), grad=()),
            Sample((np.arange(-3, 4, dtype=np.int64),), name="int64", grad=(), onnx=False),
            Sample((S.rand(*S.LARGE, seed=3),), name="large", grad=())]


class _Pred(PointwiseFunction):
    @classmethod
    def forward(cls, ctx, input):
        return cls._run(ctx, (input,), {})

    @classmethod
    def backward(cls, ctx, g):
        return None


def _bool_meta(name):
    def meta(x):
        return M.MetaArray(x.shape, np.bool_)
    return meta


def _pred(name, fwd, onnx):
    cls = type(f"{name.title()}Function", (_Pred,), {"__module__": __name__, "__doc__": f"torch.{name}(input)."})
    cls = register(name, cls, Spec(fwd, None, floating=False), flops=1, differentiable=False,
                   samples=_special_samples, torch=lambda torch, x: getattr(torch, name)(x),
                   onnx=onnx, gaps={"backward": _NO_GRAD})
    cls.op.meta = _bool_meta(name)
    return cls


def _fl(fn, int_value):
    def f(x):
        return fn(x) if x.dtype.kind == "f" else np.full(x.shape, int_value)
    return f


def _map(build):
    def mapping(ctx, op):
        return [build(ctx, op.input("input"))]
    return mapping


IsnanFunction = _pred("isnan", _fl(np.isnan, False), _map(lambda ctx, x: ctx.node("IsNaN", [x])))
IsinfFunction = _pred("isinf", _fl(np.isinf, False), _map(lambda ctx, x: ctx.node("IsInf", [x])))
IsposinfFunction = _pred("isposinf", _fl(np.isposinf, False),
                         _map(lambda ctx, x: ctx.node("IsInf", [x], detect_negative=0)))
IsneginfFunction = _pred("isneginf", _fl(np.isneginf, False),
                         _map(lambda ctx, x: ctx.node("IsInf", [x], detect_positive=0)))
IsfiniteFunction = _pred("isfinite", _fl(np.isfinite, True), _map(lambda ctx, x: ctx.node("Not", [ctx.node(
    "Or", [ctx.node("IsNaN", [x]), ctx.node("IsInf", [x])])])))
SignbitFunction = _pred("signbit", np.signbit, signbit_onnx)  # (-NaN's sign bit: not in ONNX, see _onnx_pointwise)


def _isclose(a, b, rtol=1e-5, atol=1e-8, equal_nan=False):
    if a.dtype == np.bool_:
        return a == b  # numpy has no bool subtraction; torch's isclose of bools is equality
    with np.errstate(all="ignore"):
        close = (a == b) | (np.isfinite(a) & np.isfinite(b) & (np.abs(a - b) <= atol + rtol * np.abs(b)))
    if equal_nan:
        close |= np.isnan(a) & np.isnan(b)
    return close


class IscloseFunction(PointwiseFunction):
    """torch.isclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False)."""

    @classmethod
    def forward(cls, ctx, input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
        kw = {"rtol": check_float(rtol, "rtol", low=0), "atol": check_float(atol, "atol", low=0),
              "equal_nan": check_bool(equal_nan, "equal_nan")}
        return cls._run(ctx, (input, other), kw)

    @classmethod
    def backward(cls, ctx, g):
        return None, None


def _isclose_samples():
    a = S.rand(4, 7)
    b = a + np.random.default_rng(2).choice([0, 1e-7, 1e-3], size=a.shape).astype(np.float32)
    a[0, 0], b[0, 0], a[1, 1], b[1, 1] = np.nan, np.nan, np.inf, np.inf
    return [Sample((a, b), grad=()), Sample((a, b), {"equal_nan": True, "rtol": 1e-2}, "equal_nan", grad=()),
            Sample((a, b[:1]), {"atol": 1e-4}, "broadcast", grad=())]


IscloseFunction = register(
    "isclose", IscloseFunction, Spec(_isclose, None, floating=False, n=2), flops=4, differentiable=False,
    samples=_isclose_samples, torch=lambda torch, a, b, **kw: torch.isclose(a, b, **kw),
    gaps={"backward": _NO_GRAD}, onnx=isclose_onnx,
    bad_inputs=lambda: [BadInput((S.rand(2, 3), S.rand(2, 3)), {"rtol": -1.0}, ValueError, "rtol"),
                        BadInput((S.rand(2, 3), S.rand(2, 3)), {"equal_nan": 1}, TypeError, "equal_nan")])
IscloseFunction.op.meta = lambda a, b, *args, **kw: M.broadcast_bool(a, b)  # (rtol, atol, equal_nan positional)
