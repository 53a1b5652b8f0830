"""Scans torch has beside cumsum: cumprod and logcumsumexp (cummax / cummin are in forgegrad._torch_indexing:
their values are a gather of their indices).

Both gradients give torch's results at NaN / inf inputs: cumprod's is torch's formula (a reversed cumsum divided by x,
exact products around zeros), logcumsumexp's torch's log-space reversed scans. Float32 scans accumulate in float64
and round each output, as torch's CPU kernels (``acc_type<float>`` is double): a float32 running product or log-sum
over millions of elements would otherwise drift by whole units (logcumsumexp of 2**24 normal values ended 0.9 off).
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from ..devices import MetaArray
from . import _meta as M
from . import _samples as S
from ._onnx_select import cumprod_onnx
from ._util import single_axis
from .registry import BadInput, Sample, register_op


def _axis(a, dim, name):
    return single_axis(dim, max(a.ndim, 1), f"{name}(): dim")


def _cumprod_dtype(a):
    return a.dtype if a.dtype.kind == "f" else np.dtype(np.int64)


def _cumprod_samples():
    rng = np.random.default_rng(2)
    zeros = np.where(rng.uniform(size=(4, 9)) < 0.2, 0, S.rand(4, 9, seed=1)).astype(np.float32)
    return [Sample((S.rand(3, 5, 7), 1), {}, "dim 1"), Sample((zeros, -1), {}, "zeros, last dim"),
            Sample((np.array([0, 2, 0, -1.5, 3], np.float32), 0), {}, "two zeros"),
            Sample((S.rand(1, seed=3), 0), {}, "one element"),
            Sample((S.rand(300, 60, seed=4, low=0.9, high=1.1), 0), {}, "large")]


def _cumprod_meta(a, dim):
    _axis(a, dim, "cumprod")
    return MetaArray(a.shape, _cumprod_dtype(a))


def _acc_dtype(a):
    """The accumulator of a scan over ``a``: float64 for the narrower floats, as torch's CPU kernels."""
    return np.dtype(np.float64) if a.dtype.kind == "f" and a.dtype.itemsize < 8 else a.dtype


def _scan(ufunc, a, axis, dtype=None):
    """``ufunc.accumulate`` along ``axis`` in the wider accumulator, each output rounded to ``dtype`` (a's)."""
    dtype = np.dtype(dtype or a.dtype)
    acc = _acc_dtype(np.empty(0, dtype))
    with np.errstate(over="ignore"):  # a float64 product past float32's range rounds to inf, as torch's
        return ufunc.accumulate(np.asarray(a, acc), axis=axis).astype(dtype, copy=False)


@register_op("cumprod", meta=_cumprod_meta, flops=M.per_input_element(1), samples=_cumprod_samples,
             torch=lambda torch, a, dim: torch.cumprod(a, dim),
             bad_inputs=lambda: [BadInput((S.rand(2, 3), 2), {}, IndexError, "dim"),
                                 BadInput((S.rand(2, 3), None), {}, TypeError, "dim")],
             onnx=cumprod_onnx)
class CumprodFunction(Function):
    """torch.cumprod: the running product along dim (integers and bools as int64). The gradient is torch's
    (``_cumprod_grad``): a division by x where the input has no zero, exact products around zeros."""

    @staticmethod
    def forward(ctx, a, dim):
        axis = _axis(a, dim, "cumprod")
        ctx.axis = axis
        ctx.save_for_backward(a)
        if a.ndim == 0:
            return np.array(a, dtype=_cumprod_dtype(a))
        return _scan(np.multiply, a, axis, _cumprod_dtype(a))

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        if a.ndim == 0:
            return g.copy()
        axis, n = ctx.axis, a.shape[ctx.axis]
        if n == 0:
            return np.zeros_like(g)
        if n == 1:
            return g.copy()
        xs = np.moveaxis(a, axis, 0).astype(g.dtype)
        gs = np.moveaxis(g, axis, 0)
        return np.ascontiguousarray(np.moveaxis(_cumprod_grad(xs, gs), 0, axis), dtype=g.dtype)


def _rev_cumsum(w):
    return np.flip(_scan(np.add, np.flip(w, 0), 0), 0)


def _cumprod_grad(xs, gs):
    """torch's cumprod_backward along axis 0 (its NaN / inf results included): without a zero in the whole input
    sum(out[j] g[j], j >= k) / x[k]; with zeros that sum over the elements before a row's first zero, at the
    first zero out[z1 - 1] * sum(g[j] prod(x[z1+1..j]), z1 <= j < z2), and 0 after it."""
    with np.errstate(all="ignore"):
        out = _scan(np.multiply, xs, 0)
        zero = xs == 0
        if not zero.any():
            return _rev_cumsum(out * gs) / xs
        cs = np.cumsum(zero, axis=0)
        before = cs == 0
        grad = np.where(before, _rev_cumsum(np.where(before, out * gs, 0)) / xs, 0).astype(gs.dtype, copy=False)
        span = cs == 1
        first = zero & span
        between = span & ~first
        total = (_scan(np.multiply, np.where(between, xs, 1), 0) * np.where(span, gs, 0)).sum(0)
        prev = np.concatenate([np.ones_like(out[:1]), out[:-1]], 0)
        prev = np.where(first, prev, 0).sum(0)  # out[z1 - 1] (1 for a zero first), 0 in rows without a zero
        return np.where(first, total * prev, grad)


def _lcse_samples():
    return [Sample((S.rand(3, 5, 7), 1), {}, "dim 1"), Sample((S.rand(4, 9, seed=1, low=-30, high=30), -1), {},
                                                              "wide range, last dim"),
            Sample((np.array([1.0, 1.0, -2.0, 1.0], np.float32), 0), {}, "ties"),
            Sample((S.rand(1, seed=3), 0), {}, "one element"),
            Sample((S.rand(300, 60, seed=4), 0), {}, "large")]


