"""Loss functions with PyTorch's semantics (reductions 'mean' | 'sum' | 'none').

Each Function is an op record (ops.registry); its shape rule is here, next to the checks it shares
with the forward, and its samples, torch reference and bad inputs are in loss_samples.py.
"""
from __future__ import annotations

import math

import numpy as np

from ..autograd import Function
from .._validate import check_bool, check_int
from ..devices import MetaArray
from ..kernels import loss as _KL
from . import _meta as M
from . import loss_samples as LS
from ._util import sign0
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
    # torch's mse_loss reads input and target in backward, so it refuses them written in place since: they
    # are kept for that check (their tensors hold them anyway); backward reads d. l1_loss is torch's
    # composite of sub and abs, which keeps the difference only
    ctx.save_for_backward(d, inp, target) if name == "mse_loss" else ctx.save_for_backward(d)
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
        d = ctx.saved_tensors[0]
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
        # torch's sign(NaN) is 0 (its gradient of abs at NaN is 0); numpy's is NaN
        gi = (sign0(d) * _reduce_grad(g, d.shape, ctx.reduction)).astype(_dt(d))
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
            # torch: -logit(p), unclamped (inf at p = 0, so a zero weight there gives NaN)
            with np.errstate(divide="ignore", invalid="ignore"):
                gt = -np.log(p / (1 - p)) * gr
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
            # d/dt [(1 - t) x + (1 + (pw - 1) t) * log_sig_neg], as torch writes it: log_sigmoid(-x) -
            # pw * log_sigmoid(x) (so an inf pos_weight at x = inf gives NaN, as torch's)
            if pw is None:
                gt = -x
            else:
                l1e = np.log1p(e)
                gt = (np.minimum(-x, 0) - l1e) + pw * (np.maximum(-x, 0) + l1e)
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
    if weight is not None and not hasattr(weight, "shape"):  # a number (the op's call lets it through)
        raise TypeError(f"{name}: weight must be a tensor of shape ({C},) or None, got {type(weight).__name__}")
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
            # an ignored row's loss is 0 even where its logits are NaN / inf (torch's masked_fill)
            nll = np.where(valid, -logp[np.arange(len(ys)), ys] * wy, 0)
            per = (1 - eps) * nll
            if eps > 0:
                smooth = np.where(valid, -(logp * w).sum(axis=1), 0)
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
            # as the C++ kernel: an ignored row's upstream gradient is 0, yet (torch's g - p * sum g) it still
            # meets p and, with smoothing, the class weights, so a NaN there stays NaN
            coef = (1 - eps) * wy + ((eps / C) * w.sum() if eps > 0 else 0)
            d = p * coef[:, None]
            d[np.arange(n), ys] -= (1 - eps) * wy
            if eps > 0:
                d -= (eps / C) * w[None, :]
            a = np.where(valid[:, None], a, 0)  # 0, not 0 * the infinite scale of a mean over no row
        d = (d * a).astype(dt)
        return _classes_back(d, ctx.shape), gt, gw


@register_op("nll_loss", meta=_nll_meta, flops=_nll_flops, samples=LS.nll_samples, torch=LS.nll_torch,
             bad_inputs=LS.nll_bad_inputs)
class NLLLossFunction(Function):
    """Negative log-likelihood on log-probabilities (class dim 1), class-index targets."""

    @staticmethod
    def forward(ctx, logp, target, weight=None, ignore_index=-100, reduction="mean"):
        ignore_index = check_int(ignore_index, "nll_loss: ignore_index")  # 1.0 is no class index (torch)
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
        # ignored positions contribute 0 (not 0 * their log-probability: an infinite one made NaN)
        picked = np.where(valid, lp[np.arange(len(ys)), ys], 0)
        per = np.where(valid, -picked * wy, 0).astype(dt, copy=False)
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
                # torch differentiates xlogy(t, t) in both arguments: xlogy(t != 0, t) + t / t, so t = 0 or
                # +-inf gives NaN (0 / 0, inf / inf)
                with np.errstate(divide="ignore", invalid="ignore"):
                    lt = np.where(target == 0, 0, np.log(np.where(target == 0, 1, target)))
                    gt = (lt + target / target - inp) * gr
            gt = gt.astype(_dt(target))
        return gi, gt
