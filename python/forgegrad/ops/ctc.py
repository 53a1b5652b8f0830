"""ctc_loss: connectionist temporal classification (Graves et al. 2006), torch.nn.functional.ctc_loss.

``ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean", zero_infinity=False)``

- log_probs (T, N, C) log-probabilities (log_softmax over C), or (T, C) for one unbatched sample;
  float32 or float64 (the recursions run in float64 either way, on the C++ kernel _C.ctc);
- targets: padded (N, S) or concatenated (sum(target_lengths),) class indices, never the blank;
- input_lengths / target_lengths: an integer tensor, or a tuple / list of ints, one per sample;
- reduction "mean" divides each sample's loss by its target length (at least 1), then averages over the
  batch (torch's rule); "sum"; "none" gives (N,) (a 0-d tensor unbatched);
- zero_infinity: a sample no alignment fits (its target needs more steps than its input has) costs inf;
  True makes that loss and its gradient 0.

The gradient w.r.t. log_probs is torch's: ``exp(lp) - exp(log(sum alpha * beta) + nll - lp)`` per step and
class (what a log_softmax before the loss turns into the gradient of the logits), 0 past each input length.
Unlike torch, a target equal to the blank, or outside [0, C), is an error (torch computes with it or
reads outside its arrays), and so are floating-point targets (torch truncates them).
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from .._validate import check_bool, check_int
from ..devices import MetaArray
from ..kernels import ctc as _K
from ._samples import rand
from .loss import _check_reduction
from .registry import BadInput, Sample, register_op


def _check_log_probs(log_probs):
    if log_probs.dtype not in (np.float32, np.float64):
        raise TypeError(f"ctc_loss: log_probs must be a float32 or float64 tensor, got dtype {log_probs.dtype}")
    if log_probs.ndim not in (2, 3):
        raise ValueError(f"ctc_loss: log_probs must be (T, N, C) or unbatched (T, C), got shape {log_probs.shape}")


def _check_targets(targets, batched):
    if targets.dtype.kind not in "iu":
        raise TypeError(f"ctc_loss: targets must be an integer tensor of class indices, got dtype {targets.dtype}")
    if targets.ndim not in ((1, 2) if batched else (1,)):
        raise ValueError(f"ctc_loss: targets must be padded (N, S) or concatenated (sum(target_lengths),)"
                         f"{'' if batched else ' (unbatched: (S,))'}, got shape {targets.shape}")


def _lengths(v, n, name):
    """input_lengths / target_lengths as int64 (n,): an integer array (a tensor's), a tuple or list of ints,
    or an int. A meta array is checked for its dtype and size only."""
    if isinstance(v, (np.ndarray, MetaArray)):
        if v.dtype.kind not in "iu":
            raise TypeError(f"ctc_loss: {name} must be an integer tensor, got dtype {v.dtype}")
        if v.ndim > 1 or v.size != n:
            raise ValueError(f"ctc_loss: {name} must hold one length per sample ({n}), got shape {v.shape}")
        if isinstance(v, MetaArray):
            return v
        if v.dtype == np.uint64 and v.size and v.max() > np.iinfo(np.int64).max:
            raise ValueError(f"ctc_loss: {name} holds {v.max()}, past int64")
        return np.ascontiguousarray(v.reshape(n), np.int64)
    if isinstance(v, (tuple, list)):
        a = np.array([check_int(x, f"ctc_loss: {name}[{i}]") for i, x in enumerate(v)], np.int64)
    elif isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
        a = np.array([check_int(v, f"ctc_loss: {name}")], np.int64)
    else:
        raise TypeError(f"ctc_loss: {name} must be an integer tensor or a tuple / list of ints, got "
                        f"{type(v).__name__}")
    if a.shape != (n,):
        raise ValueError(f"ctc_loss: {name} must hold one length per sample ({n}), got {a.size}")
    return a


def _check(log_probs, targets, input_lengths, target_lengths, blank, reduction, zero_infinity):
    """The checks that need no values (shared with the shape rule); returns (N, C, batched, il, tl, blank)."""
    _check_log_probs(log_probs)
    batched = log_probs.ndim == 3
    _check_targets(targets, batched)
    _check_reduction(reduction)
    check_bool(zero_infinity, "ctc_loss: zero_infinity")
    n = log_probs.shape[1] if batched else 1
    c = log_probs.shape[-1]
    blank = check_int(blank, "ctc_loss: blank")
    if not 0 <= blank < c:
        raise ValueError(f"ctc_loss: blank must be a class index in [0, {c}) (log_probs has {c} classes), got {blank}")
    return (n, c, batched, _lengths(input_lengths, n, "input_lengths"),
            _lengths(target_lengths, n, "target_lengths"), blank)


def _meta(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean", zero_infinity=False):
    n, _, batched, _, _, _ = _check(log_probs, targets, input_lengths, target_lengths, blank, reduction, zero_infinity)
    return MetaArray((n,) if reduction == "none" and batched else (), log_probs.dtype)


def _flops(out, inputs, kwargs) -> int:
    """Per state of the extended label sequences and step: the forward's and backward's log-sum-exp (3 exp
    and a log, 4 each as the transcendental activations, plus 6 adds: 22 each), the backward's per-class
    sums (log and 2 exp: 12); per log_probs entry the gradient's 2 exp and 3 adds (11)."""
    log_probs, targets = inputs[0], inputs[1]
    t = log_probs.shape[0]
    n = log_probs.shape[1] if log_probs.ndim == 3 else 1
    states = 2 * targets.size + n  # 2 S + 1 per sample (padded: an upper bound)
    return int(t * states * (22 + 22 + 12) + log_probs.size * 11)


def _per_sample_grad(g, reduction, tl, n):
    """The upstream gradient of each sample's nll (float64 (n,)) under the reduction."""
    if reduction == "none":
        return np.ascontiguousarray(np.asarray(g, np.float64).reshape(n))
    g = float(np.asarray(g))
    if reduction == "sum":
        return np.full(n, g)
    return g / np.maximum(tl, 1).astype(np.float64) / n


def _forward(log_probs, targets, input_lengths, target_lengths, blank, reduction, zero_infinity, keep_alpha):
    """(loss in log_probs' dtype, the kernel's arguments, nll, alpha)."""
    n, c, batched, il, tl, blank = _check(log_probs, targets, input_lengths, target_lengths, blank, reduction,
                                          zero_infinity)
    lp3 = log_probs if batched else log_probs.reshape(log_probs.shape[0], 1, c)
    nll, alpha = _K.ctc_forward(lp3, targets, il, tl, blank, keep_alpha)
    dt = log_probs.dtype
    per = nll
    if zero_infinity:  # an nll that rounds to inf in the input's dtype is infinite (torch's float32 loss is)
        per = np.where(nll.astype(dt) == np.inf, 0.0, nll)
    if reduction == "none":
        loss = per.astype(dt) if batched else per.astype(dt).reshape(())
    else:  # reduced in float64, then rounded once (a sum of float32 losses may not fit where its mean does)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # an empty batch: nan, as torch's mean
            total = per.sum() if reduction == "sum" else (per / np.maximum(tl, 1)).sum() / n
            loss = np.asarray(total, dt)
    return loss, (lp3, targets, il, tl, blank), nll, alpha


class CTCLossFunction(Function):
    """CTC loss of log_probs against the targets; see the module docstring."""

    @staticmethod
    def forward(ctx, log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean",
                zero_infinity=False):
        loss, args, nll, alpha = _forward(log_probs, targets, input_lengths, target_lengths, blank, reduction,
                                          zero_infinity, keep_alpha=bool(ctx.needs_input_grad[0]))
        ctx.save_for_backward(log_probs)
        ctx.args, ctx.nll, ctx.alpha = args, nll, alpha
        ctx.reduction, ctx.zero_infinity, ctx.shape = reduction, bool(zero_infinity), log_probs.shape
        return loss

    @staticmethod
    def backward(ctx, g):
        lp3, y, il, tl, blank = ctx.args
        gr = _per_sample_grad(g, ctx.reduction, tl, lp3.shape[1])
        grad = _K.ctc_backward(lp3, y, il, tl, ctx.nll, ctx.alpha, gr, blank, ctx.zero_infinity)
        return (grad.reshape(ctx.shape),) + (None,) * (len(ctx.needs_input_grad) - 1)


def _inference(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean", zero_infinity=False):
    """No graph: the forward alone, without keeping the forward variables."""
    return _forward(log_probs, targets, input_lengths, target_lengths, blank, reduction, zero_infinity,
                    keep_alpha=False)[0]


# ---- samples, the torch reference, bad inputs ------------------------------------------------------------
def _log_probs(*shape, seed=0):
    z = rand(*shape, seed=seed, low=-3.0, high=3.0).astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return (z - np.log(np.exp(z).sum(axis=-1, keepdims=True))).astype(np.float32)


def _i64(*values):
    return np.array(values, np.int64)


def _samples():
    lp = _log_probs(13, 3, 7)
    # labels that repeat (1 1, 3 3) need a blank between them; sample 2 is shorter than its input
    padded = _i64([1, 1, 2, 3, 3], [4, 5, 6, 0, 0], [2, 6, 2, 5, 0])
    il, tl = _i64(13, 11, 9), _i64(5, 3, 4)
    concat = _i64(1, 1, 2, 4, 4, 5, 6, 2, 2, 2, 1)  # for blank=3: no 3
    # sample 1's target needs 2 * 4 - 1 = 7 steps (a blank between its repeats) and has 6: no alignment
    infeasible = (_i64([3, 4, 4, 1], [2, 2, 2, 2], [5, 1, 0, 0]), _i64(13, 6, 4), _i64(4, 4, 2))
    rng = np.random.default_rng(3)
    big_tl = rng.integers(0, 11, 8)
    big = _i64(*rng.integers(1, 11, int(big_tl.sum())))
    return [
        Sample((lp, padded, il, tl), name="padded, mean"),
        Sample((lp, concat, il, _i64(5, 3, 3)), {"blank": 3, "reduction": "sum"},
               name="concatenated, blank=3, sum"),
        Sample((lp,) + infeasible, {"reduction": "none"}, name="infeasible target: inf loss, NaN gradient"),
        Sample((lp,) + infeasible, {"reduction": "mean", "zero_infinity": True}, name="infeasible, zero_infinity"),
        Sample((lp, padded, _i64(13, 0, 7), _i64(3, 0, 0)), {"reduction": "none"},
               name="empty input and empty targets"),
        Sample((lp[:, 0], _i64(1, 1, 2, 6), _i64(13), _i64(4)), {"reduction": "none"}, name="unbatched"),
        Sample((lp, padded, (13, 11, 9), [5, 3, 4]), {"reduction": "sum", "zero_infinity": True},
               name="lengths as tuple and list"),
        Sample((_log_probs(50, 8, 11, seed=1), big, rng.integers(30, 51, 8), big_tl), {"blank": 0},
               name="N=8 (threads)"),
    ]


def _torch(torch, log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean", zero_infinity=False):
    return torch.nn.functional.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=blank,
                                        reduction=reduction, zero_infinity=zero_infinity)


def _bad_inputs():
    lp = _log_probs(13, 3, 7)
    y, il, tl = _i64([1, 2, 3], [4, 5, 6], [1, 1, 1]), _i64(13, 12, 11), _i64(3, 2, 3)
    return [BadInput((lp, y, il, tl), {"blank": 7}, ValueError, "blank"),
            BadInput((lp, y, il, tl), {"blank": 1}, ValueError, "targets must not contain the blank"),
            BadInput((lp, y, il, tl), {"blank": 1.0}, TypeError, "blank"),
            BadInput((lp, _i64([1, 2, 9], [1, 1, 1], [1, 1, 1]), il, tl), {}, ValueError, "targets"),
            BadInput((lp, y, _i64(13, 14, 2), tl), {}, ValueError, "input_lengths"),
            BadInput((lp, y, il, _i64(3, 4, 1)), {}, ValueError, "target_lengths"),
            BadInput((lp, y, il, _i64(3, -1, 1)), {}, ValueError, "target_lengths"),
            BadInput((lp, y[0], il, tl), {}, ValueError, "target_lengths"),
            BadInput((lp, y.astype(np.float32), il, tl), {}, TypeError, "targets"),
            BadInput((lp, y, il.astype(np.float32), tl), {}, TypeError, "input_lengths"),
            BadInput((lp, y, "13", tl), {}, TypeError, "input_lengths"),
            BadInput((lp, y, il, (3, 2)), {}, ValueError, "target_lengths"),
            BadInput((lp, y, il, (3, 2.5, 1)), {}, TypeError, "target_lengths"),
            BadInput((lp, y, il, tl), {"reduction": "batchmean"}, ValueError, "reduction"),
            BadInput((lp, y, il, tl), {"zero_infinity": "yes"}, TypeError, "zero_infinity"),
            BadInput((lp[0], y, il, tl), {}, ValueError, "targets"),
            BadInput((lp[None], y, il, tl), {}, ValueError, "log_probs"),
            BadInput((y, y, il, tl), {}, TypeError, "log_probs")]


register_op("ctc_loss", meta=_meta, flops=_flops, samples=_samples, torch=_torch, bad_inputs=_bad_inputs,
            inference={"cpu": _inference},
            gaps={"onnx": "ONNX has no CTC loss operator (the alignment recursion over time would be a Loop); "
                          "a training loss, not exported"})(CTCLossFunction)
CTCLossFunction.op.float64 = CTCLossFunction  # the kernel takes float64 too (its recursions are float64 anyway)


def ctc_loss(log_probs, targets, input_lengths, target_lengths, blank: int = 0, reduction: str = "mean",
             zero_infinity: bool = False):
    """``torch.nn.functional.ctc_loss``: the CTC loss of log_probs (T, N, C) (or (T, C)) against padded (N, S)
    or concatenated targets; lengths as integer tensors or tuples / lists of ints. See forgegrad.ops.ctc."""
    from ..nn.functional_conv import _t
    return CTCLossFunction.op(_t(log_probs, "log_probs"), _t(targets, "targets"), input_lengths, target_lengths,
                              blank=blank, reduction=reduction, zero_infinity=zero_infinity)


CTCLossFunction.op.functional = ctc_loss
