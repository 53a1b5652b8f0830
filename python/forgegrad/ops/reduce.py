"""Reductions over axes: sum, mean, max/min (values with the gradient routed to the winners), and the
running sum along one axis (cumsum)."""
from __future__ import annotations

import math

import numpy as np

from .._validate import check_bool
from ..autograd import Function
from ..kernels import reduce_rows as _rows
from . import _meta as M
from . import _samples as S
from ._util import normalize_axis, single_axis
from .registry import BadInput, Sample, register_op

_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)


def _reduce_samples():
    x = S.rand(3, 5, 7)
    return [Sample((x,), {}, "all"), Sample((x,), {"dim": 1}, "dim 1"), Sample((x,), {"dim": (0, 2)}, "dims 0,2"),
            Sample((x,), {"dim": -1, "keepdim": True}, "keepdim"), Sample((S.rand(*S.LARGE),), {"dim": 0}, "large")]


def _dims(a, dim):
    return tuple(range(a.ndim)) if dim is None else dim


def _bad_dim():
    return [BadInput((S.rand(2, 3),), {"dim": 3}, IndexError, "dim")]


def _dim_samples():
    x = S.rand(3, 5, 7)
    return [Sample((x, 1)), Sample((x, -1), {"keepdim": True}, "keepdim"), Sample((S.rand(*S.LARGE), 0), name="large")]


def _save_axes(ctx, a, dim, keepdim):
    """The normalized axes of dim, saved with the input shape and keepdim for _expand_back."""
    axes = normalize_axis(dim, a.ndim)
    if a.ndim == 0:
        axes = ()  # torch takes dim 0 / -1 of a 0-d tensor; numpy has no axis there
    ctx.in_shape, ctx.axes, ctx.keepdim = a.shape, axes, check_bool(keepdim, "keepdim")  # not truthiness
    return axes


# Reductions of more float32 values than this accumulate in float64. numpy sums pairwise only along
# a contiguous innermost axis; across rows (axis 0 of a matrix, a broadcast axis) it adds one value
# after another, and 2**26 equal values then averaged 0.5470 for 0.5478.
_FLOAT32_EXACT_COUNT = 4096


def _float32_sum(fn, a, axes, keepdim):
    """np.sum or np.mean of float32 ``a`` over ``axes`` as float32, accumulated in float64 when long."""
    n = 1
    for ax in axes:
        n *= a.shape[ax]
    if n <= _FLOAT32_EXACT_COUNT:
        return fn(a, axis=axes, keepdims=keepdim, dtype=np.float32)
    return np.asarray(fn(a, axis=axes, keepdims=keepdim, dtype=np.float64), np.float32)


def _rows_forward(ctx, a, axes, keepdim, mean):
    """The sum / mean of float32 ``a`` over its trailing axes as R contiguous rows (forgegrad.kernels.reduce_rows:
    float64 accumulation, many rows a vector pass); for other axes (ctx.rows None) the leading-axes, middle-axes,
    permuted-view or any-axes kernels below, or None where none fits."""
    rows = ctx.rows = _rows.trailing_rows(a, axes)
    if rows is None:
        y = _lead_forward(a, axes, keepdim, mean)
        if y is None:
            y = _mid_forward(a, axes, keepdim, mean)
        if y is None:
            y = _permuted_forward(a, axes, keepdim, mean)
        return _axes_forward(a, axes, keepdim, mean) if y is None else y
    y = _rows.sum_rows(a.reshape(rows), mean)
    lead = a.shape[:a.ndim - len(axes)]
    return y.reshape(lead + (1,) * len(axes) if keepdim else lead)


def _numpy_sums_columns_as_fast(rows, columns):
    """Whether numpy's float32 adds, row after row, sum ``rows`` rows of ``columns`` contiguous columns as fast as the
    kernels (memory bound; the kernel converts to float64): up to _FLOAT32_EXACT_COUNT rows of >= 256 columns.
    Narrower columns or longer sums run the kernel (rough, 1 thread: (4096, 64).sum(0) 0.09 -> 0.04 ms, (8192, 512)
    2.4 -> 0.5-1.1, (64, 256, 14, 14) over (0, 2, 3) 2.2 -> 0.3)."""
    return rows <= _FLOAT32_EXACT_COUNT and columns >= 256


