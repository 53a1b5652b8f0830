"""Margin and embedding losses with torch's formulas: cosine_embedding_loss, margin_ranking_loss,
hinge_embedding_loss, soft_margin_loss and multilabel_soft_margin_loss.

Each op's numpy forward and backward (in the inputs' dtype), its double backward (the same formula in Tensor ops),
ONNX mapping and samples sit here. Ties follow torch: where torch clamps at 0 (``clamp_min``) a loss exactly at its
margin still passes its gradient. Targets of these losses get no gradient where torch gives none (cosine, hinge,
soft margin), and margin_ranking_loss's target gets torch's gradient. The modules are in nn/loss_margin.py.
"""
from __future__ import annotations

import math

import numpy as np

from ..autograd import Function
from ._loss_common import (broadcast_shape, check_reduction, const, dt, dt_of, number, out_meta, reduce_tensor, reduced,
                           reduced_grad, register_loss, unbroadcast)
from ._samples import rand
from .registry import _OPS, BadInput, Sample

F32 = np.float32
EPSILON = 1e-12  # torch's cosine_embedding_loss adds it to each squared magnitude


def _onnx_reduce(ctx, x, ndim, reduction):
    from ..onnx.mappings.loss import _reduce
    return _reduce(ctx, x, ndim, reduction)


def _torch(name, *kwnames):
    def ref(torch, *args, **kwargs):
        import torch.nn.functional as TF
        return getattr(TF, name)(*args, **kwargs)
    return ref


def _signs(*shape, seed=0, zeros=False):
    """Targets of -1 and 1 (and 0 where ``zeros``: neither branch of torch's where picks it)."""
    vals = np.array([-1.0, 1.0, 0.0] if zeros else [-1.0, 1.0], F32)
    return np.random.default_rng(seed).choice(vals, size=shape).astype(F32)


# ---- cosine_embedding_loss ------------------------------------------------------------------------------
def _cosine_check(x1, x2, target, reduction):
    check_reduction(reduction)
    name = "cosine_embedding_loss"
    if target.ndim not in (0, 1):
        raise ValueError(f"{name}: target must be 0-D or 1-D (multi-target is not supported), got shape "
                         f"{tuple(target.shape)}")
    want = target.ndim + 1
    for what, x in (("input1", x1), ("input2", x2)):
        if x.ndim != want:
            raise ValueError(f"{name}: a {target.ndim}-D target expects {want}-D inputs, but {what} has shape "
                             f"{tuple(x.shape)}")
    shape = broadcast_shape(name, input1=x1, input2=x2)
    if target.ndim == 1 and target.shape[0] != shape[0]:
        raise ValueError(f"{name}: target has {target.shape[0]} entries but the inputs have {shape[0]} rows")


class CosineEmbeddingLossFunction(Function):
    """torch.nn.functional.cosine_embedding_loss(input1, input2, target, margin, reduction)."""

    @staticmethod
    def forward(ctx, input1, input2, target, margin=0.0, reduction="mean"):
        _cosine_check(input1, input2, target, reduction)
        margin = number(margin, "margin", "cosine_embedding_loss")
        d = dt_of(input1, input2)
        x1, x2, t = input1.astype(d, copy=False), input2.astype(d, copy=False), np.asarray(target)
        prod = (x1 * x2).sum(-1)
        m1, m2 = (x1 * x1).sum(-1) + d.type(EPSILON), (x2 * x2).sum(-1) + d.type(EPSILON)
        denom = np.sqrt(m1 * m2)
        cos = prod / denom
        neg = cos - d.type(margin)
        loss = np.where(t == 1, 1 - cos, 0) + np.where(t == -1, np.maximum(neg, 0), 0)
        ctx.save_for_backward(x1, x2, t)
        ctx.parts = (m1, m2, denom, cos, neg, reduction)
        return reduced(loss, reduction, d)

    @staticmethod
    def backward(ctx, g):
        x1, x2, t = ctx.saved_tensors
        m1, m2, denom, cos, neg, reduction = ctx.parts
        d = x1.dtype
        gc = reduced_grad(g, cos.shape, reduction, d) * (np.where(t == 1, -1.0, 0.0) +
                                                          np.where((t == -1) & (neg >= 0), 1.0, 0.0)).astype(d)
        gc = gc[..., None]
        g1 = gc * (x2 / denom[..., None] - cos[..., None] * x1 / m1[..., None])
        g2 = gc * (x1 / denom[..., None] - cos[..., None] * x2 / m2[..., None])
        return unbroadcast(g1, x1.shape).astype(d), unbroadcast(g2, x2.shape).astype(d), None


