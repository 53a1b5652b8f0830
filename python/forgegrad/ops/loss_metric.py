"""Metric-learning and likelihood losses with torch's formulas: triplet_margin_loss (p-norm distances, eps,
swap), poisson_nll_loss (log_input, full, eps) and gaussian_nll_loss (full, eps; var per element, per sample or a
float). Also the functional forms pairwise_distance and triplet_margin_with_distance_loss, which are compositions
of Tensor ops (any ``distance_function`` made of ops is differentiated through).

Ties follow torch: triplet_margin_loss passes its gradient at exactly zero loss (clamp_min), a swap's tied
distances share it (minimum); gaussian_nll_loss clamps var at eps without stopping var's gradient (torch clamps a
clone under no_grad), and poisson_nll_loss with full=True gives a target of 0 a NaN gradient, as torch's
``target * log(target)`` does.
"""
from __future__ import annotations

import math

import numpy as np

from .._validate import check_bool
from ..autograd import Function
from ._loss_common import (broadcast_shape, check_reduction, const, constant, dt_of, number, out_meta, reduce_tensor,
                           reduced, reduced_grad, register_loss, unbroadcast)
from ._samples import positive, rand
from .loss_margin import _onnx_reduce, _t, _torch
from .normalization_vector import _pnorm_backward
from .registry import _OPS, BadInput, Sample

F32 = np.float32


# ---- triplet_margin_loss ---------------------------------------------------------------------------------
def _triplet_check(a, p, n, margin, norm_p, reduction, name="triplet_margin_loss"):
    check_reduction(reduction)
    if not a.ndim == p.ndim == n.ndim:
        raise ValueError(f"{name}: the anchor, positive, and negative tensors are expected to have the same number of "
                         f"dimensions, but got: anchor {a.ndim}D, positive {p.ndim}D, and negative {n.ndim}D inputs")
    number(margin, "margin", name, positive=True)
    if isinstance(norm_p, bool) or not isinstance(norm_p, (int, float)) or not norm_p > 0:
        raise ValueError(f"{name}: p must be a number > 0 (or inf), got {norm_p!r}")
    return broadcast_shape(name, anchor=a, positive=p, negative=n)[:-1]


def _norm(v, p):
    a = np.abs(v)
    if p == math.inf:
        return a.max(-1)
    if p == 1:
        return a.sum(-1)
    if p == 2:
        return np.sqrt((v * v).sum(-1))
    return (a ** p).sum(-1) ** (1.0 / p)


def _norm_grad(v, nrm, g, p):
    """d||v||_p / dv * g (g per row): torch's norm_backward, so a zero upstream gradient still meets a NaN / inf
    difference (as torch's, where clamp_min passes no gradient but the norm's backward still runs)."""
    return _pnorm_backward(v, nrm[..., None], p, g[..., None], (v.ndim - 1,))


