"""float32 3-D convolution on the C++ 2-D convolution kernels (forgegrad.kernels.conv / _C.conv): a depth unfold.

Output plane od of a 3-D conv sums, over the depth taps kd, 2-D convolutions of the input planes
id = od * stride_d - pad_d + kd * dilation_d. Stacking those KD planes as channels, (c, kd) -> c * KD + kd, makes
it one 2-D convolution of a batch of N * OD images with C * KD channels and the weight (OC, C/groups * KD, kH, kW)
(a view of the 3-D weight; groups keep their channels contiguous). So forward, input gradient and weight
gradient are the 2-D kernels' (Winograd, direct and im2col tiles, multithreaded, the same bits for any thread
count); numpy only copies the unfold (KD planes per output plane; depth padding is zeros) and adds the input
gradient's KD planes back in tap order (a fixed order). Images, or for a large volume blocks of its output depth
planes, run in chunks of about _UNFOLD_FLOATS unfolded floats, so the extra memory is bounded; the chunks'
weight and input gradients are added in chunk order (the chunking is a function of the shapes only).
ops/_window3d.py's conv functions call these for float32 and keep numpy vol2col
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


def supported(geo, x_shape, k) -> bool:
    """Whether this geometry runs here: windows that overlap along H or W (dilated extent > stride), where the
    2-D direct / Winograd tiles avoid an im2col copy. Disjoint windows (1x1, k2 s2) are one GEMM on numpy's
    strided vol2col panel, which measured as fast or faster than the unfold's transposes (k1 32 -> 32 at N=2
    16x32x32: fwd+bwd about 2.6 vs 4.6 ms). Also declined: a cropped input without a row or column (every output
    is padding)."""
    overlap = any(d * (kk - 1) + 1 > s for kk, s, d in zip(k[1:], geo.stride[1:], geo.dilation[1:]))
    return overlap and min(_plan(geo, x_shape)[0]) >= 1


def _chunks(N, OD, per_plane):
    """[(n0, n1, od0, od1)]: blocks of images and output depth planes of about _UNFOLD_FLOATS floats (per_plane: one
    output plane's floats): whole images while one fits, else planes of one image."""
    planes = max(1, _UNFOLD_FLOATS // max(1, per_plane))
    if planes >= OD:
        step = planes // OD
        return [(n, min(n + step, N), 0, OD) for n in range(0, N, step)]
    return [(n, n + 1, o, min(o + planes, OD)) for n in range(N) for o in range(0, OD, planes)]


def _blocks(geo, x_shape, w_shape, crop):
    """_chunks for this conv: an output plane's unfold (C * kD * H' * W') or its output / output gradient
    (OC * OH * OW), whichever is larger, so that neither chunk copy outgrows _UNFOLD_FLOATS (a few input channels
    into many output channels would otherwise copy the whole output once more)."""
    per_plane = max(x_shape[1] * w_shape[2] * crop[0] * crop[1], w_shape[0] * int(np.prod(geo.output_shape[3:])))
    return _chunks(x_shape[0], geo.output_shape[2], per_plane)


def _depth_taps(geo, D, KD, od_lo, od_hi):
    """[(kd, a, b, id0)] for output planes od_lo .. od_hi - 1: at tap kd, planes od_lo + a .. od_lo + b - 1 read
    input plane id0 + (od - od_lo - a) * stride_d; the others read depth padding (zeros)."""
    s, d, lo, count = geo.stride[0], geo.dilation[0], geo.pads[0][0], od_hi - od_lo
    taps = []
    for kd in range(KD):
        first = od_lo * s + kd * d - lo  # input plane of output plane od_lo
        a = 0 if first >= 0 else min(count, (-first + s - 1) // s)
        b = min(count, (D - 1 - first) // s + 1) if first <= D - 1 else 0
        taps.append((kd, a, max(a, b), first + a * s))
    return taps


def _unfold(x, geo, KD, ods, crop):
    """x (n, C, D, H, W) -> (n * (od_hi - od_lo), C * KD, H', W') for ods = (od_lo, od_hi): channel c * KD + kd of
    image (i, od) is input plane od * stride_d - pad_d + kd * dilation_d of channel c (zeros in the depth padding)."""
    n, C, D = x.shape[:3]
    count = ods[1] - ods[0]
    out = np.empty((n, count, C, KD) + crop, np.float32)
    s = geo.stride[0]
    for kd, a, b, id0 in _depth_taps(geo, D, KD, *ods):
        out[:, :a, :, kd] = 0
        out[:, b:, :, kd] = 0
        if b > a:
            src = x[:, :, id0:id0 + s * (b - a - 1) + 1:s, :crop[0], :crop[1]]
            out[:, a:b, :, kd] = src.transpose(0, 2, 1, 3, 4)
    return out.reshape((n * count, C * KD) + crop)


def _fold_into(gx, gcol, geo, KD, ods, crop):
    """The adjoint of _unfold, added into gx (n, C, D, H, W): taps in order kd = 0, 1, ..."""
    n, C, D = gx.shape[:3]
    g = gcol.reshape((n, ods[1] - ods[0], C, KD) + crop)
    s = geo.stride[0]
    for kd, a, b, id0 in _depth_taps(geo, D, KD, *ods):
        if b > a:
            dst = gx[:, :, id0:id0 + s * (b - a - 1) + 1:s, :crop[0], :crop[1]]
            dst += g[:, a:b, :, kd].transpose(0, 2, 1, 3, 4)


def _weight2d(w_shape):
    OC, Cg, KD, KH, KW = w_shape
    return (OC, Cg * KD, KH, KW)


def _depth_major(a):
    """(n, C, D, H, W) -> contiguous (n * D, C, H, W)."""
    n, C, D = a.shape[:3]
    return np.ascontiguousarray(a.transpose(0, 2, 1, 3, 4)).reshape((n * D, C) + a.shape[3:])


def conv_forward(x, w, geo):
    """conv3d(x, w) without bias, float32: x (N, C, D, H, W), w (OC, C / groups, kD, kH, kW) -> (N, OC, *out)."""
    KD = w.shape[2]
    crop, stride, pads, dil = _plan(geo, x.shape)
    y = np.empty(geo.output_shape, np.float32)
    w2 = _f32(w).reshape(_weight2d(w.shape))
    for n0, n1, o0, o1 in _blocks(geo, x.shape, w.shape, crop):
        y2 = np.empty(((n1 - n0) * (o1 - o0), w.shape[0]) + geo.output_shape[3:], np.float32)
        _C.conv.conv2d_forward(_unfold(x[n0:n1], geo, KD, (o0, o1), crop), w2, None, y2, stride, pads, dil,
                               geo.groups, -1, 0.0, False)
        y[n0:n1, :, o0:o1] = y2.reshape((n1 - n0, o1 - o0) + y2.shape[1:]).transpose(0, 2, 1, 3, 4)
    return y


def conv_input_grad(gy, w, geo, x_shape):
    """The gradient of conv3d(x, w) with respect to x (of shape x_shape), float32; blocks of output planes add
    into it in order."""
    C, KD = x_shape[1], w.shape[2]
    crop, stride, pads, dil = _plan(geo, x_shape)
    gx = np.zeros(tuple(x_shape), np.float32)
    w2 = _f32(w).reshape(_weight2d(w.shape))
    for n0, n1, o0, o1 in _blocks(geo, x_shape, w.shape, crop):
        gcol = np.empty(((n1 - n0) * (o1 - o0), C * KD) + crop, np.float32)
        _C.conv.conv2d_backward_input(_depth_major(_f32(gy[n0:n1, :, o0:o1])), w2, gcol, stride, pads, dil,
                                      geo.groups)
        _fold_into(gx[n0:n1], gcol, geo, KD, (o0, o1), crop)
    return gx


def conv_weight_grad(x, gy, w_shape, geo):
    """The gradient of conv3d(x, w) with respect to w (of shape w_shape), float32; blocks summed in order."""
    KD = w_shape[2]
    crop, stride, pads, dil = _plan(geo, x.shape)
    shape2 = _weight2d(w_shape)
    gw = np.zeros(shape2, np.float32)
    for i, (n0, n1, o0, o1) in enumerate(_blocks(geo, x.shape, w_shape, crop)):
        part = gw if i == 0 else np.empty(shape2, np.float32)
        _C.conv.conv2d_backward_weight(_unfold(x[n0:n1], geo, KD, (o0, o1), crop),
                                       _depth_major(_f32(gy[n0:n1, :, o0:o1])), part, None, list(shape2), stride,
                                       pads, dil, geo.groups)
        if i:
            gw += part
    return gw.reshape(tuple(w_shape))
