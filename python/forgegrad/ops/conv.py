"""Convolution, pooling and batch normalisation as autograd Functions (NCHW, float32).

The arithmetic lives in the C++ kernels (forgegrad.kernels.conv / pool / norm); these classes save
what backward needs and route gradients. Hyper-parameters are keyword arguments (the ONNX exporter
reads them as the op's attributes).

- Conv2d:            y = conv2d(x, weight) + bias
- MaxPool2d:         (y, indices); indices are int64 and not differentiable
- AvgPool2d, AdaptiveAvgPool2d
- BatchNorm:         batch norm over dim 1 of (N, C), (N, C, L) or (N, C, H, W); updates the running
                     statistics in place when training
"""
from __future__ import annotations

from ..autograd import Function
from ..kernels import conv as _conv
from ..kernels import norm as _norm
from ..kernels import pool as _pool


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


class AdaptiveAvgPool2d(Function):
    @staticmethod
    def forward(ctx, x, output_size=1):
        ctx.in_shape = x.shape
        return _pool.adaptive_avg_pool2d_forward(x, output_size)

    @staticmethod
    def backward(ctx, g):
        return _pool.adaptive_avg_pool2d_backward(g, ctx.in_shape)


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
