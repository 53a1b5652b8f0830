"""ONNX mappings of the selecting reductions (ops/_reduce_select.py) and cumprod (ops/scan.py).

The rows are sorted by two stable TopK passes (ONNX: equal elements keep their index order): by value with NaN
read as +inf, then by "is NaN", which is numpy's stable order with NaN last (a +inf ahead of the NaNs), so the
indices are the kernels' (torch's). mode compares every pair of a row ((rows, n, n) booleans); quantile takes
its q (a tensor input or a number) at run time, one q at a time. A reduced dim that is a dynamic axis has its
length read from the input's Shape at run time (a constant otherwise)."""
from __future__ import annotations

import numpy as np

from ._util import single_axis


class _Len:
    """The length n of the reduced axis: ``static`` an int, or None where it is a dynamic axis; ``t`` the int64
    [1] tensor holding it (a constant when static, read from the input's Shape otherwise)."""

    def __init__(self, ctx, x, axis, static):
        self.static = static
        self.t = ctx.ints([static]) if static is not None else \
            ctx.node("Gather", [ctx.node("Shape", [x]), ctx.ints([axis])], axis=0)
        self._ctx = ctx

    def minus(self, k, dtype=np.int64):
        """n - k in dtype ([1] tensor; a constant when static)."""
        ctx = self._ctx
        if self.static is not None:
            return ctx.const(np.asarray(self.static - k, dtype))
        return ctx.cast(ctx.node("Sub", [self.t, ctx.ints([k])]), dtype)


def _sort_stable(ctx, x, axis, n, kind="f"):
    """(sorted values, original indices) along axis: ascending, ties by index, NaN last (n: a _Len)."""
    k = n.t
    if kind != "f":
        _, order = ctx.node("TopK", [x, k], outputs=2, axis=axis, largest=0, sorted=1)
        return ctx.node("GatherElements", [x, order], axis=axis), order
    nan = ctx.node("IsNaN", [x])
    key = ctx.node("Where", [nan, ctx.const(np.asarray(np.inf, ctx.float_dtype)), x])
    _, order = ctx.node("TopK", [key, k], outputs=2, axis=axis, largest=0, sorted=1)
    nan_sorted = ctx.cast(ctx.node("GatherElements", [nan, order], axis=axis), np.int32)
    _, perm = ctx.node("TopK", [nan_sorted, k], outputs=2, axis=axis, largest=0, sorted=1)
    order = ctx.node("GatherElements", [order, perm], axis=axis)
    return ctx.node("GatherElements", [x, order], axis=axis), order


def _nan_count(ctx, x, axis, kind):
    """int64 count of NaNs along axis, kept as a size-1 dim (zeros of that shape for integer input: the median's
    rank is gathered per row, so it needs the rows' shape, not a 0-d 0)."""
    nan = ctx.node("IsNaN", [x]) if kind == "f" else ctx.node("Less", [x, x])
    return ctx.reduce("ReduceSum", ctx.cast(nan, np.int64), [axis], True)