def _cosine_compose(input1, input2, target, margin=0.0, reduction="mean"):
    prod = (input1 * input2).sum(-1)
    m1, m2 = (input1 * input1).sum(-1) + EPSILON, (input2 * input2).sum(-1) + EPSILON
    cos = prod / (m1 * m2).sqrt()
    t = target._data
    loss = (_OPS["where"](np.asarray(t == 1), 1 - cos, 0.0) +
            _OPS["where"](np.asarray(t == -1), (cos - margin).clamp(min=0.0), 0.0))
    return reduce_tensor(loss, reduction)


def _cosine_onnx(ctx, op):
    x1, x2, t = op.input("input1", F32), op.input("input2", F32), op.input("target", F32)
    margin = float(op.attr("margin", 0.0))

    def rsum(x):
        return ctx.reduce("ReduceSum", x, [-1], False)

    eps = const(ctx, EPSILON)
    prod = rsum(ctx.node("Mul", [x1, x2]))
    m1 = ctx.node("Add", [rsum(ctx.node("Mul", [x1, x1])), eps])
    m2 = ctx.node("Add", [rsum(ctx.node("Mul", [x2, x2])), eps])
    cos = ctx.node("Div", [prod, ctx.node("Sqrt", [ctx.node("Mul", [m1, m2])])])
    zero = const(ctx, 0.0)
    pos = ctx.node("Where", [ctx.node("Equal", [t, const(ctx, 1.0)]), ctx.node("Sub", [const(ctx, 1.0), cos]), zero])
    neg = ctx.node("Max", [ctx.node("Sub", [cos, const(ctx, margin)]), zero])
    neg = ctx.node("Where", [ctx.node("Equal", [t, const(ctx, -1.0)]), neg, zero])
    return [_onnx_reduce(ctx, ctx.node("Add", [pos, neg]), op.args["target"].ndim, op.attr("reduction", "mean"))]


def _cosine_samples():
    tie1, tie2 = np.array([[1, 0], [1, 1], [0, 2]], F32), np.array([[0, 1], [1, 1], [3, 0]], F32)
    return [Sample((rand(5, 7), rand(5, 7, seed=1), _signs(5, seed=2)), name="mean"),
            Sample((rand(6, 3), rand(6, 3, seed=1), _signs(6, seed=3, zeros=True)), {"margin": 0.3, "reduction": "sum"},
                   "sum margin=0.3, targets -1/0/1"),
            Sample((rand(4, 9), rand(4, 9, seed=1), _signs(4, seed=4)), {"margin": -0.2, "reduction": "none"}, "none"),
            Sample((rand(1, 5), rand(1, 5, seed=1), np.array([-1], F32)), {"reduction": "none"}, "batch 1"),
            Sample((rand(5), rand(5, seed=1), np.array(-1, F32)), {"margin": -0.5}, "unbatched"),
            Sample((tie1, tie2, np.array([-1, 1, 1], F32)), {"reduction": "none"}, "cos at the margin (0)"),
            Sample((rand(4, 6), rand(1, 6, seed=1), _signs(4, seed=5)), {"margin": 0.1}, "broadcast input2")]


def _cosine_meta(input1, input2, target, margin=0.0, reduction="mean"):
    _cosine_check(input1, input2, target, reduction)
    return out_meta(target.shape, reduction)


def _cosine_bad():
    return [BadInput((rand(3, 4), rand(2, 4), _signs(3)), {}, ValueError, "input2"),
            BadInput((rand(3, 4), rand(3, 4), _signs(2)), {}, ValueError, "target"),
            BadInput((rand(3, 4), rand(3, 4), _signs(3, 1)), {}, ValueError, "target"),
            BadInput((rand(4), rand(3, 4), _signs(3)), {}, ValueError, "input1"),
            BadInput((rand(3, 4), rand(3, 4), _signs(3)), {"reduction": "avg"}, ValueError, "reduction")]


