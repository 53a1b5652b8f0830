"""ONNX mappings of the 3-D pools (ops/pool3d.py). Over dynamic spatial sizes: max_pool3d and avg_pool3d without
ceil_mode (ONNX's own padding rule is torch's there), adaptive_avg_pool3d to (1, 1, 1); the other forms are
refused over dynamic sizes (their windows and divisors are computed at the traced size). The onnx package is
imported only when exporting.

- max_pool3d: MaxPool, ceil_mode as extra end padding (the 2-D mapping's _pool); NaNs put back as the 2-D
  mapping does; ONNX's Indices count over the whole tensor, torch's within each (D, H, W) volume: Mod D*H*W.
- avg_pool3d: an unpadded AveragePool over the input zero-padded explicitly (and by stride - 1 more at the end in
  ceil mode), times kernel volume / torch's divisor (a constant per output position: count_include_pad, the
  clipped last windows and divisor_override all live in it), sliced to torch's window count. No rule is left to
  ONNX's padding or ceil_mode, which runtimes read differently.
- adaptive_avg_pool3d: GlobalAveragePool for output 1, an AveragePool when the sizes divide, else a Slice and a
  ReduceMean per axis and window (a NaN stays in its windows).
- adaptive_max_pool3d: GlobalMaxPool-like MaxPool with indices when the sizes divide; uneven windows are refused.
"""
from __future__ import annotations

import numpy as np

from ._pool_onnx import _dynamic, _mods, restore_nan


def _static(op, xn, what):
    if any(_dynamic(op, xn, 3)):
        raise op.unsupported(f"{what} over dynamic spatial sizes is not exported (its windows are fixed at export)")


def _input(op, what, allow_dynamic=False):
    """(argument helpers, input array, input value, spatial sizes or None where dynamic) of a 3-D pool."""
    A, _ = _mods()
    xn = A._x(op)
    if allow_dynamic and any(_dynamic(op, xn, 3)):
        return A, op.args[xn], op.input(xn), None
    _static(op, xn, what)
    return A, op.args[xn], op.input(xn), tuple(op.args[xn].shape[2:])


def _volume(ctx, x, spatial):
    """D * H * W of x: a constant, or read from its shape at run time."""
    if spatial is not None:
        return ctx.const(np.int64(int(np.prod(spatial))))
    dims = ctx.node("Slice", [ctx.node("Shape", [x]), ctx.ints([2]), ctx.ints([5]), ctx.ints([0])])
    return ctx.reduce("ReduceProd", dims, [0], False)


def _max_pool(ctx, x, geo, spatial, outputs):
    _, CE = _mods()
    attrs = {"dilations": list(geo.dilation)} if geo.dilation != (1, 1, 1) else {}
    return CE._pool(ctx, "MaxPool", x, geo.kernel_size, geo.stride, geo.padding + geo.padding, geo.dilation, spatial,
                    geo.output_shape[2:], outputs=outputs, **attrs)


def _with_indices(ctx, op, x, spatial, pool):
    """values (NaNs restored) and torch's per-volume indices of pool(x, outputs)."""
    vals, idx = pool(x, 2)
    vals = restore_nan(ctx, vals, x, lambda t: pool(t, 1))  # NaN windows under export(nan_exact_pooling=True)
    return [vals, ctx.node("Mod", [idx, _volume(ctx, x, spatial)])]


def _refuse_ceil(op, what, ceil_mode):
    if ceil_mode:
        raise op.unsupported(f"{what} with ceil_mode over dynamic spatial sizes is not exported (its clipped last "
                             "windows are fixed at export)")


def map_max_pool3d(ctx, op):
    from .pool3d import max_pool3d_geometry
    A, xa, x, spatial = _input(op, "max_pool3d", allow_dynamic=True)
    geo = max_pool3d_geometry(xa, A._arg(op, "kernel_size"), A._arg(op, "stride"), A._arg(op, "padding", default=0),
                              A._arg(op, "dilation", default=1), A._arg(op, "ceil_mode", default=False))
    if spatial is None:  # dynamic: ONNX's floor-mode output size is torch's
        _refuse_ceil(op, "max_pool3d", A._arg(op, "ceil_mode", default=False))
        attrs = dict(kernel_shape=list(geo.kernel_size), strides=list(geo.stride), pads=list(geo.padding) * 2,
                     dilations=list(geo.dilation))
        return _with_indices(ctx, op, x, None, lambda v, n: ctx.node("MaxPool", [v], outputs=n, **attrs))
    for n, k, s, p, d, o in zip(spatial, geo.kernel_size, geo.stride, geo.padding, geo.dilation, geo.output_shape[2:]):
        if (o - 1) * s + d * (k - 1) + 1 - n - p >= k:  # the end pad _pool would need
            raise op.unsupported("max_pool3d whose ceil_mode window reaches past the padded input by a kernel or "
                                 "more is not exported (ONNX runtimes take MaxPool pads below kernel_shape only)")
    return _with_indices(ctx, op, x, spatial, lambda v, n: _max_pool(ctx, v, geo, spatial, n))


