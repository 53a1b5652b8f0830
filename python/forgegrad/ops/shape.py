"""Shape ops: reshape, permute, expand, indexing, concatenation, copies."""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from ..tensor import Tensor
from ..kernels.shape_copy import as_contiguous
from . import _meta as M
from . import _samples as S
from ._util import normalize_axis, single_axis
from .registry import BadInput, Sample, register_op


def _torch_index(torch, key):
    if isinstance(key, tuple):
        return tuple(torch.from_numpy(k) if isinstance(k, np.ndarray) else k for k in key)
    return torch.from_numpy(key) if isinstance(key, np.ndarray) else key


def _getitem_samples():
    x = S.rand(4, 5, 6)
    return [Sample((x, (slice(1, None), 2)), name="slice, int"),
            Sample((x, (Ellipsis, slice(None, None, 2))), name="ellipsis, step"),
            Sample((x, (None, 1, slice(None, 3))), name="new axis"),
            Sample((x, np.array([0, 2, 2, 3])), name="repeated index array"),
            Sample((x, (slice(None), np.array([4, 0]))), name="index array on dim 1")]


def _int_tuple(shape) -> bool:
    """Whether ``shape`` is a tuple of Python ints (the common case, checked without a generator)."""
    if type(shape) is not tuple:
        return False
    for d in shape:
        if type(d) is not int:
            return False
    return True


@register_op("reshape", meta=None, flops=M.no_flops,
             samples=lambda: [Sample((S.rand(3, 4, 5), (12, 5))), Sample((S.rand(3, 4, 5), (-1, 2, 2)), name="-1"),
                              Sample((S.rand(6), (1, 6, 1)), name="unit dims")],
             torch=lambda torch, a, shape: torch.reshape(a, shape),
             bad_inputs=lambda: [BadInput((S.rand(3, 4), (5, 3)), {}, ValueError, "shape")])
class ReshapeFunction(Function):
    is_view = True  # a numpy view of its input where numpy makes one (reshape may copy)

    @staticmethod
    def forward(ctx, a, shape):
        ctx.in_shape = a.shape
        if not _int_tuple(shape) and (not isinstance(shape, (tuple, list)) or any(
                isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)) for d in shape)):
            raise TypeError(f"reshape: shape must be a tuple of ints, got {shape!r:.80}")
        try:
            return a.reshape(shape)
        except ValueError:
            raise ValueError(f"reshape: shape {tuple(shape)} is invalid for input of shape {a.shape} "
                             f"({a.size} elements)") from None

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.in_shape)


@register_op("permute", meta=None, flops=M.no_flops,
             samples=lambda: [Sample((S.rand(3, 4, 5), (2, 0, 1))), Sample((S.rand(3, 4), (-1, 0)), name="negative")],
             torch=lambda torch, a, dims: a.permute(*dims),
             bad_inputs=lambda: [BadInput((S.rand(3, 4), (0, 0)), {}, ValueError, "dims")])
class PermuteFunction(Function):
    is_view = True

    @staticmethod
    def forward(ctx, a, dims):
        dims = normalize_axis(dims if type(dims) is tuple else tuple(dims), a.ndim)
        if sorted(dims) != list(range(a.ndim)):
            raise ValueError(f"permute: dims {tuple(dims)} is not a permutation of {a.ndim} axes")
        ctx.dims = dims
        return a.transpose(dims) if type(a) is np.ndarray else np.transpose(a, dims)

    @staticmethod
    def backward(ctx, g):
        inverse = [0] * len(ctx.dims)  # (np.argsort's permutation, without its array round trip)
        for i, d in enumerate(ctx.dims):
            inverse[d] = i
        return g.transpose(inverse) if type(g) is np.ndarray else np.transpose(g, inverse)


@register_op("expand", meta=None, flops=M.no_flops,
             samples=lambda: [Sample((S.rand(3, 1), (3, 6))), Sample((S.rand(1, 4), (2, 5, -1, 4)), name="new dims")],
             torch=lambda torch, a, shape: a.expand(*shape),
             bad_inputs=lambda: [BadInput((S.rand(3, 2), (3, 5)), {}, ValueError, "expand")])
class ExpandFunction(Function):
    is_view = True

    @staticmethod
    def forward(ctx, a, shape):
        ctx.in_shape = a.shape
        shape = tuple(a.shape[i - (len(shape) - a.ndim)] if s == -1 else s for i, s in enumerate(shape))
        try:
            return np.broadcast_to(a, shape)
        except ValueError:
            raise ValueError(f"expand: cannot expand shape {a.shape} to {shape}") from None

    @staticmethod
    def backward(ctx, g):
        from ._util import unbroadcast
        return unbroadcast(g, ctx.in_shape)


