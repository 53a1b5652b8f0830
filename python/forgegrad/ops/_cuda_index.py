"""Indexing a cuda tensor with one index array (``x[idx]``, ``x[:, idx]``, ``x[1, idx, ::2]``):
numpy's rules for a single advanced index, run as a basic index (a strided copy) and a row gather on
the embedding kernel along the indexed axis; the gradient is the embedding kernel's deterministic
row sum (repeated indices accumulate in ascending position, no atomics) written back through the
basic index. The index array is checked and made non-negative on the host (IndexError as numpy's),
so an index held on the GPU is copied to the host first. float32 tensors gather on the GPU; other
dtypes (no gradient) are indexed on the host and copied back.
"""
from __future__ import annotations

import numpy as np

from .. import cuda as _cuda
from . import _cuda_nn as CN


def _is_int(k) -> bool:
    return isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_))


def _host_index(k):
    """An index array (numpy, list, DeviceArray or Tensor) as a numpy array."""
    data = getattr(k, "_data", k)
    if isinstance(data, _cuda_array_type()):
        return _cuda.to_host(data)
    if isinstance(data, (list, tuple)) and len(data) == 0:  # numpy reads [] as an empty integer index
        return np.zeros(0, np.int64)
    return np.asarray(data)


def _cuda_array_type():
    from .. import _C
    return getattr(_C.cuda, "DeviceArray", ())  # () in a build without CUDA: isinstance is False


def split_key(key):
    """For a key with exactly one index array: (parts with the array's place a full slice, its place,
    the array as numpy). None when the key is basic. NotImplementedError for what is not done yet."""
    parts = key if isinstance(key, tuple) else (key,)
    places = [i for i, k in enumerate(parts) if not _cuda.is_basic_index(k)]
    if not places:
        return None
    if len(places) > 1:
        raise NotImplementedError("indexing a cuda tensor with more than one index array is not implemented on "
                                  "cuda yet (one index array with ints, slices, None and Ellipsis is)")
    place = places[0]
    idx = _host_index(parts[place])
    if idx.dtype == np.bool_:
        if idx.ndim != 1:
            raise NotImplementedError(f"indexing a cuda tensor with a {idx.ndim}-D boolean mask is not implemented "
                                      "on cuda yet (a 1-D mask or an integer index array is)")
        idx = np.flatnonzero(idx)
    elif idx.dtype.kind not in "iu":
        raise IndexError("arrays used as indices must be of integer (or boolean) type, got "
                         f"{idx.dtype}")
    basic = parts[:place] + (slice(None),) + parts[place + 1:]
    return basic, place, idx.astype(np.int64)


def _axis_in_basic_result(parts, place, ndim) -> int:
    """The axis of ``x[parts]`` that the slice at ``place`` keeps (ints drop an axis, None adds one)."""
    consuming = sum(1 for k in parts if k is not None and k is not Ellipsis)
    axis = 0
    for k in parts[:place]:
        if k is Ellipsis:
            axis += ndim - consuming
        elif not _is_int(k):  # a slice or None gives one axis of the result
            axis += 1
    return axis


def _axis_in_key(parts, place, ndim) -> int:
    """The axis of x that the index array at ``place`` indexes (as numpy names it in its IndexError)."""
    consuming = sum(1 for k in parts if k is not None and k is not Ellipsis)
    return sum(ndim - consuming if k is Ellipsis else 1 for k in parts[:place] if k is not None)


def _advanced_first(parts, place) -> bool:
    """numpy's rule: with ints beside the index array (ints are advanced indices then), the result's
    index dimensions come first unless the advanced indices are next to each other."""
    adv = [i for i, k in enumerate(parts) if i == place or _is_int(k)]
    return adv[-1] - adv[0] + 1 != len(adv)


def _move(a, src, dst):
    """np.moveaxis(a, src, dst) on device (a copy; the same array when nothing moves)."""
    if src == dst:
        return a
    order = [d for d in range(a.ndim) if d != src]
    order.insert(dst, src)
    return _cuda.permute(a, order)


def getitem(a, split):
    """``a[key]`` for ``split = split_key(key)``: (result, plan for ``getitem_backward``)."""
    basic, place, idx = split
    if a.dtype != np.float32:  # integer / bool tensors (no gradient): numpy's indexing on the host
        host = _cuda.to_host(a)[tuple(basic[:place]) + (idx,) + tuple(basic[place + 1:])]
        return _cuda.to_device(np.ascontiguousarray(host), a.device), None
    y = _cuda.getitem(a, basic)
    axis = _axis_in_basic_result(basic, place, a.ndim)
    n = y.shape[axis]
    bad = (idx < -n) | (idx >= n)
    if bad.any():
        dim = _axis_in_key(basic, place, a.ndim)
        raise IndexError(f"index {int(idx[bad][0])} is out of bounds for axis {dim} with size {n}")
    idx = np.where(idx < 0, idx + n, idx)
    rest = tuple(y.shape[:axis]) + tuple(y.shape[axis + 1:])
    dims = tuple(idx.shape)
    first = _advanced_first(basic, place)
    shape = dims + rest if first else rest[:axis] + dims + rest[axis:]
    plan = (tuple(a.shape), basic, tuple(y.shape), axis, dims, first, None)
    if CN.numel(shape) == 0:
        return _cuda.zeros(shape, device=a.device), plan
    rows = CN.reshape(_move(y, axis, 0), (n, CN.numel(rest)))
    index = _cuda.to_device(idx.reshape(-1), a.device)
    out = CN.kernels().embedding_forward(rows, index)  # (len(idx), prod(rest))
    out = CN.reshape(out, (idx.size,) + rest)
    if not first:
        out = _move(out, 0, axis)
    return CN.reshape(out, shape), plan[:-1] + (index,)


def getitem_backward(g, plan):
    """The gradient of ``a`` for the result's gradient g: index rows summed, through the basic index."""
    in_shape, basic, y_shape, axis, dims, first, index = plan
    if index is None:  # an empty selection
        return _cuda.zeros(in_shape, device=g.device)
    n = y_shape[axis]
    rest = tuple(y_shape[:axis]) + tuple(y_shape[axis + 1:])
    flat = CN.reshape(g, (CN.numel(dims),) + rest) if first else \
        CN.reshape(g, rest[:axis] + (CN.numel(dims),) + rest[axis:])
    if not first:
        flat = _move(flat, axis, 0)
    rows = CN.kernels().embedding_backward(CN.reshape(flat, (index.shape[0], CN.numel(rest))), index, n, -1)
    gy = _move(CN.reshape(rows, (n,) + rest), 0, axis)
    if tuple(gy.shape) == tuple(in_shape) and all(isinstance(p, slice) and p == slice(None) for p in basic):
        return gy
    out = _cuda.zeros(in_shape, device=g.device)
    _cuda.setitem(out, basic, gy)
    return out
