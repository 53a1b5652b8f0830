"""2-D convolution as an autograd Function (NCHW, float32): y = conv2d(x, weight) + bias, and 1-D
convolution (NCL) as the 2-D one on a height of 1.

The arithmetic lives in the C++ kernels (forgegrad.kernels.conv); the shape rule takes its geometry
from kernels.conv.conv2d_output_shape (the C++ rule), so it is written once. Samples, torch reference
and bad inputs are in conv_samples.py. Pooling is in ops/pool.py, batch norm in ops/normalization.py.
"""
from __future__ import annotations

import numpy as np

from .. import _C
from ..autograd import Function
from ..devices import MetaArray
from ..kernels import conv as _conv
from ..kernels.geometry import conv1d_as_2d, conv2d_geometry
from ..kernels._checks import check_ndim
from . import conv_samples as CS
from ._op_rules import with_args
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


@register_op("conv2d", meta=_conv2d_meta, flops=with_args(_conv2d_flops), samples=CS.conv2d_samples,
             torch=CS.conv2d_torch, bad_inputs=CS.conv2d_bad_inputs, tol=CS.CONV_TOL)
class Conv2dFunction(Function):
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


class Conv2dCudaFunction(Function):
    """conv2d on the cuda device: implicit-GEMM kernels (_C.cuda_gemm), the CPU op's geometry and checks."""

    @staticmethod
    def forward(ctx, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        if len(x.shape) != 4 or len(weight.shape) != 4:
            raise ValueError(f"conv2d: input and weight must be 4-D, got shapes {tuple(x.shape)} and "
                             f"{tuple(weight.shape)}")
        geo = conv2d_geometry(x.shape, weight.shape, stride, padding, dilation, groups)
        ctx.geo = (geo.stride, geo.padding, geo.dilation, geo.groups)
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _C.cuda_gemm.conv2d_forward(x, weight, bias, *ctx.geo)

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        needs = ctx.needs_input_grad
        need = (bool(needs[0]), bool(needs[1]), bool(ctx.has_bias and len(needs) > 2 and needs[2]))
        if not any(need):
            return None, None, None
        return tuple(_C.cuda_gemm.conv2d_backward(x, weight, g, *ctx.geo, *need))


Conv2dFunction.op.add_device("cuda", Conv2dCudaFunction)


# ---- conv1d: the conv2d Functions on a height of 1 ------------------------------------------------------
def _height1(a):
    """(N, C, L) -> (N, C, 1, L) (a view: numpy, meta and device arrays all reshape)."""
    return a.reshape(a.shape[:2] + (1,) + a.shape[2:])


def _length(a):
    return None if a is None else a.reshape(a.shape[:2] + a.shape[3:])


def _conv1d_meta(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    check_ndim(x, "input", 3)
    check_ndim(weight, "weight", 3)
    y = _conv2d_meta(_height1(x), _height1(weight), bias, *conv1d_as_2d(stride, padding, dilation), groups)
    return MetaArray(y.shape[:2] + y.shape[3:], _F32)


def _conv1d_flops(out, x, weight, bias=None, **kwargs):
    return out.size * (2 * weight.shape[1] * weight.shape[2] + (bias is not None))


def conv1d_function(conv2d: type, device: str) -> type:
    """A conv1d Function for ``device`` that runs the 2-D Function ``conv2d`` on (N, C, 1, L) views: the same
    kernels, checks and gradients, so every device (and float64) with a conv2d has a conv1d."""

    def forward(ctx, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        check_ndim(x, "input", 3)
        check_ndim(weight, "weight", 3)
        y = conv2d.forward(ctx, _height1(x), _height1(weight), bias, *conv1d_as_2d(stride, padding, dilation),
                           groups)
        return _length(y)

    def backward(ctx, g):
        gx, gw, gb = conv2d.backward(ctx, _height1(g))
        return _length(gx), _length(gw), gb

    return type(f"Conv1d{device.capitalize()}Function", (Function,),
                {"forward": staticmethod(forward), "backward": staticmethod(backward), "__module__": __name__,
                 "__doc__": f"conv1d on {device}: {conv2d.__name__} on a height of 1."})


Conv1dFunction = register_op("conv1d", meta=_conv1d_meta, flops=with_args(_conv1d_flops), samples=CS.conv1d_samples,
                             torch=CS.conv1d_torch, bad_inputs=CS.conv1d_bad_inputs, tol=CS.CONV_TOL)(
    conv1d_function(Conv2dFunction, "cpu"))
Conv1dFunction.op.add_device("cuda", conv1d_function(Conv2dCudaFunction, "cuda"))
