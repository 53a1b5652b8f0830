"""Volumetric (NCDHW) convolution and pooling on arrays: the geometry (torch's rules) and the arithmetic that the
3-D ops (ops/conv3d.py, ops/pool3d.py) run, in the input's dtype.

float32 convolution runs on the C++ 2-D conv kernels (ops/_conv3d_planes.py: the depth taps unfolded as
channels); what follows is the float64 path (and float32 geometries whose every output is padding).
Convolution is vol2col + GEMM. Per image and group, the taps of a block of output depth planes are copied into a
(C/groups * kD * kH * kW, planes * OH * OW) panel (one strided numpy copy of a window view of the zero-padded
image), which float32 multiplies on forgegrad's C++ sgemm (_C.gemm.sgemm: multithreaded, the same bits for any
thread count) and float64 on numpy's matmul. The input gradient is the transposed product scattered back tap by
tap (col2vol: adds in a fixed order), the weight gradient the products of grad_output and the panels summed image
after image (sgemm with beta 1). Panels are cut by output depth planes to about _PANEL_FLOATS, so the workspace
stays bounded and the blocking depends on the geometry only.

The pools are numpy code, exact or summed in a fixed order, over any number of spatial axes (so the float64 2-D
pools of _float64_nn.py share them). Each window tap is one strided view of the padded input. float32 3-D max
and (overlapping or padded) average pools, and every float32 max pool's gradient, run on the C++ 2-D pool
kernels instead (ops/_pool3d_planes.py).
"""
from __future__ import annotations

import itertools
from typing import NamedTuple, Tuple

import numpy as np

from .. import _C
from . import _conv3d_planes as _planes
from . import _pool3d_planes as _pool_planes
from ..autograd import Function
from .._args import integer, is_int

_PANEL_FLOATS = 1 << 21  # 8 MiB of float32 panel: stays in cache for the GEMM, bounded memory
_MAX_ADAPTIVE = 1 << 16  # adaptive windows per axis
_MAX_ELEMENTS = 1 << 40  # larger arrays cannot be allocated here: a ValueError, not a MemoryError mid-op


def sizes(value, n: int, name: str, owner: str, minimum=None) -> Tuple[int, ...]:
    """An int -> n copies; a tuple/list of n ints (or of one) -> the tuple. TypeError / ValueError name the
    argument."""
    if is_int(value):
        out = (int(value),) * n
    elif isinstance(value, (tuple, list)) and len(value) in (1, n) and all(is_int(v) for v in value):
        out = tuple(int(v) for v in value) * (n if len(value) == 1 else 1)
    else:
        raise TypeError(f"{owner}: {name} must be an int or a tuple of {n} ints, got {value!r}")
    if minimum is not None and min(out) < minimum:
        raise ValueError(f"{owner}: {name} must be >= {minimum}, got {value!r}")
    return out


def _check_size(owner, name, *shapes):
    for s in shapes:
        if int(np.prod([int(v) for v in s], dtype=object)) > _MAX_ELEMENTS:
            raise ValueError(f"{owner}: {name} is too large: needs an array of shape {tuple(s)}")


# ---- convolution ----------------------------------------------------------------------------------------
class ConvGeometry(NamedTuple):
    """A convolution over len(stride) spatial axes. pads: per axis (before, after); after may be negative (a
    transposed conv's output_padding beyond its padding: those last input positions are read by no tap)."""

    stride: Tuple[int, ...]
    pads: Tuple[Tuple[int, int], ...]
    dilation: Tuple[int, ...]
    groups: int
    output_shape: Tuple[int, ...]  # (N, OC, *spatial)