register_loss("cosine_embedding_loss", CosineEmbeddingLossFunction, meta=_cosine_meta, samples=_cosine_samples,
              torch=_torch("cosine_embedding_loss"), bad_inputs=_cosine_bad, onnx=_cosine_onnx,
              compose=_cosine_compose, gaps={})


# ---- margin_ranking_loss ---------------------------------------------------------------------------------
def _ranking_check(x1, x2, target, reduction):
    check_reduction(reduction)
    if not x1.ndim == x2.ndim == target.ndim:
        raise ValueError(f"margin_ranking_loss: input1, input2 and target must have the same number of dimensions, "
                         f"got shapes {tuple(x1.shape)}, {tuple(x2.shape)} and target {tuple(target.shape)}")
    return broadcast_shape("margin_ranking_loss", input1=x1, input2=x2, target=target)


class MarginRankingLossFunction(Function):
    """max(0, -target * (input1 - input2) + margin), reduced; the three broadcast together."""

    @staticmethod
    def forward(ctx, input1, input2, target, margin=0.0, reduction="mean"):
        _ranking_check(input1, input2, target, reduction)
        margin = number(margin, "margin", "margin_ranking_loss")
        d = dt_of(input1, input2, target)
        diff = (input1 - input2).astype(d, copy=False)
        z = -target * diff + d.type(margin)
        ctx.save_for_backward(diff, np.asarray(target, d))
        ctx.parts = (z >= 0, input1.shape, input2.shape, np.shape(target), reduction)
        return reduced(np.maximum(z, 0), reduction, d)

    @staticmethod
    def backward(ctx, g):
        diff, t = ctx.saved_tensors
        active, s1, s2, st, reduction = ctx.parts
        d = diff.dtype
        ga = reduced_grad(g, active.shape, reduction, d) * active
        g1 = unbroadcast(-t * ga, s1).astype(d)
        gt = unbroadcast(-diff * ga, st).astype(d) if ctx.needs_input_grad[2] else None
        return g1, unbroadcast(t * ga, s2).astype(d), gt


def _ranking_compose(input1, input2, target, margin=0.0, reduction="mean"):
    return reduce_tensor((-target * (input1 - input2) + margin).clamp(min=0.0), reduction)


def _ranking_onnx(ctx, op):
    x1, x2, t = op.input("input1", F32), op.input("input2", F32), op.input("target", F32)
    z = ctx.node("Add", [ctx.node("Mul", [ctx.node("Neg", [t]), ctx.node("Sub", [x1, x2])]),
                         const(ctx, float(op.attr("margin", 0.0)))])
    loss = ctx.node("Max", [z, const(ctx, 0.0)])
    return [_onnx_reduce(ctx, loss, op.args["input1"].ndim, op.attr("reduction", "mean"))]


def _ranking_samples():
    a, b = np.array([1, 2, 0.5, 3], F32), np.array([1, 1, 1, 3.5], F32)
    return [Sample((rand(7), rand(7, seed=1), _signs(7, seed=2)), name="mean"),
            Sample((rand(3, 1), rand(3, 5, seed=1), _signs(1, 5, seed=2)), {"margin": 0.4, "reduction": "sum"},
                   "broadcast, margin 0.4"),
            Sample((a, b, np.array([1, 1, -1, 0.5], F32)), {"reduction": "none"}, "ties at the margin"),
            Sample((rand(1), rand(1, seed=1), np.array([-1], F32)), {"margin": 0.5}, "batch 1")]


def _ranking_meta(input1, input2, target, margin=0.0, reduction="mean"):
    return out_meta(_ranking_check(input1, input2, target, reduction), reduction)


def _ranking_bad():
    return [BadInput((rand(3), rand(3, 1), _signs(3)), {}, ValueError, "dimensions"),
            BadInput((rand(3), rand(4), _signs(3)), {}, ValueError, "input2"),
            BadInput((rand(3), rand(3), _signs(3)), {"reduction": "all"}, ValueError, "reduction")]


register_loss("margin_ranking_loss", MarginRankingLossFunction, meta=_ranking_meta, samples=_ranking_samples,
              torch=_torch("margin_ranking_loss"), bad_inputs=_ranking_bad, onnx=_ranking_onnx,
              compose=_ranking_compose)