class TripletMarginLossFunction(Function):
    """max(0, margin + d(anchor, positive) - d(anchor, negative)), d(x, y) = ||x - y + eps||_p over the last dim;
    swap: d(anchor, negative) replaced by d(positive, negative) where that is smaller."""

    @staticmethod
    def forward(ctx, anchor, positive, negative, margin=1.0, p=2.0, eps=1e-6, swap=False, reduction="mean"):
        rows = _triplet_check(anchor, positive, negative, margin, p, reduction)
        swap = check_bool(swap, "swap")
        eps = number(eps, "eps", "triplet_margin_loss")
        d = dt_of(anchor, positive, negative)
        e = d.type(eps)
        shapes = (anchor.shape, positive.shape, negative.shape)
        if anchor.ndim == 0:  # torch's distance of scalars: |a - b + eps|
            anchor, positive, negative = (v.reshape(1) for v in (anchor, positive, negative))
        dpos, dneg = (anchor - positive + e).astype(d), (anchor - negative + e).astype(d)
        npos, nneg = _norm(dpos, p), _norm(dneg, p)
        dswap = nswap = None
        if swap:
            dswap = (positive - negative + e).astype(d)
            nswap = _norm(dswap, p)
            near = np.minimum(nneg, nswap)
        else:
            near = nneg
        z = d.type(margin) + npos - near
        ctx.parts = (z >= 0, (dpos, npos), (dneg, nneg), (dswap, nswap), p, rows, reduction, shapes)
        return reduced(np.maximum(z, 0), reduction, d)

    @staticmethod
    def backward(ctx, g):
        active, (dpos, npos), (dneg, nneg), (dswap, nswap), p, rows, reduction, shapes = ctx.parts
        d = dpos.dtype
        gl = reduced_grad(g, rows, reduction, d) * active
        gneg = -gl
        gswap = None
        if dswap is not None:  # torch.minimum: a tie gives each half, a NaN both the whole
            tie = nneg == nswap
            gswap = np.where(tie, gneg / 2, np.where(nneg < nswap, 0, gneg))
            gneg = np.where(tie, gneg / 2, np.where(nneg > nswap, 0, gneg))
        vp = _norm_grad(dpos, npos, gl, p)
        vn = _norm_grad(dneg, nneg, gneg, p)
        ga, gp, gn = vp + vn, -vp, -vn
        if gswap is not None:
            vs = _norm_grad(dswap, nswap, gswap, p)
            gp, gn = gp + vs, gn - vs
        return tuple(unbroadcast(np.broadcast_to(x, np.broadcast_shapes(x.shape, s)), s).astype(d)
                     for x, s in zip((ga, gp, gn), shapes))


def pairwise_distance(x1, x2, p: float = 2.0, eps: float = 1e-6, keepdim: bool = False):
    """``torch.nn.functional.pairwise_distance``: ||x1 - x2 + eps||_p over the last dim (made of Tensor ops)."""
    x1, x2 = _t(x1, "x1"), _t(x2, "x2")
    d = x1 - x2 + eps
    if d.ndim == 0:  # scalars: |x1 - x2 + eps|, as torch's
        return d.reshape(1).norm(p, dim=-1, keepdim=False).reshape(())
    return d.norm(p, dim=-1, keepdim=keepdim)


def _triplet_compose(anchor, positive, negative, margin=1.0, p=2.0, eps=1e-6, swap=False, reduction="mean"):
    dist_pos = pairwise_distance(anchor, positive, p, eps)
    dist_neg = pairwise_distance(anchor, negative, p, eps)
    if swap:
        dist_neg = dist_neg.minimum(pairwise_distance(positive, negative, p, eps))
    return reduce_tensor((margin + dist_pos - dist_neg).clamp(min=0.0), reduction)


def _onnx_distance(ctx, x, y, p, eps, scalar=False):
    v = ctx.node("Add", [ctx.node("Sub", [x, y]), const(ctx, eps)])
    if scalar:
        v = ctx.node("Reshape", [v, ctx.ints([1])])
    if p == 2:
        return ctx.node("Sqrt", [ctx.reduce("ReduceSum", ctx.node("Mul", [v, v]), [-1], False)])
    a = ctx.node("Abs", [v])
    if p == math.inf:
        return ctx.reduce("ReduceMax", a, [-1], False)
    if p == 1:
        return ctx.reduce("ReduceSum", a, [-1], False)
    s = ctx.reduce("ReduceSum", ctx.node("Pow", [a, const(ctx, float(p))]), [-1], False)
    return ctx.node("Pow", [s, const(ctx, 1.0 / p)])


