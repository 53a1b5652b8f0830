"""Reductions over axes: sum, mean, max/min (values with the gradient routed to the winners)."""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from ._util import normalize_axis


def _expand_back(g, in_shape, axes, keepdim):
    """Reshape a reduced gradient so it broadcasts against the input."""
    if not keepdim:
        shape = list(in_shape)
        for a in axes:
            shape[a] = 1
        g = g.reshape(shape)
    return g


class Sum(Function):
    @staticmethod
    def forward(ctx, a, dim=None, keepdim=False):
        axes = normalize_axis(dim, a.ndim)
        ctx.in_shape, ctx.axes, ctx.keepdim = a.shape, axes, keepdim
        return np.sum(a, axis=axes, keepdims=keepdim, dtype=a.dtype if a.dtype.kind == "f" else None)

    @staticmethod
    def backward(ctx, g):
        g = _expand_back(g, ctx.in_shape, ctx.axes, ctx.keepdim)
        return np.broadcast_to(g, ctx.in_shape).astype(np.float32, copy=True)


class Mean(Function):
    @staticmethod
    def forward(ctx, a, dim=None, keepdim=False):
        axes = normalize_axis(dim, a.ndim)
        ctx.in_shape, ctx.axes, ctx.keepdim = a.shape, axes, keepdim
        n = 1
        for ax in axes:
            n *= a.shape[ax]
        ctx.n = n
        return np.mean(a, axis=axes, keepdims=keepdim, dtype=np.float32)

    @staticmethod
    def backward(ctx, g):
        g = _expand_back(g, ctx.in_shape, ctx.axes, ctx.keepdim)
        return np.broadcast_to(g / np.float32(max(ctx.n, 1)), ctx.in_shape).astype(np.float32, copy=True)


class Amax(Function):
    """max over axes; ties share the gradient equally (torch.amax's rule)."""

    fn = staticmethod(np.max)

    @classmethod
    def _fwd(cls, ctx, a, dim, keepdim):
        axes = normalize_axis(dim, a.ndim)
        if any(a.shape[ax] == 0 for ax in axes):
            raise ValueError(f"max/min of an empty dimension (input shape {a.shape})")
        y = cls.fn(a, axis=axes, keepdims=True)
        ctx.save_for_backward(a, y)
        ctx.axes, ctx.keepdim = axes, keepdim
        return y if keepdim else np.squeeze(y, axis=axes)

    @staticmethod
    def forward(ctx, a, dim=None, keepdim=False):
        return Amax._fwd(ctx, a, dim, keepdim)

    @staticmethod
    def backward(ctx, g):
        a, y = ctx.saved_tensors
        mask = (a == y)
        count = mask.sum(axis=ctx.axes, keepdims=True)
        g = _expand_back(g, a.shape, ctx.axes, ctx.keepdim)
        return (mask * (g / count)).astype(np.float32)


class Amin(Amax):
    fn = staticmethod(np.min)

    @staticmethod
    def forward(ctx, a, dim=None, keepdim=False):
        return Amin._fwd(ctx, a, dim, keepdim)


class MaxDim(Function):
    """torch.max(x, dim): (values, indices); the gradient goes to the returned index."""

    non_differentiable_outputs = (1,)
    pick = staticmethod(np.argmax)

    @classmethod
    def _fwd(cls, ctx, a, dim, keepdim):
        (axis,) = normalize_axis(dim, a.ndim)
        if a.shape[axis] == 0:
            raise ValueError(f"max/min over an empty dimension {dim} (input shape {a.shape})")
        idx = cls.pick(a, axis=axis)
        idx_k = np.expand_dims(idx, axis)
        vals = np.take_along_axis(a, idx_k, axis=axis)
        ctx.axis, ctx.keepdim, ctx.in_shape = axis, keepdim, a.shape
        ctx.save_for_backward(idx_k)
        if keepdim:
            return vals, idx_k.astype(np.int64)
        return np.squeeze(vals, axis), idx.astype(np.int64)

    @staticmethod
    def forward(ctx, a, dim, keepdim=False):
        return MaxDim._fwd(ctx, a, dim, keepdim)

    @staticmethod
    def backward(ctx, g, _gidx=None):
        (idx_k,) = ctx.saved_tensors
        if not ctx.keepdim:
            g = np.expand_dims(g, ctx.axis)
        out = np.zeros(ctx.in_shape, dtype=np.float32)
        np.put_along_axis(out, idx_k, g, axis=ctx.axis)
        return out


class MinDim(MaxDim):
    pick = staticmethod(np.argmin)

    @staticmethod
    def forward(ctx, a, dim, keepdim=False):
        return MinDim._fwd(ctx, a, dim, keepdim)
