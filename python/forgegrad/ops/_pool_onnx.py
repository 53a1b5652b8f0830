"""ONNX mappings of the 1-d pools, the indexed pools, the power-average pools and the channel / alpha dropouts
(ops/pool1d.py, pool_index.py, pool_lp.py, dropout_feature.py). The onnx package is imported only when exporting.

- max_pool1d / avg_pool1d: MaxPool / AveragePool with 1-d kernels (ceil_mode as extra end padding, as the 2-d
  mappings do); over a dynamic length they run the 2-d mapping on an (N, C, 1, L) view, which handles ceil_mode
  there. MaxPool's Indices count over the whole tensor, torch's within each (C, L) row: Mod L.
- adaptive pools: the 2-d adaptive mapping (Global*Pool, a strided pool, or reductions over torch's windows, with
  run-time bounds on dynamic axes) on a 4-d view for 1-d. adaptive_max_pool's indices: MaxPool's Indices where
  the sizes divide, else an ArgMax per output window (first maximum, as torch), with run-time bounds on dynamic
  axes; an axis kept at a dynamic input size (output_size None) has no static window count: not exported.
- max_unpool: MaxUnpool, torch's per-plane indices offset to ONNX's whole-tensor ones (the offsets and the output
  shape read off the input's shape: dynamic sizes too, but for an output_size over dynamic spatial sizes).
- lp_pool: LpPool where it equals torch's (an even integer norm_type, no ceil_mode: LpPool takes |x|^p and sums
  partial windows unscaled), else torch's formula (Pow, AveragePool, Mul, Pow).
- the dropouts: the identity (eval mode); a training-mode call is not exported.
"""
from __future__ import annotations

import numpy as np


def _mods():
    from ..onnx.mappings import _conv_adapters as A
    from ..onnx.mappings import _conv_emit as CE
    return A, CE


def _dynamic(op, xn, nspatial):
    """Per spatial axis, whether its size can change at run time (the 2-d mappings' rule, _dynamic_hw)."""
    A, _ = _mods()
    shapes = [args[xn].shape[2:] for args in (op.args, op.args_b, op.args_c) if args.get(xn) is not None]
    traced = tuple(len({s[i] for s in shapes}) > 1 for i in range(nspatial))
    image_inputs = {name for name, axis in op.ctx.symbols.axes if axis >= 2}
    image_axes = bool(image_inputs) and A._reads_any(op.ctx, op.input(xn), image_inputs)
    return tuple(t or image_axes for t in traced)


def nan_mask(ctx, x):
    """IsNaN(x) as float32 0 / 1: max-pooled like x, it says which windows hold a NaN."""
    return ctx.node("Cast", [ctx.node("IsNaN", [x])], to=1)  # to FLOAT


def restore_nan(ctx, vals, x, pool):
    """vals (the max pool of x) with NaN where pool(nan_mask(x)) is 1, under export(nan_exact_pooling=True); else
    vals unchanged, a plain MaxPool as torch.onnx writes. torch's max is NaN where a window holds one;
    onnxruntime's MaxPool skips a NaN that is not the window's first element (its indices may then differ from
    torch's). Opt-in: the mask doubles the pooling work and onnxruntime's quantize_static rejects the pattern."""
    if not ctx.nan_exact_pooling:
        return vals
    return ctx.node("Where", [ctx.node("Cast", [pool(nan_mask(ctx, x))], to=9),  # to BOOL
                              ctx.const(np.asarray(np.nan, np.float32)), vals])


def _geometry_1d(op, owner, dilation=True):
    from .pool1d import as_2d
    A, _ = _mods()
    return as_2d(owner, A._arg(op, "kernel_size"), A._arg(op, "stride"), A._arg(op, "padding", default=0),
                 A._arg(op, "dilation", default=1) if dilation else 1)


def map_max_pool1d(ctx, op):
    from ..kernels import geometry
    A, CE = _mods()
    xn = A._x(op)
    x, L = op.input(xn), op.args[xn].shape[2]
    k, s, p, d = _geometry_1d(op, "MaxPool")
    ceil = bool(A._arg(op, "ceil_mode", default=False))
    if _dynamic(op, xn, 1)[0]:
        def pool(t, with_indices):
            out = CE.max_pool2d(ctx, ctx.unsqueeze(t, [2]), (1, L), k, s, p, d, ceil, with_indices=with_indices,
                                dynamic=True)
            return [ctx.squeeze(v, [2]) for v in (out if with_indices else [out])]
        area = CE._runtime_size(ctx, x, 2)
    else:
        shape = geometry.pool2d_geometry((1, 1, 1, L), k, s, p, d, ceil, owner="MaxPool").output_shape
        attrs = {"dilations": [d[1]]} if d[1] != 1 else {}

        def pool(t, with_indices):
            out = CE._pool(ctx, "MaxPool", t, (k[1],), (s[1],), (p[1], p[1]), (d[1],), (L,), (shape[3],),
                           outputs=2 if with_indices else 1, **attrs)
            return out if with_indices else [out]
        area = ctx.const(np.int64(L))
    vals, idx = pool(x, True)
    # nan_exact_pooling: the same pool over IsNaN (as 0 / 1) puts NaN windows back (indices: docs/torch_compat.md)
    return [restore_nan(ctx, vals, x, lambda t: pool(t, False)[0]), ctx.node("Mod", [idx, area])]