def _lcse_meta(a, dim):
    _axis(a, dim, "logcumsumexp")
    return MetaArray(a.shape, a.dtype)


def _lcse_onnx(ctx, op):
    """log(CumSum(exp(x - max))) + max, the max taken over the whole dim (a prefix far below it underflows to
    -inf where forgegrad's pairwise log-add-exp stays finite: values within ~80 of the dim's max are exact)."""
    a = op.args["a"]
    x = op.input("a")
    if a.ndim == 0:
        return [ctx.node("Identity", [x])]
    axis = _axis(a, op.attr("dim"), "logcumsumexp")
    m = ctx.reduce("ReduceMax", x, [axis], True)
    run = ctx.node("CumSum", [ctx.node("Exp", [ctx.node("Sub", [x, m])]), ctx.const(np.int64(axis))])
    return [ctx.node("Add", [ctx.node("Log", [run]), m])]


@register_op("logcumsumexp", meta=_lcse_meta, flops=M.per_input_element(4), samples=_lcse_samples,
             torch=lambda torch, a, dim: torch.logcumsumexp(a, dim),
             bad_inputs=lambda: [BadInput((S.rand(2, 3), 2), {}, IndexError, "dim"),
                                 BadInput((np.arange(4), 0), {}, TypeError, "input")],
             onnx=_lcse_onnx, tol=(1e-5, 2e-5))
class LogcumsumexpFunction(Function):
    """torch.logcumsumexp: ``log(sum(exp(x[:k+1])))`` along dim, accumulated pairwise (np.logaddexp, float32 in
    float64). The gradient is torch's (TensorFlow's) ``exp(x[k] + log(sum(exp(log g[j] - out[j]), j >= k)))``
    over the positive and the negative g apart: three vectorised scans, which keep a long scan's cost linear."""

    @staticmethod
    def forward(ctx, a, dim):
        if a.dtype.kind != "f":
            raise TypeError(f"logcumsumexp(): input must be a floating tensor, got {a.dtype}")
        axis = _axis(a, dim, "logcumsumexp")
        ctx.axis = axis
        out = np.array(a) if a.ndim == 0 else _scan(np.logaddexp, a, axis)
        ctx.save_for_backward(a, out)
        return out

    @staticmethod
    def backward(ctx, g):
        a, out = ctx.saved_tensors
        if a.ndim == 0:
            return g.copy()
        axis, n = ctx.axis, a.shape[ctx.axis]
        if n == 0:
            return np.zeros_like(g)
        xs, os_, gs = (np.moveaxis(v, axis, 0) for v in (a, out, g))
        # log|g| the lowest float where g has the other sign, so those terms vanish from the sum
        lowest = np.finfo(gs.dtype).min
        with np.errstate(all="ignore"):
            log_abs = np.log(np.abs(gs))
            grad = [np.exp(np.flip(_scan(np.logaddexp, np.flip(np.where(m, log_abs, lowest) - os_, 0), 0), 0) + xs)
                    for m in (gs > 0, gs < 0)]
            grad = grad[0] - grad[1]
        return np.ascontiguousarray(np.moveaxis(grad, 0, axis), dtype=g.dtype)


def _pairs(x, dim):
    """x with dim moved last, its length n and the (n, n) mask of j >= k (row k, column j) as a constant."""
    from .._torch_indexing_shape import movedim
    d = single_axis(dim, max(x.ndim, 1))
    xm = movedim(x, d, -1) if x.ndim else x.reshape(1)
    n = xm.shape[-1]
    return d, xm, n, np.triu(np.ones((n, n), bool))


def _back(t, x, d):
    from .._torch_indexing_shape import movedim
    return movedim(t, -1, d).reshape(x.shape) if x.ndim else t.reshape(())


def _cumprod_rule(ctx, args, kwargs, g):
    """grad[k] = sum over j >= k of g[j] * prod(x[i] for i <= j, i != k): the cumprod of x with x[k] set to 1,
    one row per k (n x n per position along the other dims; only a create_graph pass runs it)."""
    from .registry import _OPS
    x, dim = args[0], args[1] if len(args) > 1 else kwargs["dim"]
    d, xm, n, upper = _pairs(x, dim)
    gm = _pairs(g, d)[1]
    eye = np.eye(n, dtype=bool)
    rows = _OPS["where"](eye, 1.0, xm.unsqueeze(-2).expand(tuple(xm.shape[:-1]) + (n, n)))
    grad = (_OPS["cumprod"](rows, -1) * gm.unsqueeze(-2) * _OPS["where"](upper, 1.0, 0.0)).sum(-1)
    return _back(grad, x, d), None


def _lcse_rule(ctx, args, kwargs, g):
    """grad[k] = sum over j >= k of g[j] * exp(x[k] - out[j]) (the exponent masked to -inf below the diagonal)."""
    from .registry import _OPS
    x, dim = args[0], args[1] if len(args) > 1 else kwargs["dim"]
    d, xm, n, upper = _pairs(x, dim)
    out = _OPS["logcumsumexp"](xm, -1)
    gm = _pairs(g, d)[1]
    expo = _OPS["where"](upper, xm.unsqueeze(-1) - out.unsqueeze(-2), float("-inf"))
    return _back((expo.exp() * gm.unsqueeze(-2)).sum(-1), x, d), None


CumprodFunction.op.differentiable_backward = _cumprod_rule
LogcumsumexpFunction.op.differentiable_backward = _lcse_rule
for _fn in (CumprodFunction, LogcumsumexpFunction):
    _fn.op.float64 = _fn  # numpy in the input's dtype: float64 runs the same Function
