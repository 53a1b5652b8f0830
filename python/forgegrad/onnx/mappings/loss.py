"""Losses: MSELoss L1Loss BinaryCrossEntropy BinaryCrossEntropyWithLogits CrossEntropy NLLLoss KLDiv.

Rarely part of an inference graph, but a model whose forward returns its loss exports too. Written
with elementwise ops (and NegativeLogLikelihoodLoss for class-index targets), following the forward
code in ops/loss.py step by step."""
from __future__ import annotations

import numpy as np

from ...ops import loss as L
from ...tensor import Tensor
from . import register

F32 = np.float32


def _reduce(ctx, x, ndim, reduction):
    if reduction == "none" or ndim == 0:
        return x
    op = "ReduceSum" if reduction == "sum" else "ReduceMean"
    return ctx.reduce(op, x, list(range(ndim)), False)


def _c(ctx, v):
    return ctx.const(v, F32)


@register(L.MSELossFunction)
def map_mse(ctx, op):
    d = ctx.node("Sub", [op.input("inp", F32), op.input("target", F32)])
    return [_reduce(ctx, ctx.node("Mul", [d, d]), op.args["inp"].ndim, op.attr("reduction"))]


@register(L.L1LossFunction)
def map_l1(ctx, op):
    d = ctx.node("Sub", [op.input("inp", F32), op.input("target", F32)])
    return [_reduce(ctx, ctx.node("Abs", [d]), op.args["inp"].ndim, op.attr("reduction"))]


def _weighted(ctx, op, loss):
    return loss if op.attr("weight") is None else ctx.node("Mul", [loss, op.input("weight", F32)])


@register(L.BinaryCrossEntropyFunction)
def map_bce(ctx, op):
    p, t = op.input("p", F32), op.input("target", F32)
    lp = ctx.node("Max", [ctx.node("Log", [p]), _c(ctx, -100.0)])  # torch clamps the logs at -100
    l1p = ctx.node("Max", [ctx.node("Log", [ctx.node("Sub", [_c(ctx, 1.0), p])]), _c(ctx, -100.0)])
    one_minus_t = ctx.node("Sub", [_c(ctx, 1.0), t])
    s = ctx.node("Add", [ctx.node("Mul", [t, lp]), ctx.node("Mul", [one_minus_t, l1p])])
    loss = _weighted(ctx, op, ctx.node("Neg", [s]))
    return [_reduce(ctx, loss, op.args["p"].ndim, op.attr("reduction"))]


@register(L.BinaryCrossEntropyWithLogitsFunction)
def map_bce_logits(ctx, op):
    x, t = op.input("x", F32), op.input("target", F32)
    # log(1 + exp(-|x|)) + max(-x, 0) = -log(sigmoid(x)) without overflow
    lsn = ctx.node("Add", [ctx.node("Log", [ctx.node("Add", [_c(ctx, 1.0), ctx.node("Exp", [
        ctx.node("Neg", [ctx.node("Abs", [x])])])])]), ctx.node("Relu", [ctx.node("Neg", [x])])])
    first = ctx.node("Mul", [ctx.node("Sub", [_c(ctx, 1.0), t]), x])
    if op.attr("pos_weight") is not None:
        lw = ctx.node("Add", [_c(ctx, 1.0), ctx.node("Mul", [ctx.node("Sub", [op.input("pos_weight", F32),
                                                                            _c(ctx, 1.0)]), t])])
        lsn = ctx.node("Mul", [lw, lsn])
    loss = _weighted(ctx, op, ctx.node("Add", [first, lsn]))
    return [_reduce(ctx, loss, op.args["x"].ndim, op.attr("reduction"))]


def _nll(ctx, op, logp, logp_ndim, target_name):
    """NegativeLogLikelihoodLoss over class dim 1 (a 1-D (C,) input gains a batch axis of 1)."""
    target = op.input(target_name, np.int64)
    if logp_ndim == 1:
        logp = ctx.unsqueeze(logp, [0])
        target = ctx.unsqueeze(target, [0])
    w = op.input("weight", F32) if op.attr("weight") is not None else None
    out = ctx.node("NegativeLogLikelihoodLoss", [logp, target, w], reduction=op.attr("reduction"),
                   ignore_index=int(op.attr("ignore_index")))
    if logp_ndim == 1 and op.attr("reduction") == "none":
        out = ctx.squeeze(out, [0])
    return out


@register(L.NLLLossFunction)
def map_nll(ctx, op):
    return [_nll(ctx, op, op.input("logp", F32), op.args["logp"].ndim, "target")]