def conv_geometry(input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1, owner="conv3d",
                  nd=3) -> ConvGeometry:
    """Validated geometry of torch's conv{nd}d(input, weight): padding an int, a tuple of nd, 'same' (stride 1;
    the odd element after, as torch) or 'valid'."""
    stride = sizes(stride, nd, "stride", owner, 1)
    dilation = sizes(dilation, nd, "dilation", owner, 1)
    groups = integer(groups, "groups", owner)
    if groups < 1:
        raise ValueError(f"{owner}: groups must be >= 1, got {groups}")
    input_shape, weight_shape = tuple(int(v) for v in input_shape), tuple(int(v) for v in weight_shape)
    N, C, spatial = input_shape[0], input_shape[1], input_shape[2:]
    if N < 0 or C < 1 or min(spatial) < 1:
        raise ValueError(f"{owner}: input must have nonzero channels and spatial sizes, got shape {input_shape}")
    OC, Cg, k = weight_shape[0], weight_shape[1], weight_shape[2:]
    if min(weight_shape) < 1:
        raise ValueError(f"{owner}: weight must have nonzero sizes, got {weight_shape}")
    if C % groups:
        raise ValueError(f"{owner}: in_channels ({C}) must be divisible by groups ({groups})")
    if OC % groups:
        raise ValueError(f"{owner}: out_channels ({OC}) must be divisible by groups ({groups})")
    if Cg != C // groups:
        raise ValueError(f"{owner}: weight must have shape (out_channels, in_channels / groups, *kernel) = "
                         f"{(OC, C // groups) + k} for input of shape {input_shape} and groups={groups}, got "
                         f"{weight_shape}")
    if isinstance(padding, str):
        if padding == "valid":
            pads = ((0, 0),) * nd
        elif padding == "same":
            if stride != (1,) * nd:
                raise ValueError(f"{owner}: padding='same' is not supported for strided convolutions (stride must "
                                 f"be 1), got stride {stride}")
            pads = tuple((d * (kk - 1) // 2, d * (kk - 1) - d * (kk - 1) // 2) for d, kk in zip(dilation, k))
        else:
            raise ValueError(f"{owner}: padding must be an int, a tuple of {nd} ints, 'same' or 'valid', got "
                             f"{padding!r}")
    else:
        pads = tuple((p, p) for p in sizes(padding, nd, "padding", owner, 0))
    out = []
    for n, (lo, hi), kk, s, d in zip(spatial, pads, k, stride, dilation):
        span = d * (kk - 1) + 1
        if n + lo + hi < span:
            raise ValueError(f"{owner}: kernel size {k} with dilation {dilation} is larger than the padded input "
                             f"{tuple(n_ + a + b for n_, (a, b) in zip(spatial, pads))}")
        out.append((n + lo + hi - span) // s + 1)
    shape = (N, OC) + tuple(out)
    _check_size(owner, "input", input_shape, shape, (C // groups,) + k + tuple(out),
                tuple(n + lo + max(hi, 0) for n, (lo, hi) in zip(spatial, pads)))
    return ConvGeometry(stride, pads, dilation, groups, shape)


def _padded(x, pads):
    """x (N, C, *spatial) zero-padded by pads (a negative end pad pads nothing: those elements are never read)."""
    if not any(lo or hi > 0 for lo, hi in pads):
        return np.ascontiguousarray(x)
    return np.pad(x, ((0, 0), (0, 0)) + tuple((lo, max(hi, 0)) for lo, hi in pads))


def _blocks(geo, rows):
    """[(d0, d1)]: output depth planes per panel, about _PANEL_FLOATS floats each (a function of the geometry)."""
    out = geo.output_shape[2:]
    plane = int(np.prod(out[1:]))
    per = max(1, _PANEL_FLOATS // max(1, rows * plane))
    return [(d, min(d + per, out[0])) for d in range(0, out[0], per)]


def _windows(src, k, geo, d0, d1):
    """View (C, *k, d1 - d0, *out[1:]) of a padded image's channels src (C, *padded): entry (c, taps, o) is the
    input that tap `taps` of output position o reads (output depth planes d0 .. d1 - 1)."""
    out = (d1 - d0,) + geo.output_shape[3:]
    st = src.strides
    base = src[:, d0 * geo.stride[0]:]
    tap_strides = tuple(s * d for s, d in zip(st[1:], geo.dilation))
    out_strides = tuple(s * t for s, t in zip(st[1:], geo.stride))
    return np.lib.stride_tricks.as_strided(base, (src.shape[0],) + tuple(k) + out, (st[0],) + tap_strides +
                                           out_strides, writeable=False)


def _gemm(a, b, out, trans_a=False, trans_b=False, beta=0.0):
    """out = op(a) @ op(b) + beta * out: float32 on the C++ sgemm, other dtypes on numpy."""
    if out.dtype == np.float32:
        _C.gemm.sgemm(a, b, out, trans_a, trans_b, 1.0, beta)
        return
    prod = np.matmul(a.T if trans_a else a, b.T if trans_b else b)
    if beta:
        out += prod
    else:
        out[...] = prod


def _on_planes(geo, a, b, k, x_shape=None):
    """Whether a float32 3-D conv with kernel k runs on the C++ 2-D kernels (ops/_conv3d_planes.py); float64 and
    the geometries _planes.supported declines stay here."""
    x_shape = a.shape if x_shape is None else x_shape
    return (len(geo.stride) == 3 and a.dtype == np.float32 and b.dtype == np.float32
            and _planes.supported(geo, x_shape, k))


def conv_forward(x, w, geo):
    """conv(x, w) without bias: x (N, C, *spatial), w (OC, C / groups, *k) -> (N, OC, *out)."""
    if _on_planes(geo, x, w, w.shape[2:]):
        return _planes.conv_forward(x, w, geo)
    N, OC = geo.output_shape[:2]
    G, k, Cg = geo.groups, w.shape[2:], w.shape[1]
    OCg, rows = OC // G, Cg * int(np.prod(k))
    out = geo.output_shape[2:]
    plane, P = int(np.prod(out[1:])), int(np.prod(out))
    y = np.empty((N, OC, P), np.result_type(x, w))
    if N == 0:
        return y.reshape(geo.output_shape)
    xp = _padded(x, geo.pads)
    wm = np.ascontiguousarray(w).reshape(G, OCg, rows)
    for n in range(N):
        for g in range(G):
            src = xp[n, g * Cg:(g + 1) * Cg]
            for d0, d1 in _blocks(geo, rows):
                col = np.ascontiguousarray(_windows(src, k, geo, d0, d1)).reshape(rows, -1)
                _gemm(wm[g], col, y[n, g * OCg:(g + 1) * OCg, d0 * plane:d1 * plane])
    return y.reshape(geo.output_shape)


def conv_input_grad(gy, w, geo, x_shape):
    """The gradient of conv(x, w) with respect to x (of shape x_shape) for the output gradient gy."""
    if _on_planes(geo, gy, w, w.shape[2:], x_shape):
        return _planes.conv_input_grad(gy, w, geo, x_shape)
    N, OC = geo.output_shape[:2]
    G, k, Cg = geo.groups, w.shape[2:], w.shape[1]
    OCg, rows = OC // G, Cg * int(np.prod(k))
    out = geo.output_shape[2:]
    plane = int(np.prod(out[1:]))
    dtype = np.result_type(gy, w)
    pshape = tuple(n + lo + max(hi, 0) for n, (lo, hi) in zip(x_shape[2:], geo.pads))
    gxp = np.zeros(tuple(x_shape[:2]) + pshape, dtype)
    gm = np.ascontiguousarray(gy).reshape(N, OC, int(np.prod(out)))  # not -1: N may be 0
    wm = np.ascontiguousarray(w).reshape(G, OCg, rows)
    for n in range(N):
        for g in range(G):
            dst = gxp[n, g * Cg:(g + 1) * Cg]
            for d0, d1 in _blocks(geo, rows):
                col = np.empty((rows, (d1 - d0) * plane), dtype)
                _gemm(wm[g], gm[n, g * OCg:(g + 1) * OCg, d0 * plane:d1 * plane], col, trans_a=True)
                col = col.reshape((Cg, -1, d1 - d0) + out[1:])
                for t, taps in enumerate(itertools.product(*(range(kk) for kk in k))):
                    dst[(slice(None),) + _tap_slices(taps, geo, (d0, d1), out)] += col[:, t]
    crop = tuple(slice(lo, lo + n) for n, (lo, _) in zip(x_shape[2:], geo.pads))
    return np.ascontiguousarray(gxp[(slice(None), slice(None)) + crop])


def _tap_slices(taps, geo, depth, out):
    """The slices of the padded input that tap `taps` reads for output depth planes depth[0] .. depth[1] - 1 and
    every position of the other axes."""
    firsts = (depth[0],) + (0,) * (len(out) - 1)
    counts = (depth[1] - depth[0],) + tuple(out[1:])
    return tuple(slice(t * d + f * s, t * d + f * s + s * (c - 1) + 1, s)
                 for t, d, s, f, c in zip(taps, geo.dilation, geo.stride, firsts, counts))


def conv_weight_grad(x, gy, w_shape, geo):
    """The gradient of conv(x, w) with respect to w (of shape w_shape) for the output gradient gy."""
    if _on_planes(geo, x, gy, tuple(w_shape[2:])):
        return _planes.conv_weight_grad(x, gy, w_shape, geo)
    N, OC = geo.output_shape[:2]
    G, k, Cg = geo.groups, tuple(w_shape[2:]), w_shape[1]
    OCg, rows = OC // G, Cg * int(np.prod(k))
    plane = int(np.prod(geo.output_shape[3:]))
    gw = np.zeros((G, OCg, rows), np.result_type(x, gy))
    xp = _padded(x, geo.pads)
    gm = np.ascontiguousarray(gy).reshape(N, OC, int(np.prod(geo.output_shape[2:])))  # not -1: N may be 0
    for n in range(N):
        for g in range(G):
            src = xp[n, g * Cg:(g + 1) * Cg]
            for d0, d1 in _blocks(geo, rows):
                col = np.ascontiguousarray(_windows(src, k, geo, d0, d1)).reshape(rows, -1)
                _gemm(gm[n, g * OCg:(g + 1) * OCg, d0 * plane:d1 * plane], col, gw[g], trans_b=True, beta=1.0)
    return gw.reshape(w_shape)


# ---- pooling --------------------------------------------------------------------------------------------
class PoolGeometry(NamedTuple):
    kernel_size: Tuple[int, ...]
    stride: Tuple[int, ...]
    padding: Tuple[int, ...]
    dilation: Tuple[int, ...]
    output_shape: Tuple[int, ...]  # (N, C, *out)


def pool_geometry(input_shape, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, owner="max_pool3d",
                  nd=3) -> PoolGeometry:
    """torch's max / avg pooling geometry (stride None or () means kernel_size; padding at most half the kernel;
    ceil_mode drops a last window that would start in the end padding)."""
    from .._validate import check_bool
    k = sizes(kernel_size, nd, "kernel_size", owner, 1)
    no_stride = stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0)
    s = k if no_stride else sizes(stride, nd, "stride", owner, 1)
    p = sizes(padding, nd, "padding", owner, 0)
    d = sizes(dilation, nd, "dilation", owner, 1)
    ceil_mode = check_bool(ceil_mode, f"{owner}: ceil_mode")
    if any(pp > kk // 2 for pp, kk in zip(p, k)):
        raise ValueError(f"{owner}: padding must be at most half of kernel_size, got padding={p}, kernel_size={k}")
    input_shape = tuple(int(v) for v in input_shape)
    if len(input_shape) != nd + 2 or min(input_shape[1:]) < 1:
        raise ValueError(f"{owner}: input must have shape (N, C, *{nd} spatial sizes) with nonzero channels and "
                         f"sizes, got {input_shape}")
    out = []
    for n, kk, ss, pp, dd in zip(input_shape[2:], k, s, p, d):
        # torch's sizes (floor division): in ceil_mode a dilated window may reach past the padded input, as long
        # as it starts inside it
        o = (n + 2 * pp - dd * (kk - 1) - 1 + ((ss - 1) if ceil_mode else 0)) // ss + 1
        if ceil_mode and (o - 1) * ss >= n + pp:
            o -= 1
        if o < 1:
            raise ValueError(f"{owner}: kernel_size {k} (dilation {d}) is larger than the padded input "
                             f"{tuple(v + 2 * q for v, q in zip(input_shape[2:], p))}")
        out.append(o)
    shape = input_shape[:2] + tuple(out)
    _check_size(owner, "input", shape)
    return PoolGeometry(k, s, p, d, shape)


def _pool_pads(geo, spatial):
    """Per axis (before, after) padding that puts every window (ceil_mode's last one too) inside the array."""
    return tuple((p, max(0, (o - 1) * s + d * (k - 1) + 1 - n - p)) for n, k, s, p, d, o in
                 zip(spatial, geo.kernel_size, geo.stride, geo.padding, geo.dilation, geo.output_shape[2:]))


def _tap_views(xp, geo):
    """(taps, view): per kernel tap, the (N, C, *out) view of the padded input xp that it reads."""
    out = geo.output_shape[2:]
    for taps in itertools.product(*(range(k) for k in geo.kernel_size)):
        yield taps, xp[(Ellipsis,) + tuple(slice(t * d, t * d + s * (o - 1) + 1, s) for t, d, s, o in
                                           zip(taps, geo.dilation, geo.stride, out))]


def max_pool(x, geo):
    """(values, int64 flat per-plane indices) of max pooling; torch's choice: the first maximum, or the last NaN."""
    if _pool_planes.applies(x, geo):
        return _pool_planes.max_pool(x, geo)
    spatial, out = x.shape[2:], geo.output_shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0)) + _pool_pads(geo, spatial), constant_values=-np.inf)
    best = np.full(geo.output_shape, -np.inf, x.dtype)
    idx = np.zeros(geo.output_shape, np.int64)
    found = np.zeros(out, bool)
    for taps, v in _tap_views(xp, geo):
        coords = [t * d - p + s * np.arange(o) for t, d, p, s, o in
                  zip(taps, geo.dilation, geo.padding, geo.stride, out)]
        inside = np.ones(out, bool)
        flat = np.zeros(out, np.int64)
        for axis, (c, n) in enumerate(zip(coords, spatial)):
            shape = [1] * len(out)
            shape[axis] = -1
            inside &= ((c >= 0) & (c < n)).reshape(shape)
            flat = flat * n + c.reshape(shape)
        take = inside & (~found | (v > best) | np.isnan(v))  # torch's loop: a greater value, or any NaN
        best = np.where(take, v, best)
        idx = np.where(take, flat, idx)
        found |= inside
    return best, idx


class IndexedPool(Function):
    """A max pool's Function base: forward returns ``saving(ctx, x, values, indices)`` (int64 flat per-plane
    indices); the gradient scatters to the indices."""

    non_differentiable_outputs = (1,)

    @staticmethod
    def saving(ctx, x, y, idx):
        ctx.save_for_backward(idx)
        ctx.in_shape = x.shape
        return y, idx

    @staticmethod
    def backward(ctx, g, g_idx=None):
        (idx,) = ctx.saved_tensors
        return scatter_max(g, idx, ctx.in_shape)


def scatter_max(g, idx, in_shape):
    """The gradient of a max pool: g added at each window's flat index (np.add.at: in order, the same bits)."""
    if g.dtype == np.float32 and len(in_shape) >= 3:
        return _pool_planes.scatter_max(g, idx, in_shape)
    N, C = in_shape[:2]
    if g.dtype == np.float64 and len(in_shape) >= 3 and idx.dtype == np.int64:
        # the C++ scatter (max_pool2d_backward's, in output order per plane), each plane flattened to (1, size)
        per_in, per_out = int(np.prod(in_shape[2:])), int(np.prod(g.shape[2:]))
        gx = np.empty((N, C, 1, per_in))
        _C.pool.max_pool2d_backward(np.ascontiguousarray(g).reshape(N, C, 1, per_out),
                                    np.ascontiguousarray(idx).reshape(N, C, 1, per_out), gx)
        return gx.reshape(in_shape)
    gx = np.zeros((N * C, int(np.prod(in_shape[2:]))), g.dtype)
    per = int(np.prod(idx.shape[2:]))  # not -1: N may be 0
    np.add.at(gx, (np.arange(N * C)[:, None], idx.reshape(N * C, per)), g.reshape(N * C, per))
    return gx.reshape(in_shape)


def avg_divisor(geo, spatial, count_include_pad, divisor_override):
    """torch's divisor per output position: the window clipped to the padded input, or to the input alone, or
    divisor_override."""
    out = geo.output_shape[2:]
    if divisor_override is not None:
        return np.full(out, float(divisor_override))
    div = np.ones(out)
    for axis, (n, k, s, p, o) in enumerate(zip(spatial, geo.kernel_size, geo.stride, geo.padding, out)):
        start = np.arange(o) * s - p
        end = np.minimum(start + k, n + p)
        size = end - start if count_include_pad else np.minimum(end, n) - np.maximum(start, 0)
        shape = [1] * len(out)
        shape[axis] = -1
        div = div * size.reshape(shape)
    return div


def avg_pool(x, geo, div):
    """Window sums over the zero-padded input divided by div."""
    if _pool_planes.applies(x, geo, average=True):
        return _pool_planes.avg_pool(x, geo, div)
    xp = np.pad(x, ((0, 0), (0, 0)) + _pool_pads(geo, x.shape[2:]))
    total = np.zeros(geo.output_shape, x.dtype)
    for _, v in _tap_views(xp, geo):
        total += v
    return total / div.astype(x.dtype)


def avg_pool_backward(g, geo, div, in_shape):
    if _pool_planes.applies(g, geo, average=True):
        return _pool_planes.avg_pool_backward(g, geo, div, in_shape)
    pads = _pool_pads(geo, in_shape[2:])
    gd = g / div.astype(g.dtype)
    gxp = np.zeros(tuple(in_shape[:2]) + tuple(n + a + b for n, (a, b) in zip(in_shape[2:], pads)), g.dtype)
    for _, v in _tap_views(gxp, geo):
        v += gd
    return np.ascontiguousarray(gxp[(slice(None), slice(None)) + tuple(slice(a, a + n) for n, (a, _) in
                                                                         zip(in_shape[2:], pads))])


# ---- adaptive pooling -------------------------------------------------------------------------------------
def adaptive_sizes(output_size, spatial, owner, nd=3):
    """output_size (an int, or a tuple of nd entries, ints or None: None keeps the input's size) -> nd ints >= 1.
    A bare None is refused, as torch's."""
    if is_int(output_size):
        output_size = (output_size,) * nd
    if not isinstance(output_size, (tuple, list)) or len(output_size) != nd:
        raise TypeError(f"{owner}: output_size must be an int or a tuple of {nd} (ints or None), got {output_size!r}")
    out = tuple(int(n) if v is None else v for v, n in zip(output_size, spatial))
    if not all(is_int(v) and v >= 1 for v in out):
        raise ValueError(f"{owner}: output_size entries must be positive ints (or None), got {output_size!r}")
    if max(out) > _MAX_ADAPTIVE:  # the windows are listed (and, where sizes do not divide, visited) one by one
        raise ValueError(f"{owner}: output_size is too large: {output_size!r} (at most {_MAX_ADAPTIVE} per axis)")
    return tuple(int(v) for v in out)


def adaptive_bins(n, o):
    return [((i * n) // o, -(-((i + 1) * n) // o)) for i in range(o)]


def _along(axis, a, b, ndim):
    """The index that takes [a, b) along axis (of an ndim array) and everything elsewhere."""
    return (slice(None),) * axis + (slice(a, b),) + (slice(None),) * (ndim - axis - 1)


def adaptive_avg(x, out):
    """Adaptive average pooling, one axis at a time (a window's mean is the mean along each axis in turn): a slice
    mean per output position and axis, so a NaN or inf reaches only the windows that hold it."""
    y = x
    # float32 windows summed in float64: numpy sums along a strided axis one value after another, and a float32 sum
    # of 8M equal values drifted 0.7 % (the fuzz's broadcast input; a long window of any real input drifts too)
    acc = np.float64 if x.dtype == np.float32 else None
    for axis, o in enumerate(out, start=2):
        if y.shape[axis] != o:
            y = np.concatenate([y[_along(axis, a, b, y.ndim)].mean(axis=axis, keepdims=True, dtype=acc)
                                for a, b in adaptive_bins(y.shape[axis], o)], axis=axis)
    return np.ascontiguousarray(y.astype(x.dtype, copy=False))


def adaptive_avg_backward(g, in_shape):
    gx = g
    for axis, n in enumerate(in_shape[2:], start=2):
        o = gx.shape[axis]
        if o == n:
            continue
        grown = np.zeros(gx.shape[:axis] + (n,) + gx.shape[axis + 1:], g.dtype)
        for i, (a, b) in enumerate(adaptive_bins(n, o)):
            grown[_along(axis, a, b, gx.ndim)] += gx[_along(axis, i, i + 1, gx.ndim)] / g.dtype.type(b - a)
        gx = grown
    return np.ascontiguousarray(gx)


def first_max(win):
    """Per row of win (..., K): torch's maximum: the first largest value, or the last NaN."""
    a = np.argmax(win, axis=-1)
    nan = np.isnan(win)
    if nan.any():
        last = win.shape[-1] - 1 - np.argmax(nan[..., ::-1], axis=-1)
        a = np.where(nan.any(axis=-1), last, a)
    return a


def adaptive_max(x, out):
    """(values, int64 flat per-plane indices) of adaptive max pooling of (N, C, *spatial) to out: one window at a
    time (a Python loop over the output positions), or one reshape when the sizes divide."""
    N, C, spatial = x.shape[0], x.shape[1], x.shape[2:]
    nd = len(spatial)
    if all(n % o == 0 for n, o in zip(spatial, out)):
        k = tuple(n // o for n, o in zip(spatial, out))
        split = x.reshape((N, C) + tuple(v for o, kk in zip(out, k) for v in (o, kk)))
        order = (0, 1) + tuple(2 + 2 * i for i in range(nd)) + tuple(3 + 2 * i for i in range(nd))
        win = split.transpose(order).reshape((N, C) + tuple(out) + (int(np.prod(k)),))  # not -1: N may be 0
        a = first_max(win)
        y = np.take_along_axis(win, a[..., None], -1)[..., 0]
        local = np.unravel_index(a, k)
        flat = np.zeros(a.shape, np.int64)
        for axis in range(nd):
            shape = [1] * nd
            shape[axis] = -1
            flat = flat * spatial[axis] + np.arange(out[axis]).reshape(shape) * k[axis] + local[axis]
        return np.ascontiguousarray(y), flat
    y = np.empty((N, C) + tuple(out), x.dtype)
    idx = np.empty((N, C) + tuple(out), np.int64)
    for pos in itertools.product(*(enumerate(adaptive_bins(n, o)) for n, o in zip(spatial, out))):
        at = tuple(i for i, _ in pos)
        win = x[(Ellipsis,) + tuple(slice(a, b) for _, (a, b) in pos)]
        wshape = win.shape[2:]
        flat_win = win.reshape(N, C, int(np.prod(wshape)))  # not -1: N may be 0
        a = first_max(flat_win)
        y[(Ellipsis,) + at] = np.take_along_axis(flat_win, a[..., None], -1)[..., 0]
        local = np.unravel_index(a, wshape)
        flat = np.zeros(a.shape, np.int64)
        for axis, (_, (b0, _)) in enumerate(pos):
            flat = flat * spatial[axis] + b0 + local[axis]
        idx[(Ellipsis,) + at] = flat
    return y, idx