def _triplet_onnx(ctx, op):
    a, pos, neg = (op.input(k, F32) for k in ("anchor", "positive", "negative"))
    p, eps = float(op.attr("p", 2.0)), float(op.attr("eps", 1e-6))
    sc = op.args["anchor"].ndim == 0
    dpos, dneg = _onnx_distance(ctx, a, pos, p, eps, sc), _onnx_distance(ctx, a, neg, p, eps, sc)
    if op.attr("swap", False):
        dneg = ctx.node("Min", [dneg, _onnx_distance(ctx, pos, neg, p, eps, sc)])
    z = ctx.node("Add", [const(ctx, float(op.attr("margin", 1.0))), ctx.node("Sub", [dpos, dneg])])
    ndim = max(max(op.args[k].ndim for k in ("anchor", "positive", "negative")) - 1, 0)
    return [_onnx_reduce(ctx, ctx.node("Max", [z, const(ctx, 0.0)]), ndim, op.attr("reduction", "mean"))]


def _triplet_samples():
    # z = margin + d(a, p) - d(a, n) = 0 exactly (eps 0); a zero distance's second derivative is NaN in torch, so
    # that case is in tests/test_nn_losses_torch.py (first order)
    tie = (np.array([[0, 0], [1, 1]], F32), np.array([[1, 0], [1, 3]], F32), np.array([[2, 0], [1, 4]], F32))
    return [Sample((rand(5, 7), rand(5, 7, seed=1), rand(5, 7, seed=2)), name="mean"),
            Sample((rand(4, 3), rand(1, 3, seed=1), rand(4, 3, seed=2)), {"p": 1, "margin": 0.5, "reduction": "sum"},
                   "p=1, broadcast positive, sum"),
            Sample((rand(3, 6), rand(3, 6, seed=1), rand(3, 6, seed=2)), {"p": 3, "swap": True, "reduction": "none"},
                   "p=3, swap"),
            Sample((rand(2, 3, 5), rand(2, 3, 5, seed=3), rand(2, 3, 5, seed=4)), {"swap": True, "eps": 1e-3},
                   "3-D, swap, eps"),
            Sample(tie, {"eps": 0.0, "reduction": "none"}, "zero loss at the margin"),
            Sample((rand(6), rand(6, seed=1), rand(6, seed=2)), {"margin": 2.0}, "unbatched"),
            Sample((np.array(0.5, F32), np.array(0.2, F32), np.array(-1.5, F32)), {"swap": True, "reduction": "none"},
                   "0-D"),
            Sample((rand(1, 4), rand(1, 4, seed=1), rand(1, 4, seed=2)), {"p": math.inf, "reduction": "none"},
                   "batch 1, p=inf")]


def _triplet_meta(anchor, positive, negative, margin=1.0, p=2.0, eps=1e-6, swap=False, reduction="mean"):
    return out_meta(_triplet_check(anchor, positive, negative, margin, p, reduction), reduction)


def _triplet_bad():
    a = rand(3, 4)
    return [BadInput((a, rand(4), a), {}, ValueError, "dimensions"),
            BadInput((a, rand(3, 5), a), {}, ValueError, "positive"),
            BadInput((a, a, a), {"margin": 0.0}, ValueError, "margin"),
            BadInput((a, a, a), {"p": -1}, ValueError, "p"),
            BadInput((a, a, a), {"reduction": "avg"}, ValueError, "reduction")]


register_loss("triplet_margin_loss", TripletMarginLossFunction, meta=_triplet_meta, samples=_triplet_samples,
              torch=_torch("triplet_margin_loss"), bad_inputs=_triplet_bad, onnx=_triplet_onnx,
              compose=_triplet_compose, flops_per_element=9)


