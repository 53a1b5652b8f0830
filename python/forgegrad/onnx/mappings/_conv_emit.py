"""ONNX emission for convolution, pooling and batch norm, with PyTorch's argument conventions.

These helpers take the ops' arguments already decoded (ints/pairs) and emit the nodes; the
registration of forgegrad's own conv ops (forgegrad.ops.conv) lives in mappings/conv.py. Kept apart
so the emission is tested on its own (tests/test_onnx_conv.py) whatever the op classes look like.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np


def pair(v, n: int = 2) -> Tuple[int, ...]:
    if isinstance(v, (int, np.integer)):
        return (int(v),) * n
    v = tuple(int(a) for a in v)
    return v * n if len(v) == 1 else v


def torch_pads(padding, kernel, stride, dilation, in_hw) -> Tuple[int, ...]:
    """ONNX pads (top, left, bottom, right) for torch's padding (int, pair, 'valid', 'same')."""
    n = len(kernel)
    if isinstance(padding, str):
        if padding == "valid":
            return (0,) * (2 * n)
        if padding == "same":  # torch: total = d*(k-1), the extra pixel goes to the end
            total = [d * (k - 1) for k, d in zip(kernel, dilation)]
            return tuple(t // 2 for t in total) + tuple(t - t // 2 for t in total)
        raise ValueError(f"unknown padding {padding!r}")
    p = pair(padding, n)
    return p + p


def conv2d(ctx, x: str, w: str, b: Optional[str], kernel, stride=1, padding=0, dilation=1, groups=1,
           in_hw=None) -> str:
    kernel = tuple(kernel)
    n = len(kernel)
    stride, dilation = pair(stride, n), pair(dilation, n)
    pads = torch_pads(padding, kernel, stride, dilation, in_hw)
    return ctx.node("Conv", [x, w, b], kernel_shape=list(kernel), strides=list(stride), pads=list(pads),
                    dilations=list(dilation), group=int(groups))


def _ceil_pads(in_hw, kernel, stride, pads, dilation, ceil_mode):
    """Output size with torch's rule (a last window starting in the right padding is dropped)."""
    out = []
    for i, n in enumerate(in_hw):
        lo, hi = pads[i], pads[i + len(in_hw)]
        eff = dilation[i] * (kernel[i] - 1) + 1
        num = n + lo + hi - eff
        o = (-(-num // stride[i]) if ceil_mode else num // stride[i]) + 1
        if ceil_mode and (o - 1) * stride[i] >= n + lo:
            o -= 1
        out.append(o)
    return out


def _pool_with_explicit_ceil(ctx, op_type, x, kernel, stride, pads, dilation, in_hw, ceil_mode, outputs=1,
                             **attrs):
    """ceil_mode as extra right padding so the output size is torch's in every opset/runtime.

    Extra right padding only adds windows that torch also has (partial windows at the end); the
    padded values are -inf for MaxPool and excluded (count_include_pad=0) or counted by the caller."""
    n = len(kernel)
    if not ceil_mode:
        return ctx.node(op_type, [x], outputs=outputs, kernel_shape=list(kernel), strides=list(stride),
                        pads=list(pads), **attrs)
    want = _ceil_pads(in_hw, kernel, stride, pads, dilation, True)
    new_pads = list(pads)
    for i in range(n):
        eff = dilation[i] * (kernel[i] - 1) + 1
        need = (want[i] - 1) * stride[i] + eff - (in_hw[i] + pads[i] + pads[i + n])
        new_pads[i + n] += max(need, 0)
    return ctx.node(op_type, [x], outputs=outputs, kernel_shape=list(kernel), strides=list(stride), pads=new_pads,
                    **attrs)


def max_pool2d(ctx, x: str, in_hw, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               with_indices: bool = False):
    """MaxPool; with_indices also returns ONNX's Indices output (flat NCHW positions)."""
    kernel = pair(kernel_size)
    stride = kernel if stride is None or (not isinstance(stride, int) and len(stride) == 0) else pair(stride)
    dilation = pair(dilation)
    p = pair(padding)
    attrs = {}
    if dilation != (1, 1):
        attrs["dilations"] = list(dilation)
    return _pool_with_explicit_ceil(ctx, "MaxPool", x, kernel, stride, p + p, dilation, in_hw, ceil_mode,
                                    outputs=2 if with_indices else 1, **attrs)


def avg_pool2d(ctx, x: str, in_hw, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, unsupported=None) -> str:
    kernel = pair(kernel_size)
    stride = kernel if stride is None or (not isinstance(stride, int) and len(stride) == 0) else pair(stride)
    p = pair(padding)
    pads = p + p
    if ceil_mode and count_include_pad:
        # torch divides a window that runs past the padded input by its size clipped to the padded
        # input: pad the input explicitly with zeros, then pool with count_include_pad=0 on top of
        # the ceil padding (which is not counted)
        if any(p):
            x = ctx.node("Pad", [x, ctx.ints([0, 0, p[0], p[1], 0, 0, p[0], p[1]])], mode="constant")
            in_hw = (in_hw[0] + 2 * p[0], in_hw[1] + 2 * p[1])
            pads = (0, 0, 0, 0)
        y = _pool_with_explicit_ceil(ctx, "AveragePool", x, kernel, stride, pads, (1, 1), in_hw, True,
                                     count_include_pad=0)
    else:
        y = _pool_with_explicit_ceil(ctx, "AveragePool", x, kernel, stride, pads, (1, 1), in_hw, ceil_mode,
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
    if output_size is None:
        output_size = (H, W)
    elif isinstance(output_size, (int, np.integer)):
        output_size = (output_size, output_size)
    # a None entry keeps that input size (pair() would fail on it)
    oh, ow = (n if o is None else int(o) for o, n in zip(output_size, (H, W)))
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
