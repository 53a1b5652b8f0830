"""torch's flip, roll, movedim, diagonal, diag_embed, trace, searchsorted, bucketize, unique, bincount, meshgrid and
broadcasting functions (the rest of forgegrad._torch_indexing). The differentiable ones are made of registry ops
(getitem, index_select, permute, scatter, expand), so they have gradients, double backward and ONNX export; the
value-dependent ones (searchsorted, unique, bincount) return int64 results with no gradient, as torch's, and refuse
to run inside an export trace."""
from __future__ import annotations

import numpy as np

from ._torch_indexing import _refuse_trace, _tensor, _values, _wrap
from .ops._util import single_axis
from .ops.registry import _OPS

__all__ = ["flip", "fliplr", "flipud", "roll", "movedim", "moveaxis", "diag", "diagonal", "as_strided",
           "diag_embed", "trace",
           "searchsorted", "bucketize", "unique", "unique_consecutive", "bincount", "meshgrid", "broadcast_to",
           "broadcast_tensors"]


def _dims(dims, ndim, name):
    """Distinct axes (IndexError out of range, RuntimeError for a repeated one, as torch's)."""
    if isinstance(dims, (int, np.integer)):
        dims = (dims,)
    axes = [single_axis(d, max(ndim, 1), f"{name}(): dims") for d in dims]
    if len(set(axes)) != len(axes):
        raise RuntimeError(f"{name}(): dims {tuple(dims)} name a dim more than once")
    return axes


def flip(input, dims):
    _tensor(input, "input")
    axes = _dims(dims, input.ndim, "flip")
    if input.ndim == 0 or not axes:
        return _OPS["clone"](input)
    # a copy, as torch's (a reversed slice alone would be a view: writing into it would change input)
    return _OPS["clone"](input[tuple(slice(None, None, -1) if k in axes else slice(None) for k in range(input.ndim))])


def fliplr(input):
    if _tensor(input, "input").ndim < 2:
        raise ValueError(f"fliplr(): input must have at least 2 dims, got {input.ndim}")
    return flip(input, (1,))


def flipud(input):
    if _tensor(input, "input").ndim < 1:
        raise ValueError("flipud(): input must have at least 1 dim, got 0")
    return flip(input, (0,))


def roll(input, shifts, dims=None):
    """Elements shifted along dims, wrapping around (dims=None: over the flattened tensor, shape kept)."""
    _tensor(input, "input")
    shifts = (shifts,) if isinstance(shifts, (int, np.integer)) else tuple(shifts)
    if dims is None:
        if len(shifts) != 1:
            raise ValueError(f"roll(): without dims, shifts must be one number, got {shifts}")
        return roll(input.reshape(-1), shifts, 0).reshape(input.shape)
    dims = (dims,) if isinstance(dims, (int, np.integer)) else tuple(dims)
    if len(dims) != len(shifts):
        raise ValueError(f"roll(): shifts ({len(shifts)}) and dims ({len(dims)}) must have the same length")
    out = input
    for s, d in zip(shifts, dims):
        d = single_axis(d, max(input.ndim, 1), "roll(): dims")
        n = (input.shape or (1,))[d]
        if n and int(s) % n:
            out = _OPS["index_select"](out, d, _wrap((np.arange(n) - int(s)) % n))
    return out


def movedim(input, source, destination):
    _tensor(input, "input")
    src = _dims(source, input.ndim, "movedim")
    dst = _dims(destination, input.ndim, "movedim")
    if len(src) != len(dst):
        raise ValueError(f"movedim(): source ({len(src)} dims) and destination ({len(dst)} dims) must have the "
                         "same length")
    if input.ndim == 0:
        return input
    order = [None] * input.ndim
    for s, d in zip(src, dst):
        order[d] = s
    rest = iter(k for k in range(input.ndim) if k not in src)
    order = [next(rest) if o is None else o for o in order]
    return _OPS["permute"](input, tuple(order))


moveaxis = movedim


def diagonal(input, offset=0, dim1=0, dim2=1):
    """The diagonal of the (dim1, dim2) planes, as the last dim (offset > 0: above the main one). A view of input,
    as torch's: writing into it writes into input (op "diagonal", ops/strided_views.py)."""
    _tensor(input, "input")
    return _OPS["diagonal"](input, offset, dim1, dim2)


def as_strided(input, size, stride, storage_offset=None):
    """torch.as_strided: a view of input's storage (the array owning its memory) with these sizes and element
    strides, ``storage_offset`` elements into it (default: where input starts). Op "as_strided"
    (ops/strided_views.py): torch's gradient and errors."""
    _tensor(input, "input")
    return _OPS["as_strided"](input, size, stride, storage_offset)