def _index_arrays(key):
    """Convert Tensor indices to numpy so basic and advanced indexing follow numpy rules."""
    if isinstance(key, tuple):
        if type(key) is tuple:
            for k in key:
                if isinstance(k, Tensor):
                    break
            else:
                return key  # (no tensor in it: the tuple as it is)
        return tuple(k._data if isinstance(k, Tensor) else k for k in key)
    return key._data if isinstance(key, Tensor) else key


@register_op("getitem", meta=None, flops=M.no_flops, samples=_getitem_samples,
             torch=lambda torch, a, key: a[_torch_index(torch, key)],
             bad_inputs=lambda: [BadInput((S.rand(3, 4), (0, 0, 0)), {}, IndexError, "indices")])
class GetItemFunction(Function):
    is_view = True

    @staticmethod
    def forward(ctx, a, key):
        key = _index_arrays(key)
        ctx.in_shape, ctx.key = a.shape, key
        arrays = [k for k in (key if isinstance(key, tuple) else (key,)) if isinstance(k, np.ndarray)]
        if arrays:  # backward scatters through them: changing one in place before backward raises, as torch's
            ctx.save_for_backward(*arrays)
        out = a[key]
        return np.asarray(out)

    @staticmethod
    def backward(ctx, g):
        out = np.zeros(ctx.in_shape, dtype=g.dtype)  # the gradient keeps its dtype (float64 stays float64)
        key = ctx.key
        if all(k is None or k is Ellipsis or isinstance(k, (slice, int, np.integer)) and not isinstance(k, bool)
               for k in (key if isinstance(key, tuple) else (key,))):
            out[key] = g  # basic indexing selects each element at most once: a plain copy
        else:
            np.add.at(out, key, g)  # repeated advanced indices accumulate (np.add.at is ~10x slower)
        return out


@register_op("cat", meta=None, flops=M.no_flops,
             samples=lambda: [Sample((S.rand(3, 4), S.rand(2, 4, seed=1)), {"dim": 0}),
                              Sample((S.rand(3, 4), S.rand(3, 1, seed=1), S.rand(3, 2, seed=2)), {"dim": -1}, "three")],
             torch=lambda torch, *arrays, dim=0: torch.cat(arrays, dim),
             bad_inputs=lambda: [BadInput((S.rand(3, 4), S.rand(2, 5)), {"dim": 0}, ValueError, "shapes")])
class CatFunction(Function):
    @staticmethod
    def forward(ctx, *arrays, dim=0):
        if not arrays:
            raise ValueError("cat: expected a non-empty sequence of tensors")
        axis = single_axis(dim, arrays[0].ndim)
        ctx.axis = axis
        ctx.sizes = [a.shape[axis] for a in arrays]
        try:
            return np.concatenate(arrays, axis=axis)
        except ValueError as e:
            raise ValueError(f"cat: shapes {[a.shape for a in arrays]} do not match outside dim {dim}: {e}") from None

    @staticmethod
    def backward(ctx, g):
        splits = np.cumsum(ctx.sizes)[:-1]
        return tuple(np.split(g, splits, axis=ctx.axis))


@register_op("stack", meta=None, flops=M.no_flops,
             samples=lambda: [Sample((S.rand(3, 4), S.rand(3, 4, seed=1)), {"dim": 0}),
                              Sample((S.rand(3, 4), S.rand(3, 4, seed=1), S.rand(3, 4, seed=2)), {"dim": -1}, "last")],
             torch=lambda torch, *arrays, dim=0: torch.stack(arrays, dim),
             bad_inputs=lambda: [BadInput((S.rand(3, 4), S.rand(3, 5)), {}, ValueError, "same shape")])
class StackFunction(Function):
    @staticmethod
    def forward(ctx, *arrays, dim=0):
        if not arrays:
            raise ValueError("stack: expected a non-empty sequence of tensors")
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            raise ValueError(f"stack: all tensors must have the same shape, got {[a.shape for a in arrays]}")
        axis = single_axis(dim, arrays[0].ndim + 1)
        ctx.axis = axis
        return np.stack(arrays, axis=axis)

    @staticmethod
    def backward(ctx, g):
        return tuple(np.moveaxis(g, ctx.axis, 0))


@register_op("clone", meta=None, flops=M.no_flops, samples=S.unary(), torch=lambda torch, a: a.clone())
class CloneFunction(Function):
    @staticmethod
    def forward(ctx, a):
        if type(a) is np.ndarray and not a.flags.c_contiguous:
            return as_contiguous(a)  # a new C-order copy, as a.copy(): x.mT.contiguous() on the tiled transpose
        return a.copy()

    @staticmethod
    def backward(ctx, g):
        return g


