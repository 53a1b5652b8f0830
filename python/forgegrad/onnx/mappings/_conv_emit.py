"""ONNX emission for convolution, pooling and batch norm, with PyTorch's argument conventions.

These helpers take the ops' arguments as the ops got them and emit the nodes; padding forms and
output sizes come from the C++ geometry (forgegrad.kernels.geometry), the same the kernels run
with. The registration of forgegrad's own conv ops (forgegrad.ops.conv) lives in mappings/conv.py;
kept apart so the emission is tested on its own (tests/test_onnx_conv.py) with torch-computed ops.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from onnx import numpy_helper

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


def _runtime_size(ctx, x: str, axis: int) -> str:
    """1-D int64 [1]: x's size along axis, read off its shape at run time (its spatial axes are dynamic)."""
    return ctx.node("Gather", [ctx.node("Shape", [x]), ctx.ints([axis])], axis=0)


def _torch_window_count(ctx, ys, x: str, stride, p, axes):
    """Slice pool outputs ``ys`` along the spatial ``axes`` (0: H, 1: W; dynamic) to torch's ceil-mode
    window count: the windows i with i*s < n + p, (n + p - 1) // s + 1 of them, from x's shape at run time.

    Torch drops a last window that starts in the right padding; ONNX's ceil_mode counts
    ceil((n + 2p - eff) / s) + 1 windows, and whether a runtime drops that window too depends on its
    reading of the spec (onnxruntime 1.32 does, as the spec now says; onnx 1.23's reference evaluator
    counts even more at stride 1). A floor-mode pool over s - 1 extra end padding counts the same.
    Slice clamps an end past the axis, so the graph is right whichever count the runtime took."""
    if not axes:
        return ys
    ends = []
    for i in axes:
        n = _runtime_size(ctx, x, 2 + i)
        ends.append(ctx.node("Add", [ctx.node("Div", [ctx.node("Add", [n, ctx.ints([p[i] - 1])]),
                                                      ctx.ints([stride[i]])]), ctx.ints([1])]))
    end = ends[0] if len(ends) == 1 else ctx.node("Concat", ends, axis=0)
    starts, axes_t = ctx.ints([0] * len(axes)), ctx.ints([2 + i for i in axes])
    return [ctx.node("Slice", [y, starts, end, axes_t]) for y in ys]


def max_pool2d(ctx, x: str, in_hw, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               with_indices: bool = False, dynamic: bool = False):
    """MaxPool; with_indices also returns ONNX's Indices output (flat NCHW positions). ``dynamic``: the
    spatial axes are dynamic, so a ceil-mode pool cannot take extra padding sized at the example's size: it
    takes ONNX's ceil_mode attribute and is sliced to torch's window count (_torch_window_count)."""
    kernel, stride, p, dilation, shape = geometry.pool2d_geometry((1, 1) + tuple(in_hw), kernel_size, stride, padding,
                                                                  dilation, ceil_mode, owner="MaxPool")
    attrs = {}
    if dilation != (1, 1):
        attrs["dilations"] = list(dilation)
    if ceil_mode and dynamic:
        y = ctx.node("MaxPool", [x], outputs=2 if with_indices else 1, kernel_shape=list(kernel),
                     strides=list(stride), pads=list(p + p), ceil_mode=1, **attrs)
        ys = _torch_window_count(ctx, y if with_indices else [y], x, stride, p, (0, 1))
        return ys if with_indices else ys[0]
    return _pool(ctx, "MaxPool", x, kernel, stride, p + p, dilation, in_hw, shape[2:],
                 outputs=2 if with_indices else 1, **attrs)


