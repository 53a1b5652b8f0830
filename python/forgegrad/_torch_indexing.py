"""torch's indexing, sorting and scan functions (``forgegrad.gather``, ``x.scatter_(...)``, ``fg.topk``, ...).

Differentiable ones run on registry ops (gather, scatter, scatter_add, scatter_reduce, index_select, cumprod,
logcumsumexp in forgegrad/ops/indexing.py and ops/scan.py, and the existing getitem, where, permute, expand):
their gradients, double backward and ONNX export come from those records. Sorting-like ops (sort, topk,
kthvalue, cummax, ...) find their indices with numpy (sort, argsort, topk and kthvalue of float32: with the
compiled kernels of forgegrad._topk_kernel, which give the same indices) and take their values with ``gather``, so
their gradient is torch's (each value's gradient goes back to the element it came from). Ops whose result depends on the
values in a way an ONNX graph would not follow (the indices of sort, nonzero, unique, masked_select, ...)
refuse to run inside ``forgegrad.autograd.trace()`` instead of exporting a constant.

Indices are int64 tensors; one out of range raises IndexError naming the argument (a negative one only where
torch counts it from the end: take, take_along_dim, index_fill).

The flip / diagonal / search / unique half is forgegrad._torch_indexing_shape; forgegrad._torch_indexing_methods
makes them all Tensor methods (in-place variants included) and forgegrad.__init__ exports them.
"""
from __future__ import annotations

import numbers

import numpy as np

from . import _topk_kernel, grad_mode, return_types
from .ops._util import single_axis
from .ops.indexing import check_index
from .ops.registry import _OPS

__all__ = ["gather", "scatter", "scatter_add", "scatter_reduce", "index_select", "index_add", "index_copy",
           "index_fill", "masked_fill", "masked_select", "masked_scatter", "take", "take_along_dim", "nonzero",
           "argwhere", "sort", "argsort", "topk", "kthvalue", "msort", "cumprod", "cummax", "cummin",
           "logcumsumexp"]


def _tensor(x, name):
    from .tensor import Tensor
    if not isinstance(x, Tensor):
        raise TypeError(f"argument {name!r} must be a forgegrad.Tensor, got {type(x).__name__}")
    return x


def _wrap(arr):
    from .tensor import Tensor
    arr = np.asarray(arr)
    return Tensor._wrap_exact(arr if arr.flags.c_contiguous else arr.copy())  # (ascontiguousarray makes 0-d 1-d)


def _index(index, name="index"):
    """An index argument: an integer Tensor (its int64 array is what the ops get)."""
    _tensor(index, name)
    if index._data.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an int64 tensor, got {index.dtype}")
    return index


def _refuse_trace(name):
    if grad_mode.recorder() is not None:
        raise RuntimeError(f"{name}: its result is found from the values with numpy, which an ONNX graph would "
                           "keep as a constant; it cannot run inside forgegrad.autograd.trace() (export)")


def _values(t):
    if type(t._data) is not np.ndarray:
        raise NotImplementedError(f"this op runs on CPU tensors only, got a {t.device} tensor")
    return t._data


def _number(value, name):
    if isinstance(value, bool) or isinstance(value, numbers.Number):
        return value
    raise TypeError(f"{name} must be a number or a 0-d tensor, got {type(value).__name__}")


def _scalar_like(value, input):
    """value as a Python number of input's kind (a number, not an array, so that an export sees a constant)."""
    return np.asarray(_number(value, "value")).astype(input._data.dtype).item()


# ---- gather / scatter -----------------------------------------------------------------------------------
def gather(input, dim, index, *, sparse_grad=False):
    return _OPS["gather"](_tensor(input, "input"), dim, _index(index))


def _const_src(input, index, value):
    return _wrap(np.full(index.shape, _number(value, "value"), dtype=input._data.dtype))


def scatter(input, dim, index, src=None, value=None, *, reduce=None):
    """torch.scatter(input, dim, index, src) or (..., value): src's entries (or the number value) written at
    index along dim. ``reduce=`` ('add'/'multiply', deprecated in torch) is refused: use scatter_reduce."""
    from .tensor import Tensor
    if reduce is not None:
        raise ValueError(f"scatter(): reduce={reduce!r} is deprecated in torch and not supported here; use "
                         "scatter_reduce(input, dim, index, src, reduce='sum' or 'prod')")
    _tensor(input, "input")
    _index(index)
    if src is None and value is None:
        raise TypeError("scatter(): give src (a tensor) or value (a number)")
    if not isinstance(src, Tensor):
        src = _const_src(input, index, value if src is None else src)
    return _OPS["scatter"](input, dim, index, src)