# ---- poisson_nll_loss ------------------------------------------------------------------------------------
class PoissonNLLLossFunction(Function):
    """log_input: exp(input) - target * input; else input - target * log(input + eps); full adds Stirling's
    term target * log(target) - target + 0.5 * log(2 pi target) where target > 1."""

    @staticmethod
    def forward(ctx, input, target, log_input=True, full=False, eps=1e-8, reduction="mean"):
        check_reduction(reduction)
        log_input, full = check_bool(log_input, "log_input"), check_bool(full, "full")
        shape = broadcast_shape("poisson_nll_loss", input=input, target=target)
        eps = number(eps, "eps", "poisson_nll_loss")
        d = dt_of(input, target)
        x, t = input.astype(d, copy=False), np.asarray(target, d)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if log_input:
                ex = np.exp(x)
                loss = ex - t * x
            else:
                ex = None
                loss = x - t * np.log(x + d.type(eps))
            if full:
                stirling = t * np.log(t) - t + d.type(0.5) * np.log(d.type(2 * math.pi) * t)
                loss = loss + np.where(t > 1, stirling, 0)
        ctx.save_for_backward(x, t)
        ctx.parts = (ex, bool(log_input), bool(full), eps, shape, reduction)
        return reduced(np.broadcast_to(loss, shape), reduction, d)

    @staticmethod
    def backward(ctx, g):
        x, t = ctx.saved_tensors
        ex, log_input, full, eps, shape, reduction = ctx.parts
        d = x.dtype
        gr = reduced_grad(g, shape, reduction, d)
        with np.errstate(divide="ignore", invalid="ignore"):
            gi = (ex - t) if log_input else (1 - t / (x + d.type(eps)))
            gt = None
            if ctx.needs_input_grad[1]:
                gt = -x if log_input else -np.log(x + d.type(eps))
                if full:  # 0 * log(t) is NaN at t <= 0 in torch's gradient of the masked term, and its
                    # d(t log t) = log t + t / t is NaN at t = inf
                    gt = gt + np.where(t > 1, np.log(t) + (t / t - 1) + d.type(0.5) / t, np.where(t > 0, 0, np.nan))
                gt = unbroadcast(gr * gt, t.shape).astype(d)
        return unbroadcast(gr * gi, x.shape).astype(d), gt


def _poisson_compose(input, target, log_input=True, full=False, eps=1e-8, reduction="mean"):
    loss = input.exp() - target * input if log_input else input - target * (input + eps).log()
    if full:
        t = target._data
        big = np.asarray(t > 1)
        ts = _OPS["where"](big, target, 2.0)  # the term's own derivative only where it is used
        stirling = ts * ts.log() - ts + 0.5 * (2 * math.pi * ts).log()
        loss = loss + _OPS["where"](big, stirling, 0.0)
    return reduce_tensor(loss, reduction)


def _poisson_onnx(ctx, op):
    x, t = op.input("input", F32), op.input("target", F32)
    if op.attr("log_input", True):
        loss = ctx.node("Sub", [ctx.node("Exp", [x]), ctx.node("Mul", [t, x])])
    else:
        lg = ctx.node("Log", [ctx.node("Add", [x, const(ctx, float(op.attr("eps", 1e-8)))])])
        loss = ctx.node("Sub", [x, ctx.node("Mul", [t, lg])])
    if op.attr("full", False):
        st = ctx.node("Sub", [ctx.node("Mul", [t, ctx.node("Log", [t])]), t])
        st = ctx.node("Add", [st, ctx.node("Mul", [const(ctx, 0.5), ctx.node("Log", [
            ctx.node("Mul", [const(ctx, 2 * math.pi), t])])])])
        loss = ctx.node("Add", [loss, ctx.node("Where", [ctx.node("Greater", [t, const(ctx, 1.0)]), st,
                                                         const(ctx, 0.0)])])
    ndim = max(op.args["input"].ndim, op.args["target"].ndim)
    return [_onnx_reduce(ctx, loss, ndim, op.attr("reduction", "mean"))]


def _counts(*shape, seed=0):
    return np.random.default_rng(seed).poisson(2.0, size=shape).astype(F32)