def _lead_forward(a, axes, keepdim, mean):
    """The sum / mean of float32 ``a`` over leading axes (and trailing ones with them) on forgegrad.kernels.
    reduce_rows.sum_lead (float64 accumulation in a fixed order), or None for other axes. Its gradient is the
    broadcast the other reductions use."""
    shape = _rows.lead_shape(a, axes)
    if shape is None or (shape[2] == 1 and _numpy_sums_columns_as_fast(shape[0], shape[1])):
        return None
    y = _rows.sum_lead(a.reshape(shape), mean)
    out = [1 if i in axes else n for i, n in enumerate(a.shape)]
    return y.reshape(out if keepdim else [n for i, n in enumerate(a.shape) if i not in axes])


def _mid_forward(a, axes, keepdim, mean):
    """The sum / mean of float32 ``a`` over a block of middle axes (``x.mean(1)`` of (B, T, C)) on forgegrad.kernels.
    reduce_rows.sum_mid (float64 accumulation in a fixed order), or None for other axes. Its gradient is the
    broadcast the other reductions use. (Rows of > 1024 floats, memory bound, measured as fast as numpy's float32
    adds at 1 thread, 0.94-1.1x, rough: they run the kernel too, for its precision and its threads.)"""
    shape = _rows.mid_shape(a, axes)
    if shape is None:
        return None
    y = _rows.sum_mid(a.reshape(shape), mean)
    out = [1 if i in axes else n for i, n in enumerate(a.shape)]
    return y.reshape(out if keepdim else [n for i, n in enumerate(a.shape) if i not in axes])


def _permuted_forward(a, axes, keepdim, mean):
    """The sum / mean of a non-contiguous float32 ``a`` that is a permuted view of contiguous memory (``x.transpose(1,
    2).sum(1)``): the same reduction of the contiguous layout (its trailing, leading or middle axes) on the kernels
    above, its result put back in ``a``'s axis order; None when ``a`` is not such a view or the axes fit none."""
    order = _rows.memory_order(a)
    if order is None:
        return None
    b = a.transpose(order)
    where = {ax: j for j, ax in enumerate(order)}  # a's axis -> its position in b
    baxes = tuple(sorted(where[ax] for ax in axes))
    rows = _rows.trailing_rows(b, baxes)
    if rows is not None:
        y = _rows.sum_rows(b.reshape(rows), mean)
    else:
        y = _lead_forward(b, baxes, False, mean)
        if y is None:
            y = _mid_forward(b, baxes, False, mean)
        if y is None:
            return None
    kept = [j for j in range(b.ndim) if j not in baxes]  # b's kept axes, in b's order
    y = y.reshape([b.shape[j] for j in kept])
    y = y.transpose(np.argsort([order[j] for j in kept]))  # back in a's axis order
    y = y if y.flags.c_contiguous else y.copy()  # (not ascontiguousarray: it makes a 0-d sum 1-d)
    return y.reshape([1 if i in axes else n for i, n in enumerate(a.shape)]) if keepdim else y


# Below this many values numpy's sum over several axes takes 1-2 µs less than finding the layout and calling sum_axes
# (2.6-2.9 vs 3.6-4.7 µs of 7-9 per op, rough, 1 thread); from 2880 values on the kernel is faster (8.7 vs 10.5 µs).
_AXES_MIN_SIZE = 2048


def _axes_forward(a, axes, keepdim, mean):
    """The sum / mean of float32 ``a`` over non-adjacent axes (``x.sum((1, 3))``, ``x.sum((0, 2, 4))``) or of a
    sliced view (``x[:, :5].sum(-1)``) on forgegrad.kernels.reduce_rows.sum_axes (float64 in a fixed order), its
    result put back in ``a``'s axis order; None where numpy stays: a layout sum_axes does not take (reduce_rows.
    axes_layout), sums down the rows of wide columns (as _lead_forward), or fewer than _AXES_MIN_SIZE values."""
    if a.size < _AXES_MIN_SIZE:
        return None
    lay = _rows.axes_layout(a, axes)
    if lay is None:
        return None
    b = lay.blocks
    if len(b) == 2 and b[0][1] and _numpy_sums_columns_as_fast(b[0][0], b[1][0]):
        return None
    y = _rows.sum_axes(lay.view, lay.reduced, mean)  # its axes: lay.kept
    if any(p > q for p, q in zip(lay.kept, lay.kept[1:])):  # back in a's axis order
        y = y.transpose(sorted(range(len(lay.kept)), key=lay.kept.__getitem__)).copy()
    return y.reshape([1 if i in axes else n for i, n in enumerate(a.shape)]) if keepdim else y


