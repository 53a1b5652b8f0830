"""torch.gcd of int32 / int64 numpy arrays (the C++ kernel of cpp/kernels/per_isa/int_gcd.cpp).

A binary GCD (shifts and subtractions) on |a| and |b|, the same values as torch's Euclid loop, whose integer
divisions dominate numpy's gcd; where an operand is the type's MIN (|MIN| wraps to MIN in torch) torch's loop runs
itself, so gcd(MIN, 6) is -2 as in torch. Elements are independent: the same results at any thread count.
"""
from __future__ import annotations

import numpy as np

from .. import _C

__all__ = ["gcd"]

_DTYPES = (np.dtype(np.int64), np.dtype(np.int32))


def _flat(x, shape):
    """x as a 1-D C-contiguous array: all of out's elements, or the one element it broadcasts."""
    if x.size == 1:
        return np.ascontiguousarray(x.reshape(1))
    return np.ascontiguousarray(np.broadcast_to(x, shape).reshape(-1))


def gcd(a, b) -> np.ndarray:
    """torch.gcd(a, b) for two int64 or two int32 arrays (broadcast); returns a new array of their dtype."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.dtype not in _DTYPES:
        raise TypeError(f"gcd: a and b must both be int64 or both int32, got {a.dtype} and {b.dtype}")
    shape = np.broadcast_shapes(a.shape, b.shape)
    out = np.empty(shape, a.dtype)
    if out.size:
        _C.int_math.gcd(_flat(a, shape), _flat(b, shape), out.reshape(-1))
    return out
