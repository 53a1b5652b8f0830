"""Convolution, pooling and batch normalisation as autograd Functions (NCHW, float32).

The arithmetic lives in the C++ kernels (forgegrad.kernels.conv / pool / norm); these classes save
what backward needs and route gradients. Hyper-parameters are keyword arguments (the ONNX exporter
reads them as the op's attributes).

- Conv2d:            y = conv2d(x, weight) + bias
- MaxPool2d:         (y, indices); indices are int64 and not differentiable
- AvgPool2d, AdaptiveAvgPool2d
- BatchNorm:         batch norm over dim 1 of (N, C), (N, C, L) or (N, C, H, W); updates the running
                     statistics in place when training

Each Function is an op record (ops.registry). The shape rules take their geometry from the kernels'
output-shape functions (kernels.conv.conv2d_output_shape, kernels.pool.pool2d_output_shape), so
it is written once; samples, torch references and bad inputs are in conv_samples.py.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from ..devices import MetaArray
from ..kernels import conv as _conv
from ..kernels import norm as _norm
from ..kernels import pool as _pool
from ..kernels._checks import check_ndim
from . import conv_samples as CS
from ._op_rules import window, with_args
from .registry import register_op

_F32 = np.dtype(np.float32)


# ---- shape rules (the meta device) and FLOP counts ----------------------------------------------------
def _conv2d_meta(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    check_ndim(x, "input", 4)
    check_ndim(weight, "weight", 4)
    shape = _conv.conv2d_output_shape(x.shape, weight.shape, stride, padding, dilation, groups)
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must have shape ({weight.shape[0]},), got {bias.shape}")
    return MetaArray(shape, _F32)


def _conv2d_flops(out, x, weight, bias=None, **kwargs):
    """A multiply-add per output element and weight element of its group (C/groups * kH * kW),
    plus the bias add: 2*N*OC*OH*OW*(C/groups)*kH*kW (+ N*OC*OH*OW)."""
    per_output = 2 * weight.shape[1] * weight.shape[2] * weight.shape[3] + (bias is not None)
    return out.size * per_output


def _pool_input(x):
    check_ndim(x, "input", 4)
    if min(x.shape[1:]) < 1:
        raise ValueError(f"input must have nonzero channels and spatial sizes, got shape {x.shape}")


def _max_pool2d_meta(x, kernel_size=2, stride=None, padding=0, dilation=1, ceil_mode=False):
    _pool_input(x)
    shape = _pool.pool2d_output_shape(x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    return MetaArray(shape, _F32), MetaArray(shape, np.int64)


def _avg_pool2d_meta(x, kernel_size=2, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                     divisor_override=None):
    _pool_input(x)
    if divisor_override is not None and (isinstance(divisor_override, bool) or not isinstance(
            divisor_override, (int, np.integer)) or divisor_override < 1):
        raise ValueError(f"divisor_override must be a positive int or None, got {divisor_override!r}")
    return MetaArray(_pool.pool2d_output_shape(x.shape, kernel_size, stride, padding, 1, ceil_mode), _F32)


def _pool_flops(out, x, kernel_size=2, *args, **kwargs):
    """One compare (max) or add (average) per window element of each output: out * kH * kW."""
    values = out[0] if isinstance(out, tuple) else out
    return values.size * window(kernel_size)


def _adaptive_size(output_size, hw):
    """(OH, OW) of adaptive pooling: an int or a pair whose None entries keep the input's size."""
    pair = output_size
    if isinstance(output_size, (int, np.integer)) and not isinstance(output_size, bool):
        pair = (output_size, output_size)
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise TypeError(f"output_size must be an int or a pair (None keeps the input size), got {output_size!r}")
    out = tuple(n if v is None else v for v, n in zip(pair, hw))
    if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in out):
        raise ValueError(f"output_size entries must be positive ints, got {output_size!r}")
    return int(out[0]), int(out[1])


def _adaptive_avg_pool2d_meta(x, output_size=1):
    _pool_input(x)
    return MetaArray(x.shape[:2] + _adaptive_size(output_size, x.shape[2:]), _F32)


