"""torch's further reductions: logsumexp, prod (torch's gradient: prod / x without zeros, with zeros the product of
the others, exact for any number of zeros; zeros for two or more zeros in a full reduction), nansum, nanmean,
median/nanmedian over all elements (torch's lower median; the gradient shared evenly among the elements equal to it,
as torch's) and along a dim (values, indices), mode (the most frequent value, the smallest on a tie, at its last
index as torch's CPU kernel), quantile/nanquantile (q a number or a 1-D tensor; linear, lower, higher, midpoint,
nearest).
"""
from __future__ import annotations

import numpy as np

from .._validate import check_bool
from ..autograd import Function
from . import _meta as M
from . import _samples as S
from ._util import normalize_axis, single_axis
from .registry import BadInput, Sample, register_op


def _float(x):
    return x if x.dtype.kind == "f" else x.astype(np.float32)


def _axes(x, dim):
    if dim is not None and not isinstance(dim, (int, np.integer)) and len(tuple(dim)) == 0:
        dim = None
    axes = normalize_axis(dim, x.ndim)
    return axes if x.ndim else ()  # a 0-d input takes dim 0 / -1 as torch does, but numpy has no axis 0 there


def _keep_shape(shape, axes):
    return tuple(1 if i in axes else s for i, s in enumerate(shape))


def _reduced(shape, axes, keepdim):
    return _keep_shape(shape, axes) if keepdim else tuple(s for i, s in enumerate(shape) if i not in axes)


def _meta_reduce(kind):
    def meta(a, dim=None, keepdim=False, dtype=None):
        dt = np.dtype(np.float32) if kind == "float" and a.dtype.kind != "f" else a.dtype
        if kind == "int":
            dt = a.dtype if a.dtype.kind == "f" else np.dtype(np.int64)
        if dtype is not None:
            from ..dtypes import to_numpy
            dt = np.dtype(to_numpy(dtype))
        return M.MetaArray(_reduced(a.shape, _axes(a, dim), keepdim), dt)
    return meta


def _reduce_samples(extra=()):
    def samples():
        x = S.rand(3, 5, 7)
        return [Sample((x,), {}, "all"), Sample((x,), {"dim": 1}, "dim 1"), Sample((x,), {"dim": (0, 2)}, "dims 0,2"),
                Sample((x,), {"dim": -1, "keepdim": True}, "keepdim"),
                Sample((S.rand(*S.LARGE),), {"dim": 0}, "large"), *extra]
    return samples


def _bad_dim():
    return [BadInput((S.rand(2, 3),), {"dim": 3}, IndexError, "dim")]


class _Reduce(Function):
    exact_dtype = True

    @staticmethod
    def _save(ctx, a, dim, keepdim):
        ctx.axes = _axes(a, dim)
        ctx.in_shape, ctx.keepdim = a.shape, check_bool(keepdim, "keepdim")
        return ctx.axes

    @staticmethod
    def _back(ctx, g):
        return g if ctx.keepdim else g.reshape(_keep_shape(ctx.in_shape, ctx.axes))


# ---- logsumexp -----------------------------------------------------------------------------------
def _lse_rule(ctx, args, kwargs, g):
    from ._double_backward import _arg, _expand_back
    from .registry import _OPS
    x = args[0]
    dim, keepdim = _arg(args, kwargs, 1, "dim"), _arg(args, kwargs, 2, "keepdim", False)
    axes = _axes(x._data, dim)
    out = ctx.__dict__.get("graph_outputs", {}).get(0)
    if out is None:
        out = _OPS["logsumexp"](x, dim, keepdim)
    return (_expand_back(g, x.shape, axes, keepdim) * (x - _expand_back(out, x.shape, axes, keepdim)).exp(),)


@register_op("logsumexp", meta=_meta_reduce("float"), flops=M.per_input_element(3),
             samples=_reduce_samples([Sample((np.array([[1.0, -np.inf], [-np.inf, -np.inf]], np.float32),),
                                             {"dim": 1}, "-inf rows", grad=(), onnx=False)]),
             torch=lambda torch, a, dim=None, keepdim=False: torch.logsumexp(
                 a, tuple(range(a.ndim)) if dim is None else dim, keepdim=keepdim),
             onnx=lambda ctx, op: [ctx.reduce("ReduceLogSumExp", op.input("input", op.out_dtype()),
                                              list(_axes(op.args["input"]._data, op.attr("dim"))),
                                              bool(op.attr("keepdim", False)))],
             bad_inputs=_bad_dim, differentiable_backward=_lse_rule)
