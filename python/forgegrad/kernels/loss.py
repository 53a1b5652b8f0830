"""Fused softmax cross-entropy on numpy arrays: (N, C) float32 logits, (N,) int64 class targets.

``cross_entropy_forward`` returns the per-row losses and the softmax it saves for backward;
``cross_entropy_backward`` turns that softmax straight into d loss / d logits. torch's semantics
for ``weight``, ``ignore_index`` and ``label_smoothing``.
"""
from __future__ import annotations

import numpy as np

from .. import _C
from .._validate import check_float, check_int
from ._checks import as_f32, check_ndim, check_no_overlap, check_out

__all__ = ["cross_entropy_forward", "cross_entropy_backward"]


def _target(target, n):
    if not isinstance(target, np.ndarray):
        raise TypeError(f"target must be a numpy.ndarray of int64, got {type(target).__name__}")
    if target.dtype.kind not in "iu":
        raise TypeError(f"target must hold integer class indices, got dtype {target.dtype}")
    if target.shape != (n,):
        raise ValueError(f"target must have shape ({n},), got {target.shape}")
    if (type(target) is np.ndarray and target.dtype == np.int64 and target.flags.c_contiguous
            and target.flags.aligned):
        return target  # the usual case, without np.require's per-call cost
    return np.require(target, np.int64, "CA")  # C-contiguous and aligned, as the binding needs


def _weight(weight, c):
    if weight is None:
        return None
    weight = np.ascontiguousarray(as_f32(weight, "weight"))
    if weight.shape != (c,):
        raise ValueError(f"weight must have shape ({c},), got {weight.shape}")
    return weight


def _rows(x, name, target, weight):
    """x as C-contiguous (N, C) float32, with target checked against N and weight against C."""
    x = as_f32(x, name)
    check_ndim(x, name, 2)
    x = x if x.flags.c_contiguous else np.ascontiguousarray(x)
    n, c = x.shape
    return x, _target(target, n), _weight(weight, c)


def _smoothing(label_smoothing):
    return check_float(label_smoothing, "label_smoothing", low=0.0, high=1.0)


def cross_entropy_forward(logits, target, weight=None, ignore_index: int = -100, label_smoothing: float = 0.0):
    """Returns ``(loss, prob, loss_sum, weight_sum)``.

    loss (N,): per-row loss, 0 for rows whose target is ignore_index. prob (N, C): softmax(logits),
    what backward needs. loss_sum: the sum of loss (reduction='sum'); weight_sum: the sum of
    weight[target] over rows not ignored (reduction='mean' divides by it).
    Raises IndexError for a target outside [0, C) that is not ignore_index.
    """
    logits, target, weight = _rows(logits, "logits", target, weight)
    n, c = logits.shape
    prob = np.empty((n, c), np.float32)
    loss = np.empty(n, np.float32)
    ignore_index = check_int(ignore_index, "ignore_index")
    loss_sum, weight_sum = _C.loss.cross_entropy_forward(logits, target, weight, ignore_index,
                                                         _smoothing(label_smoothing), prob, loss)
    return loss, prob, loss_sum, weight_sum


def cross_entropy_backward(prob, target, weight=None, ignore_index: int = -100, label_smoothing: float = 0.0,
                           grad_loss=None, grad_scale: float = 1.0, *, out=None) -> np.ndarray:
    """d loss / d logits (N, C) from the forward's prob, each row scaled by
    ``grad_scale * grad_loss[i]`` (``grad_loss`` (N,) is the upstream gradient of reduction='none';
    None means 1). ``out`` may be ``prob`` (it is then overwritten)."""
    prob, target, weight = _rows(prob, "prob", target, weight)
    n, c = prob.shape
    if grad_loss is not None:
        grad_loss = np.ascontiguousarray(as_f32(grad_loss, "grad_loss"))
        if grad_loss.shape != (n,):
            raise ValueError(f"grad_loss must have shape ({n},), got {grad_loss.shape}")
    ignore_index = check_int(ignore_index, "ignore_index")
    grad_scale = check_float(grad_scale, "grad_scale")
    if out is None:
        out = np.empty((n, c), np.float32)
    else:  # rows are read and written in one pass: out may be prob itself, nothing else it overlaps
        check_no_overlap(check_out(out, "out", (n, c)), "out", (prob, "prob"), (target, "target"),
                         (weight, "weight"), (grad_loss, "grad_loss"), in_place=("prob",))
    _C.loss.cross_entropy_backward(prob, target, weight, ignore_index, _smoothing(label_smoothing),
                                   grad_loss, grad_scale, out)
    return out
