"""CTC loss on numpy arrays (forgegrad._C.ctc): log_probs (T, N, C) float32 or float64, integer targets,
padded (N, S) or concatenated (sum(target_lengths),), and integer lengths (N,).

``ctc_forward`` gives each sample's negative log-likelihood (float64) and, when asked, the forward
variables ``ctc_backward`` turns into the gradient w.r.t. log_probs (torch's formula). Labels and lengths
are checked by the binding: a label outside [0, C) or equal to ``blank``, an input length past T, a
target length past the targets raise ValueError naming the argument.
"""
from __future__ import annotations

import numpy as np

from .. import _C
from .._validate import check_bool, check_int
from ._checks import check_ndim

__all__ = ["ctc_forward", "ctc_backward"]


def _log_probs(x) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"log_probs must be a numpy.ndarray of float32 or float64, got {type(x).__name__}")
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"log_probs must have dtype float32 or float64, got {x.dtype}")
    check_ndim(x, "log_probs", 3)
    return np.require(x, requirements="CA")  # C-contiguous and aligned, as the binding needs


def _ints(x, name: str, ndims) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray of integers, got {type(x).__name__}")
    if x.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {x.dtype}")
    check_ndim(x, name, ndims)
    if x.dtype == np.uint64 and x.size and x.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} holds {x.max()}, past int64")
    return np.require(x, np.int64, "CA")


def _f64(x, name: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray of float64, got {type(x).__name__}")
    if x.dtype != np.float64:
        raise TypeError(f"{name} must have dtype float64, got {x.dtype}")
    return np.require(x, requirements="CA")


def _args(log_probs, targets, input_lengths, target_lengths, blank):
    return (_log_probs(log_probs), _ints(targets, "targets", (1, 2)), _ints(input_lengths, "input_lengths", 1),
            _ints(target_lengths, "target_lengths", 1), check_int(blank, "blank"))


def ctc_forward(log_probs, targets, input_lengths, target_lengths, blank: int = 0, keep_alpha: bool = True):
    """Returns ``(nll, alpha)``: nll (N,) float64, +inf for a sample no alignment fits; alpha the float64
    forward variables for ``ctc_backward`` (None unless keep_alpha)."""
    args = _args(log_probs, targets, input_lengths, target_lengths, blank)
    return _C.ctc.forward(*args, check_bool(keep_alpha, "keep_alpha"))


def ctc_backward(log_probs, targets, input_lengths, target_lengths, nll, alpha, grad_nll, blank: int = 0,
                 zero_infinity: bool = False) -> np.ndarray:
    """d (sum_b grad_nll[b] * nll[b]) / d log_probs as torch computes it, (T, N, C) in log_probs' dtype:
    ``(exp(lp) - exp(log(sum of alpha * beta over the states of class c) + nll - lp)) * grad_nll[b]``,
    0 past each input length and, with zero_infinity, for every step of a sample whose nll is inf."""
    args = _args(log_probs, targets, input_lengths, target_lengths, blank)
    return _C.ctc.backward(*args, _f64(nll, "nll"), _f64(alpha, "alpha"), _f64(grad_nll, "grad_nll"),
                           check_bool(zero_infinity, "zero_infinity"))
