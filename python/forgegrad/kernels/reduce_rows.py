"""Sums and means of many short contiguous rows on numpy float32 arrays (cpp/kernels/per_isa/reduce_rows.cpp):
the global average pool of NCHW (rows of H * W), sum / mean over the trailing axes of a C-contiguous array, and
their backward.

- ``trailing_rows(a, axes)``: ``(R, L)`` when ``axes`` are the trailing axes of a C-contiguous float32 array
  (then its reduction is R rows of L contiguous values), else None.
- ``sum_rows(x, mean)``: the sum (or mean) of each row of float32 ``x`` (R, L), as float32 (R,), accumulated in
  float64 in a fixed order (forgegrad/reduce_rows.h): the same bits on every ISA and at any thread count.
- ``lead_shape(a, axes)``: ``(A, B, L)`` when ``axes`` are leading axes of a C-contiguous float32 array, with
  or without trailing ones, and some axis between them is kept (``x.sum(0)``, BatchNorm's ``(0, 2, 3)``), else None.
- ``sum_lead(x, mean)``: the sum (or mean) over axes 0 and 2 of float32 ``x`` (A, B, L), as float32 (B,),
  accumulated in float64 in a fixed order (forgegrad/reduce_rows.h).
- ``mid_shape(a, axes)``: ``(O, M, I)`` when ``axes`` are a block of middle axes of a C-contiguous float32 array
  (``x.mean(1)`` of (B, T, C), ``x.sum(1)`` of NCHW), else None.
- ``sum_mid(x, mean)``: the sum (or mean) over axis 1 of float32 ``x`` (O, M, I), as float32 (O, I), accumulated
  in float64 in a fixed order (forgegrad/reduce_rows.h).
- ``axes_layout(a, axes)``: the reduction of float32 ``a`` (contiguous, permuted or sliced) over any ``axes`` as a
  view with its axes in memory order, for ``sum_axes``; None where it does not fit.
- ``sum_axes(view, reduced, mean)``: the sum (or mean) of such a view over the axes flagged in ``reduced``, as float32
  over the kept ones, accumulated in float64 in a fixed order (forgegrad/reduce_rows.h).
- ``memory_order(a)``: the axis order in which a non-contiguous float32 array is C-contiguous in memory (a
  transposed or permuted view), or None.
- ``fill_rows(g, L, divisor)``: ``g[r] / float32(divisor)`` broadcast into row r of an (R, L) array.
"""
from __future__ import annotations

from math import prod
from typing import NamedTuple

import numpy as np

from .. import _C

__all__ = ["axes_layout", "fill_rows", "lead_shape", "memory_order", "mid_shape", "sum_axes", "sum_lead", "sum_mid",
           "sum_rows", "trailing_rows"]

_F32 = np.dtype(np.float32)
_SUM_AXES_MAX_DIMS = 16  # (kSumAxesMaxDims in forgegrad/reduce_rows.h)