def map_avg_pool1d(ctx, op):
    from ..kernels import geometry
    A, CE = _mods()
    xn = A._x(op)
    x, L = op.input(xn), op.args[xn].shape[2]
    k, s, p, _ = _geometry_1d(op, "AveragePool", dilation=False)
    ceil = bool(A._arg(op, "ceil_mode", default=False))
    count_pad = bool(A._arg(op, "count_include_pad", default=True))
    if _dynamic(op, xn, 1)[0]:
        return [ctx.squeeze(CE.avg_pool2d(ctx, ctx.unsqueeze(x, [2]), (1, L), k, s, p, ceil, count_pad, None,
                                          dynamic=True), [2])]
    out = geometry.pool2d_geometry((1, 1, 1, L), k, s, p, 1, ceil, owner="AveragePool").output_shape[3]
    k, s, p = k[1], s[1], p[1]
    if ceil and count_pad:
        # torch counts the padding but not the ceil extension: pad explicitly, then count nothing padded
        if p:
            x, L, p = ctx.node("Pad", [x, ctx.ints([0, 0, p, 0, 0, p])], mode="constant"), L + 2 * p, 0
        return [CE._pool(ctx, "AveragePool", x, (k,), (s,), (p, p), (1,), (L,), (out,), count_include_pad=0)]
    return [CE._pool(ctx, "AveragePool", x, (k,), (s,), (p, p), (1,), (L,), (out,),
                     count_include_pad=int(count_pad))]


def map_adaptive_avg_pool1d(ctx, op):
    from .pool1d import adaptive_length
    A, CE = _mods()
    xn = A._x(op)
    L = op.args[xn].shape[2]
    o = adaptive_length(A._arg(op, "output_size", default=1), L, "AdaptiveAvgPool1d")
    dyn = _dynamic(op, xn, 1)[0]
    if dyn and A._arg(op, "output_size", default=1) is None:
        return [op.input(xn)]
    y = CE.adaptive_pool2d(ctx, ctx.unsqueeze(op.input(xn), [2]), (1, L), (1, o), "ReduceMean", (False, dyn))
    return [ctx.squeeze(y, [2])]


# ---- adaptive max ------------------------------------------------------------------------------------------
def _bounds(ctx, x, axis, n, o, dynamic):
    """Per output window along ``axis``: (start, end) as 1-d int64 [1] values, and the static pair or None."""
    _, CE = _mods()
    if dynamic:
        starts, ends = CE._adaptive_bounds(ctx, CE._runtime_size(ctx, x, axis), o)
        return [(a, b, None) for a, b in zip(starts, ends)]
    out = []
    for i in range(o):
        a, b = (i * n) // o, -(-((i + 1) * n) // o)
        out.append((ctx.ints([a]), ctx.ints([b]), (a, b)))
    return out


def _adaptive_argmax(ctx, x, in_hw, out_hw, dynamic):
    """torch's adaptive max indices (h * W + w of each window's first maximum): an ArgMax per output window."""
    _, CE = _mods()
    rows = _bounds(ctx, x, 2, in_hw[0], out_hw[0], dynamic[0])
    cols = _bounds(ctx, x, 3, in_hw[1], out_hw[1], dynamic[1])
    width = CE._runtime_size(ctx, x, 3) if dynamic[1] else None
    parts = []
    for r0, r1, rs in rows:
        for c0, c1, cs in cols:
            win = ctx.node("Slice", [x, ctx.node("Concat", [r0, c0], axis=0), ctx.node("Concat", [r1, c1], axis=0),
                                     ctx.ints([2, 3])])
            a = ctx.node("ArgMax", [ctx.node("Reshape", [win, ctx.ints([0, 0, -1])])], axis=2, keepdims=1)
            if rs is not None and cs is not None and width is None:
                bw = cs[1] - cs[0]
                row = ctx.node("Mul", [ctx.node("Div", [a, ctx.ints([bw])]), ctx.ints([in_hw[1]])])
                base = ctx.ints([rs[0] * in_hw[1] + cs[0]])
                parts.append(ctx.node("Add", [ctx.node("Add", [row, ctx.node("Mod", [a, ctx.ints([bw])])]), base]))
                continue
            bw = ctx.node("Sub", [c1, c0])
            w = width if width is not None else ctx.ints([in_hw[1]])
            h = ctx.node("Add", [r0, ctx.node("Div", [a, bw])])
            parts.append(ctx.node("Add", [ctx.node("Mul", [h, w]), ctx.node("Add", [c0, ctx.node("Mod", [a, bw])])]))
    flat = parts[0] if len(parts) == 1 else ctx.node("Concat", parts, axis=2)
    return ctx.node("Reshape", [flat, ctx.ints([0, 0, out_hw[0], out_hw[1]])])


