"""Activations, softmax and dropout.

float32 arrays go through the C++ SIMD kernels (forgegrad.kernels.activation / .softmax); other
dtypes keep the numpy formulas below.
"""
from __future__ import annotations

import numpy as np

from .. import _C
from ..autograd import Function
from ..kernels import activation as _K
from ..kernels import softmax as _KS
from . import _meta as M
from . import _samples as S
from ._util import single_axis
from .registry import BadInput, Sample, register_op

_ACT = _C.activation
_F32 = np.dtype(np.float32)


def _f32(x) -> bool:
    return x.dtype == np.float32


def _activation_inference(function, code, alpha_of=None):
    """The no-graph forward of an activation: its C++ kernel straight on a float32 array; other
    dtypes take the Function's numpy formula."""

    def run(x, *args, **kwargs):
        if type(x) is np.ndarray and x.dtype is _F32:
            return _K._forward(code(*args, **kwargs) if callable(code) else code, x, None,
                               0.0 if alpha_of is None else alpha_of(*args, **kwargs))
        return function.forward(_NoCtx, x, *args, **kwargs)

    return run


class _NoCtx:
    """A ctx for running a forward whose saved values nobody will read."""

    needs_input_grad = ()

    @staticmethod
    def save_for_backward(*arrays):
        pass

    def __setattr__(self, name, value):
        pass


_NoCtx = _NoCtx()


def _torch_F():
    import torch.nn.functional as F
    return F


_UNARY_FLOPS = M.per_output_element(1)
_TRANSCENDENTAL_FLOPS = M.per_output_element(4)


@register_op("relu", meta=M.same, flops=_UNARY_FLOPS, samples=S.unary(),
             torch=lambda torch, x: torch.relu(x))
class ReluFunction(Function):
    @staticmethod
    def forward(ctx, x):
        y = _K.relu(x) if _f32(x) else np.maximum(x, 0, dtype=x.dtype)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        if _f32(g) and _f32(y):
            return _K.relu_backward(g, y)
        return g * (y > 0)


@register_op("leaky_relu", meta=M.same, flops=_UNARY_FLOPS,
             samples=lambda: S.unary()() + [Sample((S.rand(3, 7),), {"negative_slope": 0.2}, "slope 0.2")],
             torch=lambda torch, x, negative_slope=0.01: _torch_F().leaky_relu(x, negative_slope),
             bad_inputs=lambda: [BadInput((S.rand(2, 3),), {"negative_slope": "a"}, TypeError, "negative_slope")])
class LeakyReluFunction(Function):
    @staticmethod
    def forward(ctx, x, negative_slope=0.01):
        ctx.save_for_backward(x)
        # a local, not ctx.slope: the no-graph path's ctx (_NoCtx) keeps nothing
        ctx.slope = slope = np.float32(negative_slope)
        if _f32(x):
            return _K.leaky_relu(x, float(negative_slope))
        return np.where(x > 0, x, x * slope).astype(np.float32, copy=False)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        if _f32(g) and _f32(x):
            return _K.leaky_relu_backward(g, x, float(ctx.slope))
        return np.where(x > 0, g, g * ctx.slope).astype(np.float32, copy=False)


def _erf(x: np.ndarray) -> np.ndarray:
    """erf in float64 via numpy-only math (max abs error ~1.2e-7, W. J. Cody's rational form would be
    tighter; this is Numerical Recipes' erfc Chebyshev fit, accurate to 1.2e-7 everywhere)."""
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    r = t * np.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
    return np.where(x >= 0, 1.0 - r, r - 1.0)


@register_op("gelu", meta=M.same, flops=_TRANSCENDENTAL_FLOPS,
             samples=lambda: S.unary()() + [Sample((S.rand(3, 7),), {"approximate": "tanh"}, "tanh")],
             torch=lambda torch, x, approximate="none": _torch_F().gelu(x, approximate=approximate),
             bad_inputs=lambda: [BadInput((S.rand(2, 3),), {"approximate": "erf"}, ValueError, "approximate")])
