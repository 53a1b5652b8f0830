"""Loss functions with PyTorch's semantics (reductions 'mean' | 'sum' | 'none').

Each Function is an op record (ops.registry); its shape rule is here, next to the checks it shares
with the forward, and its samples, torch reference and bad inputs are in loss_samples.py.
"""
from __future__ import annotations

import math

import numpy as np

from ..autograd import Function
from .._validate import check_bool
from ..devices import MetaArray
from ..kernels import loss as _KL
from . import _meta as M
from . import loss_samples as LS
from .registry import register_op

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction, allowed=_REDUCTIONS):
    if reduction not in allowed:
        raise ValueError(f"reduction must be one of {allowed}, got {reduction!r}")


def _reduce(loss, reduction):
    dt = _dt(loss)  # float64 losses stay float64; anything else is float32
    if reduction == "none":
        return loss.astype(dt, copy=False)
    if reduction == "sum":
        return np.asarray(loss.sum(dtype=dt), dtype=dt)
    return np.asarray(loss.mean(dtype=dt), dtype=dt)


def _reduce_grad(g, shape, reduction):
    """The upstream gradient of the reduced loss, broadcast to one value per element."""
    if reduction == "none":
        return g
    n = int(np.prod(shape)) if reduction == "mean" else 1
    dt = _dt(np.asarray(g))
    return np.broadcast_to(dt.type(g) / dt.type(max(n, 1)), shape)


def _dt(a):
    """The dtype a numpy loss computes in: float64 for float64 arrays (torch's double kernels),
    float32 for everything else (the float32 kernels' dtype)."""
    return np.dtype(np.float64) if a is not None and a.dtype == np.float64 else np.dtype(np.float32)


def _same_float_dtype(name, *arrays):
    """torch's class-loss kernels take one floating dtype: a float32 weight or probability target
    with float64 input (or the reverse) is an error there, not a promotion."""
    kinds = {a.dtype for a in arrays if a is not None and a.dtype.kind == "f"}
    if len(kinds) > 1:
        raise RuntimeError(f"{name}: expected all floating arguments to have the same dtype, found "
                           f"{', '.join(sorted(str(k) for k in kinds))}")


def _check_same_shape(inp, target, name):
    if inp.shape != target.shape:
        raise ValueError(f"{name}: input has shape {inp.shape} but target has shape {target.shape}; "
                         f"they must match")


def _check_broadcasts_to(v, shape, what, name):
    """An elementwise weight must broadcast to the input's shape (the loss keeps that shape)."""
    if v is None:
        return
    if not hasattr(v, "shape"):
        raise TypeError(f"{name}: {what} must be a tensor or None, got {type(v).__name__}")
    try:
        ok = np.broadcast_shapes(v.shape, shape) == tuple(shape)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{name}: {what} of shape {v.shape} does not broadcast to the input's shape {shape}")


# ---- shape rules (the meta device) and FLOP counts ----------------------------------------------------
def _pointwise_meta(name):
    """mse_loss / l1_loss: same-shape input and target."""

    def rule(inp, target, reduction="mean"):
        _check_reduction(reduction)
        _check_same_shape(inp, target, name)
        return M.loss(inp, target, reduction=reduction)

    return rule


def _bce_meta(p, target, weight=None, reduction="mean"):
    _check_reduction(reduction)
    _check_same_shape(p, target, "binary_cross_entropy")
    _check_broadcasts_to(weight, p.shape, "weight", "binary_cross_entropy")
    return M.loss(p, target, reduction=reduction)


def _bce_logits_meta(x, target, weight=None, pos_weight=None, reduction="mean"):
    _check_reduction(reduction)
    _check_same_shape(x, target, "binary_cross_entropy_with_logits")
    _check_broadcasts_to(weight, x.shape, "weight", "binary_cross_entropy_with_logits")
    _check_broadcasts_to(pos_weight, x.shape, "pos_weight", "binary_cross_entropy_with_logits")
    return M.loss(x, target, reduction=reduction)


def _per_target_meta(inp, reduction):
    """cross_entropy / nll_loss: one loss per target position, (N, d1, ...) or () for a (C,) input."""
    if reduction == "none":
        return MetaArray((inp.shape[0],) + tuple(inp.shape[2:]) if inp.ndim >= 2 else (), np.float32)
    return MetaArray((), np.float32)