def avg_pool2d(ctx, x: str, in_hw, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, dynamic: bool = False) -> str:
    """AveragePool with torch's divisors. ``dynamic``: the spatial axes are dynamic. A ceil-mode pool over
    dynamic axes, or one with divisor_override whose windows are not all whole, is built without ONNX's
    padding and ceil_mode (_avg_pool_explicit); the others are one AveragePool node."""
    kernel, stride, p, _, shape = geometry.pool2d_geometry((1, 1) + tuple(in_hw), kernel_size, stride, padding, 1,
                                                           ceil_mode, owner="AveragePool")
    out_hw, pads = shape[2:], p + p
    if (ceil_mode and dynamic) or (divisor_override and (ceil_mode or (any(p) and not count_include_pad))):
        return _avg_pool_explicit(ctx, x, in_hw, kernel, stride, p, ceil_mode, count_include_pad, divisor_override,
                                  dynamic)
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
    if divisor_override:  # whole windows only here: AveragePool divided by kh*kw
        y = ctx.node("Mul", [y, ctx.const(kernel[0] * kernel[1] / float(divisor_override), "float32")])
    return y


def _ones(ctx, x: str, in_hw, grow, dynamic: bool) -> str:
    """A float32 (1, 1, H + grow[0], W + grow[1]) tensor of ones, H and W x's (read at run time if dynamic)."""
    if dynamic:
        hw = ctx.node("Slice", [ctx.node("Shape", [x]), ctx.ints([2]), ctx.ints([4]), ctx.ints([0])])
        if any(grow):
            hw = ctx.node("Add", [hw, ctx.ints(list(grow))])
        shape = ctx.node("Concat", [ctx.ints([1, 1]), hw], axis=0)
    else:
        shape = ctx.ints([1, 1, in_hw[0] + grow[0], in_hw[1] + grow[1]])
    return ctx.node("ConstantOfShape", [shape], value=numpy_helper.from_array(np.ones(1, np.float32)))


