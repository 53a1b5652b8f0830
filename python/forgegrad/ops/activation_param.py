"""The leaky activations with a slope that is not a constant argument: prelu (a learnable ``weight``, one slope or
one per channel) and rrelu (``lower``, ``upper``, ``training``: a random slope per element in training), torch's
formulas: forward, gradients, double-backward rule, ONNX mapping and samples (modules in nn/activation_extra.py).

- prelu:  x where x > 0, else weight * x, weight of 1 element or of input.shape[1] (dim 1 is the channel dim; a 0-d
  or 1-d input has one channel, as torch's); gradients: x's (1 or weight), weight's (x where x <= 0, summed
  over every dim but the channel's);
- rrelu:  in training x * r where x <= 0 (r drawn uniform in [lower, upper] per element from forgegrad's generator,
  saved for backward), else x; in eval leaky_relu with the mean slope (lower + upper) / 2, which is torch's
  definition, and so runs the C++ leaky_relu kernel on float32 (also the record's GEMM epilogue, in eval only).
"""
from __future__ import annotations

import numpy as np

from .. import _C
from ..autograd import Function
from .._validate import check_bool, check_float
from ..kernels import activation as _K
from ..kernels import activation_param as _KP
from . import _meta as M
from . import _samples as S
from .activation_hard import at_kinks
from .registry import BadInput, Sample, register_op

_F32 = np.dtype(np.float32)


def _float(x):
    return x if x.dtype.kind == "f" else x.astype(np.float32)


# ---- prelu ------------------------------------------------------------------------------------------------------
def _prelu_shape(x_shape, w_shape):
    """The shape (of x's rank) weight broadcasts in against x, checked as torch checks it."""
    channels = x_shape[1] if len(x_shape) >= 2 else 1
    size = int(np.prod(w_shape)) if len(w_shape) else 1
    if len(w_shape) > 1:
        raise RuntimeError(f"prelu: weight must be a 0-d or 1-d tensor, got shape {tuple(w_shape)}")
    if size == 1:
        return (1,) * len(x_shape)
    if size != channels:
        raise RuntimeError(f"prelu: weight: mismatch of parameter numbers and input channel size. Found parameter "
                           f"numbers = {size} and channel size = {channels}.")
    return (1, size) + (1,) * (len(x_shape) - 2)


def _prelu_dtypes(x_dtype, w_dtype):
    """torch's prelu does not promote: input and weight must share a dtype."""
    if np.dtype(x_dtype) != np.dtype(w_dtype):
        raise RuntimeError(f"prelu: input ({np.dtype(x_dtype)}) and weight ({np.dtype(w_dtype)}) must have the same "
                           "dtype: prelu does not promote types, as torch's (cast one of them)")


def _prelu_meta(x, weight):
    from ..devices import MetaArray
    _prelu_shape(x.shape, weight.shape)
    _prelu_dtypes(x.dtype, weight.dtype)
    return MetaArray(x.shape, np.result_type(x.dtype, weight.dtype))


def _prelu_onnx(ctx, op):
    xt, wt = op.args["x"], op.args["weight"]
    shape = _prelu_shape(tuple(xt.shape), tuple(wt.shape))
    w = op.input("weight", np.float32)
    slope = ctx.node("Reshape", [w, ctx.ints(shape)])  # x's rank: PRelu broadcasts the slope one way only
    return [ctx.node("PRelu", [op.input("x", np.float32), slope])]


def _prelu_rule(ctx, args, kwargs, g):
    from ._double_backward import _const, _where
    x, w = args[0], args[1]
    shape = _prelu_shape(x.shape, w.shape)
    wb = w.reshape(shape)
    # torch's second derivatives take x >= 0 as the positive side (its first derivative x > 0): at x == 0 the
    # gradient is weight * g, but its own derivatives are those of g (1 for g, 0 for weight and x); the
    # difference is added as a constant
    nonneg, zero = x._data >= 0, x._data == 0
    gx = _where(nonneg, g, g * wb)
    if zero.any():
        gx = gx + _const(np.where(zero, g._data * wb._data - g._data, 0), g)
    gw = _where(nonneg, 0.0, g * x)
    axes = tuple(i for i, s in enumerate(shape) if s == 1)
    gw = (gw.sum(dim=axes) if axes else gw).reshape(w.shape)
    return gx, gw


