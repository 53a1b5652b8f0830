"""The selecting reductions of ops/reduce_more.py: median / nanmedian (all elements, or along a dim with indices),
mode, quantile / nanquantile. Rows are sorted stably, so on ties the index is the one torch's CPU kernels return
(the k-th of the stable order; a NaN row gives its first NaN); gradients go to the selected elements. ONNX: two
stable TopK sorts (ops/_onnx_select.py)."""
from __future__ import annotations

import numpy as np

from .._validate import check_bool
from ..autograd import Function
from . import _meta as M
from . import _samples as S
from ._util import single_axis
from ._onnx_select import median_all_onnx, median_dim_onnx, mode_onnx, quantile_onnx
from .registry import BadInput, Sample, register_op



def _float_ok(x, who):
    if x.dtype.kind == "b":
        raise TypeError(f"{who}(): bool input is not supported (as in torch)")
    return x


# ---- median / nanmedian of all elements ---------------------------------------------------------------
def _lower_median_flat(x, ignore_nan):
    flat = x.reshape(-1)
    if flat.size == 0:
        if flat.dtype.kind == "f":
            return flat.dtype.type(np.nan)  # torch's median/nanmedian of no elements
        raise ValueError(f"median() of an empty {flat.dtype} tensor: torch returns an undefined value there")
    nan = np.isnan(flat) if flat.dtype.kind == "f" else np.zeros(flat.shape, bool)
    if ignore_nan:
        vals = flat[~nan]
        if vals.size == 0:
            return flat.dtype.type(np.nan)
    elif nan.any():
        return flat.dtype.type(np.nan)
    else:
        vals = flat
    return np.partition(vals, (vals.size - 1) // 2)[(vals.size - 1) // 2]


def _median_all_samples(ignore_nan=True):
    rng = np.random.default_rng(3)
    ties = rng.integers(-2, 3, (5, 6)).astype(np.float32)
    nan = S.rand(4, 5)
    nan[1, 2] = np.nan
    return [Sample((S.rand(3, 5, 7),), name="odd count"), Sample((S.rand(4, 6, seed=1),), name="even count"),
            Sample((ties,), name="ties (gradient shared)"),
            # median's result here is NaN, which the exporter's check refuses to call verified
            Sample((nan,), name="NaN" if ignore_nan else "NaN (NaN result: not an ONNX sample)", onnx=ignore_nan),
            Sample((np.array([3, 1, 2, 1], np.int64),), name="int64")]


class _MedianAll(Function):
    exact_dtype = True
    ignore_nan = False

    @classmethod
    def forward(cls, ctx, input):
        x = _float_ok(input, cls.op.name)
        v = np.asarray(_lower_median_flat(x, cls.ignore_nan), dtype=x.dtype)
        ctx.save_for_backward(x, v)
        return v

    @staticmethod
    def backward(ctx, g):
        x, v = ctx.saved_tensors
        # torch's evenly_distribute_backward: shared among the elements equal to the result (NaN: the NaNs)
        mask = np.isnan(x) if np.isnan(v) else (x == v)
        return np.where(mask, g / max(int(mask.sum()), 1), np.zeros((), x.dtype)).astype(x.dtype)


def _median_all(name, ignore_nan):
    cls = type(f"{name.title()}Function", (_MedianAll,), {"__module__": __name__, "ignore_nan": ignore_nan,
                                                           "__doc__": f"torch.{name}(input): the lower median."})
    cls = register_op(name, meta=lambda input: M.MetaArray((), input.dtype), flops=M.per_input_element(2),
                      samples=lambda: _median_all_samples(ignore_nan), torch=lambda torch, x: getattr(torch, name)(x),
                      onnx=median_all_onnx(ignore_nan),
                      bad_inputs=lambda: [BadInput((np.array([True]),), {}, TypeError, "bool")])(cls)
    cls.op.float64 = cls
    return cls


MedianFunction = _median_all("median", False)
NanmedianFunction = _median_all("nanmedian", True)


# ---- along a dim: median, nanmedian, mode (values, indices) ---------------------------------------------
def _select_median(rows, ignore_nan):
    """rows: (m, n) -> (values, indices) of the lower median of each row (stable order: torch's index)."""
    order = np.argsort(rows, axis=1, kind="stable")  # NaN sorts last
    m, n = rows.shape
    nan = np.isnan(rows) if rows.dtype.kind == "f" else np.zeros(rows.shape, bool)
    count = n - nan.sum(1)
    if ignore_nan:
        k = np.where(count > 0, (np.maximum(count, 1) - 1) // 2, 0)
    else:  # a row with a NaN gives its first NaN (first in the stable order's NaN tail)
        k = np.where(count < n, count, (n - 1) // 2)
    idx = order[np.arange(m), k]
    return rows[np.arange(m), idx], idx


def _select_mode(rows):
    """The first longest run of equal values in each stably sorted row (the smallest most frequent value) and the
    original index of that run's last element (its last index), vectorised over the rows."""
    m, n = rows.shape
    order = np.argsort(rows, axis=1, kind="stable")
    s = np.take_along_axis(rows, order, 1)
    differs = s[:, 1:] != s[:, :-1]
    pos = np.broadcast_to(np.arange(n), (m, n))
    start = np.maximum.accumulate(np.where(np.concatenate([np.ones((m, 1), bool), differs], 1), pos, 0), axis=1)
    is_end = np.concatenate([differs, np.ones((m, 1), bool)], 1)
    end = np.flip(np.minimum.accumulate(np.flip(np.where(is_end, pos, n), 1), axis=1), 1)
    best = np.argmax(end - start, axis=1)  # the first position of a longest run: its smallest value
    r = np.arange(m)
    return s[r, best], order[r, end[r, best]].astype(np.int64)


class _DimSelect(Function):
    exact_dtype = True
    non_differentiable_outputs = (1,)

    @classmethod
    def forward(cls, ctx, input, dim=-1, keepdim=False):
        x = _float_ok(input, cls.op.name)
        keepdim = check_bool(keepdim, "keepdim")
        axis = single_axis(dim, max(x.ndim, 1), "dim")
        xs = x.reshape(1) if x.ndim == 0 else x
        if xs.shape[axis] == 0:
            raise IndexError(f"{cls.op.name}(): expected a non-empty dim {dim} (input shape {x.shape})")
        moved = np.moveaxis(xs, axis, -1)
        rows = moved.reshape(-1, moved.shape[-1])
        vals, idx = cls.select(rows)
        shape = moved.shape[:-1]
        vals, idx = vals.reshape(shape), idx.reshape(shape).astype(np.int64)
        ctx.axis, ctx.in_shape, ctx.keepdim, ctx.scalar = axis, xs.shape, keepdim, x.ndim == 0
        ctx.save_for_backward(idx)
        if x.ndim == 0:
            return vals.reshape(()), idx.reshape(())
        if keepdim:
            return np.expand_dims(vals, axis), np.expand_dims(idx, axis)
        return vals, idx

    @staticmethod
    def backward(ctx, g, _gi=None):
        (idx,) = ctx.saved_tensors
        out = np.zeros(ctx.in_shape, g.dtype)
        g = g.reshape(idx.shape)
        np.put_along_axis(out, np.expand_dims(idx, ctx.axis), np.expand_dims(g, ctx.axis), ctx.axis)
        return out.reshape(()) if ctx.scalar else out


def _dim_samples():
    nan = S.rand(3, 6, seed=5)
    nan[0, 2] = nan[0, 4] = np.nan
    nan[2, 1:4] = np.nan  # (an all-NaN row's nanmedian index is whichever NaN torch's nth_element leaves first)
    return [Sample((S.rand(3, 5, 7), 1), name="dim 1"),
            Sample((S.rand(4, 6, seed=1), -1), {"keepdim": True}, "keepdim"),
            Sample((nan, 1), name="NaN rows", grad=(0,)), Sample((S.rand(*S.LARGE), 0), name="large")]


def _mode_samples():
    rng = np.random.default_rng(8)
    return [Sample((rng.integers(-2, 3, (4, 9)).astype(np.float32), 1), name="ties"),
            Sample((rng.integers(0, 3, (3, 5, 6)).astype(np.float32), 0), {"keepdim": True}, "keepdim"),
            Sample((S.rand(5, 7), -1), name="all distinct"),
            Sample((rng.integers(0, 4, (2, 11)).astype(np.int64), 1), name="int64")]


def _meta_dim(input, dim=-1, keepdim=False):
    axis = single_axis(dim, max(input.ndim, 1), "dim")
    shape = tuple(1 if (i == axis and keepdim) else s for i, s in enumerate(input.shape) if i != axis or keepdim)
    return M.MetaArray(shape, input.dtype), M.MetaArray(shape, np.int64)


def _torch_mode(torch, x, dim=-1, keepdim=False):
    """torch.mode's values, with the index of each value's last occurrence in its row: torch does not promise which
    occurrence (its CPU kernel gives the last one, but not for every row length: a 10^6-long row of equal values
    came back with another), and forgegrad's is the last."""
    values, _ = torch.mode(x, dim, keepdim)
    if x.dim() == 0:
        return values, torch.zeros((), dtype=torch.int64)
    d = dim % x.dim()
    v = values if keepdim else values.unsqueeze(d)
    hit = (x == v) | (torch.isnan(x) & torch.isnan(v))
    shape = [1] * x.dim()
    shape[d] = x.shape[d]
    pos = torch.arange(x.shape[d]).reshape(shape).expand_as(x)
    return values, torch.where(hit, pos, -1).amax(d, keepdim=keepdim)


def _dim_op(name, select, samples, torch_name, onnx):
    reference = _torch_mode if torch_name == "mode" else (
        lambda torch, x, dim=-1, keepdim=False: tuple(getattr(torch, torch_name)(x, dim, keepdim)))
    cls = type(f"{name.title().replace('_', '')}Function", (_DimSelect,), {
        "__module__": __name__, "select": staticmethod(select),
        "__doc__": f"torch.{torch_name}(input, dim, keepdim): (values, indices)."})
    cls = register_op(name, meta=_meta_dim, flops=M.per_input_element(2), samples=samples,
                      torch=reference, onnx=onnx,
                      bad_inputs=lambda: [BadInput((S.rand(2, 3), 2), {}, IndexError, "dim"),
                                          BadInput((S.rand(2, 3), 0), {"keepdim": "no"}, TypeError, "keepdim")])(cls)
    cls.op.float64 = cls
    return cls


MedianDimFunction = _dim_op("median_dim", lambda r: _select_median(r, False), _dim_samples, "median",
                            median_dim_onnx(False))
NanmedianDimFunction = _dim_op("nanmedian_dim", lambda r: _select_median(r, True), _dim_samples, "nanmedian",
                               median_dim_onnx(True))
ModeFunction = _dim_op("mode", _select_mode, _mode_samples, "mode", mode_onnx)


# ---- quantile / nanquantile ---------------------------------------------------------------------------
_INTERPOLATIONS = ("linear", "lower", "higher", "midpoint", "nearest")


def _lerp(a, b, w):
    return np.where(np.abs(w) < 0.5, a + w * (b - a), b - (b - a) * (1 - w))


def _check_q(q, dtype):
    if not (isinstance(q, np.ndarray) or (isinstance(q, (int, float, np.number)) and not isinstance(q, bool))):
        raise TypeError(f"quantile(): q must be a number or a 1-D tensor, got {type(q).__name__}")
    if isinstance(q, np.ndarray) and q.dtype.kind != "f":
        raise TypeError(f"quantile(): q must be floating point, got {q.dtype}")
    qa = np.asarray(q, dtype=dtype)
    if qa.ndim > 1:
        raise ValueError(f"quantile(): q must be a number or a 1-D tensor, got {qa.ndim} dimensions")
    if qa.size and (np.any(qa < 0) or np.any(qa > 1) or np.any(np.isnan(qa))):
        raise ValueError("quantile(): q values must be in the range [0, 1]")
    return qa


class _Quantile(Function):
    exact_dtype = True
    ignore_nan = False

    @classmethod
    def forward(cls, ctx, input, q, dim=None, keepdim=False, interpolation="linear"):
        if input.dtype.kind != "f":
            raise TypeError(f"{cls.op.name}(): input must be a floating point tensor, got {input.dtype}")
        if interpolation not in _INTERPOLATIONS:
            raise ValueError(f"{cls.op.name}(): interpolation must be one of {_INTERPOLATIONS}, got {interpolation!r}")
        keepdim = check_bool(keepdim, "keepdim")
        qa = _check_q(q, input.dtype)
        x = input
        if dim is None:
            rows, axis = x.reshape(1, -1), None
        else:
            axis = single_axis(dim, max(x.ndim, 1), "dim")
            xs = x.reshape(1) if x.ndim == 0 else x
            moved = np.moveaxis(xs, axis, -1)
            rows = moved.reshape(-1, moved.shape[-1])
        if rows.shape[1] == 0:
            raise ValueError(f"{cls.op.name}(): input tensor must be non-empty along the reduced dim")
        order = np.argsort(rows, axis=1, kind="stable")
        srt = np.take_along_axis(rows, order, 1)
        m, n = rows.shape
        valid = (~np.isnan(rows)).sum(1)  # (m,)
        qs = qa.reshape(-1)[:, None]  # (Q, 1)
        if cls.ignore_nan:  # an all-NaN row: rank 0 (torch clamps -q to 0)
            scale = np.maximum(valid, 1) - 1
        else:  # a row holding NaN: its last, a NaN
            scale = np.full(m, n - 1)
        # in float64 (exact: q and an integer below 2**53), rounded once to the input's dtype as torch's ranks
        ranks = (qs.astype(np.float64) * scale).astype(x.dtype)  # (Q, m)
        if not cls.ignore_nan and (valid < n).any():
            ranks[:, valid < n] = n - 1
        # flat positions into the sorted rows, one take per gather: indexing with the broadcast pair (row,
        # rank) took ~20x torch's time for many quantiles (minutes for 2**26 of them)
        row_start = np.arange(m, dtype=np.int64) * n
        if interpolation in ("lower", "higher", "nearest"):  # an element, no weight
            # np.round: half to even, as torch's round
            pick = {"lower": np.floor, "higher": np.ceil, "nearest": np.round}[interpolation]
            lo = hi = pick(ranks).astype(np.int64)
            w = np.zeros((), x.dtype)
        else:
            lo = np.floor(ranks)
            w = ranks - lo  # exact in the dtype
            lo = lo.astype(np.int64)
            hi = np.ceil(ranks).astype(np.int64)
            if interpolation == "midpoint":
                w = np.where(lo == hi, 0, 0.5).astype(x.dtype)
        del ranks
        lo += row_start
        if hi is not lo:
            hi += row_start
        srt = srt.reshape(-1)
        a = srt.take(lo)
        # torch interpolates for linear and midpoint only: lower / higher / nearest take the element (no lerp of
        # an infinite value with itself, which is NaN)
        out = _lerp(a, srt.take(hi), w) if interpolation in ("linear", "midpoint") else a  # (Q, m)
        order = order.reshape(-1)
        ilo = order.take(lo)
        ctx.parts = (ilo, ilo if hi is lo else order.take(hi), w, rows.shape, x.shape, axis)
        if dim is None:
            out = out.reshape((qs.shape[0],) + ((1,) * x.ndim if keepdim else ()))
        else:
            red = moved.shape[:-1]
            out = out.reshape((qs.shape[0],) + red)
            if keepdim:
                out = np.expand_dims(out, axis + 1)
        ctx.out_shape = out.shape
        return out if qa.ndim == 1 else out[0]

    @staticmethod
    def backward(ctx, g):
        ilo, ihi, w, rshape, xshape, axis = ctx.parts
        g = g.reshape(ilo.shape)  # (Q, m)
        grows = np.zeros(rshape, g.dtype)
        m = np.arange(rshape[0])[None, :].repeat(ilo.shape[0], 0)
        np.add.at(grows, (m, ilo), g * (1 - w))
        np.add.at(grows, (m, ihi), g * w)
        if axis is None:
            return grows.reshape(xshape), None
        xs = xshape if xshape else (1,)
        moved = tuple(s for i, s in enumerate(xs) if i != axis) + (xs[axis],)
        return np.moveaxis(grows.reshape(moved), -1, axis).reshape(xshape), None


def _quantile_meta(input, q, dim=None, keepdim=False, interpolation="linear"):
    qn = () if np.ndim(q) == 0 or (hasattr(q, "ndim") and q.ndim == 0) else (q.shape[0] if hasattr(q, "shape")
                                                                            else len(q),)
    if dim is None:
        red = (1,) * input.ndim if keepdim else ()
    else:
        axis = single_axis(dim, max(input.ndim, 1), "dim")
        red = tuple(1 if i == axis else s for i, s in enumerate(input.shape) if i != axis or keepdim)
    return M.MetaArray(tuple(qn) + red, input.dtype)


def _quantile_samples():
    x = S.rand(4, 9)
    nan = S.rand(3, 7, seed=2)
    nan[0, 3] = np.nan
    nan[1, :] = np.nan
    q = np.array([0.0, 0.25, 0.5, 0.9, 1.0], np.float32)
    return [Sample((x, 0.3), name="all, q scalar"), Sample((x, q), {"dim": 1}, "q tensor dim 1", grad=(0,)),
            Sample((S.rand(2, 5, 6, seed=3), 0.5), {"dim": 2, "keepdim": True}, "keepdim"),
            Sample((x, q), {"dim": 0, "interpolation": "lower"}, "lower", grad=(0,)),
            Sample((x, q), {"dim": 1, "interpolation": "higher"}, "higher", grad=(0,)),
            Sample((x, q), {"dim": 1, "interpolation": "midpoint"}, "midpoint", grad=(0,)),
            Sample((x, 0.375), {"dim": 1, "interpolation": "nearest"}, "nearest"),
            Sample((nan, q), {"dim": 1}, "NaN rows", grad=(0,)), Sample((x, 0.7), {"keepdim": True}, "all keepdim")]


def _quantile_op(name, ignore_nan):
    cls = type(f"{name.title()}Function", (_Quantile,), {"__module__": __name__, "ignore_nan": ignore_nan,
                                                          "__doc__": f"torch.{name}(input, q, dim, keepdim, "
                                                                     "interpolation)."})
    cls = register_op(
        name, meta=_quantile_meta, flops=M.per_input_element(2), samples=_quantile_samples,
        torch=lambda torch, x, q, **kw: getattr(torch, name)(x, q if not isinstance(q, torch.Tensor) else q, **kw),
        onnx=quantile_onnx(ignore_nan),
        bad_inputs=lambda: [BadInput((S.rand(2, 3), 1.5), {}, ValueError, "range"),
                            BadInput((S.rand(2, 3), 0.5), {"interpolation": "cubic"}, ValueError, "interpolation"),
                            BadInput((np.arange(3), 0.5), {}, TypeError, "floating")])(cls)
    cls.op.float64 = cls
    return cls


QuantileFunction = _quantile_op("quantile", False)
NanquantileFunction = _quantile_op("nanquantile", True)