@register(L.CrossEntropyFunction)
def map_cross_entropy(ctx, op):
    logits_t = op.args["logits"]
    ndim = logits_t.ndim
    axis = 1 if ndim >= 2 else 0
    logp = ctx.node("LogSoftmax", [op.input("logits", F32)], axis=axis)
    eps = float(op.attr("label_smoothing"))
    C = logits_t.shape[axis]
    reduction = op.attr("reduction")
    target_t = op.args["target"]
    w = op.input("weight", F32) if op.attr("weight") is not None else None
    w_b = None
    if w is not None:  # weight (C,) broadcast along the class axis
        w_b = w if ndim <= 2 else ctx.node("Reshape", [w, ctx.ints([C] + [1] * (ndim - 2))])
    if isinstance(target_t, Tensor) and target_t.dtype.kind == "f":  # class probabilities
        t = op.input("target", F32)
        if eps > 0:
            t = ctx.node("Add", [ctx.node("Mul", [t, _c(ctx, 1 - eps)]), _c(ctx, eps / C)])
        tw = t if w_b is None else ctx.node("Mul", [t, w_b])
        per = ctx.node("Neg", [ctx.reduce("ReduceSum", ctx.node("Mul", [tw, logp]), [axis], False)])
        return [_reduce(ctx, per, ndim - 1, "mean" if reduction == "mean" else reduction)]
    if eps == 0:
        return [_nll(ctx, op, logp, ndim, "target")]
    # label smoothing: (1 - eps) * nll + eps / C * (-(sum_c w_c logp_c)) on the non-ignored positions,
    # divided (mean) by the summed weights of the targets, as in ops/loss.py
    y = op.input("target", np.int64)
    valid = ctx.node("Not", [ctx.node("Equal", [y, ctx.const(np.int64(op.attr("ignore_index")))])])
    validf = ctx.node("Cast", [valid], to=1)
    nll = _nll_none(ctx, op, logp, ndim)
    lw = logp if w_b is None else ctx.node("Mul", [logp, w_b])
    smooth = ctx.node("Mul", [ctx.node("Neg", [ctx.reduce("ReduceSum", lw, [axis], False)]), validf])
    per = ctx.node("Add", [ctx.node("Mul", [nll, _c(ctx, 1 - eps)]), ctx.node("Mul", [smooth, _c(ctx, eps / C)])])
    if reduction == "none":
        return [per]
    total = ctx.reduce("ReduceSum", per, list(range(ndim - 1)), False) if ndim > 1 else per
    if reduction == "sum":
        return [total]
    ys = ctx.node("Where", [valid, y, ctx.const(np.int64(0))])
    wy = ctx.node("Gather", [w, ys], axis=0) if w is not None else ctx.node("Cast", [valid], to=1)
    if w is not None:
        wy = ctx.node("Mul", [wy, validf])
    denom = ctx.reduce("ReduceSum", wy, list(range(max(ndim - 1, 1))), False) if ndim > 1 else wy
    return [ctx.node("Div", [total, denom])]


def _nll_none(ctx, op, logp, ndim):
    target = op.input("target", np.int64)
    if ndim == 1:
        logp, target = ctx.unsqueeze(logp, [0]), ctx.unsqueeze(target, [0])
    w = op.input("weight", F32) if op.attr("weight") is not None else None
    out = ctx.node("NegativeLogLikelihoodLoss", [logp, target, w], reduction="none",
                   ignore_index=int(op.attr("ignore_index")))
    return ctx.squeeze(out, [0]) if ndim == 1 else out


@register(L.KLDivFunction)
def map_kl_div(ctx, op):
    inp, t = op.input("inp", F32), op.input("target", F32)
    if op.attr("log_target"):
        loss = ctx.node("Mul", [ctx.node("Exp", [t]), ctx.node("Sub", [t, inp])])
    else:
        pos = ctx.node("Greater", [t, _c(ctx, 0.0)])
        safe = ctx.node("Where", [pos, t, _c(ctx, 1.0)])
        loss = ctx.node("Where", [pos, ctx.node("Mul", [t, ctx.node("Sub", [ctx.node("Log", [safe]), inp])]),
                                  _c(ctx, 0.0)])
    ndim = op.args["inp"].ndim
    reduction = op.attr("reduction")
    if reduction == "batchmean":
        total = _reduce(ctx, loss, ndim, "sum")
        if ndim == 0:
            return [total]
        n = ctx.node("Cast", [ctx.squeeze(ctx.dim_value(op.in_dims("inp")[0], "batch size"), [0])], to=1)
        return [ctx.node("Div", [total, n])]
    return [_reduce(ctx, loss, ndim, reduction)]
