"""Embedding backward on numpy arrays (the C++ kernel of cpp/kernels/per_isa/embedding.cpp).

grad_weight[v] sums the gradient rows of the positions that looked up row v, in ascending position
order, rows split over threads: the same bits at any thread count (a scatter-add with atomics, or
torch's CPU kernel at several threads, adds in a run-dependent order).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .. import _C
from ._checks import as_f32

__all__ = ["embedding_backward"]


def embedding_backward(grad, indices, num_weights: int, padding_idx: Optional[int] = None) -> np.ndarray:
    """grad (..., D) for int64 ``indices`` of shape (...) -> grad_weight (num_weights, D); the row
    ``padding_idx`` (None: none; negative counts from the end) gets 0."""
    grad = as_f32(grad, "grad")
    indices = np.asarray(indices)
    if indices.dtype != np.int64:
        raise TypeError(f"indices must be int64, got {indices.dtype}")
    if grad.shape[:-1] != indices.shape or grad.ndim < 1:
        raise ValueError(f"grad must have shape indices.shape + (D,) = {indices.shape} + (D,), got {grad.shape}")
    if isinstance(num_weights, bool) or not isinstance(num_weights, (int, np.integer)) or num_weights < 0:
        raise ValueError(f"num_weights must be an int >= 0, got {num_weights!r}")
    pad = -1
    if padding_idx is not None:
        if not -num_weights <= padding_idx < num_weights:
            raise ValueError(f"padding_idx must be within [-{num_weights}, {num_weights}), got {padding_idx}")
        pad = int(padding_idx) % num_weights
    d = grad.shape[-1]
    g2 = np.ascontiguousarray(grad.reshape(-1, d))
    out = np.empty((int(num_weights), d), np.float32)
    _C.embedding.embedding_backward(g2, np.ascontiguousarray(indices.reshape(-1)), pad, out)
    return out