def scatter_add(input, dim, index, src):
    return _OPS["scatter_add"](_tensor(input, "input"), dim, _index(index), _tensor(src, "src"))


def scatter_reduce(input, dim, index, src, reduce, *, include_self=True):
    return _OPS["scatter_reduce"](_tensor(input, "input"), dim, _index(index), _tensor(src, "src"), reduce,
                                  include_self=include_self)


def index_select(input, dim, index):
    return _OPS["index_select"](_tensor(input, "input"), dim, _index(index))


def _along(input, dim, index, source, name):
    """(dim, index reshaped and expanded to source's shape): index_add/index_copy as scatter ops (recorded)."""
    d = single_axis(dim, max(input.ndim, 1), f"{name}(): dim")
    if index.ndim > 1:
        raise ValueError(f"{name}(): index must be 0-d or 1-d, got {index.ndim} dims")
    n = index.numel()
    if source is not None:
        want = list(input.shape or (1,))
        want[d] = n
        have = tuple(source.shape or (1,))
        if tuple(want) != have:
            raise ValueError(f"{name}(): source must have shape {tuple(want)} (input's, with index's length at dim "
                             f"{d}), got {tuple(source.shape)}")
    shape = [1] * max(input.ndim, 1)
    shape[d] = n
    full = list(input.shape or (1,))
    full[d] = n
    return d, index.reshape(tuple(shape)).expand(tuple(full))


def index_add(input, dim, index, source, *, alpha=1):
    _tensor(input, "input"), _index(index), _tensor(source, "source")
    d, full = _along(input, dim, index, source, "index_add")
    src = source if alpha == 1 else source * alpha
    out = _OPS["scatter_add"](input.reshape(input.shape or (1,)), d, full, src.reshape(full.shape))
    return out.reshape(input.shape)


def index_copy(input, dim, index, source):
    _tensor(input, "input"), _index(index), _tensor(source, "source")
    d, full = _along(input, dim, index, source, "index_copy")
    out = _OPS["scatter"](input.reshape(input.shape or (1,)), d, full, source.reshape(full.shape))
    return out.reshape(input.shape)


def index_fill(input, dim, index, value):
    """input with the entries ``index`` along dim set to value (a number, or a 0-d tensor that gets the gradient of
    every filled entry); negative indices count from the end, as torch's."""
    from .tensor import Tensor
    _tensor(input, "input"), _index(index)
    d, _ = _along(input, dim, index, None, "index_fill")
    size = (input.shape or (1,))[d]
    fixed = check_index(index._data, size, "index", allow_negative=True)
    if fixed is not index._data:  # negatives counted from the end: the indices are values of their own now
        index = _wrap(fixed)
    _, full = _along(input, dim, index, None, "index_fill")
    zeros = _wrap(np.zeros(input.shape or (1,), bool))
    mask = _OPS["scatter"](zeros, d, full, _wrap(np.ones(full.shape, bool))).reshape(input.shape)
    if isinstance(value, Tensor):
        if value.ndim:
            raise ValueError(f"index_fill(): value must be a number or a 0-d tensor, got shape {tuple(value.shape)}")
        return _OPS["where"](mask, value._cast(input._data.dtype) if value.dtype != input.dtype else value, input)
    return _OPS["where"](mask, _scalar_like(value, input), input)


# ---- masks ------------------------------------------------------------------------------------------------
def _mask(mask, shape, name):
    _tensor(mask, "mask")
    if mask._data.dtype != np.bool_:
        raise TypeError(f"{name}(): mask must be a bool tensor, got {mask.dtype}")
    try:
        full = np.broadcast_shapes(tuple(mask.shape), tuple(shape))
    except ValueError:
        raise ValueError(f"{name}(): mask of shape {tuple(mask.shape)} does not broadcast with {tuple(shape)}") \
            from None
    return full


