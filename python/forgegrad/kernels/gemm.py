"""Matrix multiply on numpy float32 arrays, backed by forgegrad's SGEMM."""
from __future__ import annotations

import numpy as np

from .. import _C
from ._checks import as_f32, check_ndim, check_out

__all__ = ["matmul", "bmm"]


def _operand(x: np.ndarray, transposed: bool):
    """A 2-D operand the kernel can read through a leading dimension.

    Row-major views with unit inner stride pass through; column-major views (e.g. ``a.T``) are
    read as the transpose of their row-major base; anything else is copied once.
    """
    item = x.itemsize
    if x.shape[1] <= 1 or x.strides[1] == item:
        if x.shape[0] <= 1 or x.strides[0] >= x.shape[1] * item:
            return x, transposed
    if x.shape[0] <= 1 or x.strides[0] == item:
        t = x.T
        if t.shape[0] <= 1 or t.strides[0] >= t.shape[1] * item:
            return t, not transposed
    return np.ascontiguousarray(x), transposed


def matmul(a, b, *, out=None, trans_a: bool = False, trans_b: bool = False, alpha: float = 1.0,
           beta: float = 0.0) -> np.ndarray:
    """``out = alpha * op(a) @ op(b) + beta * out`` for 2-D float32 arrays.

    Args:
        a: (M, K) array, or (K, M) with ``trans_a=True``.
        b: (K, N) array, or (N, K) with ``trans_b=True``.
        out: optional (M, N) float32 array written in place (its old contents are scaled by
            ``beta``; with ``beta=0`` they are ignored, NaNs included). Must not overlap a or b.
        alpha, beta: scalars.

    Strided views are read without copying where rows are evenly spaced (slices, transposes);
    other layouts are copied once. Zero-sized dimensions are valid.
    Returns ``out`` (a new array when not given).
    """
    a = as_f32(a, "a")
    b = as_f32(b, "b")
    check_ndim(a, "a", 2)
    check_ndim(b, "b", 2)
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    kb, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if k != kb:
        raise ValueError(
            f"matmul: inner dimensions differ: op(a) has shape {(m, k)} and op(b) has shape {(kb, n)}"
        )
    if out is None:
        if beta != 0.0:
            raise ValueError("matmul: beta != 0 needs an out array to accumulate into")
        out = np.empty((m, n), dtype=np.float32)
    else:
        out = check_out(out, "out", (m, n))
        if np.shares_memory(out, a) or np.shares_memory(out, b):
            raise ValueError("matmul: out must not overlap a or b")
    if m == 0 or n == 0:
        return out
    a2, ta = _operand(a, bool(trans_a))
    b2, tb = _operand(b, bool(trans_b))
    o2, to = _operand(out, False)
    if to:  # out is a column-major view: compute its transpose, out.T = op(b).T @ op(a).T
        _C.gemm.sgemm(b2, a2, o2, not tb, not ta, float(alpha), float(beta))
        return out
    if o2 is not out:  # out's layout cannot be written through: compute then copy back
        tmp = np.array(out, order="C") if beta != 0.0 else np.empty((m, n), np.float32)
        _C.gemm.sgemm(a2, b2, tmp, ta, tb, float(alpha), float(beta))
        out[...] = tmp
        return out
    _C.gemm.sgemm(a2, b2, o2, ta, tb, float(alpha), float(beta))
    return out


def bmm(a, b, *, out=None) -> np.ndarray:
    """Batched matrix multiply: ``a`` (..., M, K) @ ``b`` (..., K, N) -> (..., M, N).

    Batch dimensions broadcast as in numpy (a 2-D operand is shared by every batch entry).
    """
    a = as_f32(a, "a")
    b = as_f32(b, "b")
    if a.ndim < 2:
        raise ValueError(f"bmm: a must be at least 2-D, got shape {a.shape}")
    if b.ndim < 2:
        raise ValueError(f"bmm: b must be at least 2-D, got shape {b.shape}")
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"bmm: inner dimensions differ: a has shape {a.shape}, b has shape {b.shape}")
    try:
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(
            f"bmm: batch dimensions do not broadcast: a has shape {a.shape}, b has shape {b.shape}"
        ) from None
    shape = batch + (a.shape[-2], b.shape[-1])
    out = np.empty(shape, np.float32) if out is None else check_out(out, "out", shape)
    ab = np.broadcast_to(a, batch + a.shape[-2:])
    bb = np.broadcast_to(b, batch + b.shape[-2:])
    for idx in np.ndindex(*batch):
        matmul(ab[idx], bb[idx], out=out[idx])
    return out