# ---- hinge_embedding_loss --------------------------------------------------------------------------------
class HingeEmbeddingLossFunction(Function):
    """where(target != 1, max(0, margin - input), 0) + where(target != -1, input, 0), reduced."""

    @staticmethod
    def forward(ctx, input, target, margin=1.0, reduction="mean"):
        check_reduction(reduction)
        margin = number(margin, "margin", "hinge_embedding_loss")
        shape = broadcast_shape("hinge_embedding_loss", input=input, target=target)
        if input.dtype.kind in "biu":
            ctx.parts = None
            return _hinge_integer(input, np.asarray(target), margin, reduction, shape)
        d = dt(input)
        x, t = input.astype(d, copy=False), np.asarray(target)
        z = d.type(margin) - x
        loss = np.where(t != 1, np.maximum(z, 0), 0) + np.where(t != -1, x, 0)
        ctx.parts = ((t != 1) & (z >= 0), t != -1, input.shape, reduction, shape)
        return reduced(np.broadcast_to(loss, shape), reduction, d)

    @staticmethod
    def backward(ctx, g):
        hinge, linear, s, reduction, shape = ctx.parts
        d = dt(np.asarray(g))
        gr = reduced_grad(g, shape, reduction, d)
        return unbroadcast(gr * (linear.astype(d) - hinge.astype(d)), s).astype(d), None


def _hinge_integer(x, t, margin, reduction, shape):
    """torch's loss of an integer input: in x's dtype (wrapping as its integers do), margin cast toward zero
    (torch fills a tensor of x's dtype with it); sum gives int64; a bool input or mean is torch's RuntimeError."""
    if x.dtype == np.bool_:
        raise RuntimeError("hinge_embedding_loss: a bool input is not supported (torch: subtraction with a bool "
                           "tensor); cast it to a float or integer dtype")
    if reduction == "mean":
        raise RuntimeError(f"hinge_embedding_loss: reduction='mean' of an integer input ({x.dtype}): torch's mean "
                           "cannot infer an output dtype; use reduction='sum' or a float input")
    info = np.iinfo(x.dtype)
    if not (math.isfinite(margin) and info.min <= margin <= info.max):  # torch checks the double itself
        raise RuntimeError(f"hinge_embedding_loss: margin {margin!r} cannot be converted to the input's dtype "
                           f"{x.dtype} without overflow (as torch)")
    with np.errstate(over="ignore"):
        m = np.asarray(math.trunc(margin)).astype(x.dtype)
        loss = np.where(t != 1, np.maximum(m - x, x.dtype.type(0)), x.dtype.type(0)).astype(x.dtype)
        loss = (loss + np.where(t != -1, x, x.dtype.type(0)).astype(x.dtype)).astype(x.dtype)
    loss = np.broadcast_to(loss, shape)
    return np.sum(loss, dtype=np.int64) if reduction == "sum" else np.ascontiguousarray(loss)


def _hinge_compose(input, target, margin=1.0, reduction="mean"):
    t = target._data
    loss = (_OPS["where"](np.asarray(t != 1), (margin - input).clamp(min=0.0), 0.0) +
            _OPS["where"](np.asarray(t != -1), input, 0.0))
    return reduce_tensor(loss, reduction)


def _hinge_onnx(ctx, op):
    x, t = op.input("input", F32), op.input("target", F32)
    zero = const(ctx, 0.0)
    hinge = ctx.node("Max", [ctx.node("Sub", [const(ctx, float(op.attr("margin", 1.0))), x]), zero])
    hinge = ctx.node("Where", [ctx.node("Not", [ctx.node("Equal", [t, const(ctx, 1.0)])]), hinge, zero])
    lin = ctx.node("Where", [ctx.node("Not", [ctx.node("Equal", [t, const(ctx, -1.0)])]), x, zero])
    ndim = max(op.args["input"].ndim, op.args["target"].ndim)
    return [_onnx_reduce(ctx, ctx.node("Add", [hinge, lin]), ndim, op.attr("reduction", "mean"))]


