"""unfold (im2col) and fold (col2im), torch's F.unfold / F.fold: each is the other's gradient.

- ``unfold(input (N, C, H, W) or (C, H, W), kernel_size, dilation=1, padding=0, stride=1)`` -> (N, C * kH * kW, L):
  column l holds the sliding block l (row-major over the L = OH * OW block positions), channel-major
  (c * kH * kW + i * kW + j), torch's layout;
- ``fold(input (N, C * kH * kW, L) or (C * kH * kW, L), output_size, kernel_size, dilation=1, padding=0,
  stride=1)`` -> (N, C, H, W): the blocks summed back into place (overlaps add up, padding dropped).

Both are kH * kW strided copies (adds) of whole (N, C, OH, OW) planes in numpy, in any float dtype (float64 keeps
it). They are linear, so each one's gradient is the other, and the differentiable rules call the ops themselves.
ONNX: unfold is a Conv with a one-hot weight (group C: each output channel picks one tap; exact for finite
inputs) reshaped to (N, C * kH * kW, L); fold is Col2Im from opset 18, and below that the same one-hot weight's
ConvTranspose (output_padding restores the rows past the last block).
"""
from __future__ import annotations

from typing import NamedTuple, Tuple

import numpy as np

from .._args import pair
from ..autograd import Function
from ..devices import MetaArray
from ._op_rules import with_args
from ._samples import rand
from .registry import BadInput, Sample, _OPS, register_op

__all__ = ["UnfoldFunction", "FoldFunction", "unfold", "fold"]


class FoldGeometry(NamedTuple):
    kernel_size: Tuple[int, int]
    dilation: Tuple[int, int]
    padding: Tuple[int, int]
    stride: Tuple[int, int]
    image: Tuple[int, int]  # (H, W) of the image side
    blocks: Tuple[int, int]  # (OH, OW): L = OH * OW