def diag_embed(input, offset=0, dim1=-2, dim2=-1):
    """Matrices (in dims dim1, dim2 of the output) with input's last dim on their ``offset`` diagonal."""
    _tensor(input, "input")
    if input.ndim < 1:
        raise ValueError("diag_embed(): input must have at least 1 dim, got 0")
    nd = input.ndim + 1
    d1, d2 = (single_axis(d, nd, f"diag_embed(): dim{i}") for i, d in ((1, dim1), (2, dim2)))
    if d1 == d2:
        raise RuntimeError(f"diag_embed(): dim1 and dim2 cannot be the same dim ({d1})")
    n, offset = input.shape[-1], int(offset)
    m = n + abs(offset)
    i = np.arange(n)
    flat = (i + max(-offset, 0)) * m + i + max(offset, 0)
    index = _wrap(np.broadcast_to(flat, input.shape))
    zeros = input.new_zeros(*input.shape[:-1], m * m)
    out = _OPS["scatter"](zeros, -1, index, input).reshape(tuple(input.shape[:-1]) + (m, m))
    return movedim(out, (-2, -1), (d1, d2))


def diag(input, diagonal=0):
    """1-d input: the square matrix with it on the ``diagonal``-th diagonal; 2-d: that diagonal of input."""
    _tensor(input, "input")
    if input.ndim == 1:
        return diag_embed(input, diagonal)
    if input.ndim == 2:
        return globals()["diagonal"](input, diagonal).clone()  # a copy, as torch's (diagonal is the view)
    raise ValueError(f"diag(): input must be 1-d or 2-d, got {input.ndim} dims")


def trace(input):
    if _tensor(input, "input").ndim != 2:
        raise ValueError(f"trace(): input must be 2-d, got {input.ndim} dims")
    return diagonal(input).sum()


# ---- searching and counting (int64 results, no gradient) ---------------------------------------------------
def _real_only(t, name, argument="input"):
    from .ops._complex import real_only
    return real_only(t, name, argument)


def searchsorted(sorted_sequence, input, *, out_int32=False, right=False, side=None, sorter=None):
    """Where input's values would go in sorted_sequence's last dim to keep it sorted (right/side='right': after
    equal values). sorted_sequence is 1-d, or has input's leading dims; input may be a number (0-d result)."""
    from .tensor import Tensor
    _refuse_trace("searchsorted")
    _real_only(sorted_sequence, "searchsorted", "sorted_sequence")
    _real_only(input, "searchsorted")
    seq = _values(_tensor(sorted_sequence, "sorted_sequence"))
    if side is not None:
        if side not in ("left", "right"):
            raise ValueError(f"searchsorted(): side must be 'left' or 'right', got {side!r}")
        if right and side == "left":
            raise ValueError("searchsorted(): side='left' and right=True contradict each other")
        right = side == "right"
    if sorter is not None:
        sv = _values(_tensor(sorter, "sorter"))
        if sv.shape != seq.shape or sv.dtype.kind not in "iu":
            raise ValueError(f"searchsorted(): sorter must be an int64 tensor of sorted_sequence's shape "
                             f"{seq.shape}, got {sv.dtype} {sv.shape}")
        from .ops.indexing import check_index
        seq = np.take_along_axis(seq, check_index(sv, seq.shape[-1] if seq.ndim else 1, "sorter"), axis=-1)
    v = _values(input) if isinstance(input, Tensor) else np.asarray(input)
    kind = "right" if right else "left"
    if seq.ndim == 0:
        raise ValueError("searchsorted(): sorted_sequence must have at least 1 dim")
    if seq.ndim == 1:
        out = np.searchsorted(seq, v, side=kind)
    else:
        if v.ndim != seq.ndim or v.shape[:-1] != seq.shape[:-1]:
            raise ValueError(f"searchsorted(): sorted_sequence {seq.shape} and input {v.shape} must have the same "
                             "leading dims (all but the last)")
        rows_s, rows_v = seq.reshape(-1, seq.shape[-1]), v.reshape(-1, v.shape[-1])
        out = np.stack([np.searchsorted(s, x, side=kind) for s, x in zip(rows_s, rows_v)]).reshape(v.shape)
    return _wrap(np.asarray(out, np.int32 if out_int32 else np.int64))


def bucketize(input, boundaries, *, out_int32=False, right=False):
    """The bucket of each value among 1-d ``boundaries`` (right=False: boundaries[i-1] < x <= boundaries[i])."""
    if _tensor(boundaries, "boundaries").ndim != 1:
        raise ValueError(f"bucketize(): boundaries must be 1-d, got {boundaries.ndim} dims")
    return searchsorted(boundaries, input, out_int32=out_int32, right=right)


def _unique_result(vals, inverse, counts, return_inverse, return_counts):
    out = (_wrap(vals),)
    if return_inverse:
        out += (_wrap(inverse.astype(np.int64)),)
    if return_counts:
        out += (_wrap(counts.astype(np.int64)),)
    return out[0] if len(out) == 1 else out


