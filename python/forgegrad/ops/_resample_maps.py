"""Per-axis linear maps: the arithmetic shared by interpolation (ops/resample.py) and the non-constant pads
(ops/pad.py).

Every one of these ops is separable: along each resized or padded axis, output position ``j`` is a weighted sum
of ``T`` input positions, ``out[j] = sum_k w[k, j] * x[idx[k, j]]`` (nearest and the pads: T = 1 and no weights;
linear: T = 2; cubic: T = 4). An :class:`AxisMap` holds ``idx`` and ``w`` for one axis; the op applies its maps
one axis after the other, last axis first (torch's order of the sums: the width sum inside the height sum).

The gradient is the transposed map, applied axis by axis. It is computed as a gather and a segmented sum
rather than a scatter-add: the map's entries are sorted once by source position (a stable sort, so within one
source the output positions come in increasing order and the taps of one output in tap order), and each source's
contributions are summed in that order by ``np.add.reduceat``. The order is fixed by the map alone, so the
gradient has the same bits at any thread count (overlapping bilinear/bicubic windows included).

A C++ kernel would pay off in two places: the forward's ``T`` gathers per axis (one fused pass over the input
per axis, no temporary of the output's size per tap) and the backward's gather + reduceat (a per-source loop
over its few contributions, without the ``T``-times-larger gathered temporary); both are memory-bound numpy
passes here.

:class:`MapFunction` / :class:`MapAdjointFunction` apply a list of maps and its transpose as Functions whose
differentiable backward rule is the other one: these ops are linear, so their double backward is the op itself.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from ..autograd import Function


class AxisMap:
    """out[j] = sum_k w[k, j] * x[idx[k, j]] along one axis of length ``n_in`` (``w`` None: all ones)."""

    __slots__ = ("n_in", "n_out", "idx", "w", "_adjoint")

    def __init__(self, n_in: int, idx: np.ndarray, w: Optional[np.ndarray] = None):
        self.n_in = int(n_in)
        self.idx = np.ascontiguousarray(idx, dtype=np.intp).reshape(-1, np.shape(idx)[-1])
        self.n_out = self.idx.shape[1]
        self.w = None if w is None else np.ascontiguousarray(w).reshape(self.idx.shape)
        self._adjoint = None

    @property
    def taps(self) -> int:
        return self.idx.shape[0]

    def is_identity(self) -> bool:
        return (self.taps == 1 and self.n_in == self.n_out and self.w is None
                and bool(np.array_equal(self.idx[0], np.arange(self.n_in))))

    def adjoint_plan(self):
        """(order, weights, starts, sources): the entries sorted by source position (stable), the weight of each
        (None: ones), where each non-empty source's run starts, and which sources have a run."""
        if self._adjoint is None:
            src = self.idx.T.ravel()  # output-major: output j's taps in tap order
            order = np.argsort(src, kind="stable")
            counts = np.bincount(src, minlength=self.n_in)
            sources = np.flatnonzero(counts)
            starts = np.concatenate(([0], np.cumsum(counts[sources])[:-1])).astype(np.intp)
            w = None if self.w is None else self.w.T.ravel()[order]
            self._adjoint = (order // self.taps, w, starts, sources)
        return self._adjoint


def _along(v: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """A 1-D ``v`` shaped to broadcast along ``axis`` of an ``ndim``-D array."""
    shape = [1] * ndim
    shape[axis] = v.shape[0]
    return v.reshape(shape)


def apply_axis(x: np.ndarray, axis: int, m: AxisMap) -> np.ndarray:
    """``m`` applied along ``axis`` of ``x`` (taps summed in tap order, as torch's kernels do)."""
    if m.is_identity():
        return x
    out = np.take(x, m.idx[0], axis=axis)
    if m.w is None and m.taps == 1:
        return out
    w = m.w.astype(x.dtype, copy=False)
    out *= _along(w[0], axis, x.ndim)
    tmp = np.empty_like(out)
    for k in range(1, m.taps):
        np.take(x, m.idx[k], axis=axis, out=tmp)
        tmp *= _along(w[k], axis, x.ndim)
        out += tmp
    return out


def adjoint_axis(g: np.ndarray, axis: int, m: AxisMap) -> np.ndarray:
    """The transpose of ``m`` applied along ``axis`` of ``g`` (length n_out -> n_in), in a fixed order."""
    if m.is_identity():
        return g
    js, w, starts, sources = m.adjoint_plan()
    gathered = np.take(g, js, axis=axis)
    if w is not None:
        gathered *= _along(w.astype(g.dtype, copy=False), axis, g.ndim)
    summed = np.add.reduceat(gathered, starts, axis=axis) if len(starts) else gathered
    if len(sources) == m.n_in:
        return summed
    shape = list(g.shape)
    shape[axis] = m.n_in
    out = np.zeros(shape, g.dtype)
    index = [slice(None)] * g.ndim
    index[axis] = sources
    out[tuple(index)] = summed
    return out


Maps = Sequence[Tuple[int, AxisMap]]  # (axis, map) pairs, applied in this order


def apply(x: np.ndarray, maps: Maps) -> np.ndarray:
    for axis, m in maps:
        x = apply_axis(x, axis, m)
    return x if any(not m.is_identity() for _, m in maps) else x.copy()


def adjoint(g: np.ndarray, maps: Maps) -> np.ndarray:
    out = g
    for axis, m in reversed(maps):
        out = adjoint_axis(out, axis, m)
    return out.copy() if out is g else out


class MapFunction(Function):
    """``apply(x, maps)`` as a Function (the double backward of the maps' transpose)."""

    handles_float64 = True
    differentiable_reads = ()

    @staticmethod
    def forward(ctx, x, maps):
        ctx.maps = maps
        return apply(x, maps)

    @staticmethod
    def backward(ctx, g):
        return adjoint(g, ctx.maps)

    @staticmethod
    def differentiable_backward(ctx, args, kwargs, g):
        return MapAdjointFunction.apply(g, args[1]), None


class MapAdjointFunction(Function):
    """``adjoint(g, maps)``, the gradient of ``apply``, as a Function whose gradient is ``apply`` again."""

    handles_float64 = True
    differentiable_reads = ()

    @staticmethod
    def forward(ctx, g, maps):
        ctx.maps = maps
        return adjoint(g, maps)

    @staticmethod
    def backward(ctx, gg):
        return apply(gg, ctx.maps)

    @staticmethod
    def differentiable_backward(ctx, args, kwargs, gg):
        return MapFunction.apply(gg, args[1]), None


def linear_rule(ctx, args, kwargs, g):
    """The differentiable backward of an op whose forward stored its maps in ``ctx.maps``: the maps' transpose
    applied to ``g`` (one gradient, for the first argument)."""
    return (MapAdjointFunction.apply(g, ctx.maps),) + (None,) * (len(args) - 1)