def _hinge_samples():
    return [Sample((rand(5, 7), _signs(5, 7, seed=1)), name="mean"),
            Sample((rand(3, 4, 5), _signs(3, 4, 5, seed=2, zeros=True)), {"margin": 0.5, "reduction": "sum"},
                   "sum, targets -1/0/1"),
            Sample((np.array([1, 0.5, 2, 0.3, -2], F32), np.array([-1, -1, 0, 1, -1], F32)), {"reduction": "none"},
                   "tie at the margin"),
            Sample((rand(4, 6), _signs(6, seed=3)), {"reduction": "none", "margin": 2.0}, "broadcast target"),
            Sample((rand(1), np.array([-1], F32)), {}, "batch 1")]


def _hinge_meta(input, target, margin=1.0, reduction="mean"):
    check_reduction(reduction)
    return out_meta(broadcast_shape("hinge_embedding_loss", input=input, target=target), reduction)


def _hinge_bad():
    return [BadInput((rand(3, 4), _signs(3)), {}, ValueError, "target"),
            BadInput((rand(3, 4), _signs(3, 4)), {"reduction": "mea"}, ValueError, "reduction")]


register_loss("hinge_embedding_loss", HingeEmbeddingLossFunction, meta=_hinge_meta, samples=_hinge_samples,
              torch=_torch("hinge_embedding_loss"), bad_inputs=_hinge_bad, onnx=_hinge_onnx, compose=_hinge_compose,
              flops_per_element=5)


# ---- soft_margin_loss ------------------------------------------------------------------------------------
def _same_shape(name, input, target):
    if tuple(input.shape) != tuple(target.shape):
        raise ValueError(f"{name}: input has shape {tuple(input.shape)} but target has shape {tuple(target.shape)}; "
                         "they must match")


class SoftMarginLossFunction(Function):
    """log(1 + exp(-target * input)), reduced (input and target broadcast); torch gives the target no gradient."""

    @staticmethod
    def forward(ctx, input, target, reduction="mean"):
        check_reduction(reduction)
        broadcast_shape("soft_margin_loss", input=input, target=target)
        d = dt(input)
        t = np.asarray(target, d)
        with np.errstate(over="ignore"):
            e = np.exp(-t * input.astype(d, copy=False))
        ctx.save_for_backward(t, e)
        ctx.parts = (input.shape, reduction)
        return reduced(np.log1p(e), reduction, d)

    @staticmethod
    def backward(ctx, g):
        t, e = ctx.saved_tensors
        shape, reduction = ctx.parts
        with np.errstate(invalid="ignore"):
            gi = -t * e / (1 + e) * reduced_grad(g, e.shape, reduction, e.dtype)
        return unbroadcast(gi, shape).astype(e.dtype), None


def _soft_compose(input, target, reduction="mean"):
    return reduce_tensor(((-target * input).exp() + 1.0).log(), reduction)


def _soft_onnx(ctx, op):
    x, t = op.input("input", F32), op.input("target", F32)
    e = ctx.node("Exp", [ctx.node("Neg", [ctx.node("Mul", [t, x])])])
    loss = ctx.node("Log", [ctx.node("Add", [const(ctx, 1.0), e])])
    ndim = max(op.args["input"].ndim, op.args["target"].ndim)
    return [_onnx_reduce(ctx, loss, ndim, op.attr("reduction", "mean"))]


def _soft_samples():
    return [Sample((rand(5, 7), _signs(5, 7, seed=1)), name="mean", grad=(0,)),
            Sample((rand(3, 4, 5, low=-6, high=6), _signs(3, 4, 5, seed=2)), {"reduction": "sum"}, "sum", grad=(0,)),
            Sample((rand(9), rand(9, seed=3)), {"reduction": "none"}, "real-valued target", grad=(0,)),
            Sample((rand(1), np.array([1], F32)), {}, "batch 1", grad=(0,)),
            Sample((rand(4, 6), _signs(6, seed=4)), {"reduction": "none"}, "broadcast target", grad=(0,))]


def _soft_meta(input, target, reduction="mean"):
    check_reduction(reduction)
    return out_meta(broadcast_shape("soft_margin_loss", input=input, target=target), reduction)


def _soft_bad():
    return [BadInput((rand(3, 4), _signs(3)), {}, ValueError, "target"),
            BadInput((rand(3, 4), _signs(3, 4)), {"reduction": "max"}, ValueError, "reduction")]


register_loss("soft_margin_loss", SoftMarginLossFunction, meta=_soft_meta, samples=_soft_samples,
              torch=_torch("soft_margin_loss"), bad_inputs=_soft_bad, onnx=_soft_onnx, compose=_soft_compose)