def unique(input, sorted=True, return_inverse=False, return_counts=False, dim=None):
    """The distinct values (or slices along dim), sorted (torch's CPU result is sorted either way), with the
    inverse indices and counts when asked."""
    _refuse_trace("unique")
    v = _values(_real_only(_tensor(input, "input"), "unique"))
    if dim is None:
        # equal_nan=False: each NaN is a value of its own, as torch's (numpy's default merges them)
        vals, inv, cnt = np.unique(v.reshape(-1), return_inverse=True, return_counts=True, equal_nan=False)
        return _unique_result(vals, inv.reshape(v.shape), cnt, return_inverse, return_counts)
    d = single_axis(dim, max(v.ndim, 1), "unique(): dim")
    vals, inv, cnt = np.unique(v, return_inverse=True, return_counts=True, axis=d)
    return _unique_result(vals, inv.reshape(-1), cnt, return_inverse, return_counts)


def unique_consecutive(input, return_inverse=False, return_counts=False, dim=None):
    """Each run of equal consecutive values (or slices along dim) kept once."""
    _refuse_trace("unique_consecutive")
    v = _values(_real_only(_tensor(input, "input"), "unique_consecutive"))
    if dim is None:
        flat = v.reshape(-1)
        change = np.concatenate([[True], flat[1:] != flat[:-1]]) if flat.size else np.zeros(0, bool)
        vals, shape = flat[change], v.shape
    else:
        d = single_axis(dim, max(v.ndim, 1), "unique_consecutive(): dim")
        moved = np.moveaxis(v, d, 0).reshape(v.shape[d], -1)
        change = np.concatenate([[True], np.any(moved[1:] != moved[:-1], axis=1)]) if len(moved) else \
            np.zeros(0, bool)
        vals, shape = np.compress(change, v, axis=d), (v.shape[d],)
    inverse = (np.cumsum(change) - 1).reshape(shape)
    starts = np.flatnonzero(change)
    counts = np.diff(np.append(starts, change.size))
    return _unique_result(vals, inverse, counts, return_inverse, return_counts)


def bincount(input, weights=None, minlength=0):
    """Counts of each value of a 1-d non-negative int tensor (or the sums of weights): int64, or weights' float
    dtype (float64 for integer weights, as torch)."""
    _refuse_trace("bincount")
    v = _values(_tensor(input, "input"))
    if v.ndim != 1 or v.dtype.kind not in "iub":
        raise ValueError(f"bincount(): input must be a 1-d int tensor, got {v.dtype} with {v.ndim} dims")
    if v.size and v.min() < 0:
        raise ValueError(f"bincount(): input must be non-negative, got {int(v.min())}")
    if isinstance(minlength, bool) or not isinstance(minlength, (int, np.integer)) or minlength < 0:
        raise ValueError(f"bincount(): minlength must be a non-negative int, got {minlength!r}")
    if weights is None:
        return _wrap(np.bincount(v, minlength=int(minlength)).astype(np.int64))
    w = _values(_tensor(weights, "weights"))
    if w.shape != v.shape:
        raise ValueError(f"bincount(): weights must have input's shape {v.shape}, got {w.shape}")
    dt = w.dtype if w.dtype.kind == "f" else np.dtype(np.float64)
    return _wrap(np.bincount(v, weights=w.astype(np.float64), minlength=int(minlength)).astype(dt))


# ---- broadcasting -------------------------------------------------------------------------------------------
def meshgrid(*tensors, indexing=None):
    """Coordinate grids of 0-d/1-d tensors: 'ij' (torch's default) or 'xy' (the first two dims swapped)."""
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    indexing = "ij" if indexing is None else indexing
    if indexing not in ("ij", "xy"):
        raise ValueError(f"meshgrid(): indexing must be 'ij' or 'xy', got {indexing!r}")
    for k, t in enumerate(tensors):
        if _tensor(t, f"tensors[{k}]").ndim > 1:
            raise ValueError(f"meshgrid(): tensors[{k}] must be 0-d or 1-d, got {t.ndim} dims")
    sizes = [t.numel() for t in tensors]
    place = list(range(len(tensors)))
    if indexing == "xy" and len(tensors) >= 2:
        place[0], place[1] = 1, 0
    full = [0] * len(tensors)
    for k, p in enumerate(place):
        full[p] = sizes[k]
    out = []
    for k, t in enumerate(tensors):
        shape = [1] * len(tensors)
        shape[place[k]] = sizes[k]
        out.append(t.reshape(tuple(shape)).expand(tuple(full)))
    return tuple(out)


def broadcast_to(input, size):
    return _tensor(input, "input").expand(tuple(size))


def broadcast_tensors(*tensors):
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    for k, t in enumerate(tensors):
        _tensor(t, f"tensors[{k}]")
    try:
        shape = np.broadcast_shapes(*(tuple(t.shape) for t in tensors))
    except ValueError:
        raise ValueError("broadcast_tensors(): shapes " + ", ".join(str(tuple(t.shape)) for t in tensors)
                         + " do not broadcast") from None
    return tuple(t if tuple(t.shape) == shape else t.expand(shape) for t in tensors)

