"""The losses on the cuda device: each registry loss's cuda Function (forgegrad._C.cuda_nn kernels on
DeviceArrays), registered next to its CPU Function in ops/loss.py with ``add_device``. Ran on an H200
(tests/test_cuda_nn.py passes); tests/test_cuda_nn_contract.py checks them on the CPU against a numpy
stand-in of the bindings."""
from __future__ import annotations

import math

import numpy as np

from .._validate import check_bool
from ..autograd import Function
from .loss import (_REDUCTIONS, BinaryCrossEntropyFunction, BinaryCrossEntropyWithLogitsFunction, CrossEntropyFunction,
                   KLDivFunction, L1LossFunction, MSELossFunction, NLLLossFunction, _check_reduction)

# Losses on DeviceArrays (cuda/softmax_loss.cu; the sums of the reductions through cuda/reduce.cu in a
# fixed order). softmax / log_softmax (ops.activation) register here too: cross entropy shares their row
# kernels. The kernels cannot raise: an out-of-range class index gives a NaN loss and gradient on cuda
# where the CPU raises IndexError.
from . import _cuda_nn as CN  # noqa: E402


def _cuda_reduce_loss(per, wy, reduction):
    """(the reduced loss, the mean's denominator or None) from the per-row losses and target weights."""
    K = CN.kernels()
    if reduction == "none":
        return per, None
    total = K.reduce("sum", per)
    if reduction == "sum":
        return total, None
    denom = K.reduce("sum", wy)
    return CN.pw("div", total, denom), denom


def _cuda_index_target(target, name):
    if getattr(target, "dtype", None) != np.int64:
        raise NotImplementedError(f"{name} on cuda: only int64 class-index targets are supported so far, got "
                                  f"{getattr(target, 'dtype', type(target).__name__)}")