def _prelu_samples():
    return [Sample((at_kinks(S.rand(2, 3, 5, 4), 0.0, -0.0), np.array([0.25, -0.5, 1.5], np.float32)), {}, "channels"),
            Sample((S.rand(3, 7, seed=1), np.array([0.1], np.float32)), {}, "one slope"),
            Sample((S.rand(5, seed=2), np.array([0.3], np.float32)), {}, "1-d"),
            Sample((S.rand(2, 5, 9, seed=4), S.rand(5, seed=5)), {}, "3-d"),
            Sample((S.rand(*S.LARGE, seed=3), S.rand(S.LARGE[1], seed=6)), {}, "large")]


@register_op("prelu", meta=_prelu_meta, flops=M.per_output_element(2), samples=_prelu_samples,
             torch=lambda torch, x, weight: torch.nn.functional.prelu(x, weight),
             bad_inputs=lambda: [BadInput((S.rand(2, 3), np.ones(4, np.float32)), {}, RuntimeError, "weight"),
                                 BadInput((S.rand(5), np.ones(5, np.float32)), {}, RuntimeError, "weight"),
                                 BadInput((S.rand(2, 3).astype(np.float64), np.ones(3, np.float32)), {},
                                          RuntimeError, "same dtype")],
             onnx=_prelu_onnx, differentiable_backward=_prelu_rule)
class PreluFunction(Function):
    """prelu(x, weight) = x where x > 0, else weight * x (weight per channel, dim 1)."""

    @staticmethod
    def forward(ctx, x, weight):
        shape = _prelu_shape(x.shape, weight.shape)
        _prelu_dtypes(x.dtype, weight.dtype)
        x = _float(x)
        ctx.weight_shape = weight.shape
        if x.dtype == _F32 and weight.dtype == _F32:  # the C++ kernel (weight's own shape: 0-d, 1 or C)
            ctx.save_for_backward(x, weight)
            return _KP.prelu(x, weight)
        w = weight.reshape(shape)
        ctx.save_for_backward(x, weight)
        return np.where(x > 0, x, w * x).astype(np.result_type(x, weight), copy=False)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if x.dtype == _F32 and w.dtype == _F32 and g.dtype == _F32:
            return _KP.prelu_backward(g, x, w, need_input=need_x, need_weight=need_w)
        w = w.reshape(_prelu_shape(x.shape, w.shape))
        pos = x > 0
        gx = gw = None
        if need_x:
            gx = np.where(pos, g, w * g).astype(x.dtype, copy=False)
        if need_w:
            axes = tuple(i for i in range(x.ndim) if w.shape[i] == 1)
            gw = np.where(pos, 0, x * g).sum(axis=axes).reshape(ctx.weight_shape).astype(w.dtype, copy=False)
        return gx, gw


# ---- rrelu ------------------------------------------------------------------------------------------------------
def _rrelu_args(lower, upper, training):
    lower, upper = check_float(lower, "lower"), check_float(upper, "upper")
    if lower > upper:
        raise RuntimeError(f"rrelu: lower must be <= upper, got lower={lower} > upper={upper}")  # torch's type
    return lower, upper, check_bool(training, "training")


def _rrelu_epilogue(lower=1.0 / 8, upper=1.0 / 3, training=False):
    lower, upper, training = _rrelu_args(lower, upper, training)
    if training:
        raise ValueError("rrelu: in training its slopes are random; only eval mode (leaky_relu with the mean slope) "
                         "has a GEMM epilogue")
    return _C.activation.LEAKY_RELU, _K._slope((lower + upper) / 2)


def _rrelu_onnx(ctx, op):
    lower, upper = float(op.attr("lower", 1.0 / 8)), float(op.attr("upper", 1.0 / 3))
    if op.attr("training", False) and lower != upper:
        raise op.unsupported("rrelu in training draws random slopes, which ONNX cannot reproduce: export the model in "
                             "eval mode (model.eval()), where rrelu is LeakyRelu with the mean slope")
    slope = lower if op.attr("training", False) else (lower + upper) / 2
    return [ctx.node("LeakyRelu", [op.input("x", np.float32)], alpha=slope)]