# ---- multilabel_soft_margin_loss -------------------------------------------------------------------------
def _log_sigmoid(x):
    return np.minimum(x, 0) - np.log1p(np.exp(-np.abs(x)))


def _msm_check(input, target, weight, reduction):
    check_reduction(reduction)
    name = "multilabel_soft_margin_loss"
    if input.ndim < 1:
        raise ValueError(f"{name}: input must have a class dimension (at least 1-D), got shape {tuple(input.shape)}")
    _same_shape(name, input, target)
    if weight is not None and not hasattr(weight, "shape"):
        raise TypeError(f"{name}: weight must be a Tensor or None, got {type(weight).__name__}")
    if weight is not None and broadcast_shape(name, input=input, weight=weight) != tuple(input.shape):
        raise ValueError(f"{name}: weight of shape {tuple(weight.shape)} does not broadcast to the input's shape "
                         f"{tuple(input.shape)}")
    return tuple(input.shape[:-1])


class MultiLabelSoftMarginLossFunction(Function):
    """-(target * log sigmoid(input) + (1 - target) * log sigmoid(-input)) * weight, averaged over the classes
    (the last dim), then reduced over the samples."""

    @staticmethod
    def forward(ctx, input, target, weight=None, reduction="mean"):
        rows = _msm_check(input, target, weight, reduction)
        d = dt_of(input, target, weight)
        x, t = input.astype(d, copy=False), np.asarray(target, d)
        ls_pos, ls_neg = _log_sigmoid(x), _log_sigmoid(-x)
        loss = -(t * ls_pos + (1 - t) * ls_neg)
        per = loss if weight is None else loss * weight
        c = x.shape[-1]
        ctx.save_for_backward(x, t, weight)
        ctx.parts = (loss, ls_pos, ls_neg, rows, reduction)
        return reduced(per.sum(-1) / d.type(c), reduction, d)

    @staticmethod
    def backward(ctx, g):
        x, t, w = ctx.saved_tensors
        loss, ls_pos, ls_neg, rows, reduction = ctx.parts
        d = x.dtype
        gr = reduced_grad(g, rows, reduction, d)[..., None] / d.type(x.shape[-1])
        scale = gr if w is None else gr * w
        # (1 - t) sigmoid(x) - t sigmoid(-x) (= sigmoid(x) - t), the upstream gradient applied in torch's order
        # (scale * t, then the log-sigmoid's derivative): an inf target or weight meeting a saturated sigmoid
        # gives NaN (inf * 0), as torch's
        gi = (scale * (1 - t)) * np.exp(ls_pos) - (scale * t) * np.exp(ls_neg)
        gt = scale * ls_neg - scale * ls_pos if ctx.needs_input_grad[1] else None
        gw = unbroadcast(loss * gr, w.shape).astype(d) if w is not None and ctx.needs_input_grad[2] else None
        return gi.astype(d), None if gt is None else gt.astype(d), gw


def _msm_compose(input, target, weight=None, reduction="mean"):
    def log_sigmoid(x):
        return x.clamp(max=0.0) - ((-x.abs()).exp() + 1.0).log()

    loss = -(target * log_sigmoid(input) + (1 - target) * log_sigmoid(-input))
    if weight is not None:
        loss = loss * weight
    return reduce_tensor(loss.sum(-1) / input.shape[-1], reduction)


def _msm_onnx(ctx, op):
    x, t = op.input("input", F32), op.input("target", F32)

    def log_sigmoid(v):
        return ctx.node("Neg", [ctx.node("Softplus", [ctx.node("Neg", [v])])])

    one = const(ctx, 1.0)
    s = ctx.node("Add", [ctx.node("Mul", [t, log_sigmoid(x)]),
                         ctx.node("Mul", [ctx.node("Sub", [one, t]), log_sigmoid(ctx.node("Neg", [x]))])])
    loss = ctx.node("Neg", [s])
    if op.attr("weight") is not None:
        loss = ctx.node("Mul", [loss, op.input("weight", F32)])
    c = op.args["input"].shape[-1]
    per = ctx.node("Div", [ctx.reduce("ReduceSum", loss, [-1], False), const(ctx, float(c))])
    return [_onnx_reduce(ctx, per, op.args["input"].ndim - 1, op.attr("reduction", "mean"))]


