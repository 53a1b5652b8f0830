"""The multi-class hinge losses over class-index targets, with torch's formulas: multi_margin_loss (p 1 or 2,
margin, per-class weight) and multilabel_margin_loss (target rows of class indices ended by -1).

As torch's kernels, a term exactly at its margin (z = 0) adds nothing and passes no gradient. Targets out of range
raise. The double backward is the same sum written with Tensor ops over one-hot constants of the targets.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function

from ._loss_common import check_reduction, const, constant, dt, number, out_meta, reduce_tensor, reduced, \
    reduced_grad, register_loss
from ._samples import labels, rand
from .loss_margin import _onnx_reduce, _t, _torch
from .registry import BadInput, Sample

F32 = np.float32


def _classes(shape) -> int:
    """C: the last dim, 1 for a 0-D input (torch's kernels take a scalar as one class)."""
    return shape[-1] if len(shape) else 1


# ---- multi_margin_loss -----------------------------------------------------------------------------------
def _mm_check(input, target, p, weight, reduction):
    name = "multi_margin_loss"
    check_reduction(reduction)
    if isinstance(p, bool) or p not in (1, 2):
        raise ValueError(f"{name}: only p == 1 and p == 2 are supported, got p={p!r}")
    if input.ndim > 2:
        raise ValueError(f"{name}: input must be 0-D, 1-D (C,) or 2-D (N, C), got shape {tuple(input.shape)}")
    if np.dtype(target.dtype).kind not in "iu":
        raise TypeError(f"{name}: target must hold integer class indices, got dtype {target.dtype}")
    n = input.shape[0] if input.ndim == 2 else 1
    if target.ndim > 1 or int(np.prod(target.shape)) != n or (input.ndim == 2 and target.ndim != 1):
        raise ValueError(f"{name}: target should be 1-D with one class index per input sample ({n}), got shape "
                         f"{tuple(target.shape)} for an input of shape {tuple(input.shape)}")
    c = _classes(input.shape)
    if weight is not None and not hasattr(weight, "shape"):
        raise TypeError(f"{name}: weight must be a Tensor of shape ({c},) or None, got {type(weight).__name__}")
    if weight is not None and tuple(weight.shape) != (c,):
        raise ValueError(f"{name}: weight must be 1-D with one entry per class ({c}), got shape {tuple(weight.shape)}")
    if weight is not None and (np.dtype(input.dtype) == np.float64) != (np.dtype(weight.dtype) == np.float64):
        # a class loss's weight: torch does not promote (a float64 weight had made float32 input's loss float64)
        raise RuntimeError(f"{name}: expected input and weight to have the same dtype, got {input.dtype} and "
                           f"{weight.dtype}")
    # an unbatched input's per-sample loss takes the target's shape, () or (1,), as torch's
    return (n,) if input.ndim == 2 else tuple(target.shape)


def _class_range(target, c, name, low=0):
    t = np.asarray(target)
    if t.size and (t.min() < low or t.max() >= c):
        raise ValueError(f"{name}: target out of range: class indices must be in [{low}, {c}), got values in "
                         f"[{t.min()}, {t.max()}]")


class MultiMarginLossFunction(Function):
    """sum over j != y of max(0, margin - x[y] + x[j])**p * weight[y] / C per sample, reduced."""

    @staticmethod
    def forward(ctx, input, target, p=1, margin=1.0, weight=None, reduction="mean"):
        rows = _mm_check(input, target, p, weight, reduction)
        margin = number(margin, "margin", "multi_margin_loss")
        c = _classes(input.shape)
        _class_range(target, c, "multi_margin_loss")
        d = dt(input)
        x = input.astype(d, copy=False).reshape(-1, c)
        y = np.asarray(target).reshape(-1)
        onehot = y[:, None] == np.arange(c)
        z = d.type(margin) - x[np.arange(len(y)), y][:, None] + x
        active = (z > 0) & ~onehot
        scale = np.ones(len(y), d) if weight is None else weight.astype(d)[y]
        h = np.where(active, (z if p == 1 else z * z) * scale[:, None], 0)  # inactive: 0, whatever the weight
        ctx.parts = (z, active, onehot, scale, p, input.shape, rows, reduction)
        return reduced((h.sum(-1) / d.type(c)).reshape(rows), reduction, d)

    @staticmethod
    def backward(ctx, g):
        z, active, onehot, scale, p, shape, rows, reduction = ctx.parts
        d = z.dtype
        gr = reduced_grad(g, rows, reduction, d).reshape(-1) * scale / d.type(_classes(shape))
        # as torch's kernel: an inactive class gets 0 (not 0 * a non-finite weight) and the target class minus the
        # others' sum, written there rather than added through a one-hot mask (0 * inf)
        gx = np.where(active, (1.0 if p == 1 else 2 * z) * gr[:, None], 0).astype(d)
        gx[np.arange(len(gx)), np.argmax(onehot, axis=1)] = -gx.sum(-1)
        return gx.reshape(shape).astype(d), None, None


def _mm_compose(input, target, p=1, margin=1.0, weight=None, reduction="mean"):
    c = _classes(input.shape)
    x = input.reshape(-1, c)
    y = np.asarray(target._data).reshape(-1)
    onehot = (y[:, None] == np.arange(c)).astype(input._data.dtype)
    xy = (x * constant(onehot)).sum(-1, keepdim=True)
    z = margin - xy + x
    keep = (z._data > 0) & (onehot == 0)
    h = z * constant(keep.astype(onehot.dtype))
    if p == 2:
        h = h * z
    if weight is not None:
        h = h * constant(weight._data[y][:, None])
    loss = (h.sum(-1) / c).reshape((len(y),) if input.ndim == 2 else tuple(target.shape))
    return reduce_tensor(loss, reduction)


def _mm_onnx(ctx, op):
    x, y = op.input("input", F32), op.input("target", np.int64)
    shape = op.args["input"].shape
    c, p = _classes(shape), int(op.attr("p", 1))
    if len(shape) == 0:
        x = ctx.node("Reshape", [x, ctx.ints([1])])
    y = ctx.node("Reshape", [y, ctx.ints([-1, 1] if len(shape) == 2 else [1])])
    onehot = ctx.node("Equal", [y, ctx.const(np.arange(c, dtype=np.int64))])
    zero = const(ctx, 0.0)
    xy = ctx.reduce("ReduceSum", ctx.node("Where", [onehot, x, zero]), [-1], True)
    z = ctx.node("Add", [ctx.node("Sub", [const(ctx, float(op.attr("margin", 1.0))), xy]), x])
    keep = ctx.node("And", [ctx.node("Greater", [z, zero]), ctx.node("Not", [onehot])])
    h = ctx.node("Where", [keep, z if p == 1 else ctx.node("Mul", [z, z]), zero])
    if op.attr("weight") is not None:
        h = ctx.node("Mul", [h, ctx.node("Gather", [op.input("weight", F32), y], axis=0)])
    loss = ctx.node("Div", [ctx.reduce("ReduceSum", h, [-1], False), const(ctx, float(c))])
    reduction = op.attr("reduction", "mean")
    if len(shape) == 2:
        return [_onnx_reduce(ctx, loss, 1, reduction)]
    # one sample, loss (1,): the target's shape under "none", a scalar otherwise
    return [ctx.node("Reshape", [loss, ctx.ints(op.args["target"].shape if reduction == "none" else [])])]


def _mm_samples():
    tie = np.array([[1, 0, 0.5], [0.2, 1.2, 0.2]], F32)  # x[y] - x[j] == margin: no term, no gradient
    return [Sample((rand(5, 7), labels(5, 7, seed=1), 1, 1.0, None), name="mean", grad=(0,)),
            Sample((rand(6, 3), labels(6, 3, seed=2), 2, 0.5, rand(3, seed=3, low=0.1, high=2)),
                   {"reduction": "sum"}, "p=2, margin 0.5, weight, sum", grad=(0,)),
            Sample((rand(4, 9), labels(4, 9, seed=4), 1, 1.5, rand(9, seed=5, low=0.1, high=2)),
                   {"reduction": "none"}, "p=1, weight, none", grad=(0,)),
            Sample((tie, np.array([0, 1]), 1, 1.0, None), {"reduction": "none"}, "ties at the margin"),
            Sample((rand(5), np.array(3), 2, 1.0, None), {}, "unbatched"),
            Sample((np.array(0.5, F32), np.array(0), 1, 1.0, None), {"reduction": "none"}, "0-D input (one class)"),
            Sample((rand(1, 4), np.array([2]), 1, 1.0, None), {"reduction": "none"}, "batch 1"),
            Sample((rand(4), np.array([1]), 1, 1.0, None), {"reduction": "none"}, "unbatched, target (1,): loss (1,)",
                   grad=(0,))]


def _mm_meta(input, target, p=1, margin=1.0, weight=None, reduction="mean"):
    return out_meta(_mm_check(input, target, p, weight, reduction), reduction)


def _mm_torch(torch, input, target, p=1, margin=1.0, weight=None, reduction="mean"):
    import torch.nn.functional as TF
    return TF.multi_margin_loss(input, target, p=p, margin=margin, weight=weight, reduction=reduction)


def _mm_bad():
    x, y = rand(3, 4), labels(3, 4)
    return [BadInput((x, np.array([0, 4, 1]), 1, 1.0, None), {}, ValueError, "target out of range"),
            BadInput((x, np.array([0, -1, 1]), 1, 1.0, None), {}, ValueError, "target out of range"),
            BadInput((x, labels(2, 4), 1, 1.0, None), {}, ValueError, "target"),
            BadInput((x, y, 3, 1.0, None), {}, ValueError, "p"),
            BadInput((x, y, 1, 1.0, rand(3)), {}, ValueError, "weight"),
            BadInput((x, y.astype(F32), 1, 1.0, None), {}, TypeError, "target"),
            BadInput((x, y, 1, 1.0, None), {"reduction": "avg"}, ValueError, "reduction")]


register_loss("multi_margin_loss", MultiMarginLossFunction, meta=_mm_meta, samples=_mm_samples, torch=_mm_torch,
              bad_inputs=_mm_bad, onnx=_mm_onnx, compose=_mm_compose)


# ---- multilabel_margin_loss ------------------------------------------------------------------------------
def _mlm_check(input, target, reduction):
    name = "multilabel_margin_loss"
    check_reduction(reduction)
    if input.ndim > 2:
        raise ValueError(f"{name}: input must be 0-D, 1-D (C,) or 2-D (N, C), got shape {tuple(input.shape)}")
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(f"{name}: target must have the input's shape {tuple(input.shape)}, got "
                         f"{tuple(target.shape)}")
    if np.dtype(target.dtype).kind not in "iu":
        raise TypeError(f"{name}: target must hold integer class indices, got dtype {target.dtype}")
    return (input.shape[0],) if input.ndim == 2 else ()


def _mlm_parts(target, c):
    """(valid (N, J): the entries before a row's first -1, tj: those indices (0 elsewhere), the one-hot of the
    valid entries (N, J, C), is_target (N, C))."""
    t = np.asarray(target).reshape(-1, c)
    valid = np.cumsum(t == -1, axis=1) == 0
    tj = np.where(valid, t, 0)
    onehot = (tj[:, :, None] == np.arange(c)) & valid[:, :, None]
    return valid, tj, onehot, onehot.any(axis=1)


class MultiLabelMarginLossFunction(Function):
    """Per sample: sum over its target classes j and its other classes k of max(0, 1 - (x[j] - x[k])) / C."""

    @staticmethod
    def forward(ctx, input, target, reduction="mean"):
        rows = _mlm_check(input, target, reduction)
        c = _classes(input.shape)
        _class_range(target, c, "multilabel_margin_loss", low=-1)
        d = dt(input)
        x = input.astype(d, copy=False).reshape(-1, c)
        valid, tj, onehot, is_target = _mlm_parts(target, c)
        xt = np.take_along_axis(x, tj, axis=1)
        z = 1 - xt[:, :, None] + x[:, None, :]
        active = (z > 0) & valid[:, :, None] & ~is_target[:, None, :]
        ctx.parts = (active, onehot, input.shape, rows, reduction)
        return reduced((np.where(active, z, 0).sum((1, 2)) / d.type(c)).reshape(rows), reduction, d)

    @staticmethod
    def backward(ctx, g):
        active, onehot, shape, rows, reduction = ctx.parts
        d = dt(np.asarray(g))
        gr = reduced_grad(g, rows, reduction, d).reshape(-1) / d.type(_classes(shape))
        gz = active * gr[:, None, None]
        gx = gz.sum(1) - np.einsum("nj,njc->nc", gz.sum(2), onehot.astype(d))
        return gx.reshape(shape).astype(d), None


def _mlm_compose(input, target, reduction="mean"):
    c = _classes(input.shape)
    x = input.reshape(-1, c)
    valid, tj, onehot, is_target = _mlm_parts(target._data, c)
    dtype = input._data.dtype
    xt = (x.unsqueeze(1) * constant(onehot.astype(dtype))).sum(-1)
    z = 1 - xt.unsqueeze(2) + x.unsqueeze(1)
    active = (z._data > 0) & valid[:, :, None] & ~is_target[:, None, :]
    loss = (z * constant(active.astype(dtype))).sum((1, 2)) / c
    return reduce_tensor(loss.reshape((x.shape[0],) if input.ndim == 2 else ()), reduction)


def _mlm_onnx(ctx, op):
    shape = op.args["input"].shape
    c = _classes(shape)
    x, t = op.input("input", F32), op.input("target", np.int64)
    if len(shape) < 2:  # one row
        x, t = (ctx.node("Reshape", [v, ctx.ints([1, c])]) for v in (x, t))
    stop = ctx.node("Cast", [ctx.node("Equal", [t, ctx.const(np.array(-1, np.int64))])], to=7)  # int64
    valid = ctx.node("Equal", [ctx.node("CumSum", [stop, ctx.const(np.array(1, np.int64))]),
                               ctx.const(np.array(0, np.int64))])
    tj = ctx.node("Where", [valid, t, ctx.const(np.array(0, np.int64))])
    xt = ctx.node("GatherElements", [x, tj], axis=1)
    onehot = ctx.node("And", [ctx.node("Equal", [ctx.unsqueeze(tj, [2]), ctx.const(np.arange(c, dtype=np.int64))]),
                              ctx.unsqueeze(valid, [2])])
    is_target = ctx.reduce("ReduceMax", ctx.node("Cast", [onehot], to=1), [1], False)  # float
    z = ctx.node("Add", [ctx.node("Sub", [const(ctx, 1.0), ctx.unsqueeze(xt, [2])]), ctx.unsqueeze(x, [1])])
    keep = ctx.node("Mul", [ctx.unsqueeze(ctx.node("Cast", [valid], to=1), [2]),
                            ctx.unsqueeze(ctx.node("Sub", [const(ctx, 1.0), is_target]), [1])])
    h = ctx.node("Mul", [ctx.node("Relu", [z]), keep])
    loss = ctx.node("Div", [ctx.reduce("ReduceSum", h, [1, 2], False), const(ctx, float(c))])
    if len(shape) < 2:
        loss = ctx.squeeze(loss, [0])
    return [_onnx_reduce(ctx, loss, max(len(shape) - 1, 0), op.attr("reduction", "mean"))]


def _ml_targets(n, c, seed):
    """Rows of distinct class indices, each ended by -1 at a random place (or filling the row), junk after."""
    rng = np.random.default_rng(seed)
    out = np.full((n, c), -1, np.int64)
    for i in range(n):
        k = int(rng.integers(0, c + 1))
        out[i, :k] = rng.permutation(c)[:k]
        if k + 1 < c:
            out[i, k + 1:] = rng.integers(-1, c, size=c - k - 1)
    return out


def _mlm_samples():
    tie = np.array([[1, 0, 0.5], [0.2, 1.2, 0.2]], F32)
    return [Sample((rand(5, 7), _ml_targets(5, 7, 1)), name="mean"),
            Sample((rand(6, 4), _ml_targets(6, 4, 2)), {"reduction": "sum"}, "sum"),
            Sample((rand(4, 9), _ml_targets(4, 9, 3)), {"reduction": "none"}, "none"),
            Sample((tie, np.array([[0, -1, 2], [1, 1, -1]])), {"reduction": "none"}, "ties, a repeated target"),
            Sample((rand(5), np.array([3, 0, -1, 4, 4])), {}, "unbatched"),
            Sample((np.array(0.5, F32), np.array(0)), {"reduction": "none"}, "0-D input (one class)"),
            Sample((rand(1, 4), np.array([[2, -1, 0, 0]])), {"reduction": "none"}, "batch 1")]


def _mlm_meta(input, target, reduction="mean"):
    return out_meta(_mlm_check(input, target, reduction), reduction)


def _mlm_bad():
    x = rand(3, 4)
    return [BadInput((x, np.array([[0, 4, -1, 0]] * 3)), {}, ValueError, "target out of range"),
            BadInput((x, np.array([[0, -2, -1, 0]] * 3)), {}, ValueError, "target out of range"),
            BadInput((x, np.zeros((3, 3), np.int64)), {}, ValueError, "target"),
            BadInput((x, np.zeros((3, 4), F32)), {}, TypeError, "target"),
            BadInput((x, np.zeros((3, 4), np.int64)), {"reduction": "avg"}, ValueError, "reduction")]


register_loss("multilabel_margin_loss", MultiLabelMarginLossFunction, meta=_mlm_meta, samples=_mlm_samples,
              torch=_torch("multilabel_margin_loss"), bad_inputs=_mlm_bad, onnx=_mlm_onnx, compose=_mlm_compose)


def multi_margin_loss(input, target, p: int = 1, margin: float = 1.0, weight=None, reduction: str = "mean"):
    """``torch.nn.functional.multi_margin_loss``: sum over j != y of max(0, margin - x[y] + x[j])**p (times
    weight[y]) / C; p is 1 or 2; target holds class indices."""
    return MultiMarginLossFunction.op(_t(input, "input"), _t(target, "target"), p, margin,
                                      None if weight is None else _t(weight, "weight"), reduction=reduction)


def multilabel_margin_loss(input, target, reduction: str = "mean"):
    """``torch.nn.functional.multilabel_margin_loss``: target rows list class indices, ended by -1."""
    return MultiLabelMarginLossFunction.op(_t(input, "input"), _t(target, "target"), reduction=reduction)


MultiMarginLossFunction.op.functional = multi_margin_loss
MultiLabelMarginLossFunction.op.functional = multilabel_margin_loss