def _cross_entropy_meta(logits, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    _check_cross_entropy(logits, target, weight, reduction, label_smoothing)
    return _per_target_meta(logits, reduction)


def _nll_meta(logp, target, weight=None, ignore_index=-100, reduction="mean"):
    _check_nll(logp, target, weight, reduction)
    return _per_target_meta(logp, reduction)


def _kl_div_meta(inp, target, reduction="mean", log_target=False):
    _check_reduction(reduction, _REDUCTIONS + ("batchmean",))
    _check_same_shape(inp, target, "kl_div")
    return MetaArray(inp.shape if reduction == "none" else (), np.float32)


def _saved_difference(ctx, inp, target, reduction, name):
    """mse_loss and l1_loss: checks the arguments, saves d = inp - target and the reduction for
    backward and returns d."""
    _check_reduction(reduction)
    _check_same_shape(inp, target, name)
    d = inp - target
    ctx.save_for_backward(d)
    ctx.reduction = reduction
    return d


def _nll_flops(out, inputs, kwargs) -> int:
    """Per target: a gather, a multiply by the class weight and the sum (the gather counted free)."""
    return 2 * inputs[1].size


# d = x - t, d * d, the sum: 3 FLOPs per element
@register_op("mse_loss", meta=_pointwise_meta("mse_loss"), flops=M.per_input_element(3), samples=LS.mse_samples,
             torch=LS.mse_torch, bad_inputs=LS.pointwise_bad_inputs("target"))
class MSELossFunction(Function):
    @staticmethod
    def forward(ctx, inp, target, reduction="mean"):
        d = _saved_difference(ctx, inp, target, reduction, "mse_loss")
        return _reduce(d * d, reduction)

    @staticmethod
    def backward(ctx, g):
        (d,) = ctx.saved_tensors
        gi = 2 * d * _reduce_grad(g, d.shape, ctx.reduction)
        return gi, (-gi if ctx.needs_input_grad[1] else None)


# d = x - t, |d|, the sum: 3 FLOPs per element
@register_op("l1_loss", meta=_pointwise_meta("l1_loss"), flops=M.per_input_element(3), samples=LS.l1_samples,
             torch=LS.l1_torch, bad_inputs=LS.pointwise_bad_inputs("target"))
class L1LossFunction(Function):
    @staticmethod
    def forward(ctx, inp, target, reduction="mean"):
        d = _saved_difference(ctx, inp, target, reduction, "l1_loss")
        return _reduce(np.abs(d), reduction)

    @staticmethod
    def backward(ctx, g):
        (d,) = ctx.saved_tensors
        gi = (np.sign(d) * _reduce_grad(g, d.shape, ctx.reduction)).astype(_dt(d))
        return gi, (-gi if ctx.needs_input_grad[1] else None)


# log p, log(1 - p) (4 each, as the transcendental activations), 1 - p, 1 - t, two products, the
# add, the negation and the reduction: 15 FLOPs per element (a weight adds 1, not counted)
@register_op("binary_cross_entropy", meta=_bce_meta, flops=M.per_input_element(15), samples=LS.bce_samples,
             torch=LS.bce_torch, bad_inputs=LS.bce_bad_inputs)
class BinaryCrossEntropyFunction(Function):
    """On probabilities; log terms clamped at -100 as torch does."""

    @staticmethod
    def forward(ctx, p, target, weight=None, reduction="mean"):
        _check_reduction(reduction)
        _check_same_shape(p, target, "binary_cross_entropy")
        _check_broadcasts_to(weight, p.shape, "weight", "binary_cross_entropy")
        if np.any((p < 0) | (p > 1)):
            raise ValueError("binary_cross_entropy: all elements of input should be between 0 and 1")
        with np.errstate(divide="ignore"):
            lp = np.maximum(np.log(p), -100)
            l1p = np.maximum(np.log1p(-p), -100)
        loss = -(target * lp + (1 - target) * l1p)
        if weight is not None:
            loss = loss * weight
        ctx.save_for_backward(p, target, weight)
        ctx.reduction = reduction
        return _reduce(loss, reduction)

    @staticmethod
    def backward(ctx, g):
        p, t, w = ctx.saved_tensors
        gr = _reduce_grad(g, p.shape, ctx.reduction)
        gi = (p - t) / np.maximum(p * (1 - p), 1e-12) * gr
        if w is not None:
            gi = gi * w
        gt = None
        if ctx.needs_input_grad[1]:
            with np.errstate(divide="ignore"):
                gt = -(np.maximum(np.log(p), -100) - np.maximum(np.log1p(-p), -100)) * gr
            if w is not None:
                gt = gt * w
            gt = gt.astype(_dt(p))
        return gi.astype(_dt(p)), gt


# -|x| (2), exp and log1p (4 each), max(-x, 0) (2), their add, (1 - t) * x + ... (3) and the
# reduction: 17 FLOPs per element (weight / pos_weight add 1-3, not counted)
@register_op("binary_cross_entropy_with_logits", meta=_bce_logits_meta, flops=M.per_input_element(17),
             samples=LS.bce_logits_samples, torch=LS.bce_logits_torch, bad_inputs=LS.bce_logits_bad_inputs)
class BinaryCrossEntropyWithLogitsFunction(Function):
    @staticmethod
    def forward(ctx, x, target, weight=None, pos_weight=None, reduction="mean"):
        _check_reduction(reduction)
        _check_same_shape(x, target, "binary_cross_entropy_with_logits")
        _check_broadcasts_to(weight, x.shape, "weight", "binary_cross_entropy_with_logits")
        _check_broadcasts_to(pos_weight, x.shape, "pos_weight", "binary_cross_entropy_with_logits")
        # log(1 + exp(-|x|)) + max(-x, 0) = -log(sigmoid(x)), computed without overflow
        log_sig_neg = np.log1p(np.exp(-np.abs(x))) + np.maximum(-x, 0)
        if pos_weight is None:
            loss = (1 - target) * x + log_sig_neg
        else:
            lw = 1 + (pos_weight - 1) * target
            loss = (1 - target) * x + lw * log_sig_neg
        if weight is not None:
            loss = loss * weight
        ctx.save_for_backward(x, target, weight, pos_weight)
        ctx.reduction = reduction
        return _reduce(loss, reduction)

    @staticmethod
    def backward(ctx, g):
        x, t, w, pw = ctx.saved_tensors
        e = np.exp(-np.abs(x))
        sig = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
        gr = _reduce_grad(g, x.shape, ctx.reduction)
        if pw is None:
            d = sig - t
        else:
            d = sig * (pw * t + 1 - t) - pw * t
        gi = d * gr
        if w is not None:
            gi = gi * w
        gt = None
        if ctx.needs_input_grad[1]:
            log_sig_neg = np.log1p(e) + np.maximum(-x, 0)
            # d/dt [(1 - t) x + (1 + (pw - 1) t) * log_sig_neg]
            gt = -x if pw is None else -x + (pw - 1) * log_sig_neg
            gt = gt * gr
            if w is not None:
                gt = gt * w
            gt = gt.astype(_dt(x))
        return gi.astype(_dt(x)), gt


def _classes_last(x):
    """(N, C, d1, ...) -> (N*d1*..., C); (N, C) stays; (C,) -> (1, C)."""
    if x.ndim == 1:
        return x[None, :]
    if x.ndim == 2:
        return x
    return np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])