def _adaptive_max(ctx, op, x, in_hw, output_size, dynamic):
    from ..kernels import geometry
    _, CE = _mods()
    out_hw = geometry.adaptive_output_size(output_size, in_hw, "AdaptiveMaxPool")
    kept = CE._kept_axes(output_size)
    if any(d and k for d, k in zip(dynamic, kept)):
        raise op.unsupported("adaptive max pooling's indices over an axis kept at a dynamic input size "
                             "(output_size None) are not exported")
    # export(nan_exact_pooling=True): torch's max is NaN where a window holds one; onnxruntime's MaxPool and
    # ReduceMax skip a NaN that is not the window's first element: the window mean of (NaN where x is, else 0),
    # added, puts it back (indices: see docs/torch_compat.md)
    exact = ctx.nan_exact_pooling
    nans = ctx.node("Where", [ctx.node("IsNaN", [x]), x, ctx.const(np.asarray(0, np.float32))]) if exact else None
    if not any(dynamic) and in_hw[0] % out_hw[0] == 0 and in_hw[1] % out_hw[1] == 0:
        k = [in_hw[0] // out_hw[0], in_hw[1] // out_hw[1]]
        vals, idx = ctx.node("MaxPool", [x], outputs=2, kernel_shape=k, strides=k)
        if exact:
            vals = ctx.node("Add", [vals, ctx.node("AveragePool", [nans], kernel_shape=k, strides=k)])
        return vals, ctx.node("Mod", [idx, ctx.const(np.int64(in_hw[0] * in_hw[1]))])
    vals = CE.adaptive_pool2d(ctx, x, in_hw, output_size, "ReduceMax", dynamic)
    if exact:
        vals = ctx.node("Add", [vals, CE.adaptive_pool2d(ctx, nans, in_hw, output_size, "ReduceMean", dynamic)])
    return vals, _adaptive_argmax(ctx, x, in_hw, out_hw, dynamic)


def map_adaptive_max_pool2d(ctx, op):
    A, _ = _mods()
    xn = A._x(op)
    return list(_adaptive_max(ctx, op, op.input(xn), tuple(op.args[xn].shape[2:]),
                              A._arg(op, "output_size", default=1), _dynamic(op, xn, 2)))


def map_adaptive_max_pool1d(ctx, op):
    from .pool1d import adaptive_length
    A, _ = _mods()
    xn = A._x(op)
    L = op.args[xn].shape[2]
    out = A._arg(op, "output_size", default=1)
    size = (1, None) if out is None else (1, adaptive_length(out, L, "AdaptiveMaxPool1d"))
    vals, idx = _adaptive_max(ctx, op, ctx.unsqueeze(op.input(xn), [2]), (1, L), size, (False, _dynamic(op, xn, 1)[0]))
    return [ctx.squeeze(vals, [2]), ctx.squeeze(idx, [2])]


# ---- max_unpool --------------------------------------------------------------------------------------------
def map_max_unpool(nd):
    def mapping(ctx, op):
        from .pool_index import unpool_geometry
        A, _ = _mods()
        xn = A._x(op)
        x, shape = op.input(xn), op.args[xn].shape
        output_size = A._arg(op, "output_size")
        k, s, p, out = unpool_geometry(shape, A._arg(op, "kernel_size"), A._arg(op, "stride"),
                                       A._arg(op, "padding", default=0), output_size, nd, "MaxUnpool")
        i64 = np.int64
        dims = ctx.node("Shape", [x])
        nc = ctx.node("Slice", [dims, ctx.ints([0]), ctx.ints([2]), ctx.ints([0])])
        if any(_dynamic(op, xn, nd)):
            if output_size is not None:
                raise op.unsupported("max_unpool with an output_size over dynamic spatial sizes is not exported")
            spatial = ctx.node("Slice", [dims, ctx.ints([2]), ctx.ints([2 + nd]), ctx.ints([0])])
            # torch's default size (in - 1) * stride - 2 * padding + kernel, per axis
            out_t = ctx.node("Add", [ctx.node("Mul", [ctx.node("Sub", [spatial, ctx.ints([1] * nd)]),
                                                      ctx.ints(list(s))]),
                                     ctx.ints([k_ - 2 * p_ for k_, p_ in zip(k, p)])])
        else:
            out_t = ctx.ints(list(out))
            default = [(n - 1) * s_ - 2 * p_ + k_ for n, s_, p_, k_ in zip(shape[2:], s, p, k)]
            if any(o < d for o, d in zip(out, default)):
                return [_unpool_scatter(ctx, x, op.input("indices"), nc, out_t, np.dtype(op.args[xn].dtype))]
        # torch's indices count within each (N, C) plane, ONNX's over the whole tensor: add plane * area
        area = ctx.reduce("ReduceProd", out_t, [0], False)
        planes = ctx.node("Range", [ctx.const(i64(0)), ctx.reduce("ReduceProd", nc, [0], False), ctx.const(i64(1))])
        offsets = ctx.node("Reshape", [ctx.node("Mul", [planes, area]),
                                       ctx.node("Concat", [nc, ctx.ints([1] * nd)], axis=0)])
        idx = ctx.node("Add", [op.input("indices"), offsets])
        return [ctx.node("MaxUnpool", [x, idx, ctx.node("Concat", [nc, out_t], axis=0)], kernel_shape=list(k),
                         strides=list(s), pads=list(p) + list(p))]
    return mapping


def _unpool_scatter(ctx, x, indices, nc, out_t, dtype):
    """max_unpool to an output_size below torch's default size (a ceil_mode pool's): onnxruntime's MaxUnpool
    rejects an output_shape smaller than the size it infers, so scatter the values into zero planes instead
    (torch's per-plane indices index the flattened planes as they are; repeated indices carry equal values)."""
    flat = ctx.node("Concat", [nc, ctx.ints([-1])], axis=0)
    area = ctx.reduce("ReduceProd", out_t, [0], True)
    zeros = ctx.node("Expand", [ctx.const(np.zeros((1, 1, 1), dtype), dtype=dtype),
                                ctx.node("Concat", [nc, area], axis=0)])
    out = ctx.node("ScatterElements", [zeros, ctx.node("Reshape", [indices, flat]), ctx.node("Reshape", [x, flat])],
                   axis=2)
    return ctx.node("Reshape", [out, ctx.node("Concat", [nc, out_t], axis=0)])


# ---- lp_pool -----------------------------------------------------------------------------------------------
def map_lp_pool(nd):
    def mapping(ctx, op):
        from .pool_lp import lp_arguments
        A, CE = _mods()
        xn = A._x(op)
        x, spatial = op.input(xn), tuple(op.args[xn].shape[2:])
        p, k, s, ceil = lp_arguments(op.args[xn], A._arg(op, "norm_type"), A._arg(op, "kernel_size"),
                                     A._arg(op, "stride"), A._arg(op, "ceil_mode", default=False), nd)
        dyn = _dynamic(op, xn, nd)
        if not ceil and float(p).is_integer() and int(p) % 2 == 0:
            return [ctx.node("LpPool", [x], kernel_shape=list(k[len(k) - nd:]), strides=list(s[len(s) - nd:]),
                             p=int(p))]
        f32 = np.float32
        xp = ctx.node("Pow", [x, ctx.const(f32(p))])
        if nd == 3:
            from ._pool3d_onnx import _static, avg_pool3d_nodes
            from .pool3d import avg_pool3d_arguments
            _static(op, xn, "lp_pool3d")
            geo, div = avg_pool3d_arguments(op.args[xn], k, s, 0, ceil)
            a = avg_pool3d_nodes(ctx, xp, spatial, geo, div)
        elif nd == 1:
            a = ctx.squeeze(CE.avg_pool2d(ctx, ctx.unsqueeze(xp, [2]), (1,) + spatial, k, s, 0, ceil, True, None,
                                          dynamic=dyn[0]), [2])
        else:
            a = CE.avg_pool2d(ctx, xp, spatial, k, s, 0, ceil, True, None, dynamic=any(dyn))
        y = ctx.node("Mul", [a, ctx.const(f32(np.prod(k)))])
        return [ctx.node("Pow", [y, ctx.const(f32(1.0 / p))])]
    return mapping


# ---- dropout -----------------------------------------------------------------------------------------------
def map_dropout_identity(ctx, op):
    if op.attr("training") and op.attr("p") > 0:
        raise op.unsupported(f"{op.name} ran with training=True while the model was in eval mode: its random mask "
                             "cannot be exported")
    return [op.input("x")]
