"""2-D pooling as autograd Functions (NCHW, float32): max (values and int64 indices), average and
adaptive average. The kernels are forgegrad.kernels.pool; the shape rules take the output size from
its C++ geometry (kernels.pool.pool2d_output_shape). Samples are in conv_samples.py.
"""
from __future__ import annotations

import numpy as np

from .. import _C
from .._validate import check_bool
from ..autograd import Function
from ..devices import MetaArray
from ..kernels import pool as _pool
from ..kernels.geometry import pool2d_geometry
from ..kernels._checks import check_ndim
from . import conv_samples as CS
from ._op_rules import window, with_args
from .registry import register_op

_F32 = np.dtype(np.float32)


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



@register_op("max_pool2d", meta=_max_pool2d_meta, flops=with_args(_pool_flops), samples=CS.max_pool2d_samples,
             torch=CS.max_pool2d_torch, bad_inputs=CS.max_pool2d_bad_inputs)
class MaxPool2dFunction(Function):
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
class AvgPool2dFunction(Function):
    @staticmethod
    def forward(ctx, x, kernel_size=2, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                divisor_override=None):
        ctx.args = (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
        ctx.in_shape = x.shape
        # a window over the whole plane (a CNN's global pool written as avg_pool2d(x, 7)): the many-rows sum;
        # count_include_pad is checked here as the general kernel would (it has no effect without padding)
        check_bool(count_include_pad, "count_include_pad")
        ctx.is_global = x.ndim == 4 and min(x.shape[1:]) > 0 and _pool.avg_pool2d_is_global(
            x.shape, kernel_size, stride, padding, ceil_mode, divisor_override)
        if ctx.is_global:
            return _pool.global_avg_pool2d_forward(x)
        return _pool.avg_pool2d_forward(x, *ctx.args)

    @staticmethod
    def backward(ctx, g):
        if ctx.is_global:
            return _pool.global_avg_pool2d_backward(g, ctx.in_shape)
        return _pool.avg_pool2d_backward(g, ctx.in_shape, *ctx.args)


@register_op("adaptive_avg_pool2d", meta=_adaptive_avg_pool2d_meta, flops=with_args(_adaptive_avg_pool2d_flops),
             samples=CS.adaptive_avg_pool2d_samples, torch=CS.adaptive_avg_pool2d_torch,
             bad_inputs=CS.adaptive_avg_pool2d_bad_inputs)
class AdaptiveAvgPool2dFunction(Function):
    @staticmethod
    def forward(ctx, x, output_size=1):
        ctx.in_shape = x.shape
        return _pool.adaptive_avg_pool2d_forward(x, output_size)

    @staticmethod
    def backward(ctx, g):
        return _pool.adaptive_avg_pool2d_backward(g, ctx.in_shape)


# ---- the cuda device (_C.cuda_gemm): the CPU ops' geometry and checks, gather-form backward passes -----
def _cuda_geometry(x, kernel_size, stride, padding, dilation, ceil_mode, owner):
    if len(x.shape) != 4:
        raise ValueError(f"input must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    ceil_mode = check_bool(ceil_mode, "ceil_mode")
    k, s, p, d, _ = pool2d_geometry(x.shape, kernel_size, stride, padding, dilation, ceil_mode, owner)
    return k, s, p, d, ceil_mode


class MaxPool2dCudaFunction(Function):
    non_differentiable_outputs = (1,)

    @staticmethod
    def forward(ctx, x, kernel_size=2, stride=None, padding=0, dilation=1, ceil_mode=False):
        ctx.geo = _cuda_geometry(x, kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d")
        y, idx = _C.cuda_gemm.max_pool2d_forward(x, *ctx.geo)
        ctx.save_for_backward(idx)
        ctx.in_shape = tuple(x.shape)
        return y, idx

    @staticmethod
    def backward(ctx, g, g_idx=None):
        (idx,) = ctx.saved_tensors
        return _C.cuda_gemm.max_pool2d_backward(g, idx, list(ctx.in_shape), *ctx.geo)


class AvgPool2dCudaFunction(Function):
    @staticmethod
    def forward(ctx, x, kernel_size=2, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                divisor_override=None):
        k, s, p, _, ceil_mode = _cuda_geometry(x, kernel_size, stride, padding, 1, ceil_mode, "avg_pool2d")
        ctx.args = (k, s, p, ceil_mode, check_bool(count_include_pad, "count_include_pad"),
                    _pool._divisor(divisor_override))
        ctx.in_shape = tuple(x.shape)
        return _C.cuda_gemm.avg_pool2d_forward(x, *ctx.args)

    @staticmethod
    def backward(ctx, g):
        return _C.cuda_gemm.avg_pool2d_backward(g, list(ctx.in_shape), *ctx.args)


class AdaptiveAvgPool2dCudaFunction(Function):
    @staticmethod
    def forward(ctx, x, output_size=1):
        if len(x.shape) != 4:
            raise ValueError(f"input must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
        ctx.in_shape = tuple(x.shape)
        return _C.cuda_gemm.adaptive_avg_pool2d_forward(x, _adaptive_size(output_size, x.shape[2:]))

    @staticmethod
    def backward(ctx, g):
        return _C.cuda_gemm.adaptive_avg_pool2d_backward(g, list(ctx.in_shape))


MaxPool2dFunction.op.add_device("cuda", MaxPool2dCudaFunction)
AvgPool2dFunction.op.add_device("cuda", AvgPool2dCudaFunction)
AdaptiveAvgPool2dFunction.op.add_device("cuda", AdaptiveAvgPool2dCudaFunction)