def _binary(*shape, seed=0):
    return (np.random.default_rng(seed).random(shape) < 0.4).astype(F32)


def _msm_samples():
    return [Sample((rand(5, 7), _binary(5, 7, seed=1), None), name="mean"),
            Sample((rand(4, 3, low=-9, high=9), _binary(4, 3, seed=2), rand(3, seed=3, low=0.1, high=2)),
                   {"reduction": "sum"}, "weight (C,), sum"),
            Sample((rand(2, 3, 6), rand(2, 3, 6, seed=4, low=0, high=1), rand(3, 6, seed=5, low=0.1, high=2)),
                   {"reduction": "none"}, "3-D, soft targets, weight (3, 6)"),
            Sample((rand(6), _binary(6, seed=6), None), {"reduction": "none"}, "unbatched"),
            Sample((rand(1, 5), _binary(1, 5, seed=7), None), {}, "batch 1")]


def _msm_meta(input, target, weight=None, reduction="mean"):
    return out_meta(_msm_check(input, target, weight, reduction), reduction)


def _msm_bad():
    return [BadInput((rand(3, 4), _binary(3, 5), None), {}, ValueError, "target"),
            BadInput((rand(3, 4), _binary(3, 4), rand(5)), {}, ValueError, "weight"),
            BadInput((rand(3, 4), _binary(3, 4), None), {"reduction": "batchmean"}, ValueError, "reduction")]


register_loss("multilabel_soft_margin_loss", MultiLabelSoftMarginLossFunction, meta=_msm_meta, samples=_msm_samples,
              torch=_torch("multilabel_soft_margin_loss"), bad_inputs=_msm_bad, onnx=_msm_onnx,
              compose=_msm_compose, flops_per_element=12)


# ---- the functional entry points (torch.nn.functional's signatures) ---------------------------------------
def _t(x, name):
    from ..nn.functional_conv import _t as t
    return t(x, name)


def cosine_embedding_loss(input1, input2, target, margin: float = 0, reduction: str = "mean"):
    """``torch.nn.functional.cosine_embedding_loss``: 1 - cos(input1, input2) where target is 1,
    max(0, cos - margin) where it is -1 (0 elsewhere), cos over the last dim; reduced."""
    return CosineEmbeddingLossFunction.op(_t(input1, "input1"), _t(input2, "input2"), _t(target, "target"),
                                          margin=margin, reduction=reduction)


def margin_ranking_loss(input1, input2, target, margin: float = 0, reduction: str = "mean"):
    """``torch.nn.functional.margin_ranking_loss``: max(0, -target * (input1 - input2) + margin), reduced."""
    return MarginRankingLossFunction.op(_t(input1, "input1"), _t(input2, "input2"), _t(target, "target"),
                                        margin=margin, reduction=reduction)


def hinge_embedding_loss(input, target, margin: float = 1.0, reduction: str = "mean"):
    """``torch.nn.functional.hinge_embedding_loss``: input where target is 1, max(0, margin - input) where -1."""
    return HingeEmbeddingLossFunction.op(_t(input, "input"), _t(target, "target"), margin=margin,
                                         reduction=reduction)


def soft_margin_loss(input, target, reduction: str = "mean"):
    """``torch.nn.functional.soft_margin_loss``: log(1 + exp(-target * input)), reduced."""
    return SoftMarginLossFunction.op(_t(input, "input"), _t(target, "target"), reduction=reduction)


def multilabel_soft_margin_loss(input, target, weight=None, reduction: str = "mean"):
    """``torch.nn.functional.multilabel_soft_margin_loss``: per-class logistic loss averaged over the classes."""
    return MultiLabelSoftMarginLossFunction.op(_t(input, "input"), _t(target, "target"),
                                               None if weight is None else _t(weight, "weight"), reduction=reduction)


CosineEmbeddingLossFunction.op.functional = cosine_embedding_loss
MarginRankingLossFunction.op.functional = margin_ranking_loss
HingeEmbeddingLossFunction.op.functional = hinge_embedding_loss
SoftMarginLossFunction.op.functional = soft_margin_loss
MultiLabelSoftMarginLossFunction.op.functional = multilabel_soft_margin_loss
