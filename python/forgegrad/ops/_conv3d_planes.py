"""float32 3-D convolution on the C++ 2-D convolution kernels (forgegrad.kernels.conv / _C.conv): a depth unfold.

Output plane od of a 3-D conv sums, over the depth taps kd, 2-D convolutions of the input planes
id = od * stride_d - pad_d + kd * dilation_d. Stacking those KD planes as channels, (c, kd) -> c * KD + kd, makes
it one 2-D convolution of a batch of N * OD images with C * KD channels and the weight (OC, C/groups * KD, kH, kW)
(a view of the 3-D weight; groups keep their channels contiguous). So forward, input gradient and weight
gradient are the 2-D kernels' (Winograd, direct and im2col tiles, multithreaded, the same bits for any thread
count); numpy only copies the unfold (KD planes per output plane; depth padding is zeros) and adds the input
gradient's KD planes back in tap order (a fixed order). Images run in chunks of about _UNFOLD_FLOATS unfolded
floats, so the extra memory is bounded; the weight gradients of chunks are added in chunk order (the chunking is
a function of the shapes only). ops/_window3d.py's conv functions call these for float32 and keep numpy vol2col
for float64 and for the geometries the 2-D kernels cannot take (see `supported`).
"""
from __future__ import annotations

import numpy as np

from .. import _C

_UNFOLD_FLOATS = 1 << 25  # 128 MiB of unfolded float32 per chunk of images


def _f32(a):
    """a as an aligned C-contiguous float32 array (a copy only when it is not one already)."""
    return np.require(a, np.float32, ("C", "A"))


def _plan(geo, x_shape):
    """(x crop (H', W'), 2-D stride, pads (top, bottom, left, right), dilation): a negative end pad (a transposed
    conv's output_padding beyond its padding) means those last input rows / columns are read by no tap, so the
    2-D conv runs on the input cropped to them with a zero pad."""
    (_, dhi), (hlo, hhi), (wlo, whi) = geo.pads
    crop = (x_shape[3] + min(hhi, 0), x_shape[4] + min(whi, 0))
    return crop, tuple(geo.stride[1:]), (hlo, max(hhi, 0), wlo, max(whi, 0)), tuple(geo.dilation[1:])


def supported(geo, x_shape) -> bool:
    """Whether the 2-D kernels take this geometry: the cropped input keeps at least one row and column (otherwise
    every output is padding only, which the numpy path handles)."""
    return min(_plan(geo, x_shape)[0]) >= 1


