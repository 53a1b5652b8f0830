"""EmbeddingBag on float32 numpy arrays (the C++ kernels of cpp/kernels/per_isa/embedding_bag.cpp).

Bags are given as ``bag_starts`` (B + 1,) int64: bag b holds ``indices[bag_starts[b]:bag_starts[b + 1]]``, less the
entries equal to ``padding_idx`` (-1: none). The binding checks every index and bag boundary before a kernel runs
(IndexError / ValueError); forgegrad.ops.embedding_bag checks them first with the messages of F.embedding_bag.
Every result has the same bits at any thread count and on every SIMD path.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from .. import _C

__all__ = ["forward", "backward", "max_backward", "psw_backward", "MODE_CODES"]

MODE_CODES = {"sum": 0, "mean": 1, "max": 2}


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(a, np.float32)


def _i64(a) -> np.ndarray:
    return np.ascontiguousarray(a, np.int64)


def forward(weight: np.ndarray, indices: np.ndarray, bag_starts: np.ndarray, per_sample_weights: Optional[np.ndarray],
            mode: str, padding_idx: int = -1) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """(out (B, D) float32, counts (B,) int64 of the kept entries, arg (B, D) int64 or None): each bag's rows summed
    (in float64, times per_sample_weights), averaged or maximised; arg (max) is the first position of each maximum
    (a NaN only as its bag's first kept entry, torch's rule), -1 for an empty bag. Empty bags give 0."""
    weight = _f32(weight)
    bag_starts = _i64(bag_starts)
    bags = bag_starts.shape[0] - 1
    out = np.empty((bags, weight.shape[1]), np.float32)
    counts = np.empty(bags, np.int64)
    arg = np.empty((bags, weight.shape[1]), np.int64) if mode == "max" else None
    psw = None if per_sample_weights is None else _f32(per_sample_weights).reshape(-1)
    _C.embedding_bag.forward_f32(weight, _i64(indices), bag_starts, psw, MODE_CODES[mode], int(padding_idx), out,
                                 counts, arg)
    return out, counts, arg


def backward(grad: np.ndarray, indices: np.ndarray, bag_starts: np.ndarray, num_weights: int,
             per_sample_weights: Optional[np.ndarray] = None, mean: bool = False, freq: Optional[np.ndarray] = None,
             padding_idx: int = -1) -> np.ndarray:
    """grad_weight (num_weights, D) of mode sum / mean: row v sums grad[bag of p] * scale[p] over its kept
    positions p in ascending order; scale = per_sample_weights[p], 1 / the bag's count (mean), 1 / freq[v]."""
    grad = _f32(grad)
    gw = np.empty((int(num_weights), grad.shape[1]), np.float32)
    psw = None if per_sample_weights is None else _f32(per_sample_weights).reshape(-1)
    _C.embedding_bag.backward_f32(grad, _i64(indices), _i64(bag_starts), psw, bool(mean),
                                  None if freq is None else _i64(freq), int(padding_idx), gw)
    return gw


def max_backward(grad: np.ndarray, arg: np.ndarray, indices: np.ndarray, num_weights: int) -> np.ndarray:
    """grad_weight (num_weights, D) of mode max: grad[b, c] added to row indices[arg[b, c]], column c."""
    grad = _f32(grad)
    gw = np.empty((int(num_weights), grad.shape[1]), np.float32)
    _C.embedding_bag.max_backward_f32(grad, _i64(arg), _i64(indices), gw)
    return gw


def psw_backward(grad: np.ndarray, weight: np.ndarray, indices: np.ndarray, bag_starts: np.ndarray,
                 padding_idx: int = -1) -> np.ndarray:
    """(n,) float32: the gradient of per_sample_weights, dot(grad[bag of p], weight[indices[p]]), 0 at padding."""
    indices = _i64(indices)
    out = np.empty(indices.shape[0], np.float32)
    _C.embedding_bag.psw_backward_f32(_f32(grad), _f32(weight), indices, _i64(bag_starts), int(padding_idx), out)
    return out