def masked_fill(input, mask, value):
    from .tensor import Tensor
    _tensor(input, "input")
    shape = _mask(mask, input.shape, "masked_fill")
    if shape != tuple(input.shape):  # torch's out-of-place masked_fill broadcasts input up to the mask (masked_fill_
        input = input.expand(shape)  # then refuses the larger result)
    if isinstance(value, Tensor):
        if value.ndim:
            raise ValueError(f"masked_fill(): value must be a number or a 0-d tensor, got shape {tuple(value.shape)}")
        out = _OPS["where"](mask, value, input)
    else:
        out = _OPS["where"](mask, _scalar_like(value, input), input)
    return out if out.dtype == input.dtype else out._cast(input._data.dtype)


def masked_select(input, mask):
    _refuse_trace("masked_select")
    _tensor(input, "input")
    shape = _mask(mask, input.shape, "masked_select")
    x = input if tuple(input.shape) == shape else input.expand(shape)
    return x[np.broadcast_to(_values(mask), shape)]


def masked_scatter(input, mask, source):
    """input with the positions where mask is True taken, in order, from source's first elements."""
    _refuse_trace("masked_scatter")
    _tensor(input, "input"), _tensor(source, "source")
    if _mask(mask, input.shape, "masked_scatter") != tuple(input.shape):
        raise ValueError(f"masked_scatter(): mask of shape {tuple(mask.shape)} must broadcast to the input's shape "
                         f"{tuple(input.shape)}")
    m = np.broadcast_to(_values(mask), input.shape)
    count = int(m.sum())
    if count > source.numel():
        raise ValueError(f"masked_scatter(): source has {source.numel()} elements, mask selects {count}")
    if count == 0:
        return _OPS["where"](np.asarray(False), input, input)
    at = np.where(m, np.cumsum(m, axis=None).reshape(m.shape) - 1, 0)
    picked = _OPS["index_select"](source.reshape(-1), 0, _wrap(at.reshape(-1))).reshape(input.shape)
    src = picked if picked.dtype == input.dtype else picked._cast(input._data.dtype)
    return _OPS["where"](_wrap(m), src, input)


# ---- take ---------------------------------------------------------------------------------------------------
def take(input, index):
    """The elements of input (read as 1-d) at index, in index's shape; negatives count from the end (torch's)."""
    _tensor(input, "input"), _index(index)
    n = input.numel()
    fixed = check_index(_values(index), n, "index", allow_negative=True)
    if fixed is not index._data:
        _refuse_trace("take with negative indices")
        index = _wrap(fixed)
    flat = input.reshape(-1)
    return _OPS["index_select"](flat, 0, index.reshape(-1)).reshape(index.shape)


def take_along_dim(input, indices, dim=None):
    """gather along dim after broadcasting input and indices (but along dim); dim=None: take on the flattened
    input. Negative indices count from the end, as torch's."""
    _tensor(input, "input"), _index(indices, "indices")
    if dim is None:
        return take(input, indices.reshape(-1))
    d = single_axis(dim, max(input.ndim, 1), "take_along_dim(): dim")
    if indices.ndim != input.ndim:
        raise ValueError(f"take_along_dim(): indices must have as many dims as the input ({input.ndim}), got "
                         f"{indices.ndim}")
    size = (input.shape or (1,))[d]
    fixed = check_index(_values(indices), size, "indices", allow_negative=True)
    if fixed is not indices._data:
        _refuse_trace("take_along_dim with negative indices")
        indices = _wrap(fixed)
    try:
        shape = list(np.broadcast_shapes(tuple(s for k, s in enumerate(input.shape) if k != d),
                                         tuple(s for k, s in enumerate(indices.shape) if k != d)))
    except ValueError:
        raise ValueError(f"take_along_dim(): input {tuple(input.shape)} and indices {tuple(indices.shape)} do not "
                         f"broadcast (but at dim {d})") from None
    x_shape, i_shape = list(shape), list(shape)
    x_shape.insert(d, input.shape[d]), i_shape.insert(d, indices.shape[d])
    x = input if tuple(input.shape) == tuple(x_shape) else input.expand(tuple(x_shape))
    idx = indices if tuple(indices.shape) == tuple(i_shape) else indices.expand(tuple(i_shape))
    return _OPS["gather"](x, d, idx)


def nonzero(input, *, as_tuple=False):
    _refuse_trace("nonzero")
    v = _values(_tensor(input, "input"))
    if as_tuple:
        found = np.nonzero(v.reshape(v.shape or (1,)))
        return tuple(_wrap(a.astype(np.int64)) for a in found)
    if v.ndim == 0:
        return _wrap(np.zeros((int(v != 0), 0), np.int64))
    return _wrap(np.argwhere(v).astype(np.int64).reshape(-1, v.ndim))