class GeluFunction(Function):
    """GELU, exact form x * Phi(x) (torch's default approximate='none'), or 'tanh'."""

    @staticmethod
    def forward(ctx, x, approximate="none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
        ctx.save_for_backward(x)
        ctx.approximate = approximate
        if _f32(x):
            return _K.gelu(x, approximate)
        xd = x.astype(np.float64)
        if approximate == "tanh":
            y = 0.5 * xd * (1.0 + np.tanh(0.7978845608028654 * (xd + 0.044715 * xd ** 3)))
        else:
            y = 0.5 * xd * (1.0 + _erf(xd * 0.7071067811865476))
        return y.astype(np.float32)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        if _f32(g) and _f32(x):
            return _K.gelu_backward(g, x, ctx.approximate)
        xd = x.astype(np.float64)
        if ctx.approximate == "tanh":
            k = 0.7978845608028654
            u = k * (xd + 0.044715 * xd ** 3)
            t = np.tanh(u)
            d = 0.5 * (1 + t) + 0.5 * xd * (1 - t * t) * k * (1 + 3 * 0.044715 * xd * xd)
        else:
            cdf = 0.5 * (1.0 + _erf(xd * 0.7071067811865476))
            pdf = np.exp(-0.5 * xd * xd) * 0.3989422804014327
            d = cdf + xd * pdf
        return (g * d).astype(np.float32)


@register_op("sigmoid", meta=M.same, flops=_TRANSCENDENTAL_FLOPS, samples=S.unary(),
             torch=lambda torch, x: torch.sigmoid(x))
class SigmoidFunction(Function):
    @staticmethod
    def forward(ctx, x):
        if _f32(x):
            y = _K.sigmoid(x)
        else:
            # exp of a non-positive number only: no overflow for large |x|
            e = np.exp(-np.abs(x))
            y = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32, copy=False)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        if _f32(g) and _f32(y):
            return _K.sigmoid_backward(g, y)
        return g * y * (1 - y)


@register_op("tanh", meta=M.same, flops=_TRANSCENDENTAL_FLOPS, samples=S.unary(),
             torch=lambda torch, x: torch.tanh(x))
class TanhFunction(Function):
    @staticmethod
    def forward(ctx, x):
        y = _K.tanh(x) if _f32(x) else np.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        if _f32(g) and _f32(y):
            return _K.tanh_backward(g, y)
        return g * (1 - y * y)


def _onnx_silu(ctx, op):
    x = op.input("x")
    return [ctx.node("Mul", [x, ctx.node("Sigmoid", [x])])]  # ONNX has no SiLU operator before opset 24


def silu(input):
    """``torch.nn.functional.silu``: input * sigmoid(input)."""
    return SiluFunction.op(input)


@register_op("silu", meta=M.same, flops=_TRANSCENDENTAL_FLOPS, samples=S.unary(), onnx=_onnx_silu, functional=silu,
             torch=lambda torch, x: _torch_F().silu(x))
