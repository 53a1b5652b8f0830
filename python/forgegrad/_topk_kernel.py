"""Top-k and stable sort of float32 arrays along one axis on the compiled kernels (cpp/kernels/per_isa/topk.cpp).

The order is the numpy path's (forgegrad._torch_indexing._sort_indices / _topk_indices), so either gives the same
indices: NaN is the largest (first when largest / descending, last when smallest / ascending), -0.0 equals 0.0, and
equal values keep their index order (the lower index first). The kernels work on rows along the last axis; another
axis is moved last (a copy) first. Other dtypes return None: the caller keeps its numpy path.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from . import _C

__all__ = ["topk_along", "sort_along", "usable"]

_MAX_ROW = 0xFFFFFFFF - 1  # the kernels key an element's index in 32 bits


def usable(v: np.ndarray, axis: int) -> bool:
    """Whether the kernels take ``v`` along ``axis``: float32 (native order), at least 1-d, a row shorter than
    2**32 - 1."""
    return (type(v) is np.ndarray and v.dtype == np.float32 and v.dtype.isnative and v.ndim >= 1
            and v.shape[axis] <= _MAX_ROW)


def _rows(v: np.ndarray, axis: int) -> Tuple[np.ndarray, tuple]:
    moved = np.moveaxis(v, axis, -1)
    lead = moved.shape[:-1]
    return np.ascontiguousarray(moved).reshape(int(np.prod(lead, dtype=np.int64)), moved.shape[-1]), lead


def _back(a: np.ndarray, lead: tuple, axis: int) -> np.ndarray:
    return np.moveaxis(a.reshape(lead + a.shape[-1:]), -1, axis)


def topk_along(v: np.ndarray, axis: int, k: int, largest: bool) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """(values, indices int64) of the k largest (smallest) of ``v`` along ``axis``, best first; None where the
    kernels do not take ``v`` (see ``usable``)."""
    if not usable(v, axis):
        return None
    rows, lead = _rows(v, axis)
    vals = np.empty((rows.shape[0], k), np.float32)
    idx = np.empty((rows.shape[0], k), np.int64)
    _C.topk.topk_f32(rows, int(k), bool(largest), vals, idx)
    return _back(vals, lead, axis), _back(idx, lead, axis)


def sort_along(v: np.ndarray, axis: int, descending: bool) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """(values, indices int64) of ``v`` sorted stably along ``axis``; None where the kernels do not take ``v``."""
    if not usable(v, axis):
        return None
    rows, lead = _rows(v, axis)
    vals = np.empty(rows.shape, np.float32)
    idx = np.empty(rows.shape, np.int64)
    _C.topk.sort_f32(rows, bool(descending), vals, idx)
    return _back(vals, lead, axis), _back(idx, lead, axis)
