"""float32 3-D max and average pooling in C++: max pooling on the 3-D kernel _C.pool.max_pool3d_forward (torch's
running rule over each window in (d, h, w) order: a tap replaces the best when greater or NaN, starting at -inf with
the first tap inside the volume, so values and indices are torch's: the first maximum, or the last NaN); average
pooling on the 2-D pool kernels (_C.pool), a window's depth taps being 2-D pools of input planes combined plane by
plane in depth order.

Average: the 2-D window sums (divisor 1) of the taps are added in depth order and divided by the 3-D divisor (a
product of per-axis counts, as _window3d.avg_divisor builds it); the backward adds the output gradient back to depth
planes, tap by tap, then spreads it with the 2-D backward. The max pools' gradient (a scatter of the output gradient
to the saved indices, per (n, c) volume in output order) is _C.pool.max_pool2d_backward on the flattened volumes.
All of it is the same bits at any thread count (each volume or plane is one task; the depth adds run in a fixed
order).
"""
from __future__ import annotations

import numpy as np

from .. import _C


def applies(x, geo, average=False) -> bool:
    """float32 5-D input; for the average pool only where windows overlap or pad: disjoint windows (stride >=
    kernel, no padding) read each input once through numpy's tap views, which measured faster than the 2-D
    kernel's per-window loop plus the depth adds (k2 s2: about 1.9 vs 3.0 ms fwd+bwd at N=2 C=32 16x32x32)."""
    if not (x.dtype == np.float32 and x.ndim == 5 and len(geo.kernel_size) == 3):
        return False
    disjoint = all(s >= k for s, k in zip(geo.stride, geo.kernel_size)) and not any(geo.padding)
    return not (average and disjoint)


def _depth_taps(geo, D):
    """[(od0, od1, id0)] per depth tap in order: output planes od0 .. od1 - 1 read input plane
    id0 + (od - od0) * stride; the others read padding there."""
    k, s, p, d, OD = geo.kernel_size[0], geo.stride[0], geo.padding[0], geo.dilation[0], geo.output_shape[2]
    taps = []
    for kd in range(k):
        first = kd * d - p
        od0 = 0 if first >= 0 else min(OD, (-first + s - 1) // s)
        od1 = min(OD, (D - 1 - first) // s + 1) if first <= D - 1 else 0
        taps.append((od0, max(od0, od1), first + od0 * s))
    return taps


def _planes_2d(x):
    N, C, D = x.shape[:3]
    return np.require(x, np.float32, ("C", "A")).reshape((N, C * D) + x.shape[3:])


def _hw(geo):
    return tuple(geo.kernel_size[1:]), tuple(geo.stride[1:]), tuple(geo.padding[1:]), tuple(geo.dilation[1:])


def _ceil(geo, hw):
    """The 2-D kernels' ceil_mode: whether (OH, OW) are beyond floor mode's sizes (ceil mode that adds no window
    on either axis is floor mode there)."""
    floor = tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in
                  zip(hw, geo.kernel_size[1:], geo.stride[1:], geo.padding[1:], geo.dilation[1:]))
    return floor != tuple(geo.output_shape[3:])


def max_pool(x, geo):
    """(values, int64 indices d * H * W + h * W + w) of 3-D max pooling, float32: the C++ 3-D kernel
    (cpp/kernels/per_isa/pool_max3d.cpp, one (n, c) volume per task) applies torch's running rule to each window in
    (d, h, w) order. It replaced 2-D pools of every plane plus numpy depth combines (k3 s2 p1 at N=2 C=32 16x32x32:
    forward about 10 -> 2.5-3 ms, 1 thread, shared machine)."""
    y = np.empty(geo.output_shape, np.float32)
    idx = np.empty(geo.output_shape, np.int64)
    _C.pool.max_pool3d_forward(np.require(x, np.float32, ("C", "A")), y, idx, tuple(geo.kernel_size),
                               tuple(geo.stride), tuple(geo.padding), tuple(geo.dilation))
    return y, idx


def scatter_max(g, idx, in_shape):
    """The max pools' gradient, float32: g added at each flat index of its (n, c) volume, in output order."""
    N, C = in_shape[:2]
    gx = np.empty((N, C, 1, int(np.prod(in_shape[2:]))), np.float32)
    out = (N, C, 1, int(np.prod(g.shape[2:])))
    try:
        _C.pool.max_pool2d_backward(np.require(g, np.float32, ("C", "A")).reshape(out),
                                    np.require(idx, np.int64, ("C", "A")).reshape(out), gx)
    except ValueError:
        # torch's forward gives a window that holds only padding (possible with dilation) the index of its first
        # tap past the padding, which can lie past the volume; torch's backward then writes out of bounds
        raise ValueError(f"max pool backward: indices must lie in [0, {gx.shape[-1]}) (the input's volume); a window "
                         "that covers only padding has no input element to take its gradient") from None
    return gx.reshape(in_shape)


def avg_pool(x, geo, div):
    """3-D average pooling, float32: the depth taps' 2-D window sums added in order, over div (OD, OH, OW)."""
    N, C, D = x.shape[:3]
    OH, OW = geo.output_shape[3:]
    k, s, p, _ = _hw(geo)
    sums = np.empty((N, C * D, OH, OW), np.float32)
    _C.pool.avg_pool2d_forward(_planes_2d(x), sums, k, s, p, _ceil(geo, x.shape[3:]), True, 1)
    sums = sums.reshape(N, C, D, OH, OW)
    total = np.zeros(geo.output_shape, np.float32)
    sd = geo.stride[0]
    for od0, od1, id0 in _depth_taps(geo, D):
        if od1 > od0:
            total[:, :, od0:od1] += sums[:, :, id0:id0 + sd * (od1 - od0 - 1) + 1:sd]
    return total / div.astype(np.float32)


def avg_pool_backward(g, geo, div, in_shape):
    N, C, D = in_shape[:3]
    OH, OW = geo.output_shape[3:]
    k, s, p, _ = _hw(geo)
    gd = g / div.astype(np.float32)
    planes = np.zeros((N, C, D, OH, OW), np.float32)
    sd = geo.stride[0]
    for od0, od1, id0 in _depth_taps(geo, D):
        if od1 > od0:
            planes[:, :, id0:id0 + sd * (od1 - od0 - 1) + 1:sd] += gd[:, :, od0:od1]
    gx = np.empty((N, C * D) + tuple(in_shape[3:]), np.float32)
    _C.pool.avg_pool2d_backward(planes.reshape(N, C * D, OH, OW), gx, k, s, p, _ceil(geo, in_shape[3:]), True, 1)
    return gx.reshape(in_shape)