def _poisson_samples():
    return [Sample((rand(5, 7), _counts(5, 7, seed=1)), name="mean"),
            Sample((positive(4, 6), _counts(4, 6, seed=2) + 0.5), {"log_input": False, "reduction": "sum"},
                   "log_input=False, sum"),
            Sample((rand(3, 5), _counts(3, 5, seed=3) + 0.25), {"full": True, "reduction": "none"},
                   "full (targets > 0)"),
            Sample((positive(2, 3, 4), positive(3, 4, seed=4)), {"log_input": False, "full": True, "eps": 1e-3},
                   "broadcast target, full, eps"),
            Sample((rand(6), _counts(6, seed=5)), {"full": True}, "full with zero targets", grad=(0,)),
            Sample((rand(1), np.array([3.0], F32)), {}, "batch 1")]


def _poisson_meta(input, target, log_input=True, full=False, eps=1e-8, reduction="mean"):
    check_reduction(reduction)
    return out_meta(broadcast_shape("poisson_nll_loss", input=input, target=target), reduction)


def _poisson_bad():
    return [BadInput((rand(3, 4), rand(3)), {}, ValueError, "target"),
            BadInput((rand(3, 4), rand(3, 4)), {"reduction": "avg"}, ValueError, "reduction"),
            BadInput((rand(3, 4), rand(3, 4)), {"eps": float("nan")}, ValueError, "eps")]


register_loss("poisson_nll_loss", PoissonNLLLossFunction, meta=_poisson_meta, samples=_poisson_samples,
              torch=_torch("poisson_nll_loss"), bad_inputs=_poisson_bad, onnx=_poisson_onnx,
              compose=_poisson_compose)


# ---- gaussian_nll_loss -----------------------------------------------------------------------------------
def _var_shape(input, var):
    """The shape var takes in the loss (torch's rules): the input's, the input's without its last dim (then a
    trailing 1 is added), or the input's with exactly one dim of 1."""
    ins, vs = tuple(input.shape), tuple(var.shape)
    if vs == ins:
        return vs
    if ins[:-1] == vs:
        return vs + (1,)
    if len(ins) == len(vs) and sum(y for x, y in zip(ins, vs) if x != y) == 1:
        return vs
    raise ValueError(f"gaussian_nll_loss: var is of incorrect size {vs} for an input of shape {ins}: it must be the "
                     "input's shape, that shape without its last dim, or that shape with one dim of size 1")


def _gauss_check(input, target, var, eps, reduction):
    vshape = _var_shape(input, var)
    check_reduction(reduction)
    number(eps, "eps", "gaussian_nll_loss")
    return vshape, broadcast_shape("gaussian_nll_loss", input=input, target=target, var=np.empty(vshape, F32)
                                   if not hasattr(var, "reshape") else var.reshape(vshape))


class GaussianNLLLossFunction(Function):
    """0.5 * (log(max(var, eps)) + (input - target)**2 / max(var, eps)) (+ 0.5 * log(2 pi) with full), reduced;
    the clamp does not stop var's gradient (torch clamps a clone of var under no_grad)."""

    @staticmethod
    def forward(ctx, input, target, var, full=False, eps=1e-6, reduction="mean"):
        vshape, shape = _gauss_check(input, target, var, eps, reduction)
        full = check_bool(full, "full")
        if np.any(var < 0):
            raise ValueError("gaussian_nll_loss: var has negative entry/entries")
        d = dt_of(input, target, var)
        v = np.maximum(np.asarray(var, d).reshape(vshape), d.type(eps))
        diff = (input - target).astype(d, copy=False)
        loss = d.type(0.5) * (np.log(v) + diff * diff / v)
        if full:
            loss = loss + d.type(0.5 * math.log(2 * math.pi))
        ctx.save_for_backward(diff, v)
        ctx.parts = (shape, reduction, input.shape, target.shape, var.shape)
        return reduced(np.broadcast_to(loss, shape), reduction, d)

    @staticmethod
    def backward(ctx, g):
        diff, v = ctx.saved_tensors
        shape, reduction, si, st, sv = ctx.parts
        d = v.dtype
        gr = reduced_grad(g, shape, reduction, d)
        gd = gr * diff / v
        gi = unbroadcast(np.broadcast_to(gd, shape), si).astype(d)
        gt = unbroadcast(np.broadcast_to(-gd, shape), st).astype(d) if ctx.needs_input_grad[1] else None
        gv = None
        if ctx.needs_input_grad[2]:
            gv = gr * d.type(0.5) * (1 / v - diff * diff / (v * v))
            gv = unbroadcast(np.broadcast_to(gv, shape), v.shape).reshape(sv).astype(d)
        return gi, gt, gv


