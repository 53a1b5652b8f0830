"""ONNX mapping of linear_cross_entropy: the logits as MatMul (+ Add), then SoftmaxCrossEntropyLoss for class-index
targets without label smoothing, else cross_entropy's own mapping (LogSoftmax and the elementwise formulas of
onnx/mappings/loss.py) on those logits. The exported graph holds the logits whole: ONNX has no chunked loop here
worth its cost."""
from __future__ import annotations

import math

import numpy as np

from ..tensor import Tensor

F32 = np.float32
_DEFAULTS = {"reduction": "mean", "label_smoothing": 0.0, "ignore_index": -100}


class _Shape:
    def __init__(self, shape):
        self.shape, self.ndim = tuple(shape), len(shape)


class _CrossEntropyView:
    """The op call as cross_entropy's mapping reads one: ``logits`` is the value computed here."""

    def __init__(self, op, logits, logits_shape):
        self._op, self._logits = op, logits
        self.args = dict(op.args)
        self.args["logits"] = _Shape(logits_shape)
        for k, v in _DEFAULTS.items():
            if self.args.get(k) is None:
                self.args[k] = v

    def attr(self, name, default=None):
        return self.args.get(name, default)

    def input(self, name, dtype=None):
        return self._logits if name == "logits" else self._op.input(name, dtype)


def map_linear_cross_entropy(ctx, op):
    from ..onnx.mappings.loss import map_cross_entropy
    x_t, w_t = op.args["input"], op.args["linear_weight"]
    C, in_f, out = w_t.shape[0], w_t.shape[-1], tuple(w_t.shape[1:-1])
    cd = C * math.prod(out)
    w = op.input("linear_weight", F32)
    if out:
        w = ctx.node("Reshape", [w, ctx.ints([cd, in_f])])
    z = ctx.node("MatMul", [op.input("input", F32), ctx.node("Transpose", [w], perm=[1, 0])])
    if op.attr("linear_bias") is not None:
        b = op.input("linear_bias", F32)
        z = ctx.node("Add", [z, ctx.node("Reshape", [b, ctx.ints([cd])]) if out else b])
    batch = tuple(x_t.shape[:-1])
    if out:
        z = ctx.node("Reshape", [z, ctx.ints([0, C, *out])])  # 0: the batch size as it comes
    target = op.args["target"]
    index = not (isinstance(target, Tensor) and target.dtype.kind == "f")
    if index and batch and float(op.attr("label_smoothing", 0.0) or 0.0) == 0.0:
        ignore = op.attr("ignore_index")
        inputs = [z, op.input("target", np.int64)]
        if op.attr("weight") is not None:
            inputs.append(op.input("weight", F32))
        return [ctx.node("SoftmaxCrossEntropyLoss", inputs, reduction=op.attr("reduction", "mean") or "mean",
                         ignore_index=-100 if ignore is None else int(ignore))]
    return map_cross_entropy(ctx, _CrossEntropyView(op, z, (*batch, C, *out)))
