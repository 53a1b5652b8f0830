"""Matrix multiply on numpy float32 arrays, backed by forgegrad's SGEMM (cpp/kernels/per_isa/gemm*.cpp).

Both functions raise TypeError / ValueError naming the argument and the shapes for bad input, pass
strided views to the kernel without copying where rows (or columns) are evenly spaced, and copy
other layouts once. matmul does all of this in C++ (_C.gemm.matmul); bmm resolves broadcasting
here and runs the whole batch in one C++ call (_C.gemm.bmm), which checks shapes again, so no
input can crash the process.
"""
from __future__ import annotations

import math

import numpy as np

from .. import _C
from ._checks import as_f32, check_out

__all__ = ["matmul", "bmm"]

_F32 = np.dtype(np.float32)
_ITEM = _F32.itemsize


def _f32(x, name: str) -> np.ndarray:
    # Fast path for the common case; as_f32 builds the error message (or an aligned copy) otherwise.
    if type(x) is np.ndarray and x.dtype is _F32 and x.flags.aligned:
        return x
    return as_f32(x, name)


def _rows_ok(rows: int, cols: int, rs: int, cs: int) -> bool:
    """Rows of `cols` unit-stride elements, `rs` bytes apart and not overlapping."""
    return (cols <= 1 or cs == _ITEM) and (rows <= 1 or rs >= cols * _ITEM)


def _overlaps(out: np.ndarray, x: np.ndarray) -> bool:
    return np.may_share_memory(out, x) and np.shares_memory(out, x)


def matmul(a, b, *, out=None, trans_a: bool = False, trans_b: bool = False, alpha: float = 1.0,
           beta: float = 0.0) -> np.ndarray:
    """``out = alpha * op(a) @ op(b) + beta * out`` for 2-D float32 arrays.

    Args:
        a: (M, K) array, or (K, M) with ``trans_a=True``.
        b: (K, N) array, or (N, K) with ``trans_b=True``.
        out: optional (M, N) float32 array written in place (its old contents are scaled by
            ``beta``; with ``beta=0`` they are ignored, NaNs included). Must not overlap a or b.
        alpha, beta: scalars.

    Strided views are read without copying where rows or columns are evenly spaced (slices,
    transposes); other layouts are copied once. Zero-sized dimensions are valid (K = 0 gives
    ``beta * out``). Returns ``out`` (a new array when not given).

    Raises TypeError (not a float32 ndarray) or ValueError (rank, shapes, ``out``) naming the
    argument and the shapes. All checks run in C++ (``_C.gemm.matmul``): Python-level checks would
    cost more than the product of a small layer.
    """
    return _C.gemm.matmul(a, b, out, trans_a, trans_b, alpha, beta)


def _as_3d(x: np.ndarray, nb: int, copy_ok: bool):
    """x (batch..., R, C) as an (nb, R, C) view; a copy when the batch axes cannot be merged (and
    copy_ok), else None."""
    if x.ndim == 3:
        return x
    r = x.reshape((nb,) + x.shape[-2:])  # a view when one batch stride fits, else a copy
    # (numpy 2.5 deprecates assigning .shape, which raised instead of copying)
    return r if copy_ok or r.size == 0 or np.may_share_memory(r, x) else None


def _stack(x: np.ndarray, batch: tuple, nb: int):
    """x broadcast to batch + its matrix shape, as a (nb, R, C) array the kernel can read (batch
    stride 0 for a shared matrix), and whether the kernel should read its matrices transposed."""
    if x.ndim == 2:
        x3 = np.broadcast_to(x, (nb,) + x.shape)
    elif x.shape[:-2] == batch:
        x3 = _as_3d(x, nb, copy_ok=True)
    else:
        x3 = _as_3d(np.broadcast_to(x, batch + x.shape[-2:]), nb, copy_ok=True)
    _, r, c = x3.shape
    sb, rs, cs = x3.strides
    if sb < 0:
        return np.ascontiguousarray(x3), False
    if _rows_ok(r, c, rs, cs):
        return x3, False
    if _rows_ok(c, r, cs, rs):
        return x3.transpose(0, 2, 1), True
    return np.ascontiguousarray(x3), False


def bmm(a, b, *, out=None) -> np.ndarray:
    """Batched matrix multiply: ``a`` (..., M, K) @ ``b`` (..., K, N) -> (..., M, N).

    Batch dimensions broadcast as in numpy (a 2-D operand is shared by every batch entry, without
    copying). The whole batch runs in one C++ call (``_C.gemm.bmm``): small matrices are spread
    over threads by batch entry.
    """
    # 3-D stacks of one batch size, in-place layouts: checked and run in one C++ call (the checks
    # below cost ~5 us, several percent of a batch of small products). None: the general path.
    r = _C.gemm.bmm_plain(a, b, out)
    if r is not None:
        return r
    a = _f32(a, "a")
    b = _f32(b, "b")
    if a.ndim < 2:
        raise ValueError(f"bmm: a must be at least 2-D, got shape {a.shape}")
    if b.ndim < 2:
        raise ValueError(f"bmm: b must be at least 2-D, got shape {b.shape}")
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"bmm: inner dimensions differ: a has shape {a.shape}, b has shape {b.shape}")
    try:
        batch = tuple(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
    except ValueError:
        raise ValueError(
            f"bmm: batch dimensions do not broadcast: a has shape {a.shape}, b has shape {b.shape}"
        ) from None
    m, n = a.shape[-2], b.shape[-1]
    shape = batch + (m, n)
    if out is None:
        out = np.empty(shape, np.float32)
    else:
        out = check_out(out, "out", shape)
        if _overlaps(out, a) or _overlaps(out, b):
            raise ValueError("bmm: out must not overlap a or b")
    if out.size == 0:
        return out
    nb = math.prod(batch)
    a3, ta = _stack(a, batch, nb)
    b3, tb = _stack(b, batch, nb)
    o3 = _as_3d(out, nb, copy_ok=False)
    if o3 is not None:
        sb, rs, cs = o3.strides
        if _rows_ok(m, n, rs, cs) and (nb <= 1 or sb >= (m - 1) * rs + n * _ITEM):
            _C.gemm.bmm(a3, b3, o3, ta, tb)
            return out
    tmp = np.empty((nb, m, n), np.float32)  # out's layout cannot be written through: copy back
    _C.gemm.bmm(a3, b3, tmp, ta, tb)
    out[...] = tmp.reshape(shape)
    return out