def trailing_rows(a, axes):
    """(R, L) when the reduction of ``a`` over ``axes`` is R contiguous rows of L float32 values, else None."""
    if not isinstance(a, np.ndarray) or a.dtype != _F32 or not a.flags.c_contiguous or not axes:
        return None
    k = len(axes)
    if k == 1 and a.ndim:  # (the last axis: L its length, R the size over it)
        if axes[0] != a.ndim - 1:
            return None
        L = a.shape[-1]
        return (a.size // L, L) if L > 0 else None
    if sorted(axes) != list(range(a.ndim - k, a.ndim)):
        return None
    L = prod(a.shape[a.ndim - k:])
    return (prod(a.shape[:a.ndim - k]), L) if L > 0 else None


def lead_shape(a, axes):
    """(A, B, L) when the reduction of ``a`` over ``axes`` is over its leading axes (product A) and possibly its
    trailing ones (product L), keeping the axes between them (product B), of a C-contiguous float32 array; else
    None (no leading axis, nothing kept, or an empty array)."""
    if not isinstance(a, np.ndarray) or a.dtype != np.float32 or not a.flags.c_contiguous or not axes:
        return None
    ax = sorted(axes)
    k = 0
    while k < len(ax) and ax[k] == k:
        k += 1
    m = len(ax) - k
    if k == 0 or ax[k:] != list(range(a.ndim - m, a.ndim)) or k + m >= a.ndim:
        return None
    shape = (prod(a.shape[:k]), prod(a.shape[k:a.ndim - m]), prod(a.shape[a.ndim - m:]))
    return shape if min(shape) > 0 else None


def mid_shape(a, axes):
    """(O, M, I) when the reduction of ``a`` over ``axes`` is over a block of adjacent axes with an axis kept on
    each side (products O before, M of the block, I after) of a C-contiguous float32 array; else None (other
    axes, or an empty array)."""
    if not isinstance(a, np.ndarray) or a.dtype != _F32 or not a.flags.c_contiguous or not axes:
        return None
    lo, hi = min(axes), max(axes) + 1
    if lo == 0 or hi >= a.ndim or hi - lo != len(axes) or len(set(axes)) != len(axes):
        return None
    shape = (prod(a.shape[:lo]), prod(a.shape[lo:hi]), prod(a.shape[hi:]))
    return shape if min(shape) > 0 else None


def sum_mid(x, mean=False):
    """float32 (O, I): the sum (mean: divided by M in float64) over axis 1 of float32 x (O, M, I)."""
    if not isinstance(x, np.ndarray) or x.ndim != 3:
        raise ValueError(f"sum_mid: x must be a 3-D numpy array (O, M, I), got {type(x).__name__}")
    if x.dtype != _F32:
        raise TypeError(f"sum_mid: x must be float32, got {x.dtype}")
    out = np.empty((x.shape[0], x.shape[2]), np.float32)
    _C.reduce_rows.sum_mid(np.ascontiguousarray(x), out, bool(mean))
    return out


def memory_order(a):
    """The permutation p of a's axes for which ``a.transpose(p)`` is C-contiguous (axes by decreasing stride),
    when a is a non-contiguous float32 array laid out densely in some axis order; else None."""
    if not isinstance(a, np.ndarray) or a.dtype != _F32 or a.flags.c_contiguous or a.size == 0:
        return None
    order = sorted(range(a.ndim), key=lambda i: (-abs(a.strides[i]), i))
    return order if a.transpose(order).flags.c_contiguous else None


class AxesLayout(NamedTuple):
    """A reduction as sum_axes takes it: ``view`` the array with its axes in memory order (by decreasing stride; a
    transpose, no copy), ``reduced`` a flag per axis of ``view``, ``kept`` the array's kept axes in that order (the
    axes of sum_axes' result), ``blocks`` the layout sum_axes runs: (size, reduced) of each block of neighbouring axes
    of one kind that are contiguous with each other, outer to inner, size-1 axes left out."""
    view: np.ndarray
    reduced: tuple
    kept: tuple
    blocks: tuple


def axes_layout(a, axes):
    """The reduction of float32 ``a`` over ``axes`` (normalized, non-negative) as an AxesLayout, or None: not a
    non-empty float32 array of at most 16 axes (sum_axes' limit), a negative or zero stride, axes that overlap or
    interleave in memory, an innermost axis that is not contiguous (``a[..., ::2]``), nothing of size > 1 reduced."""
    if not isinstance(a, np.ndarray) or a.dtype != _F32 or a.size == 0 or not axes or a.ndim > _SUM_AXES_MAX_DIMS:
        return None
    st, sh = a.strides, a.shape
    order = sorted(range(a.ndim), key=st.__getitem__, reverse=True)  # (stable: ties keep their order)
    blocks, prev = [], None  # prev: the stride of the last axis of size > 1
    for i in order:
        n = sh[i]
        if n == 1:
            continue
        s, r = st[i], i in axes
        if s <= 0 or (prev is not None and prev < s * n):  # (overlapping or interleaved axes)
            return None
        if blocks and blocks[-1][1] == r and prev == s * n:
            blocks[-1] = (blocks[-1][0] * n, r)
        else:
            blocks.append((n, r))
        prev = s
    if prev != 4 or not any(r for _, r in blocks):
        return None
    view = a if order == sorted(order) else a.transpose(order)
    return AxesLayout(view, tuple(i in axes for i in order), tuple(i for i in order if i not in axes), tuple(blocks))


def sum_axes(view, reduced, mean=False):
    """float32 over the kept axes of ``view`` (those k with not reduced[k], in order): the sum (mean: divided by the
    count in float64) of float32 ``view`` (any strides, its innermost axis of size > 1 contiguous) over the others."""
    if not isinstance(view, np.ndarray):
        raise ValueError(f"sum_axes: view must be a numpy array, got {type(view).__name__}")
    if view.dtype != _F32:
        raise TypeError(f"sum_axes: view must be float32, got {view.dtype}")
    reduced = [bool(r) for r in reduced]
    if len(reduced) != view.ndim:
        raise ValueError(f"sum_axes: reduced must have one flag per axis of view ({view.ndim}), got {len(reduced)}")
    out = np.empty([n for n, r in zip(view.shape, reduced) if not r], np.float32)
    _C.reduce_rows.sum_axes(view, reduced, out, bool(mean))
    return out


def sum_lead(x, mean=False):
    """float32 (B,): the sum (mean: divided by A * L in float64) over axes 0 and 2 of float32 x (A, B, L)."""
    if not isinstance(x, np.ndarray) or x.ndim != 3:
        raise ValueError(f"sum_lead: x must be a 3-D numpy array (A, B, L), got {type(x).__name__}")
    if x.dtype != np.float32:
        raise TypeError(f"sum_lead: x must be float32, got {x.dtype}")
    out = np.empty(x.shape[1], np.float32)
    _C.reduce_rows.sum_lead(np.ascontiguousarray(x), out, bool(mean))
    return out


def sum_rows(x, mean=False):
    """float32 (R,): the sum (mean: divided by L in float64) of each row of float32 x (R, L)."""
    if type(x) is np.ndarray and x.dtype is _F32 and x.ndim == 2 and x.flags.c_contiguous:  # (as below, checked)
        out = np.empty(x.shape[0], _F32)
        _C.reduce_rows.sum_rows(x, out, bool(mean))
        return out
    if not isinstance(x, np.ndarray) or x.ndim != 2:
        raise ValueError(f"sum_rows: x must be a 2-D numpy array (rows, length), got {type(x).__name__}")
    if x.dtype != _F32:
        raise TypeError(f"sum_rows: x must be float32, got {x.dtype}")
    out = np.empty(x.shape[0], np.float32)
    _C.reduce_rows.sum_rows(np.ascontiguousarray(x), out, bool(mean))
    return out


def fill_rows(g, length, divisor=1.0):
    """float32 (R, length): row r is g[r] / float32(divisor) (the backward of sum_rows; mean: divisor L)."""
    g = np.ascontiguousarray(g, dtype=np.float32).reshape(-1)
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 0:
        raise ValueError(f"fill_rows: length must be an int >= 0, got {length!r}")
    out = np.empty((g.shape[0], int(length)), np.float32)
    _C.reduce_rows.fill_rows(g, out, float(divisor))
    return out
