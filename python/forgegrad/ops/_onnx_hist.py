"""ONNX mappings of histc and histogram (ops/histogram.py): the kernels' binning with comparisons, then a one-hot
(elements, bins) ReduceSum.

histc bins by the kernel's division ``(x - lo) * bins / (hi - lo)`` in the input's dtype; histogram by counting the
edges at or below each element (searchsorted, side right). A range left to the data (histc min == max, histogram
range=None) is the data's ReduceMin / ReduceMax at run time, widened as the kernel; histogram's edges are then
torch's linspace computed in double (for float32 input exactly the kernel's; for float64 input the kernel's long
double may differ in the last bit). Weighted counts add up in double, as the kernel's bincount."""
from __future__ import annotations

import numpy as np

_I64 = np.dtype(np.int64)


def _flat(ctx, op):
    return ctx.node("Reshape", [op.input("input"), ctx.ints([-1])])


def _data_range(ctx, flat, widen, dt):
    """(lo, hi) 0-d in dt: the data's min and max, each moved out by ``widen`` where they are equal."""
    lo = ctx.reduce("ReduceMin", flat, [0], False)
    hi = ctx.reduce("ReduceMax", flat, [0], False)
    same = ctx.node("Equal", [lo, hi])
    w = ctx.const(np.asarray(widen, dt))
    return (ctx.node("Where", [same, ctx.node("Sub", [lo, w]), lo]),
            ctx.node("Where", [same, ctx.node("Add", [hi, w]), hi]))


def _counts(ctx, flat, pos, keep, n, dt, weight=None):
    """Per-bin totals of the kept elements (1 each, or their weight, summed in double)."""
    bins = ctx.const(np.arange(n, dtype=np.int64).reshape(1, n))
    hit = ctx.node("And", [ctx.node("Equal", [ctx.unsqueeze(pos, [1]), bins]), ctx.unsqueeze(keep, [1])])
    if weight is None:
        return ctx.cast(ctx.reduce("ReduceSum", ctx.cast(hit, np.int64), [0], False), dt)
    w = ctx.cast(ctx.node("Reshape", [weight, ctx.ints([-1])]), np.float64)
    one = ctx.node("Mul", [ctx.cast(hit, np.float64), ctx.unsqueeze(w, [1])])
    return ctx.cast(ctx.reduce("ReduceSum", one, [0], False), dt)


def histc_onnx(ctx, op):
    dt = np.dtype(op.out_dtype())
    n = int(op.attr("bins", 100))
    lo_arg, hi_arg = float(op.attr("min", 0)), float(op.attr("max", 0))
    flat = _flat(ctx, op)
    if lo_arg == hi_arg:
        lo, hi = _data_range(ctx, flat, 1.0, dt)
    else:
        lo, hi = ctx.const(np.asarray(lo_arg, dt), exact=True), ctx.const(np.asarray(hi_arg, dt), exact=True)
    keep = ctx.node("And", [ctx.node("GreaterOrEqual", [flat, lo]), ctx.node("LessOrEqual", [flat, hi])])
    v = ctx.node("Div", [ctx.node("Mul", [ctx.node("Sub", [flat, lo]), ctx.const(np.asarray(n, dt), exact=True)]),
                         ctx.node("Sub", [hi, lo])])
    v = ctx.node("Where", [keep, v, ctx.const(np.asarray(0, dt))])  # (NaN and far values are not cast to int)
    pos = ctx.node("Min", [ctx.cast(v, _I64), ctx.const(np.asarray(n - 1, _I64))])
    return [_counts(ctx, flat, pos, keep, n, dt)]


def _linspace_edges(ctx, lo, hi, n, dt):
    """torch's CPU linspace of n + 1 edges from the 0-d lo, hi: lo + i*step for the first half, hi - (n-i)*step
    for the rest, the product and sum in double (one rounding each: the kernel's wide type for float32)."""
    step = ctx.node("Div", [ctx.node("Sub", [hi, lo]), ctx.const(np.asarray(max(n, 1), dt), exact=True)])
    f64 = np.float64
    lo_w, hi_w, step_w = ctx.cast(lo, f64), ctx.cast(hi, f64), ctx.cast(step, f64)
    i = np.arange(n + 1)
    half = (n + 1) // 2
    first = ctx.node("Add", [lo_w, ctx.node("Mul", [step_w, ctx.const(i.astype(f64), exact=True)])])
    last = ctx.node("Sub", [hi_w, ctx.node("Mul", [step_w, ctx.const((n - i).astype(f64), exact=True)])])
    edges = ctx.node("Where", [ctx.const(i < half), first, last])
    return ctx.cast(edges, dt)


def histogram_onnx(ctx, op):
    from .histogram import _linspace, _outer_edges, _range
    dt = np.dtype(op.out_dtype(0))
    bins_arg = op.args["bins"]
    flat = _flat(ctx, op)
    if hasattr(bins_arg, "shape"):  # a tensor of edges
        n = int(bins_arg.shape[0]) - 1
        if n < 1:
            raise op.unsupported("histogram with fewer than two bin edges (an empty histogram)")
        edges = op.input("bins", dt)
    else:
        n = int(bins_arg)
        lo_r, hi_r = _range(op.attr("range"))
        if lo_r is None:
            lo, hi = _data_range(ctx, flat, 0.5, dt)
            edges = _linspace_edges(ctx, lo, hi, n, dt)
        else:
            lo_r, hi_r = _outer_edges(None, lo_r, hi_r, 0.5, "histogram", dt)
            edges = ctx.const(_linspace(lo_r, hi_r, n + 1, dt), exact=True)
    first = ctx.node("Gather", [edges, ctx.const(np.asarray(0, _I64))], axis=0)
    last = ctx.node("Gather", [edges, ctx.const(np.asarray(n, _I64))], axis=0)
    keep = ctx.node("And", [ctx.node("GreaterOrEqual", [flat, first]), ctx.node("LessOrEqual", [flat, last])])
    at_or_below = ctx.node("LessOrEqual", [ctx.unsqueeze(edges, [0]), ctx.unsqueeze(flat, [1])])  # (N, n + 1)
    pos = ctx.node("Sub", [ctx.reduce("ReduceSum", ctx.cast(at_or_below, _I64), [1], False),
                           ctx.const(np.asarray(1, _I64))])
    pos = ctx.node("Min", [pos, ctx.const(np.asarray(n - 1, _I64))])
    weight = op.input("weight") if op.attr("weight") is not None else None
    hist = _counts(ctx, flat, pos, keep, n, dt, weight)
    if op.attr("density", False):
        widths = ctx.node("Sub", [ctx.node("Slice", [edges, ctx.ints([1]), ctx.ints([n + 1]), ctx.ints([0])]),
                                  ctx.node("Slice", [edges, ctx.ints([0]), ctx.ints([n]), ctx.ints([0])])])
        hist = ctx.node("Div", [ctx.node("Div", [hist, ctx.reduce("ReduceSum", hist, [0], False)]), widths])
    return [hist, ctx.node("Identity", [edges])]
