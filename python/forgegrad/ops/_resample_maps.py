"""Per-axis linear maps: the arithmetic shared by interpolation (ops/resample.py) and the non-constant pads
(ops/pad.py).

Every one of these ops is separable: along each resized or padded axis, output position ``j`` is a weighted sum
of ``T`` input positions, ``out[j] = sum_k w[k, j] * x[idx[k, j]]`` (nearest and the pads: T = 1 and no weights;
linear: T = 2; cubic: T = 4). An :class:`AxisMap` holds ``idx`` and ``w`` for one axis; the op applies its maps
one axis after the other, last axis first (torch's order of the sums: the width sum inside the height sum).

The gradient is the transposed map, applied axis by axis, without a scatter-add: the map's entries are sorted
once by source position (a stable sort, so within one source the output positions come in increasing order and
the taps of one output in tap order), and the q-th contribution of every source forms level q. A level's sources
are distinct, so it is one gather of the output gradient (a strided view where the positions are an arithmetic
progression: nearest by an integer factor, the core of a pad), a multiply by the weights and one add into the
sources; each source sums its contributions in the levels' order. The order is fixed by the map alone, so the
gradient has the same bits at any thread count (overlapping bilinear/bicubic windows included).

Weighted maps over axes short for their taps (n_in <= 32 taps: antialiased and area downscales, bicubic,
trilinear on volumes) run instead as products with their dense (n_out, n_in) matrices, forward and (transposed)
backward: one BLAS GEMM per axis beats a gather per tap there (docs/torch_compat.md has the figures). BLAS sums
each dot product in its own fixed order, not torch's tap order (values equal to float rounding); forgegrad's
thread count does not change it (OpenBLAS gave the same bits at 1 and 2 of its threads on these shapes). An input
with an inf or nan takes the per-tap path, so that it spreads only over its own windows, as in torch.

float32 (N, C, H, W) inputs with maps of at most two taps (nearest, bilinear, the pads) run the C++ kernel
forgegrad._C.resample (cpp/kernels/per_isa/resample.cpp) instead: one pass per plane, width sums then height sums
forward, and the same per-source order backward, so its bits are this module's; numpy runs everything else
(float64, 3-D and 5-D inputs, bicubic, area, antialias, 3-axis pads).

:class:`MapFunction` / :class:`MapAdjointFunction` apply a list of maps and its transpose as Functions whose
differentiable backward rule is the other one: these ops are linear, so their double backward is the op itself.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from .. import _C
from ..autograd import Function


class AxisMap:
    """out[j] = sum_k w[k, j] * x[idx[k, j]] along one axis of length ``n_in`` (``w`` None: all ones)."""

    __slots__ = ("n_in", "n_out", "idx", "w", "_adjoint", "_dense")

    def __init__(self, n_in: int, idx: np.ndarray, w: Optional[np.ndarray] = None):
        self.n_in = int(n_in)
        self.idx = np.ascontiguousarray(idx, dtype=np.intp).reshape(-1, np.shape(idx)[-1])
        self.n_out = self.idx.shape[1]
        self.w = None if w is None else np.ascontiguousarray(w).reshape(self.idx.shape)
        self._adjoint = None
        self._dense = {}

    @property
    def taps(self) -> int:
        return self.idx.shape[0]

    def is_identity(self) -> bool:
        return (self.taps == 1 and self.n_in == self.n_out and self.w is None
                and bool(np.array_equal(self.idx[0], np.arange(self.n_in))))

    def use_dense(self) -> bool:
        """Whether the map runs as a product with its dense (n_out, n_in) matrix: where the axis is short for the
        map's taps (n_in <= 32 taps: antialiased and area downscales, bicubic, trilinear on volumes), one GEMM
        beats a gather, multiply and add per tap and the backward's per-source levels (measured: docs)."""
        return self.w is not None and self.n_in <= DENSE_TAPS * self.taps

    def dense(self, dtype) -> np.ndarray:
        """The map as an (n_out, n_in) matrix in ``dtype`` (taps on the same source summed)."""
        dtype = np.dtype(dtype)
        if dtype not in self._dense:
            m = np.zeros((self.n_out, self.n_in), dtype)
            cols = np.broadcast_to(np.arange(self.n_out), self.idx.shape)
            np.add.at(m, (cols.ravel(), self.idx.ravel()), self.w.astype(dtype).ravel())
            self._dense[dtype] = m
        return self._dense[dtype]

    def adjoint_plan(self):
        """The transpose as levels: the map's entries sorted by source position (stable: within one source the
        output positions in increasing order, one output's taps in tap order), the q-th entry of every source in
        level q. Each level is (sources, outputs, weights or None), sources distinct within a level; an arithmetic
        progression is kept as a slice (a view, not a gather)."""
        if self._adjoint is None:
            src = self.idx.T.ravel()  # output-major: output j's taps in tap order
            order = np.argsort(src, kind="stable")
            counts = np.bincount(src, minlength=self.n_in)
            starts = np.repeat(np.cumsum(counts) - counts, counts)
            occ = np.arange(order.size) - starts  # the entry's rank among its source's entries
            src_sorted, js = src[order], order // self.taps
            w = None if self.w is None else self.w.T.ravel()[order]
            levels = []
            for q in range(int(counts.max(initial=0))):
                sel = occ == q
                levels += _pieces(src_sorted[sel], js[sel], None if w is None else w[sel])
            self._adjoint = levels
        return self._adjoint