class LogsumexpFunction(_Reduce):
    """log(sum(exp(input))) over dim, shifted by the maximum (a row of -inf gives -inf, +inf gives +inf)."""

    @staticmethod
    def forward(ctx, input, dim=None, keepdim=False):
        x = _float(input)
        axes = _Reduce._save(ctx, x, dim, keepdim)
        m = np.max(x, axis=axes, keepdims=True) if x.size else np.zeros(_keep_shape(x.shape, axes), x.dtype)
        m = np.where(np.isinf(m), np.zeros((), x.dtype), m)
        with np.errstate(divide="ignore"):
            out = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
        ctx.save_for_backward(x, out)
        return out if ctx.keepdim else np.squeeze(out, axes)

    @staticmethod
    def backward(ctx, g):
        x, out = ctx.saved_tensors
        return (_Reduce._back(ctx, g) * np.exp(x - out)).astype(x.dtype)


# ---- prod -----------------------------------------------------------------------------------------
def _prod_dtype(a, dtype):
    if dtype is not None:
        from ..dtypes import to_numpy
        return np.dtype(to_numpy(dtype))
    return a.dtype if a.dtype.kind == "f" else np.dtype(np.int64)


def _others_product(x, axis):
    """The product of every other element along ``axis`` (exclusive prefix times exclusive suffix products):
    torch's gradient of prod, also where the input has one or more zeros."""
    if x.shape[axis] == 0:  # an empty axis: nothing to multiply (the product is 1, its gradient empty)
        return np.zeros_like(x)
    x = np.moveaxis(x, axis, -1)
    ones = np.ones(x.shape[:-1] + (1,), x.dtype)
    pre = np.cumprod(np.concatenate([ones, x[..., :-1]], -1), -1)
    suf = np.flip(np.cumprod(np.concatenate([ones, np.flip(x[..., 1:], -1)], -1), -1), -1)
    return np.moveaxis(pre * suf, -1, axis)


def _prod_samples():
    rng = np.random.default_rng(4)
    z = S.rand(4, 6, 5, low=0.5, high=1.5)
    z[0, 1, 2] = 0  # one zero in a row
    z[1, 2, 1:3] = 0  # two zeros in a row
    z[2, :, 0] = 0
    return [Sample((S.rand(3, 5, 7, low=0.6, high=1.4),), {}, "all"), Sample((z,), {"dim": 2}, "zeros dim 2"),
            Sample((z,), {"dim": 1, "keepdim": True}, "zeros keepdim"), Sample((z[:2, :3, :2],), {}, "zeros all"),
            Sample((rng.integers(-3, 4, (3, 4)).astype(np.int64),), {"dim": 0}, "int64", onnx=False),
            Sample((S.rand(*S.LARGE, low=0.9, high=1.1),), {"dim": 0}, "large")]


@register_op("prod", meta=_meta_reduce("int"), flops=M.per_input_element(1), samples=_prod_samples,
             torch=lambda torch, a, dim=None, keepdim=False, dtype=None: torch.prod(a, dtype=dtype) if dim is None
             else torch.prod(a, dim, keepdim=keepdim, dtype=dtype), tol=(1e-5, 1e-6),
             onnx=lambda ctx, op: [ctx.reduce("ReduceProd", op.input("input", op.out_dtype()),
                                              list(_axes(op.args["input"]._data, op.attr("dim"))),
                                              bool(op.attr("keepdim", False)))],
             bad_inputs=lambda: _bad_dim() + [BadInput((S.rand(2, 3),), {"dim": (0, 1)}, TypeError, "dim")])
class ProdFunction(_Reduce):
    """torch.prod(input, dim=None, keepdim=False, dtype=None): one dim (an int) or all elements; integers and bool
    multiply as int64."""

    @staticmethod
    def forward(ctx, input, dim=None, keepdim=False, dtype=None):
        if dim is not None:
            single_axis(dim, max(input.ndim, 1), "prod(): dim")
        x = input.astype(_prod_dtype(input, dtype), copy=False)
        if dim is None:
            ctx.flat = True
            ctx.save_for_backward(x)
            ctx.in_shape, ctx.keepdim = x.shape, False
            return np.asarray(np.prod(x), dtype=x.dtype)
        ctx.flat = False
        axes = _Reduce._save(ctx, x, dim, keepdim)
        ctx.save_for_backward(x)
        return np.prod(x, axis=axes, keepdims=ctx.keepdim)

    @staticmethod
    def backward(ctx, g):
        # torch's prod_backward: without a zero g * prod / x (NaN at an inf or NaN element); with zeros the product
        # of the others (over all elements: only for one zero, two or more give zeros)
        (x,) = ctx.saved_tensors
        if x.ndim == 0:
            return g.astype(x.dtype)
        zeros = np.count_nonzero(x == 0)
        if ctx.flat:
            if zeros == 0:
                return (g * (np.prod(x) / x)).astype(x.dtype)
            if zeros > 1:
                return np.zeros_like(x)
            return (g * _others_product(x.reshape(-1), 0).reshape(x.shape)).astype(x.dtype)
        axis = ctx.axes[0]
        if zeros == 0:
            return (_Reduce._back(ctx, g) * (np.prod(x, axis=axis, keepdims=True) / x)).astype(x.dtype)
        return (_Reduce._back(ctx, g) * _others_product(x, axis)).astype(x.dtype)