# Shape ops' rules are their own forward run on zero-byte stand-ins: numpy's shape rules, written once.
for _fn in (ReshapeFunction, PermuteFunction, ExpandFunction, GetItemFunction, CatFunction, StackFunction,
            CloneFunction):
    _fn.op.meta = M.structural(_fn)


# ---- the cuda device: the same graph logic on DeviceArrays, through forgegrad.cuda's array kernels ----
# Every result is a new contiguous array (reshape: a view sharing the block), as DeviceArrays are
# always contiguous; the gradients mirror the CPU backward above.
def _cuda():
    from .. import cuda
    return cuda


class ReshapeCudaFunction(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.in_shape = a.shape
        shape = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
        try:
            return a.reshape(shape)
        except ValueError:
            raise ValueError(f"reshape: shape {tuple(shape)} is invalid for input of shape {a.shape} "
                             f"({a.size} elements)") from None

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.in_shape)


class PermuteCudaFunction(Function):
    @staticmethod
    def forward(ctx, a, dims):
        dims = normalize_axis(tuple(dims), a.ndim)
        if sorted(dims) != list(range(a.ndim)):
            raise ValueError(f"permute: dims {tuple(dims)} is not a permutation of {a.ndim} axes")
        ctx.dims = dims
        return _cuda().permute(a, dims)

    @staticmethod
    def backward(ctx, g):
        return _cuda().permute(g, [int(d) for d in np.argsort(ctx.dims)])


class ExpandCudaFunction(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.in_shape = a.shape
        shape = tuple(a.shape[i - (len(shape) - a.ndim)] if s == -1 else s for i, s in enumerate(shape))
        return _cuda().expand(a, shape)

    @staticmethod
    def backward(ctx, g):
        return _cuda().sum_to_shape(g, ctx.in_shape)


class GetItemCudaFunction(Function):
    """Basic indexing (ints, slices with steps, None, Ellipsis) and one index array among them
    (ops/_cuda_index.py); more than one index array is not implemented on cuda yet."""

    @staticmethod
    def forward(ctx, a, key):
        from . import _cuda_index
        ctx.in_shape, ctx.key, ctx.plan = a.shape, key, None
        split = _cuda_index.split_key(key)
        if split is not None:
            out, ctx.plan = _cuda_index.getitem(a, split)
            return out
        return _cuda().getitem(a, key)

    @staticmethod
    def backward(ctx, g):
        if ctx.plan is not None:
            from . import _cuda_index
            return _cuda_index.getitem_backward(g, ctx.plan)
        cuda = _cuda()
        out = cuda.zeros(ctx.in_shape, g.dtype, g.device)
        cuda.setitem(out, ctx.key, g)  # basic indexing selects each element at most once
        return out


class CatCudaFunction(Function):
    @staticmethod
    def forward(ctx, *arrays, dim=0):
        if not arrays:
            raise ValueError("cat: expected a non-empty sequence of tensors")
        axis = single_axis(dim, arrays[0].ndim)
        ctx.axis = axis
        ctx.sizes = [a.shape[axis] for a in arrays]
        try:
            return _cuda().cat(arrays, axis)
        except ValueError as e:
            raise ValueError(f"cat: shapes {[a.shape for a in arrays]} do not match outside dim {dim}: {e}") from None

    @staticmethod
    def backward(ctx, g):
        return tuple(_cuda().split(g, ctx.sizes, ctx.axis))


class StackCudaFunction(Function):
    @staticmethod
    def forward(ctx, *arrays, dim=0):
        if not arrays:
            raise ValueError("stack: expected a non-empty sequence of tensors")
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            raise ValueError(f"stack: all tensors must have the same shape, got {[a.shape for a in arrays]}")
        axis = single_axis(dim, arrays[0].ndim + 1)
        ctx.axis = axis
        shape = arrays[0].shape
        unsqueezed = shape[:axis] + (1,) + shape[axis:]
        return _cuda().cat([a.reshape(unsqueezed) for a in arrays], axis)

    @staticmethod
    def backward(ctx, g):
        shape = g.shape[:ctx.axis] + g.shape[ctx.axis + 1:]
        return tuple(p.reshape(shape) for p in _cuda().split(g, [1] * g.shape[ctx.axis], ctx.axis))


class CloneCudaFunction(Function):
    @staticmethod
    def forward(ctx, a):
        return _cuda().clone(a)

    @staticmethod
    def backward(ctx, g):
        return g


for _cpu, _dev in ((ReshapeFunction, ReshapeCudaFunction), (PermuteFunction, PermuteCudaFunction),
                   (ExpandFunction, ExpandCudaFunction), (GetItemFunction, GetItemCudaFunction),
                   (CatFunction, CatCudaFunction), (StackFunction, StackCudaFunction),
                   (CloneFunction, CloneCudaFunction)):
    _cpu.op.add_device("cuda", _dev)