_MIN_RUN = 8  # shorter runs are gathered with the level's other irregular entries
DENSE_TAPS = 32  # AxisMap.use_dense: beyond n_in = 32 taps the dense product's n_in-long dot products cost more


def _dense_along(x: np.ndarray, axis: int, mat: np.ndarray) -> np.ndarray:
    """``mat`` (n_out, n_in) applied along ``axis`` of x (length n_in): one GEMM (the last axis) or a batch of
    them over the leading axes."""
    shape = x.shape
    lead, n, trail = int(np.prod(shape[:axis])), shape[axis], int(np.prod(shape[axis + 1:]))
    if trail == 1:
        y = np.ascontiguousarray(x).reshape(lead, n) @ mat.T
    else:
        y = np.matmul(mat, np.ascontiguousarray(x).reshape(lead, n, trail))
    return y.reshape(shape[:axis] + (mat.shape[0],) + shape[axis + 1:])


def _pieces(src: np.ndarray, js: np.ndarray, w):
    """One level as (sources, outputs, weights) pieces: its runs where sources and outputs both step evenly (the
    bulk of a resize or a pad: slices, views of the gradient) and one gathered piece for the rest (edges)."""
    if src.size < _MIN_RUN:
        return [(src, js, w)] if src.size else []
    ds, dj = np.diff(src), np.diff(js)
    cut = np.flatnonzero((ds[1:] != ds[:-1]) | (dj[1:] != dj[:-1])) + 1  # where a step changes
    bounds = np.concatenate(([0], cut + 1, [src.size]))
    pieces, rest = [], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b - a >= _MIN_RUN and ds[a] > 0 and dj[a] > 0:
            pieces.append((slice(int(src[a]), int(src[b - 1]) + 1, int(ds[a])),
                           slice(int(js[a]), int(js[b - 1]) + 1, int(dj[a])), None if w is None else w[a:b]))
        else:
            rest.append(np.arange(a, b))
    if rest:
        r = np.concatenate(rest)
        pieces.append((src[r], js[r], None if w is None else w[r]))
    return pieces


