"""ONNX emission for convolution, pooling and batch norm, with PyTorch's argument conventions.

These helpers take the ops' arguments as the ops got them and emit the nodes; padding forms and
output sizes come from the C++ geometry (forgegrad.kernels.geometry), the same the kernels run
with. The registration of forgegrad's own conv ops (forgegrad.ops.conv) lives in mappings/conv.py;
kept apart so the emission is tested on its own (tests/test_onnx_conv.py) with torch-computed ops.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ..._args import pair
from ...kernels import geometry


def onnx_pads(padding, kernel, stride=1, dilation=1, owner: str = "Conv") -> Tuple[int, int, int, int]:
    """ONNX pads (top, left, bottom, right) for a conv padding in any form forgegrad's conv takes
    (int, pair, (top, bottom, left, right), 'valid', 'same'), resolved by the C++ geometry."""
    top, bottom, left, right = geometry.conv2d_padding(padding, kernel, stride, dilation, owner=owner)
    return top, left, bottom, right


def conv2d(ctx, x: str, w: str, b: Optional[str], kernel, stride=1, padding=0, dilation=1, groups=1,
           in_hw=None) -> str:
    """Conv; in_hw is not needed (a size-dependent padding, Keras' "same", reaches the op resolved)."""
    kernel = pair(tuple(kernel), "kernel_size", "Conv")
    stride, dilation = pair(stride, "stride", "Conv"), pair(dilation, "dilation", "Conv")
    pads = onnx_pads(padding, kernel, stride, dilation)
    return ctx.node("Conv", [x, w, b], kernel_shape=list(kernel), strides=list(stride), pads=list(pads),
                    dilations=list(dilation), group=int(groups))


def conv1d(ctx, x: str, w: str, b: Optional[str], kernel: int, stride=1, padding=0, dilation=1, groups=1) -> str:
    """A 1-D Conv: the arguments as conv1d runs them (conv2d's on a height of 1), the pads of the length axis
    (begin, end) from the same C++ geometry."""
    stride2, padding2, dilation2 = geometry.conv1d_as_2d(stride, padding, dilation)
    _, left, _, right = onnx_pads(padding2, (1, kernel), stride2, dilation2)
    return ctx.node("Conv", [x, w, b], kernel_shape=[int(kernel)], strides=[stride2[1]], pads=[left, right],
                    dilations=[dilation2[1]], group=int(groups))


def _pool(ctx, op_type, x, kernel, stride, pads, dilation, in_hw, out_hw, outputs=1, **attrs):
    """A pool node whose output is out_hw (torch's size, from the C++ geometry) in every opset and
    runtime: ceil_mode becomes extra right/bottom padding rather than ONNX's ceil_mode attribute.

    ONNX's floor rule gives torch's floor-mode size; a ceil-mode output is at most one window longer,
    and extra right padding only adds windows that torch also has (partial windows at the end). The
    padded values are -inf for MaxPool and excluded (count_include_pad=0) or counted by the caller."""
    n = len(kernel)
    new_pads = list(pads)
    for i in range(n):
        eff = dilation[i] * (kernel[i] - 1) + 1
        need = (out_hw[i] - 1) * stride[i] + eff - (in_hw[i] + pads[i] + pads[i + n])
        new_pads[i + n] += max(need, 0)
    return ctx.node(op_type, [x], outputs=outputs, kernel_shape=list(kernel), strides=list(stride), pads=new_pads,
                    **attrs)


def max_pool2d(ctx, x: str, in_hw, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               with_indices: bool = False, dynamic: bool = False, unsupported=None):
    """MaxPool; with_indices also returns ONNX's Indices output (flat NCHW positions). ``dynamic``: the
    spatial axes are dynamic, so a ceil-mode pool cannot take extra padding sized at the example's size: it
    takes ONNX's ceil_mode attribute, which counts windows as torch does wherever no window can start in the
    right padding (stride + padding <= the dilated kernel)."""
    kernel, stride, p, dilation, shape = geometry.pool2d_geometry((1, 1) + tuple(in_hw), kernel_size, stride, padding,
                                                                  dilation, ceil_mode, owner="MaxPool")
    attrs = {}
    if dilation != (1, 1):
        attrs["dilations"] = list(dilation)
    if ceil_mode and dynamic:
        if any(stride[i] + p[i] > dilation[i] * (kernel[i] - 1) + 1 for i in range(2)):
            raise unsupported("max_pool2d with ceil_mode over dynamic spatial axes where a window can start in the "
                              "right padding (stride + padding > kernel): ONNX's ceil_mode counts that window, "
                              "torch does not; make the spatial axes static")
        return ctx.node("MaxPool", [x], outputs=2 if with_indices else 1, kernel_shape=list(kernel),
                        strides=list(stride), pads=list(p + p), ceil_mode=1, **attrs)
    return _pool(ctx, "MaxPool", x, kernel, stride, p + p, dilation, in_hw, shape[2:],
                 outputs=2 if with_indices else 1, **attrs)


def avg_pool2d(ctx, x: str, in_hw, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, unsupported=None, dynamic: bool = False) -> str:
    kernel, stride, p, _, shape = geometry.pool2d_geometry((1, 1) + tuple(in_hw), kernel_size, stride, padding, 1,
                                                           ceil_mode, owner="AveragePool")
    out_hw, pads = shape[2:], p + p
    if ceil_mode and dynamic:
        raise unsupported("avg_pool2d with ceil_mode over dynamic spatial axes: the partial last window's divisor "
                          "follows the input size; make the spatial axes static")
    if ceil_mode and count_include_pad:
        # torch divides a window that runs past the padded input by its size clipped to the padded
        # input: pad the input explicitly with zeros, then pool with count_include_pad=0 on top of
        # the ceil padding (which is not counted)
        if any(p):
            x = ctx.node("Pad", [x, ctx.ints([0, 0, p[0], p[1], 0, 0, p[0], p[1]])], mode="constant")
            in_hw = (in_hw[0] + 2 * p[0], in_hw[1] + 2 * p[1])
            pads = (0, 0, 0, 0)
        y = _pool(ctx, "AveragePool", x, kernel, stride, pads, (1, 1), in_hw, out_hw, count_include_pad=0)
    else:
        y = _pool(ctx, "AveragePool", x, kernel, stride, pads, (1, 1), in_hw, out_hw,
                  count_include_pad=int(bool(count_include_pad)))
    if divisor_override:
        if ceil_mode or (any(p) and not count_include_pad):
            if unsupported is not None:
                raise unsupported("avg_pool2d with divisor_override together with ceil_mode (or padding that "
                                  "is not counted) has no ONNX equivalent")
        scale = kernel[0] * kernel[1] / float(divisor_override)  # AveragePool divided by kh*kw
        y = ctx.node("Mul", [y, ctx.const(np.float32(scale))])
    return y


def adaptive_pool2d(ctx, x: str, in_hw, output_size, reduce_op: str = "ReduceMean") -> str:
    """Adaptive average (or max) pooling to output_size: Global*Pool for 1x1, a strided pool when the
    sizes divide, else separable per-row/per-column reductions over torch's windows
    [floor(i*n/o), ceil((i+1)*n/o))."""
    H, W = in_hw
    oh, ow = (H, W) if output_size is None else geometry.adaptive_output_size(output_size, in_hw, "adaptive_pool2d")
    pool = "AveragePool" if reduce_op == "ReduceMean" else "MaxPool"
    if (oh, ow) == (1, 1):
        return ctx.node("GlobalAveragePool" if pool == "AveragePool" else "GlobalMaxPool", [x])
    if H % oh == 0 and W % ow == 0:
        k = (H // oh, W // ow)
        if k == (1, 1):
            return x
        return ctx.node(pool, [x], kernel_shape=list(k), strides=list(k))
    y = x
    for axis, n, o in ((2, H, oh), (3, W, ow)):
        if n == o:
            continue
        parts = []
        for i in range(o):
            s, e = (i * n) // o, -(-((i + 1) * n) // o)
            sl = ctx.node("Slice", [y, ctx.ints([s]), ctx.ints([e]), ctx.ints([axis])])
            parts.append(ctx.reduce(reduce_op, sl, [axis], True))
        y = ctx.node("Concat", parts, axis=axis)
    return y


def batch_norm(ctx, x: str, mean: str, var: str, weight: Optional[str], bias: Optional[str], eps: float,
               channels: int) -> str:
    """Inference-mode BatchNormalization with the running statistics."""
    if weight is None:
        weight = ctx.const(np.ones(channels, np.float32))
    if bias is None:
        bias = ctx.const(np.zeros(channels, np.float32))
    return ctx.node("BatchNormalization", [x, weight, bias, mean, var], epsilon=float(eps))
