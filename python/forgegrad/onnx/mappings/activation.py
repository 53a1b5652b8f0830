"""Activations: Relu LeakyRelu Gelu Sigmoid Tanh Softmax LogSoftmax Dropout."""
from __future__ import annotations

import math

from ...ops import activation as A
from ...ops._util import normalize_axis
from . import register


@register(A.ReluFunction)
def map_relu(ctx, op):
    return [ctx.node("Relu", [op.input("x")])]


@register(A.LeakyReluFunction)
def map_leaky_relu(ctx, op):
    return [ctx.node("LeakyRelu", [op.input("x")], alpha=float(op.attr("negative_slope")))]


@register(A.SigmoidFunction)
def map_sigmoid(ctx, op):
    return [ctx.node("Sigmoid", [op.input("x")])]


@register(A.TanhFunction)
def map_tanh(ctx, op):
    return [ctx.node("Tanh", [op.input("x")])]


@register(A.GeluFunction)
def map_gelu(ctx, op):
    x = op.input("x")
    approximate = op.attr("approximate")
    if ctx.opset >= 20:  # the Gelu operator exists from opset 20
        return [ctx.node("Gelu", [x], approximate=approximate)]
    half = ctx.const(0.5, "float32")
    if approximate == "tanh":
        # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        x3 = ctx.node("Mul", [ctx.node("Mul", [x, x]), x])
        inner = ctx.node("Add", [x, ctx.node("Mul", [x3, ctx.const(0.044715, "float32")])])
        t = ctx.node("Tanh", [ctx.node("Mul", [inner, ctx.const(math.sqrt(2.0 / math.pi), "float32")])])
    else:
        # 0.5 x (1 + erf(x / sqrt 2))
        t = ctx.node("Erf", [ctx.node("Mul", [x, ctx.const(1.0 / math.sqrt(2.0), "float32")])])
    one_plus = ctx.node("Add", [t, ctx.const(1.0, "float32")])
    return [ctx.node("Mul", [ctx.node("Mul", [x, half]), one_plus])]


def _axis(op):
    (axis,) = normalize_axis(op.attr("dim"), op.outputs[0].ndim)
    return axis


@register(A.SoftmaxFunction)
def map_softmax(ctx, op):
    return [ctx.node("Softmax", [op.input("x")], axis=_axis(op))]  # per-axis semantics from opset 13


@register(A.LogSoftmaxFunction)
def map_log_softmax(ctx, op):
    return [ctx.node("LogSoftmax", [op.input("x")], axis=_axis(op))]


@register(A.DropoutFunction)
def map_dropout(ctx, op):
    if op.attr("training") and op.attr("p") > 0:
        raise op.unsupported(
            "dropout ran with training=True while the model was in eval mode (a functional "
            "F.dropout(x, p) without training=self.training?): its random mask cannot be exported")
    return [op.input("x")]  # identity in eval mode: no node
