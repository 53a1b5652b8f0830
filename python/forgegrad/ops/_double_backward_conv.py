"""The differentiable backward rules of the convolutions and the pools (see _double_backward.py): a gradient penalty
on a convolutional critic (DCGAN-style WGAN-GP) differentiates through them twice.

Their gradients are products the op's own kernels compute, so the rules are Functions over those kernels whose
derivatives are again the op or the other gradient (no new kernel):

- a convolution (conv1d, conv2d, conv3d, conv_transpose3d) is bilinear: with dX(g, w) its input gradient and
  dW(x, g) its weight gradient, dX is linear in g (derivative: the op of gg with w) and in w (derivative:
  dW(gg, g)); dW is linear in x (derivative: dX(g, gw)) and in g (derivative: the op of x with gw);
- the average pools are linear: the gradient of their gradient with respect to g is the pool of gg;
- max_pool2d's gradient scatters g to each window's argmax (its index output), a getitem's gradient.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from .registry import _OPS
from ..grad_mode import no_grad
from ._double_backward import _is_t, _scatter, rule


def _function(name: str, dtype):
    op = _OPS[name]
    return op.float64 if dtype == np.float64 else op.function


def _vjp(name: str, arrays, kwargs, g, needs):
    """The array gradients of op ``name`` at ``arrays`` for the output gradient ``g`` (its own Function)."""
    fn = _function(name, g.dtype)
    ctx = fn.__new__(fn)
    ctx.needs_input_grad, ctx.saved_at = list(needs), None
    fn.forward(ctx, *arrays, **kwargs)
    return fn.backward(ctx, g)


def _forward(name: str, arrays, kwargs):
    fn = _function(name, arrays[0].dtype)
    ctx = fn.__new__(fn)
    ctx.needs_input_grad, ctx.saved_at = [False] * len(arrays), None
    return fn.forward(ctx, *arrays, **kwargs)


_CONV_ARGS = (("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1))
_CONV_TRANSPOSE_ARGS = (("stride", 1), ("padding", 0), ("output_padding", 0), ("groups", 1), ("dilation", 1))


def _geometry(args, kwargs, params=_CONV_ARGS):
    """The op's keyword arguments after (input, weight, bias), from args or kwargs (params: (name, default))."""
    return {n: (args[3 + i] if 3 + i < len(args) else kwargs.get(n, d)) for i, (n, d) in enumerate(params)}


class ConvInputGradFunction(Function):
    """dX(g, w): the input gradient of convolution ``name`` (``x`` an array: its shape and the kernel's workspace;
    the value does not enter)."""

    handles_float64 = True

    @staticmethod
    def forward(ctx, g, w, x, name, geo):
        ctx.save_for_backward(g, w)
        ctx.name, ctx.geo = name, geo
        return _vjp(name, (x, w), geo, g, (True, False))[0]

    @staticmethod
    def backward(ctx, gg):
        g, w = ctx.saved_tensors
        dg = _forward(ctx.name, (gg, w), ctx.geo) if ctx.needs_input_grad[0] else None
        dw = _vjp(ctx.name, (gg, w), ctx.geo, g, (False, True))[1] if ctx.needs_input_grad[1] else None
        return dg, dw, None, None, None

    @staticmethod
    def differentiable_backward(ctx, args, kwargs, gg):
        g, w, x, name, geo = args
        return (_OPS[name](gg, w, None, **geo) if _is_t(g) else None,
                ConvWeightGradFunction.apply(gg, g, w._data, name, geo) if _is_t(w) else None, None, None, None)


class ConvWeightGradFunction(Function):
    """dW(x, g): the weight gradient of convolution ``name`` (``w`` an array: its shape)."""

    handles_float64 = True

    @staticmethod
    def forward(ctx, x, g, w, name, geo):
        ctx.save_for_backward(x, g)
        ctx.name, ctx.geo = name, geo
        return _vjp(name, (x, w), geo, g, (False, True))[1]

    @staticmethod
    def backward(ctx, gw):
        x, g = ctx.saved_tensors
        dx = _vjp(ctx.name, (x, gw), ctx.geo, g, (True, False))[0] if ctx.needs_input_grad[0] else None
        dg = _forward(ctx.name, (x, gw), ctx.geo) if ctx.needs_input_grad[1] else None
        return dx, dg, None, None, None

    @staticmethod
    def differentiable_backward(ctx, args, kwargs, gw):
        x, g, w, name, geo = args
        return (ConvInputGradFunction.apply(g, gw, x._data, name, geo) if _is_t(x) else None,
                _OPS[name](x, gw, None, **geo) if _is_t(g) else None, None, None, None)


@rule("conv2d", "conv1d", "conv3d", "conv_transpose3d")
def _conv(ctx, args, kwargs, g):
    """Any bilinear conv op (a transposed conv too: dX and dW are its own gradients, through _vjp)."""
    x, w = args[0], args[1]
    b = args[2] if len(args) > 2 else kwargs.get("bias")
    name = type(ctx).op.name
    geo = _geometry(args, kwargs, _CONV_TRANSPOSE_ARGS if name.startswith("conv_transpose") else _CONV_ARGS)
    gx = ConvInputGradFunction.apply(g, w, x._data, name, geo) if _is_t(x) else None
    gw = ConvWeightGradFunction.apply(x, g, w._data, name, geo) if _is_t(w) else None
    gb = g.sum(dim=(0,) + tuple(range(2, g.ndim))) if _is_t(b) else None
    return gx, gw, gb


class PoolGradFunction(Function):
    """The gradient of a linear pool (op ``name`` with ``kwargs``) at an input of ``x``'s shape; linear in g, so
    its own gradient is the pool of gg."""

    handles_float64 = True

    @staticmethod
    def forward(ctx, g, x, name, kwargs):
        ctx.name, ctx.kwargs = name, kwargs
        return _vjp(name, (x,), kwargs, g, (True,))

    @staticmethod
    def backward(ctx, gg):
        return _forward(ctx.name, (gg,), ctx.kwargs), None, None, None

    @staticmethod
    def differentiable_backward(ctx, args, kwargs, gg):
        g, x, name, kw = args
        return _OPS[name](gg, **kw), None, None, None


def _pool_rule(name, params):
    def pool(ctx, args, kwargs, g):
        kw = {p: args[1 + i] for i, p in enumerate(params) if 1 + i < len(args)}
        kw.update(kwargs)
        return PoolGradFunction.apply(g, args[0]._data, name, kw)

    rule(name)(pool)


_pool_rule("avg_pool2d", ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"))
_pool_rule("adaptive_avg_pool2d", ("output_size",))
_pool_rule("avg_pool3d", ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"))
_pool_rule("adaptive_avg_pool3d", ("output_size",))


@rule("max_pool2d")
def _max_pool2d(ctx, args, kwargs, g, _):
    x = args[0]
    with no_grad():  # the argmax of each window (flat h * W + w), as the forward chose it
        _, idx = _OPS["max_pool2d"](x.detach(), *args[1:], **kwargs)
    N, C, H, W = x.shape
    idx = idx._data.reshape(N, C, -1)
    key = (np.arange(N)[:, None, None], np.arange(C)[None, :, None], idx)
    return _scatter(g.reshape(N, C, -1), key, (N, C, H * W)).reshape(x.shape)