def _geometry(image, kernel_size, dilation, padding, stride, owner) -> FoldGeometry:
    k = pair(kernel_size, "kernel_size", owner, minimum=1)
    d = pair(dilation, "dilation", owner, minimum=1)
    p = pair(padding, "padding", owner, minimum=0)
    s = pair(stride, "stride", owner, minimum=1)
    span = tuple(d[i] * (k[i] - 1) + 1 for i in range(2))
    padded = tuple(image[i] + 2 * p[i] for i in range(2))
    if any(span[i] > padded[i] for i in range(2)):
        raise ValueError(f"{owner}: kernel_size {k} with dilation {d} spans {span}, larger than the padded image "
                         f"{padded} (image {tuple(image)}, padding {p})")
    blocks = tuple((padded[i] - span[i]) // s[i] + 1 for i in range(2))
    return FoldGeometry(k, d, p, s, tuple(int(v) for v in image), blocks)


def _check_float(owner, x):
    if x.dtype.kind != "f":
        raise TypeError(f"{owner}: input must be a floating tensor, got dtype {x.dtype}")


def _unfold_geometry(x, kernel_size, dilation, padding, stride, owner="unfold"):
    if len(x.shape) not in (3, 4):
        raise ValueError(f"{owner}: input must be 3-D (C, H, W) or 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    _check_float(owner, x)
    return _geometry(tuple(x.shape[-2:]), kernel_size, dilation, padding, stride, owner)


def _fold_geometry(x, output_size, kernel_size, dilation, padding, stride, owner="fold"):
    if len(x.shape) not in (2, 3):
        raise ValueError(f"{owner}: input must be 2-D (C * kH * kW, L) or 3-D (N, C * kH * kW, L), got shape "
                         f"{tuple(x.shape)}")
    _check_float(owner, x)
    geo = _geometry(pair(output_size, "output_size", owner, minimum=1), kernel_size, dilation, padding, stride,
                    owner)
    kk = geo.kernel_size[0] * geo.kernel_size[1]
    rows, L = x.shape[-2:]
    if rows % kk or rows == 0:
        raise ValueError(f"{owner}: input's dimension {len(x.shape) - 2} ({rows}) must be a nonzero multiple of the "
                         f"product of kernel_size {geo.kernel_size} ({kk})")
    if L != geo.blocks[0] * geo.blocks[1]:
        raise ValueError(f"{owner}: output_size {geo.image}, kernel_size {geo.kernel_size}, dilation {geo.dilation}, "
                         f"padding {geo.padding} and stride {geo.stride} give {geo.blocks[0]} * {geo.blocks[1]} "
                         f"sliding blocks, but input's last dimension is {L}")
    return geo


def _taps(geo):
    (kh, kw), (dh, dw), (sh, sw), (oh, ow) = geo.kernel_size, geo.dilation, geo.stride, geo.blocks
    for i in range(kh):
        for j in range(kw):
            yield i, j, slice(i * dh, i * dh + sh * (oh - 1) + 1, sh), slice(j * dw, j * dw + sw * (ow - 1) + 1, sw)


def _im2col(x, geo):
    """(N, C, H, W) -> (N, C * kH * kW, OH * OW)."""
    (ph, pw), (kh, kw), (oh, ow) = geo.padding, geo.kernel_size, geo.blocks
    N, C = x.shape[:2]
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
    out = np.empty((N, C, kh, kw, oh, ow), x.dtype)
    for i, j, rows, cols in _taps(geo):
        out[:, :, i, j] = xp[:, :, rows, cols]
    return out.reshape(N, C * kh * kw, oh * ow)


def _col2im(cols, geo):
    """(N, C * kH * kW, OH * OW) -> (N, C, H, W), overlapping blocks summed in tap order."""
    (ph, pw), (kh, kw), (oh, ow), (H, W) = geo.padding, geo.kernel_size, geo.blocks, geo.image
    N = cols.shape[0]
    C = cols.shape[1] // (kh * kw)
    c6 = cols.reshape(N, C, kh, kw, oh, ow)
    out = np.zeros((N, C, H + 2 * ph, W + 2 * pw), cols.dtype)
    for i, j, rows, cs in _taps(geo):
        out[:, :, rows, cs] += c6[:, :, i, j]
    return np.ascontiguousarray(out[:, :, ph:ph + H, pw:pw + W])


# ---- unfold ---------------------------------------------------------------------------------------------------
def _unfold_meta(input, kernel_size, dilation=1, padding=0, stride=1):
    geo = _unfold_geometry(input, kernel_size, dilation, padding, stride)
    rows, L = input.shape[-3] * geo.kernel_size[0] * geo.kernel_size[1], geo.blocks[0] * geo.blocks[1]
    return MetaArray(tuple(input.shape[:-3]) + (rows, L), np.dtype(np.float32))


def _one_hot_weight(channels, geo, dtype):
    """(C * kH * kW, 1, kH, kW): output channel c * kH * kW + i * kW + j reads tap (i, j) of channel c (group c)."""
    kh, kw = geo.kernel_size
    w = np.zeros((channels, kh * kw, kh, kw), dtype)
    w[:, np.arange(kh * kw), np.arange(kh * kw) // kw, np.arange(kh * kw) % kw] = 1
    return w.reshape(channels * kh * kw, 1, kh, kw)


def _onnx_unfold(ctx, op):
    x = op.args["input"]
    geo = _unfold_geometry(x, *(op.attr(n, d) for n, d in (("kernel_size", None), ("dilation", 1), ("padding", 0),
                                                            ("stride", 1))))
    C, rows = x.shape[-3], x.shape[-3] * geo.kernel_size[0] * geo.kernel_size[1]
    xv = op.input("input")
    if len(x.shape) == 3:
        xv = ctx.unsqueeze(xv, [0])
    y = ctx.node("Conv", [xv, ctx.const(_one_hot_weight(C, geo, x.dtype), dtype=x.dtype, hint="unfold_taps")],
                 kernel_shape=list(geo.kernel_size), strides=list(geo.stride), dilations=list(geo.dilation),
                 pads=list(geo.padding) * 2, group=int(C))
    return [ctx.node("Reshape", [y, ctx.ints([0, rows, -1] if len(x.shape) == 4 else [rows, -1])])]


def _unfold_rule(ctx, args, kwargs, g):
    from ._double_backward import _arg
    x = args[0]
    kw = {n: _arg(args, kwargs, 1 + i, n, d) for i, (n, d) in enumerate((("kernel_size", None), ("dilation", 1),
                                                                         ("padding", 0), ("stride", 1)))}
    return (_OPS["fold"](g, tuple(x.shape[-2:]), **kw),)


def _unfold_samples():
    return [
        Sample((rand(2, 3, 7, 9),), {"kernel_size": (2, 3), "dilation": (2, 1), "padding": (1, 0), "stride": (2, 3)},
               "k (2, 3), dilation (2, 1), padding (1, 0), stride (2, 3)"),
        Sample((rand(1, 4, 5, 6, seed=1),), {"kernel_size": 3, "padding": 1}, "batch 1, overlapping 3x3, padding 1"),
        Sample((rand(3, 6, 5, seed=2),), {"kernel_size": (3, 2), "stride": 2}, "unbatched (C, H, W)"),
        Sample((rand(2, 2, 8, 9, seed=3),), {"kernel_size": 2, "stride": 3}, "stride 3 > kernel 2 (gaps)"),
        Sample((rand(4, 16, 30, 33, seed=4),), {"kernel_size": 3, "stride": 2, "padding": 1}, "large"),
    ]


def _unfold_bad_inputs():
    x = rand(2, 3, 7, 9)
    return [BadInput((rand(7, 9),), {"kernel_size": 2}, ValueError, "input"),
            BadInput((x.astype(np.int64),), {"kernel_size": 2}, TypeError, "input"),
            BadInput((x,), {"kernel_size": 0}, ValueError, "kernel_size"),
            BadInput((x,), {"kernel_size": (8, 2)}, ValueError, "kernel_size"),
            BadInput((x,), {"kernel_size": 2, "stride": 0}, ValueError, "stride"),
            BadInput((x,), {"kernel_size": 2, "padding": -1}, ValueError, "padding"),
            BadInput((x,), {"kernel_size": 2, "dilation": (1, 2, 3)}, TypeError, "dilation")]


def unfold(input, kernel_size, dilation=1, padding=0, stride=1):
    """torch.nn.functional.unfold (im2col): (N, C, H, W) or (C, H, W) -> (N, C * kH * kW, L) or (C * kH * kW, L)."""
    from ..nn.functional_conv import _t
    return _OPS["unfold"](_t(input, "input"), kernel_size=kernel_size, dilation=dilation, padding=padding,
                          stride=stride)


@register_op("unfold", meta=_unfold_meta, flops=with_args(lambda out, x, *a, **k: 0), samples=_unfold_samples,
             torch=lambda torch, x, **kw: torch.nn.functional.unfold(x, **kw), bad_inputs=_unfold_bad_inputs,
             onnx=_onnx_unfold, differentiable_backward=_unfold_rule, functional=unfold)
class UnfoldFunction(Function):
    """im2col: the sliding blocks of the (zero-padded) image as columns; the gradient folds them back."""

    @staticmethod
    def forward(ctx, input, kernel_size, dilation=1, padding=0, stride=1):
        geo = _unfold_geometry(input, kernel_size, dilation, padding, stride)
        ctx.geo, ctx.shape = geo, input.shape
        y = _im2col(input.reshape((-1,) + input.shape[-3:]), geo)
        return y if input.ndim == 4 else y[0]

    @staticmethod
    def backward(ctx, g):
        return _col2im(g.reshape((-1,) + g.shape[-2:]), ctx.geo).reshape(ctx.shape)


# ---- fold -----------------------------------------------------------------------------------------------------
def _fold_meta(input, output_size, kernel_size, dilation=1, padding=0, stride=1):
    geo = _fold_geometry(input, output_size, kernel_size, dilation, padding, stride)
    C = input.shape[-2] // (geo.kernel_size[0] * geo.kernel_size[1])
    return MetaArray(tuple(input.shape[:-2]) + (C,) + geo.image, np.dtype(np.float32))


_FOLD_ARGS = (("output_size", None), ("kernel_size", None), ("dilation", 1), ("padding", 0), ("stride", 1))


def _onnx_fold(ctx, op):
    x = op.args["input"]
    geo = _fold_geometry(x, *(op.attr(n, d) for n, d in _FOLD_ARGS))
    (kh, kw), (ph, pw) = geo.kernel_size, geo.padding
    rows = x.shape[-2]
    xv = op.input("input")
    if len(x.shape) == 2:
        xv = ctx.unsqueeze(xv, [0])
    if ctx.opset >= 18:
        y = ctx.node("Col2Im", [xv, ctx.ints(list(geo.image)), ctx.ints([kh, kw])], dilations=list(geo.dilation),
                     pads=[ph, pw, ph, pw], strides=list(geo.stride))
    else:  # the adjoint of unfold's Conv; output_padding adds the rows past the last block (< stride of them)
        reach = [(geo.blocks[i] - 1) * geo.stride[i] + geo.dilation[i] * (geo.kernel_size[i] - 1) + 1
                 - 2 * geo.padding[i] for i in range(2)]
        xv = ctx.node("Reshape", [xv, ctx.ints([0, rows] + list(geo.blocks))])
        y = ctx.node("ConvTranspose", [xv, ctx.const(_one_hot_weight(rows // (kh * kw), geo, x.dtype), dtype=x.dtype,
                                                     hint="fold_taps")],
                     kernel_shape=[kh, kw], strides=list(geo.stride), dilations=list(geo.dilation),
                     pads=[ph, pw, ph, pw], output_padding=[geo.image[i] - reach[i] for i in range(2)],
                     group=int(rows // (kh * kw)))
    return [ctx.squeeze(y, [0]) if len(x.shape) == 2 else y]


def _fold_rule(ctx, args, kwargs, g):
    from ._double_backward import _arg
    kw = {n: _arg(args, kwargs, 2 + i, n, d) for i, (n, d) in enumerate(_FOLD_ARGS[1:])}
    return (_OPS["unfold"](g, **kw),)


def _fold_samples():
    return [
        Sample((rand(2, 18, 12),), {"output_size": (7, 9), "kernel_size": (2, 3), "dilation": (2, 1),
                                    "padding": (1, 0), "stride": (2, 3)},
               "k (2, 3), dilation (2, 1), padding (1, 0), stride (2, 3)"),
        Sample((rand(1, 36, 30, seed=1),), {"output_size": (5, 6), "kernel_size": 3, "padding": 1},
               "batch 1, overlapping 3x3 (sums), padding 1"),
        Sample((rand(18, 4, seed=2),), {"output_size": (6, 5), "kernel_size": (3, 2), "stride": 2},
               "unbatched (C * kH * kW, L)"),
        Sample((rand(2, 8, 9, seed=3),), {"output_size": (8, 9), "kernel_size": 2, "stride": 3},
               "stride 3 > kernel 2 (uncovered pixels are 0)"),
        Sample((rand(4, 144, 255, seed=4),), {"output_size": (30, 33), "kernel_size": 3, "stride": 2, "padding": 1},
               "large"),
    ]


def _fold_bad_inputs():
    x = rand(1, 12, 16)
    ok = {"output_size": (5, 6), "kernel_size": (2, 3)}
    return [BadInput((rand(1, 1, 12, 16),), ok, ValueError, "input"),
            BadInput((x.astype(np.int64),), ok, TypeError, "input"),
            BadInput((rand(1, 13, 16),), ok, ValueError, "kernel_size"),
            BadInput((rand(1, 12, 21),), ok, ValueError, "output_size"),
            BadInput((x,), {**ok, "output_size": (0, 6)}, ValueError, "output_size"),
            BadInput((x,), {**ok, "output_size": "56"}, TypeError, "output_size"),
            BadInput((x,), {**ok, "kernel_size": (6, 3)}, ValueError, "kernel_size"),
            BadInput((x,), {**ok, "stride": 0}, ValueError, "stride")]


def fold(input, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """torch.nn.functional.fold (col2im): (N, C * kH * kW, L) or (C * kH * kW, L) -> (N, C, H, W) or (C, H, W)."""
    from ..nn.functional_conv import _t
    return _OPS["fold"](_t(input, "input"), output_size=output_size, kernel_size=kernel_size, dilation=dilation,
                        padding=padding, stride=stride)


@register_op("fold", meta=_fold_meta, flops=with_args(lambda out, x, *a, **k: x.size), samples=_fold_samples,
             torch=lambda torch, x, **kw: torch.nn.functional.fold(x, **kw), bad_inputs=_fold_bad_inputs,
             onnx=_onnx_fold, differentiable_backward=_fold_rule, functional=fold)
class FoldFunction(Function):
    """col2im: the columns summed back into the image (overlaps add); the gradient unfolds."""

    @staticmethod
    def forward(ctx, input, output_size, kernel_size, dilation=1, padding=0, stride=1):
        geo = _fold_geometry(input, output_size, kernel_size, dilation, padding, stride)
        ctx.geo, ctx.shape = geo, input.shape
        y = _col2im(input.reshape((-1,) + input.shape[-2:]), geo)
        return y if input.ndim == 3 else y[0]

    @staticmethod
    def backward(ctx, g):
        return _im2col(g.reshape((-1,) + g.shape[-3:]), ctx.geo).reshape(ctx.shape)


UnfoldFunction.op.float64 = UnfoldFunction  # numpy in the input's dtype
FoldFunction.op.float64 = FoldFunction