class CrossEntropyCudaFunction(Function):
    """cross_entropy on cuda. int64 class-index targets: the fused kernel, saving softmax(logits) as the
    CPU kernel does. Class-probability targets (float, the input's shape): composed from the softmax,
    pointwise and reduction kernels, saving log-softmax, the smoothed targets and the class weight as the
    CPU's probability path (the targets and the weight then get gradients too)."""

    @staticmethod
    def forward(ctx, logits, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        _check_reduction(reduction)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
        if getattr(target, "dtype", None) == np.float32:
            return _cuda_prob_cross_entropy(ctx, logits, target, weight, reduction, float(label_smoothing))
        _cuda_index_target(target, "cross_entropy")
        prob, per, wy = CN.kernels().cross_entropy_forward(logits, target, weight, int(ignore_index),
                                                           float(label_smoothing))
        out, denom = _cuda_reduce_loss(per, wy, reduction)
        ctx.save_for_backward(prob, target, weight, denom)
        ctx.args = (int(ignore_index), float(label_smoothing))
        ctx.mode = "index"
        return out

    @staticmethod
    def backward(ctx, g):
        if ctx.mode == "prob":
            return _cuda_prob_cross_entropy_backward(ctx, g)
        prob, target, weight, denom = ctx.saved_tensors
        ignore_index, ls = ctx.args
        return CN.kernels().cross_entropy_backward(prob, target, weight, g, denom, ignore_index, ls), None, None


def _cuda_class_axis_shape(shape, C):
    """The shape that puts a (C,) vector on the class axis (1, or 0 for a (C,) input) of ``shape``."""
    return (C,) if len(shape) == 1 else (1, C) + (1,) * (len(shape) - 2)


def _cuda_prob_cross_entropy(ctx, logits, target, weight, reduction, eps):
    if tuple(target.shape) != tuple(logits.shape):
        raise ValueError(f"cross_entropy: probability target must have the input's shape {tuple(logits.shape)}, "
                         f"got {tuple(target.shape)}")
    if logits.ndim == 0:
        raise ValueError("cross_entropy: input must have at least 1 dimension (classes), got a 0-d tensor")
    axis = 0 if logits.ndim == 1 else 1
    C = logits.shape[axis]
    if weight is not None and tuple(weight.shape) != (C,):
        raise ValueError(f"cross_entropy: weight must have shape ({C},) (one per class), got {tuple(weight.shape)}")
    K = CN.kernels()
    logp = K.softmax(logits, axis, True)
    t = CN.pw("add", CN.pw("mul_scaled", target, 1.0, alpha=1.0 - eps), eps / C) if eps > 0 else target
    w = None if weight is None else CN.reshape(weight, _cuda_class_axis_shape(logits.shape, C))
    tw = t if w is None else CN.pw("mul", t, w)
    per = K.reduce("sum", CN.pw("mul", tw, logp), [axis], False, -1.0)  # -(t w logp) over the classes
    ctx.save_for_backward(logp, t, w)
    ctx.mode, ctx.reduction, ctx.axis, ctx.eps = "prob", reduction, axis, eps
    if reduction == "none":
        return per
    rows = CN.numel(per.shape)
    return K.reduce("sum", per, None, False, 1.0 if reduction == "sum" else (1.0 / rows if rows else math.nan))


def _cuda_prob_cross_entropy_backward(ctx, g):
    logp, t, w = ctx.saved_tensors
    K, axis = CN.kernels(), ctx.axis
    shape = tuple(logp.shape)
    if ctx.reduction == "none":  # one gradient per row: broadcast along the class axis
        a = CN.reshape(g, shape[:axis] + (1,) + shape[axis + 1:])
    else:
        rows = CN.numel(shape) // shape[axis] if shape[axis] else 0
        a = CN.pw("mul_scaled", g, 1.0, alpha=1.0 / rows if ctx.reduction == "mean" and rows else 1.0)
    tw = t if w is None else CN.pw("mul", t, w)
    s = K.reduce("sum", tw, [axis], True)  # sum over classes of t w, per row
    d = CN.pw("sub", CN.pw("mul", CN.pw("exp", logp), s), tw)  # p sum(t w) - w t
    needs = ctx.needs_input_grad
    gx = CN.pw("mul", d, a, shape=shape)
    gt = gw = None
    if len(needs) > 1 and needs[1]:  # d loss / d target: -(1 - eps) w logp
        wl = logp if w is None else CN.pw("mul", w, logp)
        gt = CN.pw("mul_scaled", wl, a, alpha=-(1.0 - ctx.eps), shape=shape)
    if len(needs) > 2 and needs[2] and w is not None:  # d loss / d weight_c: -sum over rows of t_c logp_c a
        per_elem = CN.pw("mul", CN.pw("mul", t, logp), a, shape=shape)
        gw = K.reduce("sum", per_elem, [i for i in range(len(shape)) if i != axis], False, -1.0)
    return gx, gt, gw


CrossEntropyFunction.op.add_device("cuda", CrossEntropyCudaFunction)


class NLLLossCudaFunction(Function):
    """nll_loss on cuda (int64 class-index targets)."""

    @staticmethod
    def forward(ctx, logp, target, weight=None, ignore_index=-100, reduction="mean"):
        _check_reduction(reduction)
        _cuda_index_target(target, "nll_loss")
        per, wy = CN.kernels().nll_forward(logp, target, weight, int(ignore_index))
        out, denom = _cuda_reduce_loss(per, wy, reduction)
        ctx.save_for_backward(target, weight, denom)
        ctx.shape, ctx.ignore_index = tuple(logp.shape), int(ignore_index)
        return out

    @staticmethod
    def backward(ctx, g):
        target, weight, denom = ctx.saved_tensors
        return CN.kernels().nll_backward(list(ctx.shape), target, weight, g, denom, ctx.ignore_index), None, None


NLLLossFunction.op.add_device("cuda", NLLLossCudaFunction)


def _cuda_grad_scale(shape, reduction) -> float:
    """The factor of the upstream gradient per element (the CPU's _reduce_grad): 1 / n for mean."""
    return 1.0 / max(CN.numel(shape), 1) if reduction == "mean" else 1.0


def _cuda_reduce_elementwise(loss, reduction):
    if reduction == "none":
        return loss
    n = CN.numel(loss.shape)
    return CN.kernels().reduce("sum", loss, None, False, 1.0 if reduction == "sum" else (1.0 / n if n else math.nan))


def _cuda_check_pointwise_loss(name, inp, target, reduction, **weights):
    _check_reduction(reduction)
    if tuple(inp.shape) != tuple(target.shape):
        raise ValueError(f"{name}: input has shape {tuple(inp.shape)} but target has shape {tuple(target.shape)}; "
                         f"they must match")
    for what, v in weights.items():
        if v is not None:
            try:
                ok = np.broadcast_shapes(tuple(v.shape), tuple(inp.shape)) == tuple(inp.shape)
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"{name}: {what} of shape {tuple(v.shape)} does not broadcast to the input's shape "
                                 f"{tuple(inp.shape)}")


