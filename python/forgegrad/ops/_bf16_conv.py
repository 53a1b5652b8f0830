"""conv2d of bfloat16 tensors on the vdpbf16ps GEMM (_op_dispatch._bf16_conv2d sends it here where
_C.bf16.gemm_path() is "avx512_bf16", groups == 1 and `routed` says so): one graph node in place of the generic
path's casts to float32, float32 conv and rounding back, saving the bfloat16 operands.

Every product is an im2col (a strided numpy view of the zero-padded uint16 bits, copied once) times a matrix on
_C.bf16.gemm, whose float32 sums are rounded once to bfloat16:
- forward: y[n] (OC, OH*OW) = W (OC, C*kH*kW | bias) @ cols[n] (C*kH*kW | ones, OH*OW), a batch sharing W; the bias
  rides as one more reduction row (bias * 1.0 is exact), so it is added in float32 before the one rounding;
- input gradient: the stride-1 convolution of the output gradient (zeros between its entries for a stride, padded by
  the dilated kernel's extent less the padding, cropped where that is negative) with the flipped, transposed weight;
- weight gradient: dY^T (OC, N*OH*OW) @ cols (C*kH*kW, N*OH*OW)^T, one reduction over the batch and the pixels;
- bias gradient: float32 sums of dY, rounded;
- a strided 1x1 kernel runs as the stride-1 conv of the pixels it reads (subsampled once), its input gradient put
  back at those pixels.
Within bfloat16 rounding of the generic path (and of torch's bfloat16 conv2d), not its bits; the same bits at any
thread count (the GEMM's fixed reduction order).
"""
from __future__ import annotations

import numpy as np

from .. import _C
from .. import dtypes as _dtypes
from ..autograd import Function
from ..kernels.geometry import conv2d_geometry

# Which convolutions take this path (_op_dispatch._bf16_conv2d asks `routed`): 1x1 kernels (a strided one as the
# stride-1 conv of the pixels it reads, subsampled once). Measured at one thread on Zen 5 (bench/bench_bf16_conv.py),
# the im2col copy plus the GEMM loses to the float32 path elsewhere: 3x3
# stride 1 runs there on Winograd (2.25x fewer multiplies, which the bfloat16 GEMM's ~1.9x rate does not make up),
# strided convs pay numpy's short-row im2col and an input gradient over the spread-out dY, and narrow layers (LeNet's
# 6 -> 16 channels) leave the GEMM's tiles mostly empty. True takes every groups == 1 conv (A/B runs, the tests).
ALL_GEOMETRIES = False

_F32 = np.dtype(np.float32)
_U16 = np.dtype(np.uint16)
_ONE = 0x3F80  # bfloat16 1.0


def _bits(a):
    return np.ascontiguousarray(a).view(_U16)


def _pad_crop(a, top, bottom, left, right):
    """a (N, C, H, W) with rows / columns of zeros added on each side (a negative count crops instead)."""
    a = a[:, :, max(0, -top):a.shape[2] - max(0, -bottom), max(0, -left):a.shape[3] - max(0, -right)]
    pads = ((0, 0), (0, 0), (max(0, top), max(0, bottom)), (max(0, left), max(0, right)))
    return np.pad(a, pads) if any(p for pr in pads for p in pr) else a


def _cols(x, pads, kh, kw, stride, dilation, oh, ow, ones_row=False, batch_major=True):
    """im2col of x (N, C, H, W) padded by pads: (cols, width), cols uint16 (N, C*kh*kw [+ a row of bfloat16 ones],
    OH*width) (batch_major) or (C*kh*kw, N, OH*width); the output pixels in rows of `width`.

    At stride 1 width is the padded image's width (OW plus (kw - 1) * dilation columns the caller drops): then each
    tap's rows are one contiguous run of the padded image, so the copy moves long runs (numpy's strided copy of short
    OW-long rows costs several times more); one spare zero row at the bottom keeps the last tap's run in its plane."""
    n, c = x.shape[:2]
    k = c * kh * kw
    if kh == kw == 1 and stride == (1, 1) and not any(pads) and batch_major and not ones_row:
        return x.reshape(n, c, oh * ow), ow  # (a 1x1 conv's im2col is the image itself)
    if stride == (1, 1):
        top, bottom, left, right = pads
        xp = np.ascontiguousarray(_pad_crop(x, top, bottom + 1, left, right))  # (the run needs whole rows)
        width = xp.shape[3]
        s = xp.strides
        view = np.lib.stride_tricks.as_strided(
            xp, (n, c, kh, kw, oh * width), (s[0], s[1], s[2] * dilation[0], s[3] * dilation[1], s[3]),
            writeable=False)
    else:
        xp = _pad_crop(x, *pads)
        width = ow
        s = xp.strides
        view = np.lib.stride_tricks.as_strided(
            xp, (n, c, kh, kw, oh, ow),
            (s[0], s[1], s[2] * dilation[0], s[3] * dilation[1], s[2] * stride[0], s[3] * stride[1]), writeable=False)
    if batch_major:
        out = np.empty((n, k + ones_row, oh * width), _U16)
        np.copyto(out[:, :k].reshape(view.shape), view)
        if ones_row:
            out[:, k] = _ONE
    else:
        out = np.empty((c, kh, kw, n, oh * width), _U16)
        order = (1, 2, 3, 0) + tuple(range(4, view.ndim))
        np.copyto(out.reshape((c, kh, kw, n) + view.shape[4:]), view.transpose(order))
        out = out.reshape(k, n, oh * width)
    return out, width