def _gauss_compose(input, target, var, full=False, eps=1e-6, reduction="mean"):

    v = var.reshape(_var_shape(input, var))
    v = constant(np.maximum(v._data, eps)) + (v - v.detach())  # the clamp, var's gradient passing through as torch's
    d = input - target
    loss = 0.5 * (v.log() + d ** 2 / v)
    return reduce_tensor(loss + 0.5 * math.log(2 * math.pi) if full else loss, reduction)


def _gauss_onnx(ctx, op):
    x, t, var = op.input("input", F32), op.input("target", F32), op.input("var", F32)
    ins, vs = tuple(op.args["input"].shape), tuple(op.args["var"].shape)
    vshape = _var_shape(np.empty(ins, F32), np.empty(vs, F32))
    if vshape != vs:
        var = ctx.unsqueeze(var, [len(vs)])
    v = ctx.node("Max", [var, const(ctx, float(op.attr("eps", 1e-6)))])
    d = ctx.node("Sub", [x, t])
    loss = ctx.node("Mul", [const(ctx, 0.5), ctx.node("Add", [ctx.node("Log", [v]), ctx.node("Div", [
        ctx.node("Mul", [d, d]), v])])])
    if op.attr("full", False):
        loss = ctx.node("Add", [loss, const(ctx, 0.5 * math.log(2 * math.pi))])
    ndim = max(len(ins), len(vshape), op.args["target"].ndim)
    return [_onnx_reduce(ctx, loss, ndim, op.attr("reduction", "mean"))]


def _gauss_samples():
    small = positive(4, 5, seed=3)
    small[0, :3] = [1e-3, 0.0, 5e-3]  # below eps (0.01 here): clamped
    return [Sample((rand(5, 7), rand(5, 7, seed=1), positive(5, 7, seed=2)), name="mean, var per element"),
            Sample((rand(4, 5), rand(4, 5, seed=1), small), {"full": True, "reduction": "sum", "eps": 1e-2},
                   "full, var below eps, sum"),
            Sample((rand(3, 6), rand(6, seed=1), positive(3, seed=2)), {"reduction": "none"},
                   "var per sample (N,), broadcast target"),
            Sample((rand(2, 3, 4), rand(2, 3, 4, seed=1), positive(2, 1, 4, seed=2)), {"eps": 1e-2},
                   "var with one dim of 1, eps"),
            Sample((rand(5), rand(5, seed=1), positive(seed=2).reshape(())), {}, "unbatched, 0-D var"),
            Sample((rand(1, 3), rand(1, 3, seed=1), positive(1, 1, seed=2)), {"reduction": "none"}, "batch 1")]


def _gauss_meta(input, target, var, full=False, eps=1e-6, reduction="mean"):
    return out_meta(_gauss_check(input, target, var, eps, reduction)[1], reduction)


def _gauss_bad():
    x = rand(3, 4)
    neg = positive(3, 4)
    neg[1, 2] = -0.5
    return [BadInput((x, x, neg), {}, ValueError, "var has negative"),
            BadInput((x, x, positive(2, 4)), {}, ValueError, "var"),
            BadInput((x, rand(3, 5), positive(3, 4)), {}, ValueError, "target"),
            BadInput((x, x, positive(3, 4)), {"reduction": "avg"}, ValueError, "reduction")]