def argwhere(input):
    return nonzero(input)


# ---- sorting --------------------------------------------------------------------------------------------------
def _sort_indices(v, axis, descending):
    """Stable argsort along axis; NaN is the largest (last ascending, first descending), as torch's. float32: the
    kernel (_topk_kernel.sort_along), the same order."""
    if v.ndim == 0:
        return np.zeros((), np.int64)
    fast = _topk_kernel.sort_along(v, axis, descending)
    if fast is not None:
        return fast[1]
    if not descending:
        return np.argsort(v, axis=axis, kind="stable")
    if v.dtype.kind != "f":
        return np.argsort(~v, axis=axis, kind="stable")  # ~x = -x - 1 (logical not for bool): decreasing, exact
    with np.errstate(invalid="ignore"):
        first = np.argsort(np.where(np.isnan(v), -np.inf, -v), axis=axis, kind="stable")
    nan_at = np.isnan(np.take_along_axis(v, first, axis))
    return np.take_along_axis(first, np.argsort(~nan_at, axis=axis, kind="stable"), axis)  # NaN first, in order


def _topk_indices(v, axis, k, largest):
    """The first k of the stable sort (_sort_indices) without sorting all: the k-th value found by a partition,
    the values beyond it and the first of those equal to it (by index) taken, then only those k sorted. (float32
    goes to the kernel, _topk_kernel.topk_along, before this: the same indices.)"""
    if v.dtype.kind == "V":  # bfloat16: ordered as its (exact) float32 values
        v = v.astype(np.float32)
    if v.ndim == 0 or k == 0 or (v.dtype.kind == "f" and np.isnan(v).any()):
        idx = _sort_indices(v, axis, largest)
        return idx if v.ndim == 0 else np.take(idx, np.arange(k), axis=axis)
    key = np.moveaxis(v, axis, -1)
    if not largest:
        key = -key if key.dtype.kind == "f" else ~key  # the k largest of the key (~x = -x - 1: exact for ints)
    n = key.shape[-1]
    kth = np.partition(key, n - k, axis=-1)[..., n - k:n - k + 1]
    above, tie = key > kth, key == kth
    need = k - above.sum(axis=-1, keepdims=True)
    chosen = above | tie
    if (tie.sum(axis=-1, keepdims=True) > need).any():  # more equal to the k-th than fit: the first ones by index
        chosen = above | (tie & (np.cumsum(tie, axis=-1) <= need))
    picked = np.nonzero(chosen.reshape(-1, n))[1].reshape(key.shape[:-1] + (k,))  # k per row, in index order
    sub = np.take_along_axis(key, picked, -1)
    order = np.argsort(-sub if sub.dtype.kind == "f" else ~sub, axis=-1, kind="stable")
    return np.moveaxis(np.take_along_axis(picked, order, -1), -1, axis)


def _values_at(input, d, idx):
    if input.ndim == 0:
        return _OPS["gather"](input, 0, _wrap(idx.reshape(())))
    return _OPS["gather"](input, d, _wrap(idx))


def _take(input, d, idx, vals):
    """The values at idx along d: the kernel's ``vals`` (the same elements) where no gradient is recorded, else
    ``gather``, whose record gives the gradient."""
    if vals is not None and not (input.requires_grad and grad_mode.records_graph()):
        return _wrap(vals)
    return _values_at(input, d, idx)


def _real_only(t, name):
    from .ops._complex import real_only
    return real_only(t, name)


def sort(input, dim=-1, descending=False, stable=False):
    """return_types.sort(values, indices); always stable (equal values keep their order, torch's stable=True)."""
    _refuse_trace("sort")
    _real_only(_tensor(input, "input"), "sort")
    d = single_axis(dim, max(input.ndim, 1), "sort(): dim")
    v = _values(input)
    fast = _topk_kernel.sort_along(v, d, descending) if v.ndim else None
    vals, idx = fast if fast is not None else (None, _sort_indices(v, d, descending).astype(np.int64))
    return return_types.sort(_take(input, d, idx, vals), _wrap(idx))


def argsort(input, dim=-1, descending=False, stable=False):
    _refuse_trace("argsort")
    d = single_axis(dim, max(_real_only(_tensor(input, "input"), "argsort").ndim, 1), "argsort(): dim")
    return _wrap(_sort_indices(_values(input), d, descending).astype(np.int64))