# ---- nansum / nanmean ------------------------------------------------------------------------------
def _nan_samples():
    x = S.rand(3, 5, 7)
    x[0, 1, :3] = np.nan
    x[2, 4, :] = np.nan
    return [Sample((x,), {}, "all"), Sample((x,), {"dim": 2}, "dim 2 (a row all NaN)"),
            Sample((x,), {"dim": (0, 1), "keepdim": True}, "keepdim"), Sample((S.rand(*S.LARGE),), {"dim": 0}, "large")]


def _nansum_onnx(ctx, op, mean=False):
    """ReduceSum of Where(IsNaN(x), 0, x); nanmean divides it by the ReduceSum of the non-NaN mask."""
    dt = op.out_dtype()
    x = op.input("input", dt)
    axes, keep = list(_axes(op.args["input"]._data, op.attr("dim"))), bool(op.attr("keepdim", False))
    nan = ctx.node("IsNaN", [x])
    total = ctx.reduce("ReduceSum", ctx.node("Where", [nan, ctx.const(np.asarray(0, dt)), x]), axes, keep)
    if not mean:
        return [total]
    count = ctx.reduce("ReduceSum", ctx.node("Where", [nan, ctx.const(np.asarray(0, dt)),
                                                       ctx.const(np.asarray(1, dt))]), axes, keep)
    return [ctx.node("Div", [total, count])]


@register_op("nansum", meta=_meta_reduce("int"), flops=M.per_input_element(1), samples=_nan_samples,
             torch=lambda torch, a, dim=None, keepdim=False: torch.nansum(a, dim=dim, keepdim=keepdim),
             onnx=_nansum_onnx, bad_inputs=_bad_dim)
class NansumFunction(_Reduce):
    """Sum with NaN taken as zero; the gradient is zero at a NaN."""

    @staticmethod
    def forward(ctx, input, dim=None, keepdim=False):
        axes = _Reduce._save(ctx, input, dim, keepdim)
        ctx.nan = np.isnan(input) if input.dtype.kind == "f" else None
        dt = input.dtype if input.dtype.kind == "f" else np.int64
        return np.asarray(np.nansum(input, axis=axes, keepdims=ctx.keepdim, dtype=dt), dtype=dt)

    @staticmethod
    def backward(ctx, g):
        g = np.broadcast_to(_Reduce._back(ctx, g), ctx.in_shape)
        return np.where(ctx.nan, np.zeros((), g.dtype), g)


@register_op("nanmean", meta=_meta_reduce("same"), flops=M.per_input_element(1), samples=_nan_samples,
             torch=lambda torch, a, dim=None, keepdim=False: torch.nanmean(a, dim=dim, keepdim=keepdim),
             onnx=lambda ctx, op: _nansum_onnx(ctx, op, mean=True),
             bad_inputs=lambda: _bad_dim() + [BadInput((np.arange(3),), {}, TypeError, "floating")])
class NanmeanFunction(_Reduce):
    """Mean of the non-NaN elements (NaN where there is none); float inputs only, as torch's."""

    @staticmethod
    def forward(ctx, input, dim=None, keepdim=False):
        if input.dtype.kind != "f":
            raise TypeError(f"nanmean(): expected a floating point input, got {input.dtype}")
        axes = _Reduce._save(ctx, input, dim, keepdim)
        ctx.nan = np.isnan(input)
        ctx.count = np.sum(~ctx.nan, axis=axes, keepdims=True).astype(input.dtype)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.nansum(input, axis=axes, keepdims=True, dtype=input.dtype) / ctx.count
        return out if ctx.keepdim else np.squeeze(out, axes)

    @staticmethod
    def backward(ctx, g):
        with np.errstate(invalid="ignore", divide="ignore"):  # an all-NaN row: inf * 0 = NaN, as torch's
            return ((_Reduce._back(ctx, g) / ctx.count) * ~ctx.nan).astype(g.dtype)


for _fn in (LogsumexpFunction, ProdFunction, NansumFunction, NanmeanFunction):
    _fn.op.float64 = _fn  # numpy in the input's dtype: float64 runs the same Function

from . import _reduce_select  # noqa: E402,F401  (median, mode, quantile: the selecting reductions)

__all__ = ["LogsumexpFunction", "ProdFunction", "NansumFunction", "NanmeanFunction"]