def _gauss_torch(torch, input, target, var, **kwargs):
    import torch.nn.functional as TF
    return TF.gaussian_nll_loss(input, target, var, **kwargs)


register_loss("gaussian_nll_loss", GaussianNLLLossFunction, meta=_gauss_meta, samples=_gauss_samples,
              torch=_gauss_torch, bad_inputs=_gauss_bad, onnx=_gauss_onnx, compose=_gauss_compose)


# ---- the functional entry points (torch.nn.functional's signatures) ---------------------------------------
def triplet_margin_loss(anchor, positive, negative, margin: float = 1.0, p: float = 2, eps: float = 1e-6,
                        swap: bool = False, reduction: str = "mean"):
    """``torch.nn.functional.triplet_margin_loss``: max(0, margin + d(a, p) - d(a, n)), d the p-norm distance of
    pairwise_distance; swap uses d(p, n) where smaller."""
    return TripletMarginLossFunction.op(_t(anchor, "anchor"), _t(positive, "positive"), _t(negative, "negative"),
                                        margin=margin, p=p, eps=eps, swap=bool(swap), reduction=reduction)


def triplet_margin_with_distance_loss(anchor, positive, negative, *, distance_function=None, margin: float = 1.0,
                                      swap: bool = False, reduction: str = "mean"):
    """``torch.nn.functional.triplet_margin_with_distance_loss``: as triplet_margin_loss with any distance (a
    callable of two Tensors giving one distance per sample, made of Tensor ops); None is pairwise_distance."""
    name = "triplet_margin_with_distance_loss"
    anchor, positive, negative = _t(anchor, "anchor"), _t(positive, "positive"), _t(negative, "negative")
    check_reduction(reduction)
    number(margin, "margin", name, positive=True)
    if distance_function is not None and not callable(distance_function):
        raise TypeError(f"{name}: distance_function must be a callable or None, got {type(distance_function).__name__}")
    if distance_function is None:
        return triplet_margin_loss(anchor, positive, negative, margin, 2.0, 1e-6, swap, reduction)
    _triplet_check(anchor, positive, negative, margin, 2.0, reduction, name)
    dist_pos = distance_function(anchor, positive)
    dist_neg = distance_function(anchor, negative)
    if swap:
        dist_neg = dist_neg.minimum(distance_function(positive, negative))
    return reduce_tensor((margin + dist_pos - dist_neg).clamp(min=0.0), reduction)


def poisson_nll_loss(input, target, log_input: bool = True, full: bool = False, eps: float = 1e-8,
                     reduction: str = "mean"):
    """``torch.nn.functional.poisson_nll_loss`` (target ~ Poisson(exp(input)) with log_input, else Poisson(input))."""
    return PoissonNLLLossFunction.op(_t(input, "input"), _t(target, "target"), log_input=bool(log_input),
                                     full=bool(full), eps=eps, reduction=reduction)


def gaussian_nll_loss(input, target, var, full: bool = False, eps: float = 1e-6, reduction: str = "mean"):
    """``torch.nn.functional.gaussian_nll_loss``: var (> = 0) per element, per sample (input's shape without its
    last dim, or with one dim of 1) or a float."""

    input = _t(input, "input")
    if isinstance(var, (int, float)) and not isinstance(var, bool):
        if var < 0:
            raise ValueError("gaussian_nll_loss: var has negative entry/entries")
        var = constant(np.full(input.shape, var, input._data.dtype if input._data.dtype == np.float64 else F32))
    return GaussianNLLLossFunction.op(input, _t(target, "target"), _t(var, "var"), full=bool(full), eps=eps,
                                      reduction=reduction)


TripletMarginLossFunction.op.functional = triplet_margin_loss
PoissonNLLLossFunction.op.functional = poisson_nll_loss
GaussianNLLLossFunction.op.functional = gaussian_nll_loss