def _forward(x, w, bias, stride, pads, dilation, oh, ow):
    """conv2d of the uint16 bits x (N, C, H, W), w (OC, C, kH, kW), bias (OC) or None: y (N, OC, OH, OW) uint16."""
    oc, c, kh, kw = w.shape
    w2 = w.reshape(oc, c * kh * kw)
    if bias is not None:
        w2 = np.concatenate([w2, bias.reshape(oc, 1)], axis=1)
    cols, width = _cols(x, pads, kh, kw, stride, dilation, oh, ow, bias is not None)
    y = _C.bf16.gemm(w2, cols).reshape(x.shape[0], oc, oh, width)
    return y if width == ow else np.ascontiguousarray(y[..., :ow])


class Bf16Conv2dFunction(Function):
    """conv2d(x, weight, bias) for groups == 1, every tensor bfloat16, on the vdpbf16ps GEMM."""

    exact_dtype = True  # bfloat16 in, bfloat16 out

    @staticmethod
    def forward(ctx, x, weight, bias=None, stride=1, padding=0, dilation=1):
        geo = conv2d_geometry(x.shape, weight.shape, stride, padding, dilation, 1)
        needs = ctx.needs_input_grad
        ctx.save_for_backward(x if needs[1] else None, weight if needs[0] else None)
        ctx.geo = geo
        ctx.shapes = (x.shape, weight.shape)
        ctx.has_bias = bias is not None
        xs, g1 = _as_stride_1(_bits(x), weight.shape, geo)
        y = _forward(xs, _bits(weight), None if bias is None else _bits(bias), g1.stride, g1.padding, g1.dilation,
                     *geo.output_shape[2:])
        return y.view(_dtypes._BF16)

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        x_shape, w_shape = ctx.shapes
        geo = ctx.geo
        needs = ctx.needs_input_grad
        bf16 = _dtypes._BF16
        g = _bits(g if g.dtype == bf16 else _dtypes.astype(g, bf16))
        oc, c, kh, kw = w_shape
        n, _, oh, ow = g.shape
        gx = gw = gb = None
        strided_1x1 = kh == kw == 1 and geo.stride != (1, 1)
        if needs[0]:
            if strided_1x1:  # the stride-1 gradient of the subsampled image, put back at the pixels it took
                gxs = _input_grad(g, _bits(weight), (n, c, oh, ow), _stride_1(geo))
                top, bottom, left, right = geo.padding
                gxp = np.zeros((n, c, x_shape[2] + top + bottom, x_shape[3] + left + right), _U16)
                gxp[:, :, ::geo.stride[0], ::geo.stride[1]][:, :, :oh, :ow] = gxs
                gx = np.ascontiguousarray(gxp[:, :, top:top + x_shape[2], left:left + x_shape[3]]).view(bf16)
            else:
                gx = _input_grad(g, _bits(weight), x_shape, geo).view(bf16)
        if needs[1]:  # dW = dY^T cols^T, one reduction over the batch and the pixels (dY zero on dropped columns)
            xs, g1 = _as_stride_1(_bits(x), w_shape, geo)
            cols, width = _cols(xs, g1.padding, kh, kw, g1.stride, g1.dilation, oh, ow, batch_major=False)
            gt = np.zeros((oc, n, oh, width), _U16)
            gt[..., :ow] = g.transpose(1, 0, 2, 3)
            gw = _C.bf16.gemm(gt.reshape(oc, -1), cols.reshape(c * kh * kw, -1), trans_b=True)
            gw = gw.reshape(w_shape).view(bf16)
        if ctx.has_bias and len(needs) > 2 and needs[2]:
            g32 = np.empty(g.shape, _F32)
            _C.bf16.widen_to_float32(g.reshape(-1), g32.reshape(-1))
            gb = _dtypes.astype(g32.sum(axis=(0, 2, 3), dtype=_F32), bf16)
        return gx, gw, gb

    @staticmethod
    def differentiable_backward(ctx, args, kwargs, g):  # (create_graph: forgegrad._create_graph)
        """The same gradients with float32 Tensor ops (conv2d's double-backward Functions) rounded to bfloat16, so
        they differentiate again."""
        from ._double_backward_conv import ConvInputGradFunction, ConvWeightGradFunction
        x, weight = args[0], args[1]
        bias = args[2] if len(args) > 2 else None
        needs = ctx.needs_input_grad
        geo = {"stride": ctx.geo.stride, "padding": ctx.geo.padding, "dilation": ctx.geo.dilation, "groups": 1}
        g32, x32, w32 = g.float(), x.float(), weight.float()
        gx = ConvInputGradFunction.apply(g32, w32, x32._data, "conv2d", geo).to(x.dtype) if needs[0] else None
        gw = ConvWeightGradFunction.apply(x32, g32, w32._data, "conv2d", geo).to(weight.dtype) if needs[1] else None
        gb = g32.sum(dim=(0, 2, 3)).to(bias.dtype) if bias is not None and needs[2] else None
        return gx, gw, gb