def _rows_backward(ctx, g, divisor):
    """The gradient of _rows_forward: g[r] / divisor broadcast into row r, or None when it did not run."""
    if getattr(ctx, "rows", None) is None or g.dtype != np.float32:
        return None
    return _rows.fill_rows(g, ctx.rows[1], divisor).reshape(ctx.in_shape)


def _expand_back(g, in_shape, axes, keepdim):
    """Reshape a reduced gradient so it broadcasts against the input."""
    if not keepdim:
        shape = list(in_shape)
        for a in axes:
            shape[a] = 1
        g = g.reshape(shape)
    return g


@register_op("sum", meta=M.reduction, flops=M.per_input_element(1), samples=_reduce_samples,
             torch=lambda torch, a, dim=None, keepdim=False: torch.sum(a, _dims(a, dim), keepdim=keepdim),
             bad_inputs=_bad_dim)
class SumFunction(Function):
    @staticmethod
    def forward(ctx, a, dim=None, keepdim=False):
        axes = _save_axes(ctx, a, dim, keepdim)
        if a.dtype == _F32:
            y = _rows_forward(ctx, a, axes, keepdim, mean=False)
            return _float32_sum(np.sum, a, axes, keepdim) if y is None else y
        # torch: bool and integers sum in int64 (numpy's default sums uint8 in uint64, a dtype forgegrad lacks)
        return np.sum(a, axis=axes, keepdims=keepdim, dtype=a.dtype if a.dtype.kind == "f" else np.int64)

    @staticmethod
    def backward(ctx, g):
        gx = _rows_backward(ctx, g, 1.0)
        if gx is not None:
            return gx
        g = _expand_back(g, ctx.in_shape, ctx.axes, ctx.keepdim)
        return np.broadcast_to(g, ctx.in_shape).astype(g.dtype, copy=True)


def _cumsum_dtype(a) -> np.dtype:
    """torch's rule: floats keep their dtype, bool and integers sum as int64."""
    return a.dtype if a.dtype.kind == "f" else np.dtype(np.int64)


def _cumsum_samples():
    x = S.rand(3, 5, 7)
    return [Sample((x, 1), {}, "dim 1"), Sample((x, -1), {}, "last dim"), Sample((S.rand(11),), {"dim": 0}, "1-d"),
            Sample((S.rand(*S.LARGE), 0), name="large")]


@register_op("cumsum", meta=lambda a, dim: M.MetaArray(a.shape, _cumsum_dtype(a)), flops=M.per_input_element(1),
             samples=_cumsum_samples, torch=lambda torch, a, dim: torch.cumsum(a, dim),
             bad_inputs=lambda: [BadInput((S.rand(2, 3), 2), {}, IndexError, "dim"),
                                 BadInput((S.rand(2, 3), None), {}, TypeError, "dim")])
class CumsumFunction(Function):
    """The running sum of ``a`` along ``dim`` (torch.cumsum), added in index order; bool and integer
    inputs sum as int64, float32 runs longer than _FLOAT32_EXACT_COUNT in float64 (as ``sum``). Its gradient
    is the running sum of the gradient from the other end."""

    @staticmethod
    def forward(ctx, a, dim):
        ctx.axis = single_axis(dim, max(a.ndim, 1), "cumsum(): dim")
        if a.ndim == 0:
            return np.array(a, dtype=_cumsum_dtype(a))
        if a.dtype == np.float32 and a.shape[ctx.axis] > _FLOAT32_EXACT_COUNT:  # long runs add up in float64
            return np.cumsum(a, axis=ctx.axis, dtype=np.float64).astype(np.float32)
        return np.cumsum(a, axis=ctx.axis, dtype=_cumsum_dtype(a))

    @staticmethod
    def backward(ctx, g):
        if g.ndim == 0:
            return g.copy()
        flipped = np.flip(g, axis=ctx.axis)
        wide = g.dtype == np.float32 and g.shape[ctx.axis] > _FLOAT32_EXACT_COUNT
        run = np.cumsum(flipped, axis=ctx.axis, dtype=np.float64 if wide else g.dtype)
        return np.ascontiguousarray(np.flip(run, axis=ctx.axis), dtype=g.dtype)