class MSELossCudaFunction(Function):
    """mse_loss on cuda: saves d = inp - target as the CPU Function does."""

    @staticmethod
    def forward(ctx, inp, target, reduction="mean"):
        _cuda_check_pointwise_loss("mse_loss", inp, target, reduction)
        d = CN.pw("sub", inp, target)
        ctx.save_for_backward(d)
        ctx.reduction = reduction
        return _cuda_reduce_elementwise(CN.pw("mul", d, d), reduction)

    @staticmethod
    def backward(ctx, g):
        (d,) = ctx.saved_tensors
        gi = CN.pw("mul_scaled", d, g, alpha=2.0 * _cuda_grad_scale(d.shape, ctx.reduction), shape=d.shape)
        return gi, (CN.pw("neg", gi) if ctx.needs_input_grad[1] else None)


MSELossFunction.op.add_device("cuda", MSELossCudaFunction)


class L1LossCudaFunction(Function):
    """l1_loss on cuda: saves d = inp - target as the CPU Function does."""

    @staticmethod
    def forward(ctx, inp, target, reduction="mean"):
        _cuda_check_pointwise_loss("l1_loss", inp, target, reduction)
        d = CN.pw("sub", inp, target)
        ctx.save_for_backward(d)
        ctx.reduction = reduction
        return _cuda_reduce_elementwise(CN.pw("abs", d), reduction)

    @staticmethod
    def backward(ctx, g):
        (d,) = ctx.saved_tensors
        g = CN.pw("mul_scaled", g, 1.0, alpha=_cuda_grad_scale(d.shape, ctx.reduction))
        gi = CN.pw("abs_grad", g, d, shape=d.shape)
        return gi, (CN.pw("neg", gi) if ctx.needs_input_grad[1] else None)


L1LossFunction.op.add_device("cuda", L1LossCudaFunction)


class BinaryCrossEntropyCudaFunction(Function):
    """binary_cross_entropy on cuda (log terms clamped at -100); saves p, target and weight as the CPU.
    Unlike the CPU it does not check that p lies in [0, 1] (that would wait for the GPU): outside, the
    loss is NaN."""

    @staticmethod
    def forward(ctx, p, target, weight=None, reduction="mean"):
        _cuda_check_pointwise_loss("binary_cross_entropy", p, target, reduction, weight=weight)
        ctx.save_for_backward(p, target, weight)
        ctx.reduction = reduction
        loss = CN.pw("bce_loss", p, target, 1.0 if weight is None else weight, shape=p.shape)
        return _cuda_reduce_elementwise(loss, reduction)

    @staticmethod
    def backward(ctx, g):
        p, t, w = ctx.saved_tensors
        a = _cuda_grad_scale(p.shape, ctx.reduction)
        gi = CN.pw("bce_grad_p", p, t, g, alpha=a, shape=p.shape)
        gt = CN.pw("bce_grad_t", p, g, alpha=a, shape=p.shape) if ctx.needs_input_grad[1] else None
        if w is not None:
            gi = CN.pw("mul", gi, w, shape=p.shape)
            gt = None if gt is None else CN.pw("mul", gt, w, shape=p.shape)
        return gi, gt


BinaryCrossEntropyFunction.op.add_device("cuda", BinaryCrossEntropyCudaFunction)


class BinaryCrossEntropyWithLogitsCudaFunction(Function):
    """binary_cross_entropy_with_logits on cuda (no overflow for large |x|); saves x, target, weight and
    pos_weight as the CPU."""

    @staticmethod
    def forward(ctx, x, target, weight=None, pos_weight=None, reduction="mean"):
        _cuda_check_pointwise_loss("binary_cross_entropy_with_logits", x, target, reduction, weight=weight,
                                   pos_weight=pos_weight)
        ctx.save_for_backward(x, target, weight, pos_weight)
        ctx.reduction = reduction
        loss = CN.pw("bce_logits_loss", x, target, 1.0 if weight is None else weight,
                     1.0 if pos_weight is None else pos_weight, shape=x.shape)
        return _cuda_reduce_elementwise(loss, reduction)

    @staticmethod
    def backward(ctx, g):
        x, t, w, pw = ctx.saved_tensors
        a = _cuda_grad_scale(x.shape, ctx.reduction)
        pw = 1.0 if pw is None else pw
        gi = CN.pw("bce_logits_grad_x", x, t, pw, g, alpha=a, shape=x.shape)
        gt = CN.pw("bce_logits_grad_t", x, pw, g, alpha=a, shape=x.shape) if ctx.needs_input_grad[1] else None
        if w is not None:
            gi = CN.pw("mul", gi, w, shape=x.shape)
            gt = None if gt is None else CN.pw("mul", gt, w, shape=x.shape)
        return gi, gt