def _rrelu_rule(ctx, args, kwargs, g):
    from ._double_backward import _const, _flat
    noise = ctx.__dict__.get("noise")
    if noise is not None:
        return g * _const(noise, g)
    slope = ctx.slope
    return g * _flat(args[0], lambda a: np.where(a > 0, 1.0, slope))


def _rrelu_samples():
    return [Sample((at_kinks(S.rand(3, 7), 0.0),), {}, "eval"),
            Sample((S.rand(2, 5, 9, seed=1),), {"lower": 0.1, "upper": 0.6}, "eval lower/upper"),
            Sample((S.rand(1, seed=2),), {"lower": -0.5, "upper": 0.5}),
            Sample((at_kinks(S.rand(4, 3, 5, seed=4), 0.0),), {"lower": 0.2, "upper": 0.2, "training": True},
                   "training, lower == upper"),
            Sample((S.rand(*S.LARGE, seed=3),), {}, "large")]


@register_op("rrelu", meta=M.same, flops=M.per_output_element(2), samples=_rrelu_samples,
             torch=lambda torch, x, lower=1.0 / 8, upper=1.0 / 3, training=False:
             torch.nn.functional.rrelu(x, lower, upper, training),
             bad_inputs=lambda: [BadInput((S.rand(2, 3),), {"lower": 0.5, "upper": 0.1}, RuntimeError, "lower"),
                                 BadInput((S.rand(2, 3),), {"upper": "1"}, TypeError, "upper"),
                                 BadInput((S.rand(2, 3),), {"training": 1}, TypeError, "training")],
             onnx=_rrelu_onnx, differentiable_backward=_rrelu_rule, epilogue=_rrelu_epilogue)
class RreluFunction(Function):
    """rrelu(x, lower, upper, training): random slopes for x <= 0 in training, the mean slope in eval."""

    @staticmethod
    def forward(ctx, x, lower=1.0 / 8, upper=1.0 / 3, training=False):
        lower, upper, training = _rrelu_args(lower, upper, training)
        x = _float(x)
        if training:
            from .. import random as _random
            r = _random.generator().uniform(lower, upper, size=x.shape).astype(x.dtype)
            if x.dtype == _F32:  # one C++ pass: r becomes the noise (1 where x > 0), y = x * noise
                ctx.noise = r
                return _KP.rrelu_train(x, r)
            ctx.noise = noise = np.where(x <= 0, r, x.dtype.type(1))
            return x * noise
        ctx.noise = None
        ctx.slope = slope = (lower + upper) / 2
        ctx.save_for_backward(x)
        if x.dtype == _F32:
            return _K.leaky_relu(x, slope)  # torch's eval rrelu is leaky_relu: the same kernel
        return np.where(x > 0, x, x * slope)

    @staticmethod
    def backward(ctx, g):
        if ctx.noise is not None:
            return np.multiply(g, ctx.noise, dtype=g.dtype)
        (x,) = ctx.saved_tensors
        if g.dtype == _F32 and x.dtype == _F32:
            return _K.leaky_relu_backward(g, x, ctx.slope)
        return np.where(x > 0, g, g * ctx.slope).astype(g.dtype, copy=False)


for _fn in (PreluFunction, RreluFunction):
    _fn.op.float64 = _fn  # numpy in the input's dtype (rrelu's float32 kernel only on float32)


def prelu(input, weight):
    """``torch.nn.functional.prelu``: input where > 0, else weight * input (weight: 1 element or one per channel,
    dim 1)."""
    from ..nn.functional_conv import _t
    return PreluFunction.op(_t(input, "input"), _t(weight, "weight"))


def rrelu(input, lower: float = 1.0 / 8, upper: float = 1.0 / 3, training: bool = False, inplace: bool = False):
    """``torch.nn.functional.rrelu``: in training, input * r where input <= 0 (r uniform in [lower, upper] per
    element, from forgegrad's generator: forgegrad.manual_seed makes it repeatable); in eval leaky_relu with the
    slope (lower + upper) / 2."""
    from ..nn.functional import _maybe_inplace
    lower, upper, training = _rrelu_args(lower, upper, training)
    return _maybe_inplace(input, inplace, "rrelu",
                          lambda t: RreluFunction.op(t, lower=lower, upper=upper, training=training))


PreluFunction.op.functional = prelu
RreluFunction.op.functional = rrelu