@register_op("mean", meta=M.float_reduction, flops=M.per_input_element(1), samples=_reduce_samples,
             torch=lambda torch, a, dim=None, keepdim=False: torch.mean(a, _dims(a, dim), keepdim=keepdim),
             bad_inputs=_bad_dim)
class MeanFunction(Function):
    @staticmethod
    def forward(ctx, a, dim=None, keepdim=False):
        axes = _save_axes(ctx, a, dim, keepdim)
        n = 1
        for ax in axes:
            n *= a.shape[ax]
        ctx.n = n
        if n == 0:  # torch's NaN, without numpy's "Mean of empty slice" warning (0 / 0 runs quiet: see _quiet)
            return np.sum(a, axis=axes, keepdims=keepdim, dtype=a.dtype) / a.dtype.type(0)
        if a.dtype == _F64:
            return np.mean(a, axis=axes, keepdims=keepdim, dtype=np.float64)
        y = _rows_forward(ctx, a, axes, keepdim, mean=True)
        return _float32_sum(np.mean, a, axes, keepdim) if y is None else y

    @staticmethod
    def backward(ctx, g):
        gx = _rows_backward(ctx, g, ctx.n)
        if gx is not None:
            return gx
        g = _expand_back(g, ctx.in_shape, ctx.axes, ctx.keepdim)
        return np.broadcast_to(g / g.dtype.type(max(ctx.n, 1)), ctx.in_shape).astype(g.dtype, copy=True)


@register_op("amax", meta=M.reduction, flops=M.per_input_element(1), samples=_reduce_samples,
             torch=lambda torch, a, dim=None, keepdim=False: torch.amax(a, _dims(a, dim), keepdim=keepdim),
             bad_inputs=lambda: _bad_dim() + [BadInput((S.rand(2, 0),), {"dim": 1}, ValueError, "empty")])
class AmaxFunction(Function):
    """max over axes; ties share the gradient equally (torch.amax's rule)."""

    fn = staticmethod(np.max)

    @classmethod
    def _fwd(cls, ctx, a, dim, keepdim):
        keepdim = check_bool(keepdim, "keepdim")  # (None and 'yes' had been read by their truth value)
        axes = normalize_axis(dim, a.ndim)
        if a.ndim == 0:
            axes = ()  # torch takes dim 0 / -1 of a 0-d tensor; numpy has no axis there
        if any(a.shape[ax] == 0 for ax in axes):
            raise ValueError(f"max/min of an empty dimension (input shape {a.shape})")
        y = cls.fn(a, axis=axes, keepdims=True)
        ctx.save_for_backward(a, y)
        ctx.axes, ctx.keepdim = axes, keepdim
        return y if keepdim else np.squeeze(y, axis=axes)

    @staticmethod
    def forward(ctx, a, dim=None, keepdim=False):
        return AmaxFunction._fwd(ctx, a, dim, keepdim)

    @staticmethod
    def backward(ctx, g):
        a, y = ctx.saved_tensors
        mask = (a == y)
        count = mask.sum(axis=ctx.axes, keepdims=True)
        g = _expand_back(g, a.shape, ctx.axes, ctx.keepdim)
        return (mask * (g / count)).astype(g.dtype)


@register_op("amin", meta=M.reduction, flops=M.per_input_element(1), samples=_reduce_samples,
             torch=lambda torch, a, dim=None, keepdim=False: torch.amin(a, _dims(a, dim), keepdim=keepdim),
             bad_inputs=_bad_dim)