def _chunks(N, per_image):
    step = max(1, _UNFOLD_FLOATS // max(1, per_image))
    return [(n, min(n + step, N)) for n in range(0, N, step)]


def _depth_taps(geo, D, KD, OD):
    """[(kd, od0, od1, id0)]: output planes od0 .. od1 - 1 read input plane id0 + (od - od0) * stride_d at tap kd;
    the other output planes read depth padding (zeros) at that tap."""
    s, d, lo = geo.stride[0], geo.dilation[0], geo.pads[0][0]
    taps = []
    for kd in range(KD):
        first = kd * d - lo  # input plane of output plane 0
        od0 = 0 if first >= 0 else min(OD, (-first + s - 1) // s)
        od1 = min(OD, (D - 1 - first) // s + 1) if first <= D - 1 else 0
        taps.append((kd, od0, max(od0, od1), first + od0 * s))
    return taps


def _unfold(x, geo, KD, OD, crop):
    """x (n, C, D, H, W) -> (n * OD, C * KD, H', W'): channel c * KD + kd of image (i, od) is input plane
    od * stride_d - pad_d + kd * dilation_d of channel c (zeros in the depth padding)."""
    n, C, D = x.shape[:3]
    out = np.empty((n, OD, C, KD) + crop, np.float32)
    s = geo.stride[0]
    for kd, od0, od1, id0 in _depth_taps(geo, D, KD, OD):
        out[:, :od0, :, kd] = 0
        out[:, od1:, :, kd] = 0
        if od1 > od0:
            src = x[:, :, id0:id0 + s * (od1 - od0 - 1) + 1:s, :crop[0], :crop[1]]
            out[:, od0:od1, :, kd] = src.transpose(0, 2, 1, 3, 4)
    return out.reshape((n * OD, C * KD) + crop)


def _fold(gcol, geo, x_shape, KD, OD, crop):
    """The adjoint of _unfold: gcol (n * OD, C * KD, H', W') -> (n, C, D, H, W), taps added in order kd = 0, 1, ..."""
    n, C, D, H, Wd = x_shape
    gx = np.zeros(x_shape, np.float32)
    g = gcol.reshape((n, OD, C, KD) + crop)
    s = geo.stride[0]
    for kd, od0, od1, id0 in _depth_taps(geo, D, KD, OD):
        if od1 > od0:
            dst = gx[:, :, id0:id0 + s * (od1 - od0 - 1) + 1:s, :crop[0], :crop[1]]
            dst += g[:, od0:od1, :, kd].transpose(0, 2, 1, 3, 4)
    return gx


def _weight2d(w_shape):
    OC, Cg, KD, KH, KW = w_shape
    return (OC, Cg * KD, KH, KW)


def _depth_major(a):
    """(n, C, D, H, W) -> contiguous (n * D, C, H, W)."""
    n, C, D = a.shape[:3]
    return np.ascontiguousarray(a.transpose(0, 2, 1, 3, 4)).reshape((n * D, C) + a.shape[3:])


def conv_forward(x, w, geo):
    """conv3d(x, w) without bias, float32: x (N, C, D, H, W), w (OC, C / groups, kD, kH, kW) -> (N, OC, *out)."""
    N, C = x.shape[:2]
    KD, OD = w.shape[2], geo.output_shape[2]
    crop, stride, pads, dil = _plan(geo, x.shape)
    y = np.empty(geo.output_shape, np.float32)
    w2 = _f32(w).reshape(_weight2d(w.shape))
    out2 = geo.output_shape[3:]
    for n0, n1 in _chunks(N, OD * C * KD * crop[0] * crop[1]):
        y2 = np.empty(((n1 - n0) * OD, w.shape[0]) + out2, np.float32)
        _C.conv.conv2d_forward(_unfold(x[n0:n1], geo, KD, OD, crop), w2, None, y2, stride, pads, dil, geo.groups,
                               -1, 0.0, False)
        y[n0:n1] = y2.reshape((n1 - n0, OD) + y2.shape[1:]).transpose(0, 2, 1, 3, 4)
    return y


def conv_input_grad(gy, w, geo, x_shape):
    """The gradient of conv3d(x, w) with respect to x (of shape x_shape), float32."""
    N, C = x_shape[:2]
    KD, OD = w.shape[2], geo.output_shape[2]
    crop, stride, pads, dil = _plan(geo, x_shape)
    gx = np.empty(tuple(x_shape), np.float32)
    w2 = _f32(w).reshape(_weight2d(w.shape))
    for n0, n1 in _chunks(N, OD * C * KD * crop[0] * crop[1]):
        gcol = np.empty(((n1 - n0) * OD, C * KD) + crop, np.float32)
        _C.conv.conv2d_backward_input(_depth_major(_f32(gy[n0:n1])), w2, gcol, stride, pads, dil, geo.groups)
        gx[n0:n1] = _fold(gcol, geo, (n1 - n0,) + tuple(x_shape[1:]), KD, OD, crop)
    return gx


def conv_weight_grad(x, gy, w_shape, geo):
    """The gradient of conv3d(x, w) with respect to w (of shape w_shape), float32; chunks of images summed in
    order."""
    N, C = x.shape[:2]
    KD, OD = w_shape[2], geo.output_shape[2]
    crop, stride, pads, dil = _plan(geo, x.shape)
    shape2 = _weight2d(w_shape)
    gw = part = None
    for n0, n1 in _chunks(N, OD * C * KD * crop[0] * crop[1]):
        part = np.empty(shape2, np.float32)
        _C.conv.conv2d_backward_weight(_unfold(x[n0:n1], geo, KD, OD, crop), _depth_major(_f32(gy[n0:n1])), part,
                                       None, list(shape2), stride, pads, dil, geo.groups)
        gw = part if gw is None else np.add(gw, part, out=gw)
    if gw is None:  # N == 0
        gw = np.zeros(shape2, np.float32)
    return gw.reshape(tuple(w_shape))
