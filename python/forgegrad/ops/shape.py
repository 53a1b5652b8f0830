"""Shape ops: reshape, permute, expand, indexing, concatenation, copies."""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from ._util import normalize_axis


class Reshape(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.in_shape = a.shape
        try:
            return a.reshape(shape)
        except ValueError:
            raise ValueError(f"reshape: shape {tuple(shape)} is invalid for input of shape {a.shape} "
                             f"({a.size} elements)") from None

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.in_shape)


class Permute(Function):
    @staticmethod
    def forward(ctx, a, dims):
        dims = normalize_axis(tuple(dims), a.ndim)
        if sorted(dims) != list(range(a.ndim)):
            raise ValueError(f"permute: dims {tuple(dims)} is not a permutation of {a.ndim} axes")
        ctx.dims = dims
        return np.transpose(a, dims)

    @staticmethod
    def backward(ctx, g):
        return np.transpose(g, np.argsort(ctx.dims))


class Expand(Function):
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
    from ..tensor import Tensor
    if isinstance(key, tuple):
        return tuple(k.data if isinstance(k, Tensor) else k for k in key)
    return key.data if isinstance(key, Tensor) else key


class GetItem(Function):
    @staticmethod
    def forward(ctx, a, key):
        key = _index_arrays(key)
        ctx.in_shape, ctx.key = a.shape, key
        out = a[key]
        return np.asarray(out)

    @staticmethod
    def backward(ctx, g):
        out = np.zeros(ctx.in_shape, dtype=np.float32)
        np.add.at(out, ctx.key, g)  # repeated advanced indices accumulate
        return out


class Cat(Function):
    @staticmethod
    def forward(ctx, *arrays, dim=0):
        if not arrays:
            raise ValueError("cat: expected a non-empty sequence of tensors")
        (axis,) = normalize_axis(dim, arrays[0].ndim)
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


class Stack(Function):
    @staticmethod
    def forward(ctx, *arrays, dim=0):
        if not arrays:
            raise ValueError("stack: expected a non-empty sequence of tensors")
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            raise ValueError(f"stack: all tensors must have the same shape, got {[a.shape for a in arrays]}")
        (axis,) = normalize_axis(dim, arrays[0].ndim + 1)
        ctx.axis = axis
        return np.stack(arrays, axis=axis)

    @staticmethod
    def backward(ctx, g):
        return tuple(np.moveaxis(g, ctx.axis, 0))


class Clone(Function):
    @staticmethod
    def forward(ctx, a):
        return a.copy()

    @staticmethod
    def backward(ctx, g):
        return g