def _classes_back(g2, shape):
    if len(shape) == 1:
        return g2[0]
    if len(shape) == 2:
        return g2
    moved = (shape[0],) + tuple(shape[2:]) + (shape[1],)
    return np.moveaxis(g2.reshape(moved), -1, 1)


def _log_softmax_rows(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _check_index_target(inp, target, name):
    if target.dtype.kind not in "iu":
        raise TypeError(f"{name}: class-index target must be an integer tensor, got dtype {target.dtype}")
    want = (inp.shape[0],) + tuple(inp.shape[2:]) if inp.ndim >= 2 else ()
    if target.shape != want:
        raise ValueError(f"{name}: target must have shape {want} for input of shape {inp.shape}, got {target.shape}")


def _num_classes(inp, name) -> int:
    if inp.ndim == 0:
        raise ValueError(f"{name}: input must have at least 1 dimension (classes), got a 0-d tensor")
    return inp.shape[1] if inp.ndim >= 2 else inp.shape[0]


def _check_class_weight(weight, C, name):
    if weight is not None and weight.shape != (C,):
        raise ValueError(f"{name}: weight must have shape ({C},) (one per class), got {weight.shape}")


def _check_cross_entropy(logits, target, weight, reduction, label_smoothing) -> int:
    """The checks of cross_entropy that need no values (shared by the forward and the shape rule)."""
    _check_reduction(reduction)
    C = _num_classes(logits, "cross_entropy")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    _check_class_weight(weight, C, "cross_entropy")
    if target.dtype.kind == "f":
        if target.shape != logits.shape:
            raise ValueError(f"cross_entropy: probability target must have the input's shape {logits.shape}, "
                             f"got {target.shape}")
    else:
        _check_index_target(logits, target, "cross_entropy")
    return C


def _check_nll(logp, target, weight, reduction) -> int:
    _check_reduction(reduction)
    C = _num_classes(logp, "nll_loss")
    _check_class_weight(weight, C, "nll_loss")
    _check_index_target(logp, target, "nll_loss")
    return C


def _div(a: float, b: float) -> float:
    """a / b with IEEE results for b == 0 (torch's mean over zero total weight is nan or inf)."""
    if b != 0.0:
        return a / b
    return math.nan if a == 0.0 or math.isnan(a) else math.copysign(math.inf, a)


def _cross_entropy_kernel_forward(ctx, logits, target, weight, ignore_index, reduction, label_smoothing):
    """Class-index targets through the fused C++ kernel, which saves the softmax for backward."""
    z = logits if logits.ndim == 2 else _classes_last(logits)
    y = target.reshape(-1)
    per, prob, loss_sum, denom = _KL.cross_entropy_forward(z, y, weight, ignore_index, label_smoothing)
    ctx.mode = "kernel"
    ctx.ignore_index, ctx.label_smoothing, ctx.denom = ignore_index, label_smoothing, denom
    ctx.save_for_backward(prob, y, weight)
    if reduction == "none":
        return per.reshape((logits.shape[0],) + logits.shape[2:] if logits.ndim >= 2 else ())
    return np.asarray(loss_sum if reduction == "sum" else _div(loss_sum, denom), np.float32)


# per logit: log-softmax (max, subtract, exp, sum, log: 5, as ops.activation's log_softmax); the
# target's pick and weight are per row and not counted
@register_op("cross_entropy", meta=_cross_entropy_meta, flops=M.per_input_element(5),
             samples=LS.cross_entropy_samples, torch=LS.cross_entropy_torch, bad_inputs=LS.cross_entropy_bad_inputs)
class CrossEntropyFunction(Function):
    """Softmax + negative log-likelihood over dim 1, fused. Targets are class indices (int64) or
    class probabilities (float, same shape as input; they and the class weight then get gradients,
    as in torch)."""

    @staticmethod
    def forward(ctx, logits, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        C = _check_cross_entropy(logits, target, weight, reduction, label_smoothing)
        ctx.shape, ctx.reduction, ctx.C = logits.shape, reduction, C
        ctx.has_weight = weight is not None
        if (target.dtype.kind in "iu" and logits.dtype == np.float32
                and (weight is None or weight.dtype == np.float32)):
            return _cross_entropy_kernel_forward(ctx, logits, target, weight, ignore_index, reduction,
                                                 label_smoothing)
        # numpy path: probability targets (and non-float32 logits)
        dt = _dt(logits)  # float64 logits: the loss in float64 (torch's double kernel), else float32
        _same_float_dtype("cross_entropy", logits, target, weight)
        z = _classes_last(logits).astype(dt, copy=False)
        eps = dt.type(label_smoothing)
        ctx.eps, ctx.dt = eps, dt
        logp = _log_softmax_rows(z)
        w = np.ones(C, dt) if weight is None else weight.astype(dt)
        if target.dtype.kind == "f":  # class probabilities
            t = _classes_last(target).astype(dt, copy=False)
            if eps > 0:
                t = t * (1 - eps) + eps / C
            per = -(t * w * logp).sum(axis=1)
            ctx.mode = "prob"
            ctx.save_for_backward(logp, t, w)
            denom = dt.type(per.shape[0])
        else:
            y = target.reshape(-1)
            valid = y != ignore_index
            if np.any(valid & ((y < 0) | (y >= C))):
                bad = y[valid & ((y < 0) | (y >= C))][0]
                raise IndexError(f"cross_entropy: target {bad} is out of bounds for {C} classes")
            ys = np.where(valid, y, 0)
            wy = np.where(valid, w[ys], 0).astype(dt)
            nll = -logp[np.arange(len(ys)), ys] * wy
            per = (1 - eps) * nll
            if eps > 0:
                smooth = -(logp * w).sum(axis=1) * valid
                per = per + eps / C * smooth
            ctx.mode = "index"
            ctx.save_for_backward(logp, ys, valid, wy, w)
            denom = wy.sum(dtype=dt)
        ctx.denom = denom
        if reduction == "none":
            out_shape = (logits.shape[0],) + tuple(logits.shape[2:]) if logits.ndim >= 2 else ()
            return per.reshape(out_shape).astype(dt)
        total = per.sum(dtype=dt)
        if reduction == "sum":
            return np.asarray(total, dt)
        return np.asarray(total / denom, dt)

    @staticmethod
    def backward(ctx, g):
        if ctx.mode == "kernel":
            prob, y, weight = ctx.saved_tensors
            grad_loss, scale = None, 1.0
            if ctx.reduction == "none":
                grad_loss = np.ascontiguousarray(g, dtype=np.float32).reshape(-1)
            elif ctx.reduction == "sum":
                scale = float(g)
            else:
                scale = _div(float(g), ctx.denom)
            d = _KL.cross_entropy_backward(prob, y, weight, ctx.ignore_index, ctx.label_smoothing, grad_loss, scale)
            return _classes_back(d, ctx.shape), None, None
        n = None
        if ctx.mode == "prob":
            logp, t, w = ctx.saved_tensors
            n = logp.shape[0]
        else:
            logp, ys, valid, wy, w = ctx.saved_tensors
            n = logp.shape[0]
        dt = ctx.dt
        if ctx.reduction == "none":
            a = np.asarray(g, dt).reshape(n, 1)
        elif ctx.reduction == "sum":
            a = dt.type(g)
        else:
            a = dt.type(g) / ctx.denom
        p = np.exp(logp)
        gt = gw = None
        if ctx.mode == "prob":
            d = p * (t * w).sum(axis=1, keepdims=True) - w * t
            needs = ctx.needs_input_grad
            if len(needs) > 1 and needs[1]:  # d loss / d target: -w * logp, through the smoothing
                gt = _classes_back((-(1 - ctx.eps) * w * logp * a).astype(dt), ctx.shape)
            if len(needs) > 2 and needs[2]:  # d loss / d weight_c: -sum over rows of t_c * logp_c
                gw = (-(t * logp * a).sum(axis=0)).astype(dt)
        else:
            eps, C = ctx.eps, ctx.C
            coef = (1 - eps) * wy + (eps / C) * w.sum() * valid
            d = p * coef[:, None]
            d[np.arange(n), ys] -= (1 - eps) * wy
            if eps > 0:
                d -= (eps / C) * w[None, :] * valid[:, None]
        d = (d * a).astype(dt)
        return _classes_back(d, ctx.shape), gt, gw


@register_op("nll_loss", meta=_nll_meta, flops=_nll_flops, samples=LS.nll_samples, torch=LS.nll_torch,
             bad_inputs=LS.nll_bad_inputs)
class NLLLossFunction(Function):
    """Negative log-likelihood on log-probabilities (class dim 1), class-index targets."""

    @staticmethod
    def forward(ctx, logp, target, weight=None, ignore_index=-100, reduction="mean"):
        C = _check_nll(logp, target, weight, reduction)
        lp = _classes_last(logp)
        y = target.reshape(-1)
        valid = y != ignore_index
        if np.any(valid & ((y < 0) | (y >= C))):
            raise IndexError(f"nll_loss: target out of bounds for {C} classes")
        ys = np.where(valid, y, 0)
        dt = _dt(logp)
        _same_float_dtype("nll_loss", logp, weight)
        w = np.ones(C, dt) if weight is None else weight.astype(dt)
        wy = np.where(valid, w[ys], 0).astype(dt)
        per = -lp[np.arange(len(ys)), ys] * wy
        ctx.save_for_backward(ys, wy)
        ctx.shape, ctx.reduction, ctx.dt = logp.shape, reduction, dt
        ctx.denom = wy.sum(dtype=dt)
        if reduction == "none":
            out_shape = (logp.shape[0],) + tuple(logp.shape[2:]) if logp.ndim >= 2 else ()
            return per.reshape(out_shape).astype(dt)
        total = per.sum(dtype=dt)
        return np.asarray(total if reduction == "sum" else total / ctx.denom, dt)

    @staticmethod
    def backward(ctx, g):
        ys, wy = ctx.saved_tensors
        n, dt = ys.shape[0], ctx.dt
        if ctx.reduction == "none":
            a = np.asarray(g, dt).reshape(n)
        elif ctx.reduction == "sum":
            a = dt.type(g)
        else:
            a = dt.type(g) / ctx.denom
        C = ctx.shape[1] if len(ctx.shape) >= 2 else ctx.shape[0]
        d = np.zeros((n, C), dt)
        d[np.arange(n), ys] = -wy * a
        return _classes_back(d, ctx.shape), None, None


# log t (4), log t - x, the product with t and the reduction: 7 FLOPs per element
@register_op("kl_div", meta=_kl_div_meta, flops=M.per_input_element(7), samples=LS.kl_div_samples,
             torch=LS.kl_div_torch, bad_inputs=LS.kl_div_bad_inputs)
class KLDivFunction(Function):
    """kl_div(input, target): input holds log-probabilities; target probabilities (or
    log-probabilities with log_target=True). reduction also accepts 'batchmean'."""

    @staticmethod
    def forward(ctx, inp, target, reduction="mean", log_target=False):
        _check_reduction(reduction, _REDUCTIONS + ("batchmean",))
        log_target = check_bool(log_target, "kl_div: log_target")  # not truthiness: 'False' is no bool
        _check_same_shape(inp, target, "kl_div")
        if log_target:
            pt = np.exp(target)
            loss = pt * (target - inp)
        else:
            # torch's xlogy(target, target) - target * input: 0 log 0 is 0, but a negative or NaN
            # target gives NaN (not 0), and 0 * inf input NaN
            with np.errstate(divide="ignore", invalid="ignore"):
                xlogx = np.where(target == 0, 0, target * np.log(np.where(target == 0, 1, target)))
                loss = xlogx - target * inp
        ctx.save_for_backward(inp, target)
        ctx.reduction, ctx.log_target = reduction, log_target
        if reduction == "batchmean":
            n = inp.shape[0] if inp.ndim else 1
            dt = _dt(loss)
            return np.asarray(loss.sum(dtype=dt) / dt.type(n), dt)
        return _reduce(loss, reduction)

    @staticmethod
    def backward(ctx, g):
        inp, target = ctx.saved_tensors
        if ctx.reduction == "batchmean":
            n = inp.shape[0] if inp.ndim else 1
            dt = _dt(g)
            gr = np.broadcast_to(dt.type(g) / dt.type(n), inp.shape)
        else:
            gr = _reduce_grad(g, inp.shape, ctx.reduction)
        pt = np.exp(target) if ctx.log_target else target
        gi = (-pt * gr).astype(_dt(inp))
        gt = None
        if ctx.needs_input_grad[1]:
            if ctx.log_target:
                gt = pt * (target - inp + 1) * gr
            else:
                with np.errstate(divide="ignore", invalid="ignore"):
                    gt = np.where(target == 0, 0, np.log(np.where(target == 0, 1, target)) + 1 - inp) * gr
            gt = gt.astype(_dt(target))
        return gi, gt


# ---- cuda ------------------------------------------------------------------------------------------------
# Losses on DeviceArrays (cuda/softmax_loss.cu; the sums of the reductions through cuda/reduce.cu in a
# fixed order). softmax / log_softmax (ops.activation) register here too: cross entropy shares their row
# kernels. The kernels cannot raise: an out-of-range class index gives a NaN loss and gradient on cuda
# where the CPU raises IndexError. Never run on a GPU yet.
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
            d = CN.pw("add", CN.pw("sub", target if ctx.log_target else CN.pw("log", target), inp), 1.0)
            if ctx.log_target:
                d = CN.pw("mul", pt, d)
            else:
                d = K.where(K.compare("eq", target, 0.0), 0.0, d)
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