def _along(v: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """A 1-D ``v`` shaped to broadcast along ``axis`` of an ``ndim``-D array."""
    shape = [1] * ndim
    shape[axis] = v.shape[0]
    return v.reshape(shape)


def _dense_ok(x: np.ndarray, maps) -> bool:
    """The dense products multiply every input by the zeros outside its windows too: with an inf or nan in x
    they would spread it along the whole axis, so such inputs take the per-tap path (torch's locality)."""
    return any(m.use_dense() for _, m in maps) and bool(np.isfinite(x).all())


def apply_axis(x: np.ndarray, axis: int, m: AxisMap, dense_ok: bool = False) -> np.ndarray:
    """``m`` applied along ``axis`` of ``x`` (taps summed in tap order, as torch's kernels do; or, where
    ``dense_ok`` and the map prefers it, as one product with its dense matrix)."""
    if m.is_identity():
        return x
    if dense_ok and m.use_dense():
        return _dense_along(x, axis, m.dense(x.dtype))
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


def _index(axis: int, ndim: int, key) -> tuple:
    index = [slice(None)] * ndim
    index[axis] = key
    return tuple(index)


def adjoint_axis(g: np.ndarray, axis: int, m: AxisMap, dense_ok: bool = False) -> np.ndarray:
    """The transpose of ``m`` applied along ``axis`` of ``g`` (length n_out -> n_in): level by level, each a
    gather (or a strided view) of ``g``, scaled, added into distinct source positions, so every source sums its
    contributions in one fixed order (0 + first + second + ...), whatever the thread count."""
    if m.is_identity():
        return g
    if dense_ok and m.use_dense():
        return _dense_along(g, axis, m.dense(g.dtype).T)
    shape = list(g.shape)
    shape[axis] = m.n_in
    out = np.zeros(shape, g.dtype)
    for src, js, w in m.adjoint_plan():
        part = g[_index(axis, g.ndim, js)]
        if w is not None:
            part = part * _along(w.astype(g.dtype, copy=False), axis, g.ndim)
        out[_index(axis, g.ndim, src)] += part
    return out


Maps = Sequence[Tuple[int, AxisMap]]  # (axis, map) pairs, applied in this order


def _kernel_maps(x: np.ndarray, maps: Maps, n_out_of):
    """The (idx_h, w_h, idx_w, w_w) that _C.resample takes for ``maps`` on ``x`` (float32 (N, C, H, W), maps of at
    most 2 taps along H and W; an axis without a map: the identity), or None where numpy runs (other dtypes and
    ranks, bicubic)."""
    if x.dtype != np.float32 or x.ndim != 4 or not maps:
        return None
    by_axis = {}
    for axis, m in maps:
        if axis not in (2, 3) or axis in by_axis or m.taps > 2:
            return None
        by_axis[axis] = m
    out = []
    for axis in (2, 3):
        m = by_axis.get(axis)
        if m is None:
            out += [np.arange(n_out_of(axis), dtype=np.int64)[None], None]
        else:
            out += [np.ascontiguousarray(m.idx, np.int64),
                    None if m.w is None else np.ascontiguousarray(m.w, np.float32)]
    return out


def apply(x: np.ndarray, maps: Maps) -> np.ndarray:
    km = _kernel_maps(x, maps, lambda axis: x.shape[axis])
    if km is not None:  # the fused C++ pass (cpp/kernels/per_isa/resample.cpp): numpy's order, numpy's bits
        x = np.ascontiguousarray(x)
        y = np.empty(x.shape[:2] + (km[0].shape[1], km[2].shape[1]), np.float32)
        _C.resample.resample2d_forward(x, km[0], km[1], km[2], km[3], 0.0, y)
        return y
    dense_ok = _dense_ok(x, maps)
    for axis, m in maps:
        x = apply_axis(x, axis, m, dense_ok)
    return x if any(not m.is_identity() for _, m in maps) else x.copy()


def adjoint(g: np.ndarray, maps: Maps) -> np.ndarray:
    n_in = dict((axis, m.n_in) for axis, m in maps)
    km = _kernel_maps(g, maps, lambda axis: g.shape[axis])
    if km is not None:
        g = np.ascontiguousarray(g)
        gx = np.empty(g.shape[:2] + (n_in.get(2, g.shape[2]), n_in.get(3, g.shape[3])), np.float32)
        _C.resample.resample2d_backward(g, km[0], km[1], km[2], km[3], gx)
        return gx
    out, dense_ok = g, _dense_ok(g, maps)
    for axis, m in reversed(maps):
        out = adjoint_axis(out, axis, m, dense_ok)
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