BinaryCrossEntropyWithLogitsFunction.op.add_device("cuda", BinaryCrossEntropyWithLogitsCudaFunction)


class KLDivCudaFunction(Function):
    """kl_div on cuda, composed from the pointwise and reduction kernels (xlogy: 0 log 0 = 0, a negative
    or NaN target gives NaN, as the CPU); saves input and target as the CPU Function does."""

    @staticmethod
    def forward(ctx, inp, target, reduction="mean", log_target=False):
        _check_reduction(reduction, _REDUCTIONS + ("batchmean",))
        log_target = check_bool(log_target, "kl_div: log_target")
        _cuda_check_pointwise_loss("kl_div", inp, target, "none")
        K = CN.kernels()
        if log_target:
            loss = CN.pw("mul", CN.pw("exp", target), CN.pw("sub", target, inp))
        else:
            xlogx = K.where(K.compare("eq", target, 0.0), 0.0, CN.pw("mul", target, CN.pw("log", target)))
            loss = CN.pw("sub", xlogx, CN.pw("mul", target, inp))
        ctx.save_for_backward(inp, target)
        ctx.reduction, ctx.log_target = reduction, log_target
        if reduction == "batchmean":
            n = inp.shape[0] if inp.ndim else 1
            return K.reduce("sum", loss, None, False, 1.0 / n if n else math.nan)
        return _cuda_reduce_elementwise(loss, reduction)

    @staticmethod
    def backward(ctx, g):
        inp, target = ctx.saved_tensors
        if ctx.reduction == "batchmean":
            scale = 1.0 / ((inp.shape[0] if inp.ndim else 1) or 1)
        else:
            scale = _cuda_grad_scale(inp.shape, ctx.reduction)
        g = CN.pw("mul_scaled", g, 1.0, alpha=scale)
        K = CN.kernels()
        pt = CN.pw("exp", target) if ctx.log_target else target
        gi = CN.pw("mul_scaled", pt, g, alpha=-1.0, shape=inp.shape)
        gt = None
        if ctx.needs_input_grad[1]:
            if ctx.log_target:
                d = CN.pw("mul", pt, CN.pw("add", CN.pw("sub", target, inp), 1.0))
            else:  # as the CPU (torch's xlogy(t, t) in both arguments): xlogy(t != 0, t) + t / t - input
                lt = K.where(K.compare("eq", target, 0.0), 0.0, CN.pw("log", target))
                d = CN.pw("sub", CN.pw("add", lt, CN.pw("div", target, target)), inp)
            gt = CN.pw("mul", d, g, shape=inp.shape)
        return gi, gt


KLDivFunction.op.add_device("cuda", KLDivCudaFunction)


def _register_softmax_cuda():
    from ._util import single_axis
    from .activation import LogSoftmaxFunction, SoftmaxFunction

    class SoftmaxCudaFunction(Function):
        """softmax / log_softmax along dim on cuda (any axis, no transpose); saves y as the CPU does."""

        log = False

        @staticmethod
        def forward(ctx, x, dim=-1):
            axis = single_axis(dim, x.ndim)
            y = CN.kernels().softmax(x, axis, type(ctx).log)
            ctx.save_for_backward(y)
            ctx.axis = axis
            return y

        @staticmethod
        def backward(ctx, g):
            (y,) = ctx.saved_tensors
            return CN.kernels().softmax_backward(y, g, ctx.axis, type(ctx).log)

    class LogSoftmaxCudaFunction(SoftmaxCudaFunction):
        log = True

    SoftmaxFunction.op.add_device("cuda", SoftmaxCudaFunction)
    LogSoftmaxFunction.op.add_device("cuda", LogSoftmaxCudaFunction)


_register_softmax_cuda()
