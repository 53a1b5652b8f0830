"""Copies and gradient sums of shape ops on numpy arrays (the C++ kernels of cpp/kernels/per_isa/shape_copy.cpp).

- ``as_contiguous(v)``: ``np.ascontiguousarray(v)``, with a cache-blocked tiled transpose where the copy turns a
  view's columns into rows (a transposed or transposed-and-flipped view: rot90's odd-k copies), which numpy walks
  one element per cache line. Elements are moved as bits.
- ``diff_forward(x, dim)``: one forward difference along ``dim`` (numpy's ``hi - lo`` of two slices, one pass).
- ``diff_backward(g, dim)``: the adjoint of one forward difference along ``dim`` in one pass, the bits of numpy's
  ``zeros; out[1:] += g; out[:-1] -= g``.
- ``unfold_backward(g, shape, dim, size, step)``: Tensor.unfold's overlap-add, each element's window terms added in
  increasing window order (torch's unfold_backward order).

Each result is written element by element by one thread in a fixed order: the same bits at any thread count.
"""
from __future__ import annotations

from math import prod

import numpy as np

from .. import _C

__all__ = ["as_contiguous", "diff_backward", "diff_forward", "unfold_backward"]

_MIN_TILED = 4096  # below this many elements numpy's copy costs no more than the call


def _batch_stride(shape, strides):
    """One stride stepping through the leading dims in C order, or None when they do not collapse."""
    step, expect = 0, None
    for n, s in zip(reversed(shape), reversed(strides)):
        if n == 1:
            continue
        if expect is not None and s != expect:
            return None
        step = s if expect is None else step
        expect = s * n
    return step


def as_contiguous(v: np.ndarray) -> np.ndarray:
    """A C-contiguous array of v's values (v itself when it already is one)."""
    if not isinstance(v, np.ndarray):
        raise TypeError(f"as_contiguous: v must be a numpy.ndarray, got {type(v).__name__}")
    if v.flags.c_contiguous:
        return v
    item = v.itemsize
    if (v.ndim < 2 or v.size < _MIN_TILED or item not in (4, 8) or v.dtype.kind not in "biufc"
            or not v.flags.aligned or abs(v.strides[-1]) == item or abs(v.strides[-2]) != item):
        return np.ascontiguousarray(v)
    lead, rows, cols = v.shape[:-2], v.shape[-2], v.shape[-1]
    batch = prod(lead)
    step = _batch_stride(lead, v.strides[:-2]) if lead else 0
    if step is None:
        return np.ascontiguousarray(v)
    src = np.lib.stride_tricks.as_strided(v, (batch, rows, cols), (step,) + v.strides[-2:], writeable=False)
    out = np.empty(v.shape, v.dtype)
    _C.shape_copy.transpose_copy(src, out.reshape(batch, rows, cols))
    return out


def _float_grad(g, name):
    if not isinstance(g, np.ndarray) or g.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name}: {'x' if 'forward' in name else 'g'} must be a float32 or float64 numpy.ndarray, got "
                        f"{getattr(g, 'dtype', type(g).__name__)}")
    return np.require(g, requirements=("C", "A"))


def _axis(dim, ndim, name):
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not -ndim <= dim < ndim:
        raise ValueError(f"{name}: dim must be an int in [{-ndim}, {ndim}), got {dim!r}")
    return int(dim) % ndim


def diff_forward(x: np.ndarray, dim: int) -> np.ndarray:
    """One forward difference along dim (x.shape[dim] >= 1): out[k] = x[k + 1] - x[k], numpy's ``hi - lo``."""
    x = _float_grad(x, "diff_forward")
    d = _axis(dim, x.ndim, "diff_forward")
    outer, m, inner = prod(x.shape[:d]), x.shape[d], prod(x.shape[d + 1:])
    if m < 1:
        raise ValueError(f"diff_forward: x must have at least one element along dim {d}, got shape {x.shape}")
    out = np.empty(x.shape[:d] + (m - 1,) + x.shape[d + 1:], x.dtype)
    _C.shape_copy.diff_forward(x.reshape(outer, m, inner), out.reshape(outer, m - 1, inner))
    return out


def diff_backward(g: np.ndarray, dim: int) -> np.ndarray:
    """out with g.shape[dim] + 1 along dim: out[0] = 0 - g[0], out[k] = (0 + g[k-1]) - g[k], out[m] = 0 + g[m-1]."""
    g = _float_grad(g, "diff_backward")
    d = _axis(dim, g.ndim, "diff_backward")
    outer, m, inner = prod(g.shape[:d]), g.shape[d], prod(g.shape[d + 1:])
    out = np.empty(g.shape[:d] + (m + 1,) + g.shape[d + 1:], g.dtype)
    _C.shape_copy.diff_backward(g.reshape(outer, m, inner), out.reshape(outer, m + 1, inner))
    return out


def unfold_backward(g: np.ndarray, shape, dim: int, size: int, step: int) -> np.ndarray:
    """The gradient of ``x.unfold(dim, size, step)`` for x of ``shape`` (at least 1-D) from the windows' gradient
    g, of shape ``shape[:dim] + (count,) + shape[dim + 1:] + (size,)``."""
    g = _float_grad(g, "unfold_backward")
    shape = tuple(int(s) for s in shape)
    d = _axis(dim, len(shape), "unfold_backward")
    for label, v in (("size", size), ("step", step)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (1 if label == "step" else 0):
            raise ValueError(f"unfold_backward: {label} must be an int >= {1 if label == 'step' else 0}, got {v!r}")
    n = shape[d]
    count = (n - size) // step + 1 if size <= n else 0
    want = shape[:d] + (count,) + shape[d + 1:] + (int(size),)
    if g.shape != want:
        raise ValueError(f"unfold_backward: g must have shape {want}, got {g.shape}")
    outer, inner = prod(shape[:d]), prod(shape[d + 1:])
    out = np.empty(shape, g.dtype)
    _C.shape_copy.unfold_backward(g.reshape(outer, count, inner, int(size)), int(step), out.reshape(outer, n, inner))
    return out