class AminFunction(AmaxFunction):
    fn = staticmethod(np.min)

    @staticmethod
    def forward(ctx, a, dim=None, keepdim=False):
        return AminFunction._fwd(ctx, a, dim, keepdim)


@register_op("max_dim", meta=M.reduction_with_indices, flops=M.per_input_element(1), samples=_dim_samples,
             torch=lambda torch, a, dim, keepdim=False: tuple(torch.max(a, dim, keepdim=keepdim)),
             bad_inputs=lambda: [BadInput((S.rand(2, 3), 2), {}, IndexError, "dim")])
class MaxDimFunction(Function):
    """torch.max(x, dim): (values, indices); the gradient goes to the returned index."""

    non_differentiable_outputs = (1,)
    pick = staticmethod(np.argmax)

    @classmethod
    def _fwd(cls, ctx, a, dim, keepdim):
        keepdim = check_bool(keepdim, "keepdim")  # not truthiness: 'False' is no bool
        axis = single_axis(dim, a.ndim)
        if a.shape[axis] == 0:
            raise ValueError(f"max/min over an empty dimension {dim} (input shape {a.shape})")
        idx = cls.pick(a, axis=axis)
        idx_k = np.expand_dims(idx, axis)
        vals = np.take_along_axis(a, idx_k, axis=axis)
        ctx.axis, ctx.keepdim, ctx.in_shape = axis, keepdim, a.shape
        ctx.save_for_backward(idx_k)
        if keepdim:
            return vals, idx_k.astype(np.int64)
        return np.squeeze(vals, axis), idx.astype(np.int64)

    @staticmethod
    def forward(ctx, a, dim, keepdim=False):
        return MaxDimFunction._fwd(ctx, a, dim, keepdim)

    @staticmethod
    def backward(ctx, g, _gidx=None):
        (idx_k,) = ctx.saved_tensors
        if not ctx.keepdim:
            g = np.expand_dims(g, ctx.axis)
        out = np.zeros(ctx.in_shape, dtype=g.dtype)
        np.put_along_axis(out, idx_k, g, axis=ctx.axis)
        return out


@register_op("min_dim", meta=M.reduction_with_indices, flops=M.per_input_element(1), samples=_dim_samples,
             torch=lambda torch, a, dim, keepdim=False: tuple(torch.min(a, dim, keepdim=keepdim)),
             bad_inputs=lambda: [BadInput((S.rand(2, 3), -3), {}, IndexError, "dim")])
class MinDimFunction(MaxDimFunction):
    pick = staticmethod(np.argmin)

    @staticmethod
    def forward(ctx, a, dim, keepdim=False):
        return MinDimFunction._fwd(ctx, a, dim, keepdim)


# ---- cuda ------------------------------------------------------------------------------------------------
# The reductions on DeviceArrays through cuda/reduce.cu (one block per output, fixed summation order).
# argmax / argmin (ops.compare) register here too: they share the kernel.
from . import _cuda_nn as CN  # noqa: E402


def _cuda_out_shape(in_shape, axes, keepdim):
    return CN.keepdim_shape(in_shape, axes) if keepdim else tuple(s for i, s in enumerate(in_shape) if i not in axes)


class SumCudaFunction(Function):
    """sum on cuda; backward broadcasts g back to the input shape."""

    scale_by_count = False

    @staticmethod
    def forward(ctx, a, dim=None, keepdim=False):
        axes = _save_axes(ctx, a, dim, keepdim)
        n = CN.numel(a.shape[ax] for ax in axes)
        ctx.scale = (1.0 / n if n else math.nan) if type(ctx).scale_by_count else 1.0
        return CN.kernels().reduce("sum", a, list(axes), bool(keepdim), ctx.scale)

    @staticmethod
    def backward(ctx, g):
        g = CN.reshape(g, CN.keepdim_shape(ctx.in_shape, ctx.axes))
        return CN.pw("mul_scaled", g, 1.0, alpha=ctx.scale, shape=ctx.in_shape)


class MeanCudaFunction(SumCudaFunction):
    """mean on cuda: the sum kernel scaled by 1/n (nan for an empty reduction, as numpy)."""

    scale_by_count = True