def _median_rank(ctx, nan_count, n, ignore_nan):
    """The position in the sorted row of the lower median (int64, kept dim): a NaN row gives its first NaN."""
    count = ctx.node("Sub", [n.t, nan_count])
    one, two = ctx.const(np.asarray(1, np.int64)), ctx.const(np.asarray(2, np.int64))
    if ignore_nan:
        half = ctx.node("Div", [ctx.node("Sub", [ctx.node("Max", [count, one]), one]), two])
        return ctx.node("Where", [ctx.node("Greater", [count, ctx.const(np.asarray(0, np.int64))]), half,
                                  ctx.const(np.asarray(0, np.int64))])
    mid = ctx.const(np.asarray((n.static - 1) // 2, np.int64)) if n.static is not None else \
        ctx.node("Div", [n.minus(1), two])
    return ctx.node("Where", [ctx.node("Less", [count, n.t]), count, mid])


def _static(dims):
    """The product of dims, None if one is a dynamic axis."""
    return None if any(not isinstance(d, (int, np.integer)) for d in dims) else int(np.prod(dims, dtype=np.int64))


def _prepare(ctx, op, dim):
    """(x as ONNX, axis, n as a _Len) for a reduction along dim (None: every element, flattened)."""
    a = op.args["input"]
    x = op.input("input")
    dims = op.in_dims("input")
    if dim is None or a.ndim == 0:
        x = ctx.node("Reshape", [x, ctx.ints([-1])])
        return x, 0, _Len(ctx, x, 0, _static(dims))
    axis = single_axis(dim, a.ndim, "dim")
    return x, axis, _Len(ctx, x, axis, _static([dims[axis]]))


def median_all_onnx(ignore_nan):
    def mapping(ctx, op):
        x, axis, n = _prepare(ctx, op, None)
        kind = op.args["input"].dtype.kind
        srt, _ = _sort_stable(ctx, x, 0, n, kind)
        k = _median_rank(ctx, _nan_count(ctx, x, 0, kind), n, ignore_nan)
        return [ctx.squeeze(ctx.node("GatherElements", [srt, k], axis=0), [0])]
    return mapping


def _finish_dim(ctx, op, outs):
    """Squeeze the reduced (kept) dim unless keepdim; a 0-d input gives 0-d outputs."""
    a = op.args["input"]
    if a.ndim == 0:
        return [ctx.node("Reshape", [o, ctx.ints([])]) for o in outs]
    if op.attr("keepdim", False):
        return outs
    axis = single_axis(op.attr("dim", -1), a.ndim, "dim")
    return [ctx.squeeze(o, [axis]) for o in outs]


def median_dim_onnx(ignore_nan):
    def mapping(ctx, op):
        a = op.args["input"]
        x = op.input("input")
        if a.ndim == 0:
            return [ctx.node("Identity", [x]), ctx.const(np.zeros((), np.int64))]
        axis = single_axis(op.attr("dim", -1), a.ndim, "dim")
        n = _Len(ctx, x, axis, _static([op.in_dims("input")[axis]]))
        _, order = _sort_stable(ctx, x, axis, n, a.dtype.kind)
        k = _median_rank(ctx, _nan_count(ctx, x, axis, a.dtype.kind), n, ignore_nan)
        idx = ctx.node("GatherElements", [order, k], axis=axis)
        return _finish_dim(ctx, op, [ctx.node("GatherElements", [x, idx], axis=axis), idx])
    return mapping


def mode_onnx(ctx, op):
    """The smallest value with the most equal elements in its row (NaN equals nothing) and the last index holding
    it; a row of NaN only gives its first NaN."""
    a = op.args["input"]
    x = op.input("input")
    if a.ndim == 0:
        return [ctx.node("Identity", [x]), ctx.const(np.zeros((), np.int64))]
    axis = single_axis(op.attr("dim", -1), a.ndim, "dim")
    n = _Len(ctx, x, axis, _static([op.in_dims("input")[axis]]))
    srt, _ = _sort_stable(ctx, x, axis, n, a.dtype.kind)
    # counts[..., j, ...] = how many elements of the row equal srt[j]: compare along a new axis after `axis`
    eq = ctx.node("Equal", [ctx.unsqueeze(srt, [axis + 1]), ctx.unsqueeze(x, [axis])])
    counts = ctx.reduce("ReduceSum", ctx.cast(eq, np.int64), [axis + 1], False)
    best = ctx.node("ArgMax", [counts], axis=axis, keepdims=1, select_last_index=0)  # first: the smallest value
    v = ctx.node("GatherElements", [srt, best], axis=axis)
    shape = [1] * a.ndim
    if n.static is not None:
        shape[axis] = n.static
        pos = ctx.const(np.arange(n.static, dtype=np.int64).reshape(shape))
    else:
        shape[axis] = -1
        pos = ctx.node("Reshape", [ctx.node("Range", [ctx.const(np.asarray(0, np.int64)), ctx.squeeze(n.t, [0]),
                                                      ctx.const(np.asarray(1, np.int64))]), ctx.ints(shape)])
    hit = ctx.node("Equal", [x, v])
    last = ctx.reduce("ReduceMax", ctx.node("Where", [hit, pos, ctx.const(np.asarray(-1, np.int64))]), [axis], True)
    if a.dtype.kind == "f":  # a NaN mode (the row is all NaN): its first NaN
        first_nan = ctx.node("ArgMax", [ctx.cast(ctx.node("IsNaN", [x]), np.int32)], axis=axis, keepdims=1)
        last = ctx.node("Where", [ctx.node("IsNaN", [v]), first_nan, last])
    return _finish_dim(ctx, op, [v, last])


def quantile_onnx(ignore_nan):
    def mapping(ctx, op):
        a = op.args["input"]
        dim, keepdim = op.attr("dim"), bool(op.attr("keepdim", False))
        interp = op.attr("interpolation", "linear")
        f = a.dtype
        x, axis, n = _prepare(ctx, op, dim)
        srt, _ = _sort_stable(ctx, x, axis, n)
        valid = ctx.node("Sub", [n.t, _nan_count(ctx, x, axis, "f")])
        validf = ctx.cast(valid, f)
        q_arg = op.args["q"]
        q = op.input("q", f)
        q_shape = tuple(getattr(q_arg, "shape", ()))
        if any(not isinstance(d, (int, np.integer)) for d in op.in_dims("q")):
            raise op.unsupported(f"{op.fn_cls.op.name}: q's length is a dynamic axis; the graph computes one "
                                 "quantile per element of q, so its length must be static")
        nq = int(np.prod(q_shape))
        q_flat = ctx.node("Reshape", [q, ctx.ints([-1])])

        def fc(v):
            return ctx.const(np.asarray(v, f))

        outs = []
        for i in range(nq):
            qi = ctx.node("Gather", [q_flat, ctx.const(np.asarray(i, np.int64))], axis=0)  # 0-d
            if ignore_nan:
                ranks = ctx.node("Mul", [qi, ctx.node("Sub", [ctx.node("Max", [validf, fc(1)]), fc(1)])])
                ranks = ctx.node("Where", [ctx.node("Equal", [valid, ctx.const(np.asarray(0, np.int64))]), fc(0),
                                           ranks])
            else:
                last = fc(n.static - 1) if n.static is not None else n.minus(1, f)
                ranks = ctx.node("Where", [ctx.node("Less", [valid, n.t]), last, ctx.node("Mul", [qi, last])])
            if interp == "lower":
                ranks = ctx.node("Floor", [ranks])
            elif interp == "higher":
                ranks = ctx.node("Ceil", [ranks])
            elif interp == "nearest":
                ranks = ctx.node("Round", [ranks])  # half to even, as np.round / torch.round
            lo_f, hi_f = ctx.node("Floor", [ranks]), ctx.node("Ceil", [ranks])
            lo, hi = ctx.cast(lo_f, np.int64), ctx.cast(hi_f, np.int64)
            if interp == "midpoint":
                w = ctx.node("Where", [ctx.node("Equal", [lo, hi]), fc(0), fc(0.5)])
            else:
                w = ctx.node("Sub", [ranks, lo_f])
            va = ctx.node("GatherElements", [srt, lo], axis=axis)
            vb = ctx.node("GatherElements", [srt, hi], axis=axis)
            d = ctx.node("Sub", [vb, va])
            near = ctx.node("Less", [ctx.node("Abs", [w]), fc(0.5)])
            out = ctx.node("Where", [near, ctx.node("Add", [va, ctx.node("Mul", [w, d])]),
                                     ctx.node("Sub", [vb, ctx.node("Mul", [d, ctx.node("Sub", [fc(1), w])])])])
            if dim is None or a.ndim == 0:
                out = ctx.node("Reshape", [out, ctx.ints([1] * a.ndim if keepdim else [])])
            elif not keepdim:
                out = ctx.squeeze(out, [axis])
            outs.append(out)
        if not q_shape:
            return [outs[0]]
        return [ctx.node("Concat", [ctx.unsqueeze(o, [0]) for o in outs], axis=0)]
    return mapping


def cumprod_onnx(ctx, op):
    """A Scan along dim whose step multiplies the running product by the next slice: torch's sequential product,
    bit for bit, at zeros, negatives, inf and NaN (no log / exp)."""
    from onnx import helper
    from ..onnx._context import onnx_dtype
    a = op.args["a"]
    dt = np.dtype(op.out_dtype())
    x = ctx.cast(op.input("a"), dt)
    if a.ndim == 0:
        return [ctx.node("Identity", [x])]
    axis = single_axis(op.attr("dim"), a.ndim, "dim")
    # the running product starts at ones, shaped like one slice across dim
    slice_shape = ctx.node("Shape", [ctx.reduce("ReduceSum", x, [axis], False)])
    one = helper.make_tensor("one", onnx_dtype(dt), [1], [1] if dt.kind != "f" else [1.0])
    start = ctx.node("ConstantOfShape", [slice_shape], value=one)
    t = onnx_dtype(dt)
    s_in, x_in, s_out, y_out = (ctx.fresh(f"cumprod_{k}") for k in ("state", "slice", "state_out", "slice_out"))
    body = helper.make_graph(
        [helper.make_node("Mul", [s_in, x_in], [s_out], name=ctx.fresh("cumprod_Mul")),
         helper.make_node("Identity", [s_out], [y_out], name=ctx.fresh("cumprod_Identity"))],
        ctx.fresh("cumprod_step"),
        [helper.make_tensor_value_info(s_in, t, None), helper.make_tensor_value_info(x_in, t, None)],
        [helper.make_tensor_value_info(s_out, t, None), helper.make_tensor_value_info(y_out, t, None)])
    _, y = ctx.node("Scan", [start, x], outputs=2, body=body, num_scan_inputs=1, scan_input_axes=[axis],
                    scan_output_axes=[axis])
    return [y]