# ---- double backward of the selecting reductions ------------------------------------------------------
def _selection_rule(ctx, args, kwargs, g, *_):
    """Gradient of a reduction whose backward is ``g`` (per output, expanded over its row) times coefficients that
    are locally constant in the input (which elements are picked, their interpolation weights, the NaN mask): the
    coefficients come from the op's own array backward on ones (a LocallyConstantFunction of the input), so the
    rule is linear in ``g`` and its derivative in the input is zero, as torch's."""
    from ._double_backward import _expand_back, _flat
    x, fn = args[0], type(ctx)
    raw = [a._data if hasattr(a, "_data") else a for a in args]
    name = fn.op.name
    if name in ("median", "nanmedian"):
        axes, keepdim = tuple(range(x.ndim)), False
    elif name in ("quantile", "nanquantile"):
        dim = raw[2] if len(raw) > 2 else kwargs.get("dim")
        keepdim = bool(raw[3] if len(raw) > 3 else kwargs.get("keepdim", False))
        axes = tuple(range(x.ndim)) if dim is None else (single_axis(dim, max(x.ndim, 1)),)
    elif name in ("median_dim", "nanmedian_dim", "mode"):
        dim = raw[1] if len(raw) > 1 else kwargs.get("dim", -1)
        keepdim = bool(raw[2] if len(raw) > 2 else kwargs.get("keepdim", False))
        axes = (single_axis(dim, max(x.ndim, 1)),)
    else:
        axes = _axes(x._data, raw[1] if len(raw) > 1 else kwargs.get("dim"))
        keepdim = bool(raw[2] if len(raw) > 2 else kwargs.get("keepdim", False))
    quantiles = name in ("quantile", "nanquantile") and np.ndim(raw[1]) == 1

    def coefficients(k):
        def fn_of(xv):
            c = fn.__new__(fn)
            c.needs_input_grad = [True] + [False] * (len(raw) - 1)
            out = fn.forward(c, xv, *raw[1:], **kwargs)
            o = out[0] if isinstance(out, tuple) else out
            ones = np.zeros(o.shape, o.dtype)
            if k is None:
                ones[...] = 1
            else:
                ones[k] = 1
            res = fn.backward(c, ones, None) if isinstance(out, tuple) else fn.backward(c, ones)
            return res[0] if isinstance(res, tuple) else res
        return _flat(x, fn_of)

    def spread(gk):
        if x.ndim == 0:
            return gk.reshape(())
        return _expand_back(gk.reshape(()) if gk.ndim == 0 and not keepdim else gk, x.shape, axes, keepdim)

    if not quantiles:
        return (spread(g) * coefficients(None),) + (None,) * (len(args) - 1)
    total = None
    for k in range(g.shape[0]):
        term = spread(g[k]) * coefficients(k)
        total = term if total is None else total + term
    return (total,) + (None,) * (len(args) - 1)


for _name in ("nansum", "nanmean", "median", "nanmedian", "median_dim", "nanmedian_dim", "mode", "quantile",
              "nanquantile"):
    from .registry import _OPS as _REG
    _REG[_name].differentiable_backward = _selection_rule


def _prod_rule(ctx, args, kwargs, g):
    """prod's gradient as ops: ``g`` times the product of the other elements of the row, each such product one
    prod over the row with that element replaced by 1 (a row of n becomes n rows: memory n times the input, only in
    a create_graph pass). Exact with zeros, and differentiable again (through this same rule)."""
    from ._double_backward import _arg, _expand_back, _where
    from .registry import _OPS
    x = args[0]
    dim, keepdim = _arg(args, kwargs, 1, "dim"), _arg(args, kwargs, 2, "keepdim", False)
    if not x.dtype.is_floating_point:
        return (None,) * len(args)
    if dim is None:
        axis, xt, shape = 0, x.reshape(-1), x.shape
    else:
        axis = single_axis(dim, max(x.ndim, 1))
        xt, shape = x, x.shape
    if xt.ndim == 0:  # the product of one number: its gradient is g
        return (g.reshape(()) * 1.0,) + (None,) * (len(args) - 1)
    order = [i for i in range(xt.ndim) if i != axis] + [axis]
    xm = xt.permute(*order)  # (..., n)
    n = xm.shape[-1]
    rows = xm.unsqueeze(-2).expand(*xm.shape[:-1], n, n)
    others = _OPS["prod"](_where(np.eye(n, dtype=bool), 1.0, rows), -1)  # (..., n): row i without element i
    back = [order.index(i) for i in range(xt.ndim)]
    others = others.permute(*back)
    if dim is None:
        return (g.reshape(()) * others.reshape(*shape),) + (None,) * (len(args) - 1)
    return (_expand_back(g, shape, (axis,), keepdim) * others,) + (None,) * (len(args) - 1)


_REG["prod"].differentiable_backward = _prod_rule