SumFunction.op.add_device("cuda", SumCudaFunction)
MeanFunction.op.add_device("cuda", MeanCudaFunction)


class AmaxCudaFunction(Function):
    """amax / amin on cuda; ties share the gradient equally (count of the winners per output)."""

    kind = "max"

    @staticmethod
    def forward(ctx, a, dim=None, keepdim=False):
        axes = normalize_axis(dim, a.ndim)
        if a.ndim == 0:
            axes = ()  # torch takes dim 0 / -1 of a 0-d tensor; numpy has no axis there
        if any(a.shape[ax] == 0 for ax in axes):
            raise ValueError(f"max/min of an empty dimension (input shape {tuple(a.shape)})")
        y = CN.kernels().reduce(type(ctx).kind, a, list(axes), True)
        ctx.save_for_backward(a, y)
        ctx.axes = axes
        return y if keepdim else CN.reshape(y, _cuda_out_shape(a.shape, axes, False))

    @staticmethod
    def backward(ctx, g):
        a, y = ctx.saved_tensors
        count = CN.kernels().reduce("count_eq", a, list(ctx.axes), True, center=y)
        g = CN.reshape(g, y.shape)
        return CN.pw("amax_grad", a, y, g, count, shape=a.shape)


class AminCudaFunction(AmaxCudaFunction):
    kind = "min"


AmaxFunction.op.add_device("cuda", AmaxCudaFunction)
AminFunction.op.add_device("cuda", AminCudaFunction)


class MaxDimCudaFunction(Function):
    """torch.max(x, dim) on cuda: (values, int64 indices), the first winner; the gradient goes to it."""

    non_differentiable_outputs = (1,)
    is_max = True

    @staticmethod
    def forward(ctx, a, dim, keepdim=False):
        keepdim = check_bool(keepdim, "keepdim")
        axis = single_axis(dim, a.ndim)
        if a.ndim and a.shape[axis] == 0:
            raise ValueError(f"max/min over an empty dimension {dim} (input shape {tuple(a.shape)})")
        idx, vals = CN.kernels().arg_reduce(type(ctx).is_max, a, axis, keepdim)
        ctx.save_for_backward(idx)
        ctx.axis, ctx.in_shape = axis, tuple(a.shape)
        return vals, idx

    @staticmethod
    def backward(ctx, g, _gidx=None):
        (idx,) = ctx.saved_tensors
        return CN.kernels().scatter_axis(g, idx, list(ctx.in_shape), ctx.axis)


class MinDimCudaFunction(MaxDimCudaFunction):
    is_max = False


MaxDimFunction.op.add_device("cuda", MaxDimCudaFunction)
MinDimFunction.op.add_device("cuda", MinDimCudaFunction)


def _register_arg_cuda():
    from .compare import ArgMaxFunction, ArgMinFunction

    class ArgMaxCudaFunction(Function):
        """argmax on cuda: int64 index of the first largest value (flattened when dim is None)."""

        non_differentiable_outputs = (0,)
        is_max = True

        @staticmethod
        def forward(ctx, a, dim=None, keepdim=False):
            name = "argmax" if type(ctx).is_max else "argmin"
            keepdim = check_bool(keepdim, f"{name}(): keepdim")
            if dim is None and a.size == 0:
                raise ValueError(f"{name}(): cannot take the {name} of an empty tensor (shape {tuple(a.shape)})")
            axis = None if dim is None else single_axis(dim, a.ndim)
            if axis is not None and a.ndim and a.shape[axis] == 0:
                raise ValueError(f"{name}(): expected reduction dim {dim} to have non-zero size "
                                 f"(input shape {tuple(a.shape)})")
            idx, _ = CN.kernels().arg_reduce(type(ctx).is_max, a, None if a.ndim == 0 else axis, keepdim)
            return idx

        @staticmethod
        def backward(ctx, g):  # pragma: no cover - the int64 output never reaches backward
            return None

    class ArgMinCudaFunction(ArgMaxCudaFunction):
        is_max = False

    ArgMaxFunction.op.add_device("cuda", ArgMaxCudaFunction)
    ArgMinFunction.op.add_device("cuda", ArgMinCudaFunction)


_register_arg_cuda()