def _adaptive_avg_pool2d_flops(out, x, output_size=1):
    """An add per element of each output's window [floor(i*n/o), ceil((i+1)*n/o)) and a divide."""
    def extent(n, o):
        return sum(-(-((i + 1) * n) // o) - (i * n) // o for i in range(o))

    oh, ow = out.shape[2:]
    return x.shape[0] * x.shape[1] * extent(x.shape[2], oh) * extent(x.shape[3], ow) + out.size


def _batch_norm_meta(x, running_mean=None, running_var=None, weight=None, bias=None, training=False,
                     momentum=0.1, eps=1e-5):
    check_ndim(x, "input", (2, 3, 4))
    c = x.shape[1]
    if c < 1:
        raise ValueError(f"input must have at least one channel, got shape {x.shape}")
    for v, name in ((weight, "weight"), (bias, "bias"), (running_mean, "running_mean"), (running_var, "running_var")):
        if v is not None and v.shape != (c,):
            raise ValueError(f"{name} must have shape ({c},), got {v.shape}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm: running_mean and running_var are required when training=False")
    if training and x.size // c < 2:
        raise ValueError(f"batch_norm: expected more than 1 value per channel when training, got input of shape "
                         f"{x.shape}")
    return MetaArray(x.shape, _F32)


def _batch_norm_flops(out, x, *args, training=False, **kwargs):
    """(x - mean) * invstd * weight + bias: 4 per element; training first sums x and x*x per
    channel (3 more per element)."""
    return (7 if training else 4) * x.size


@register_op("conv2d", meta=_conv2d_meta, flops=with_args(_conv2d_flops), samples=CS.conv2d_samples,
             torch=CS.conv2d_torch, bad_inputs=CS.conv2d_bad_inputs, tol=CS.CONV_TOL)
class Conv2d(Function):
    @staticmethod
    def forward(ctx, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        y = _conv.conv2d_forward(x, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups)
        ctx.save_for_backward(x, weight)
        ctx.args = (stride, padding, dilation, groups)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.args
        needs = ctx.needs_input_grad
        need = (needs[0], needs[1], ctx.has_bias and len(needs) > 2 and needs[2])
        if not any(need):
            return None, None, None
        gx, gw, gb = _conv.conv2d_backward(x, weight, g, stride=stride, padding=padding, dilation=dilation,
                                           groups=groups, need=need)
        return gx, gw, gb


@register_op("max_pool2d", meta=_max_pool2d_meta, flops=with_args(_pool_flops), samples=CS.max_pool2d_samples,
             torch=CS.max_pool2d_torch, bad_inputs=CS.max_pool2d_bad_inputs)
class MaxPool2d(Function):
    non_differentiable_outputs = (1,)

    @staticmethod
    def forward(ctx, x, kernel_size=2, stride=None, padding=0, dilation=1, ceil_mode=False):
        y, idx = _pool.max_pool2d_forward(x, kernel_size, stride, padding, dilation, ceil_mode)
        ctx.save_for_backward(idx)
        ctx.in_shape = x.shape
        return y, idx

    @staticmethod
    def backward(ctx, g, g_idx=None):
        (idx,) = ctx.saved_tensors
        return _pool.max_pool2d_backward(g, idx, ctx.in_shape)


@register_op("avg_pool2d", meta=_avg_pool2d_meta, flops=with_args(_pool_flops), samples=CS.avg_pool2d_samples,
             torch=CS.avg_pool2d_torch, bad_inputs=CS.avg_pool2d_bad_inputs)
class AvgPool2d(Function):
    @staticmethod
    def forward(ctx, x, kernel_size=2, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                divisor_override=None):
        ctx.args = (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
        ctx.in_shape = x.shape
        return _pool.avg_pool2d_forward(x, *ctx.args)

    @staticmethod
    def backward(ctx, g):
        return _pool.avg_pool2d_backward(g, ctx.in_shape, *ctx.args)


@register_op("adaptive_avg_pool2d", meta=_adaptive_avg_pool2d_meta, flops=with_args(_adaptive_avg_pool2d_flops),
             samples=CS.adaptive_avg_pool2d_samples, torch=CS.adaptive_avg_pool2d_torch,
             bad_inputs=CS.adaptive_avg_pool2d_bad_inputs)
class AdaptiveAvgPool2d(Function):
    @staticmethod
    def forward(ctx, x, output_size=1):
        ctx.in_shape = x.shape
        return _pool.adaptive_avg_pool2d_forward(x, output_size)

    @staticmethod
    def backward(ctx, g):
        return _pool.adaptive_avg_pool2d_backward(g, ctx.in_shape)


@register_op("batch_norm", meta=_batch_norm_meta, flops=with_args(_batch_norm_flops), samples=CS.batch_norm_samples,
             torch=CS.batch_norm_torch, bad_inputs=CS.batch_norm_bad_inputs, tol=CS.BATCH_NORM_TOL)
class BatchNorm(Function):
    """Positional inputs: x, running_mean, running_var, weight, bias (each may be None but x).

    running_mean / running_var are updated in place when training (they are buffers: no gradient).
    """

    @staticmethod
    def forward(ctx, x, running_mean=None, running_var=None, weight=None, bias=None, training=False,
                momentum=0.1, eps=1e-5):
        y, mean, invstd = _norm.batch_norm_forward(x, weight, bias, running_mean, running_var, training, momentum,
                                                   eps)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.training = bool(training)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight, mean, invstd = ctx.saved_tensors
        needs = ctx.needs_input_grad
        need = (needs[0], weight is not None and needs[3], ctx.has_bias and needs[4])
        if not any(need):
            return None, None, None, None, None
        gx, gw, gb = _norm.batch_norm_backward(g, x, weight, mean, invstd, ctx.training, need=need)
        return gx, None, None, gw, gb