def avg_pool3d_nodes(ctx, x, spatial, geo, div):
    """torch's average pool of x (static spatial sizes) with divisor div (per output position)."""
    out = geo.output_shape[2:]
    extra = [max(0, (o - 1) * s + k - n - 2 * p) for n, k, s, p, o in
             zip(spatial, geo.kernel_size, geo.stride, geo.padding, out)]
    pads = [0, 0] + list(geo.padding) + [0, 0] + [p + e for p, e in zip(geo.padding, extra)]
    xp = ctx.node("Pad", [x, ctx.ints(pads)], mode="constant") if any(pads) else x
    y = ctx.node("AveragePool", [xp], kernel_shape=list(geo.kernel_size), strides=list(geo.stride))
    counted = [(n + 2 * p + e - k) // s + 1 for n, k, s, p, e in
               zip(spatial, geo.kernel_size, geo.stride, geo.padding, extra)]
    if counted != list(out):
        y = ctx.node("Slice", [y, ctx.ints([0, 0, 0]), ctx.ints(list(out)), ctx.ints([2, 3, 4])])
    scale = (float(np.prod(geo.kernel_size)) / div).astype(np.float32)
    if np.all(scale == 1.0):
        return y
    return ctx.node("Mul", [y, ctx.const(scale)])


def map_avg_pool3d(ctx, op):
    from .pool3d import avg_pool3d_arguments
    A, xa, x, spatial = _input(op, "avg_pool3d", allow_dynamic=True)
    cip, override = A._arg(op, "count_include_pad", default=True), A._arg(op, "divisor_override")
    geo, div = avg_pool3d_arguments(xa, A._arg(op, "kernel_size"), A._arg(op, "stride"),
                                    A._arg(op, "padding", default=0), A._arg(op, "ceil_mode", default=False),
                                    cip, override)
    if spatial is None:  # dynamic, no ceil_mode: every window lies in the padded input, ONNX's divisors are torch's
        _refuse_ceil(op, "avg_pool3d", A._arg(op, "ceil_mode", default=False))
        y = ctx.node("AveragePool", [x], kernel_shape=list(geo.kernel_size), strides=list(geo.stride),
                     pads=list(geo.padding) * 2, count_include_pad=int(bool(cip) or override is not None))
        if override is None:
            return [y]
        return [ctx.node("Mul", [y, ctx.const(float(np.prod(geo.kernel_size)) / float(override), "float32")])]
    return [avg_pool3d_nodes(ctx, x, spatial, geo, div)]


def map_adaptive_avg_pool3d(ctx, op):
    from .pool3d import adaptive3d_size
    A, xa, y, spatial = _input(op, "adaptive_avg_pool3d", allow_dynamic=True)
    out = adaptive3d_size(xa, A._arg(op, "output_size"), "adaptive_avg_pool3d")
    if out == (1, 1, 1):
        return [ctx.node("GlobalAveragePool", [y])]
    if spatial is None:
        _static(op, A._x(op), "adaptive_avg_pool3d to a size other than (1, 1, 1)")
    return [adaptive_avg3d_nodes(ctx, y, spatial, out)]


def adaptive_avg3d_nodes(ctx, y, spatial, out):
    """Adaptive average pooling of y (static spatial sizes) to ``out`` (also interpolate's mode='area')."""
    from . import _window3d as W
    if tuple(out) == (1, 1, 1):
        return ctx.node("GlobalAveragePool", [y])
    if all(n % o == 0 for n, o in zip(spatial, out)):
        k = [n // o for n, o in zip(spatial, out)]
        return y if k == [1, 1, 1] else ctx.node("AveragePool", [y], kernel_shape=k, strides=k)
    for axis, (n, o) in enumerate(zip(spatial, out), start=2):  # a ReduceMean per window and axis, as the op
        if n != o:
            parts = [ctx.reduce("ReduceMean", ctx.node("Slice", [y, ctx.ints([a]), ctx.ints([b]), ctx.ints([axis])]),
                                [axis], True) for a, b in W.adaptive_bins(n, o)]
            y = ctx.node("Concat", parts, axis=axis)
    return y


def map_adaptive_max_pool3d(ctx, op):
    from .pool3d import adaptive3d_size
    A, xa, x, spatial = _input(op, "adaptive_max_pool3d")
    out = adaptive3d_size(xa, A._arg(op, "output_size"), "adaptive_max_pool3d")
    if any(n % o for n, o in zip(spatial, out)):
        raise op.unsupported("adaptive_max_pool3d over windows of unequal sizes (output sizes that do not divide the "
                             "input's) is not exported")
    k = [n // o for n, o in zip(spatial, out)]
    return _with_indices(ctx, op, x, spatial,
                         lambda v, n: ctx.node("MaxPool", [v], outputs=n, kernel_shape=k, strides=k))