class SiluFunction(Function):
    """x * sigmoid(x) (SiLU, swish); backward from the input x."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        if _f32(x):
            return _K.silu(x)
        xd = x.astype(np.float64)
        return (xd / (1.0 + np.exp(-xd))).astype(np.float32)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        if _f32(g) and _f32(x):
            return _K.silu_backward(g, x)
        xd = x.astype(np.float64)
        s = 1.0 / (1.0 + np.exp(-xd))
        return (g * s * (1.0 + xd * (1.0 - s))).astype(np.float32)


def _rows_last(x, axis):
    """x with `axis` moved last, C-contiguous (rows of the kernels)."""
    if axis == x.ndim - 1:
        return x
    return np.ascontiguousarray(np.moveaxis(x, axis, -1))


def _from_last(y, axis, ndim):
    return y if axis == ndim - 1 else np.moveaxis(y, -1, axis)


@register_op("softmax", meta=M.same, flops=M.per_output_element(5),
             samples=lambda: S.unary()() + [Sample((S.rand(4, 6, 5),), {"dim": 1}, "dim 1"),
                                            Sample((S.rand(4, 6, 5),), {"dim": 0}, "dim 0")],
             torch=lambda torch, x, dim=-1: torch.softmax(x, dim),
             bad_inputs=lambda: [BadInput((S.rand(2, 3),), {"dim": 2}, IndexError, "dim")])
class SoftmaxFunction(Function):
    """exp(x) / sum(exp(x)) along dim; the C++ kernel works on the last axis (others are moved there)."""

    @staticmethod
    def forward(ctx, x, dim=-1):
        axis = single_axis(dim, x.ndim)
        ctx.axis = axis
        if _f32(x) and x.ndim > 0:
            y = _KS.softmax(_rows_last(x, axis))  # y in the moved layout
            ctx.save_for_backward(y)
            ctx.kernel = True
            return _from_last(y, axis, x.ndim)
        z = x - np.max(x, axis=axis, keepdims=True)
        e = np.exp(z)
        y = e / np.sum(e, axis=axis, keepdims=True)
        ctx.save_for_backward(y)
        ctx.kernel = False
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        if ctx.kernel and _f32(g):
            dx = _KS.softmax_backward(_rows_last(g, ctx.axis), y)
            return _from_last(dx, ctx.axis, g.ndim)
        if ctx.kernel:
            y = _from_last(y, ctx.axis, g.ndim)
        return y * (g - np.sum(g * y, axis=ctx.axis, keepdims=True))


@register_op("log_softmax", meta=M.same, flops=M.per_output_element(5),
             samples=lambda: S.unary()() + [Sample((S.rand(4, 6, 5),), {"dim": 1}, "dim 1")],
             torch=lambda torch, x, dim=-1: torch.log_softmax(x, dim),
             bad_inputs=lambda: [BadInput((S.rand(2, 3),), {"dim": -3}, IndexError, "dim")])
class LogSoftmaxFunction(Function):
    @staticmethod
    def forward(ctx, x, dim=-1):
        axis = single_axis(dim, x.ndim)
        ctx.axis = axis
        if _f32(x) and x.ndim > 0:
            y = _KS.log_softmax(_rows_last(x, axis))
            ctx.save_for_backward(y)
            ctx.kernel = True
            return _from_last(y, axis, x.ndim)
        z = x - np.max(x, axis=axis, keepdims=True)
        y = z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))
        ctx.save_for_backward(y)
        ctx.kernel = False
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        if ctx.kernel and _f32(g):
            dx = _KS.log_softmax_backward(_rows_last(g, ctx.axis), y)
            return _from_last(dx, ctx.axis, g.ndim)
        if ctx.kernel:
            y = _from_last(y, ctx.axis, g.ndim)
        return g - np.exp(y) * np.sum(g, axis=ctx.axis, keepdims=True)


@register_op("dropout", meta=M.same, flops=M.per_output_element(1),
             samples=lambda: [Sample((S.rand(3, 7),), {"p": 0.3, "training": False}, "eval"),
                              Sample((S.rand(*S.LARGE),), {"p": 0.0, "training": True}, "p=0")],
             torch=lambda torch, x, p=0.5, training=True: _torch_F().dropout(x, p, training),
             bad_inputs=lambda: [BadInput((S.rand(2, 3),), {"p": 1.5}, ValueError, "probability")],
             gaps={"onnx": "exported only in eval mode, where it is the identity (no node)"})
class DropoutFunction(Function):
    """Inverted dropout: zero each element with probability p, scale the rest by 1/(1-p)."""

    @staticmethod
    def forward(ctx, x, p=0.5, training=True):
        from .. import random as _random
        from .._validate import check_bool, check_float
        p, training = check_float(p, "dropout: p"), check_bool(training, "dropout: training")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        if not training or p == 0.0:
            ctx.mask = None
            return x
        if p == 1.0:
            ctx.mask = np.zeros_like(x)
            return np.zeros_like(x)
        keep = _random.generator().random(x.shape, dtype=np.float32) >= p
        mask = keep.astype(np.float32) * np.float32(1.0 / (1.0 - p))
        ctx.mask = mask
        return x * mask

    @staticmethod
    def backward(ctx, g):
        return g if ctx.mask is None else g * ctx.mask


# No-graph kernels (the inference shortcut in Function.apply).
ReluFunction.op.set_inference("cpu", _activation_inference(ReluFunction, _ACT.RELU))
SigmoidFunction.op.set_inference("cpu", _activation_inference(SigmoidFunction, _ACT.SIGMOID))
TanhFunction.op.set_inference("cpu", _activation_inference(TanhFunction, _ACT.TANH))
SiluFunction.op.set_inference("cpu", _activation_inference(SiluFunction, _ACT.SILU))
LeakyReluFunction.op.set_inference("cpu", _activation_inference(
    LeakyReluFunction, _ACT.LEAKY_RELU, lambda negative_slope=0.01: _K._slope(negative_slope)))
GeluFunction.op.set_inference("cpu", _activation_inference(
    GeluFunction, lambda approximate="none": _K._gelu_op(approximate)))