def _avg_pool_explicit(ctx, x: str, in_hw, kernel, stride, p, ceil_mode, count_include_pad, divisor_override,
                       dynamic) -> str:
    """Average pooling that leaves no rule to ONNX's padding or ceil_mode, for any input size.

    x is padded with zeros explicitly, by p on both sides and, in ceil mode, by s - 1 more at the end:
    a floor-mode pool over n + 2p + s - 1 counts ceil((n + 2p - k) / s) + 1 windows, torch's ceil-mode
    count before it drops a window that starts in the right padding (sliced off after). An unpadded
    AveragePool then gives each window's sum / (kh*kw); torch's divisor / (kh*kw) is the same pool of a
    ones mask over what torch counts (the input, and the padding if count_include_pad), so the mask
    follows the input size too. Runtimes read ceil_mode's windows and divisors differently (onnxruntime
    1.32 agrees with torch, onnx 1.23's reference evaluator does not), which this does not depend on."""
    extra = tuple(s - 1 for s in stride) if ceil_mode else (0, 0)
    pads = [0, 0, p[0], p[1], 0, 0, p[0] + extra[0], p[1] + extra[1]]
    xp = ctx.node("Pad", [x, ctx.ints(pads)], mode="constant") if any(pads) else x
    sums = [ctx.node("AveragePool", [xp], kernel_shape=list(kernel), strides=list(stride))]
    if not divisor_override and any(pads):
        if count_include_pad:  # ones over the input and its padding, zeros over the ceil extension
            mask, grow = _ones(ctx, x, in_hw, (2 * p[0], 2 * p[1]), dynamic), [0, 0, 0, 0, 0, 0, *extra]
        else:
            mask, grow = _ones(ctx, x, in_hw, (0, 0), dynamic), pads
        if any(grow):
            mask = ctx.node("Pad", [mask, ctx.ints(grow)], mode="constant")
        sums.append(ctx.node("AveragePool", [mask], kernel_shape=list(kernel), strides=list(stride)))
    if ceil_mode and dynamic:  # only where stride + padding > kernel can a window start in the right padding
        sums = _torch_window_count(ctx, sums, x, stride, p, [i for i in range(2) if stride[i] + p[i] > kernel[i]])
    elif ceil_mode:  # torch's window count (a window that starts in the right padding would divide 0 by 0)
        _, _, _, _, shape = geometry.pool2d_geometry((1, 1) + tuple(in_hw), kernel, stride, p, 1, True,
                                                     owner="AveragePool")
        if any((in_hw[i] + 2 * p[i] + extra[i] - kernel[i]) // stride[i] + 1 != shape[2 + i] for i in range(2)):
            sums = [ctx.node("Slice", [y, ctx.ints([0, 0]), ctx.ints(list(shape[2:])), ctx.ints([2, 3])])
                    for y in sums]
    if divisor_override:
        return ctx.node("Mul", [sums[0], ctx.const(kernel[0] * kernel[1] / float(divisor_override), "float32")])
    return sums[0] if len(sums) == 1 else ctx.node("Div", sums)


def _adaptive_bounds(ctx, n: str, o: int):
    """o 1-D int64 [1] starts and ends of torch's adaptive windows [floor(i*n/o), ceil((i+1)*n/o)) over an
    axis of run-time size n: two vectors computed once, split into o pieces each."""
    i = ctx.ints(list(range(o)))
    starts = ctx.node("Div", [ctx.node("Mul", [n, i]), ctx.ints([o])])
    ends = ctx.node("Div", [ctx.node("Add", [ctx.node("Mul", [n, ctx.ints(list(range(1, o + 1)))]),
                                             ctx.ints([o - 1])]), ctx.ints([o])])
    ones = ctx.ints([1] * o)
    return (ctx.node("Split", [starts, ones], outputs=o, axis=0),
            ctx.node("Split", [ends, ones], outputs=o, axis=0))


def adaptive_pool2d(ctx, x: str, in_hw, output_size, reduce_op: str = "ReduceMean", dynamic=(False, False)) -> str:
    """Adaptive average (or max) pooling to output_size: Global*Pool for 1x1, a strided pool when the
    sizes divide, else separable per-row/per-column reductions over torch's windows
    [floor(i*n/o), ceil((i+1)*n/o)) (a mean or max over a rectangle is the mean or max over its rows of
    those over its columns). ``dynamic``: which spatial axes are dynamic; there the windows' bounds
    are computed from x's shape at run time: a Slice and a reduction per output row and column and a
    few nodes for the bounds whatever the input size (48 nodes for a 7x7 output)."""
    H, W = in_hw
    oh, ow = (H, W) if output_size is None else geometry.adaptive_output_size(output_size, in_hw, "adaptive_pool2d")
    keep = _kept_axes(output_size)
    pool = "AveragePool" if reduce_op == "ReduceMean" else "MaxPool"
    if (oh, ow) == (1, 1) and not any(keep):
        return ctx.node("GlobalAveragePool" if pool == "AveragePool" else "GlobalMaxPool", [x])
    if not any(dynamic) and H % oh == 0 and W % ow == 0:
        k = (H // oh, W // ow)
        if k == (1, 1):
            return x
        return ctx.node(pool, [x], kernel_shape=list(k), strides=list(k))
    y = x
    for axis, n, o in ((2, H, oh), (3, W, ow)):
        if keep[axis - 2] or (n == o and not dynamic[axis - 2]):
            continue
        if o == 1:
            y = ctx.reduce(reduce_op, y, [axis], True)
            continue
        if dynamic[axis - 2]:
            starts, ends = _adaptive_bounds(ctx, _runtime_size(ctx, x, axis), o)
        else:
            starts = [ctx.ints([(i * n) // o]) for i in range(o)]
            ends = [ctx.ints([-(-((i + 1) * n) // o)]) for i in range(o)]
        parts = [ctx.reduce(reduce_op, ctx.node("Slice", [y, s, e, ctx.ints([axis])]), [axis], True)
                 for s, e in zip(starts, ends)]
        y = ctx.node("Concat", parts, axis=axis)
    return y


def _kept_axes(output_size):
    """Which of (H, W) output_size keeps at the input's size (None entries; None itself keeps both)."""
    if output_size is None:
        return (True, True)
    if isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        return (output_size[0] is None, output_size[1] is None)
    return (False, False)


def batch_norm(ctx, x: str, mean: str, var: str, weight: Optional[str], bias: Optional[str], eps: float,
               channels: int) -> str:
    """Inference-mode BatchNormalization with the running statistics."""
    if weight is None:
        weight = ctx.const(np.ones(channels, np.float32))
    if bias is None:
        bias = ctx.const(np.zeros(channels, np.float32))
    return ctx.node("BatchNormalization", [x, weight, bias, mean, var], epsilon=float(eps))