def msort(input):
    return sort(input, 0).values


def _k_arg(k, who, low, size, d):
    """``k`` as an int in [low, size]: an int or a one-element integer tensor (TypeError otherwise, as torch's),
    IndexError out of range."""
    if isinstance(k, (bool, np.bool_)) or not (isinstance(k, (int, np.integer)) or (
            hasattr(k, "_data") and getattr(k, "dtype", None) is not None and k.numel() == 1
            and not k.dtype.is_floating_point and k.dtype.name != "bool")):
        raise TypeError(f"{who}(): argument 'k' must be an int, got {type(k).__name__}")
    k = int(k)
    if not low <= k <= size:
        raise IndexError(f"{who}(): k ({k}) must be an int in [{low}, {size}] (the size of dim {d})")
    return k


def topk(input, k, dim=-1, largest=True, sorted=True):
    """return_types.topk(values, indices): the k largest (smallest) along dim, in order (equal values in index
    order); ``sorted=False`` returns them in the same order (torch leaves it unspecified)."""
    _refuse_trace("topk")
    _real_only(_tensor(input, "input"), "topk")
    d = single_axis(dim, max(input.ndim, 1), "topk(): dim")
    k = _k_arg(k, "topk", 0, (input.shape or (1,))[d], d)
    v = _values(input)
    fast = _topk_kernel.topk_along(v, d, k, largest) if v.ndim else None
    vals, idx = fast if fast is not None else (None, _topk_indices(v, d, k, largest).astype(np.int64))
    return return_types.topk(_take(input, d, idx, vals), _wrap(idx))


def kthvalue(input, k, dim=-1, keepdim=False):
    """return_types.kthvalue(values, indices): the k-th smallest along dim (k from 1)."""
    _refuse_trace("kthvalue")
    _real_only(_tensor(input, "input"), "kthvalue")
    d = single_axis(dim, max(input.ndim, 1), "kthvalue(): dim")
    k = _k_arg(k, "kthvalue", 1, (input.shape or (1,))[d], d)
    v = _values(input)
    fast = _topk_kernel.topk_along(v, d, k, False) if v.ndim else None  # the k smallest: the k-th is the last
    if fast is not None:
        vals, idx = (np.take(a, [k - 1], axis=d) for a in fast)
    else:
        vals, idx = None, _sort_indices(v, d, False).astype(np.int64)
        if input.ndim:
            idx = np.take(idx, [k - 1], axis=d)
    vals = _take(input, d, idx, vals)
    idx_t = _wrap(idx)
    if not keepdim and input.ndim:
        vals, idx_t = vals.squeeze(d), idx_t.squeeze(d)
    return return_types.kthvalue(vals, idx_t)


def _cum_extreme(input, dim, name, better):
    _refuse_trace(name)
    _tensor(input, "input")
    d = single_axis(dim, max(input.ndim, 1), f"{name}(): dim")
    v = _values(input)
    if v.ndim == 0 or v.size == 0:
        idx = np.zeros(v.shape, np.int64)
    else:
        moved = np.moveaxis(v, d, 0)
        idx = np.zeros(moved.shape, np.int64)
        best = moved[0].copy()
        for k in range(1, moved.shape[0]):
            x = moved[k]
            take_it = better(x, best) | (x == best)  # torch's: a tie moves the index to the later element
            if v.dtype.kind == "f":  # a NaN stays once met, and each later NaN takes the index (torch's)
                take_it = (take_it & ~np.isnan(best)) | np.isnan(x)
            best = np.where(take_it, x, best)
            idx[k] = np.where(take_it, k, idx[k - 1])
        idx = np.moveaxis(idx, 0, d)
    cls = getattr(return_types, name)
    return cls(_values_at(input, d, idx), _wrap(idx))


def cummax(input, dim):
    return _cum_extreme(_real_only(input, "cummax"), dim, "cummax", np.greater)


def cummin(input, dim):
    return _cum_extreme(_real_only(input, "cummin"), dim, "cummin", np.less)


def cumprod(input, dim, *, dtype=None):
    _tensor(input, "input")
    return _OPS["cumprod"](input if dtype is None else input.to(dtype), dim)


def logcumsumexp(input, dim):
    return _OPS["logcumsumexp"](_tensor(input, "input"), dim)