def _stride_1(geo):
    return geo._replace(stride=(1, 1), padding=(0, 0, 0, 0))


def _as_stride_1(x, weight_shape, geo):
    """(x, geo), or for a strided 1x1 kernel the pixels it reads (padded, subsampled: one copy of the output's size)
    with a stride-1 unpadded geometry: the im2col then copies long runs (or nothing) instead of short strided rows."""
    if tuple(weight_shape[2:]) != (1, 1) or geo.stride == (1, 1):
        return x, geo
    oh, ow = geo.output_shape[2:]
    xs = _pad_crop(x, *geo.padding)[:, :, ::geo.stride[0], ::geo.stride[1]][:, :, :oh, :ow]
    return np.ascontiguousarray(xs), _stride_1(geo)


def _input_grad(g, w, x_shape, geo):
    """dX (N, C, H, W) uint16: the stride-1 convolution of dY (zeros between entries for the stride, padded by the
    dilated kernel's extent less the forward padding) with the flipped, transposed weight."""
    oc, c, kh, kw = w.shape
    n, _, h, wd = x_shape
    (sh, sw), (dh, dw) = geo.stride, geo.dilation
    oh, ow = g.shape[2:]
    if sh > 1 or sw > 1:
        spread = np.zeros((n, oc, (oh - 1) * sh + 1, (ow - 1) * sw + 1), _U16)
        spread[:, :, ::sh, ::sw] = g
        g = spread
    top, bottom, left, right = geo.padding
    ext_h, ext_w = dh * (kh - 1), dw * (kw - 1)
    pt, pl = ext_h - top, ext_w - left
    pb = h + ext_h - g.shape[2] - pt
    pr = wd + ext_w - g.shape[3] - pl
    wflip = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    return _forward(g, wflip, None, (1, 1), (pt, pb, pl, pr), (dh, dw), h, wd)


def routed(weight_shape, stride) -> bool:
    """Whether conv2d of this weight shape and (resolved) stride takes the vdpbf16ps path (see ALL_GEOMETRIES)."""
    del stride  # (every stride of a 1x1 kernel: _as_stride_1)
    return ALL_GEOMETRIES or tuple(weight_shape[2:]) == (1, 1)


def conv2d_args(args, kwargs):
    """(x, weight, bias, stride, padding, dilation, groups) of a conv2d call, or None for a form this path leaves."""
    names = ("bias", "stride", "padding", "dilation", "groups")
    if len(args) < 2 or len(args) > 7 or set(kwargs) - set(names):
        return None
    vals = dict(zip(("bias", "stride", "padding", "dilation", "groups"), args[2:]))
    for k, v in kwargs.items():
        if k in vals:
            return None
        vals[k] = v
    return (args[0], args[1], vals.get("bias"), vals.get("stride", 1), vals.get("padding", 0),
            vals.get("dilation", 1), vals.get("groups", 1))
