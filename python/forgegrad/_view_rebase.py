"""Views of a tensor that is written in place under autograd, as torch rebases them.

forgegrad's views (reshape, slicing, transpose, expand, ``t[0]``, narrow, unsqueeze, split, ...) are numpy
views of one storage array, made by ops whose Function has ``is_view = True`` and whose output shares its
input's storage. The tensor at the top of such a chain of view ops is the *base* (``h`` in ``v = h[0:2]``).

An in-place write recorded by autograd (``h[1] = y``, ``h.mul_(2)``, ``h.copy_(u)``, ``v.add_(1)``) writes the
new values into the base's storage, so every view sees them, and gives the base a new graph node (a write
through a view is recorded on the base as :class:`CopySlicesFunction`, torch's CopySlices). A view taken
before the write still holds the node it was made with, which differentiates the old values; as in torch it
is *rebased*: it gets a new node, :class:`AsStridedFunction` (torch's AsStridedBackward) of the base's current
node, so that ops using it afterwards differentiate the new values, including the elements that were written.

Rebasing is lazy and costs the common path nothing: ``Function.apply`` looks at its inputs only while some
tensor has been rebound by an in-place op (``autograd._rebound`` is non-empty), and then only at inputs whose
node is a view op made before the latest rebinding. A view is stale when its base was rebound after the
view's node was made. Ops that used a view before it was rebased keep differentiating its old node (the
view is rebound through ``autograd._note_rebind``, as the base is).

The element map between a view and its base is read from their memory layout (offset and strides in the
shared storage), so it needs no record of the ops in between and works for chains of views.
"""
from __future__ import annotations

import numpy as np

from . import _version_counter as _vc
from .autograd import Function, _note_rebind, _rebind_clock, _rebound, enable_grad
from ._graph_memory import parents_of as _live_parents
from .grad_mode import untraced
from .tensor import Tensor

_NDARRAY = np.ndarray

OVERLAP_MESSAGE = ("unsupported operation: more than one element of the written-to tensor refers to a single memory "
                   "location. Please clone() the tensor before performing the operation.")

def _bounds(arr):
    """(lowest, highest) byte address of ``arr``'s elements (its data pointer for an empty array)."""
    lo = hi = arr.__array_interface__["data"][0]
    for n, s in zip(arr.shape, arr.strides):
        if n == 0:
            return lo, lo - 1
        if s < 0:
            lo += (n - 1) * s
        else:
            hi += (n - 1) * s
    return lo, hi


def positions(base, view):
    """For each element of ``view`` (a numpy view of ``base``'s storage), the flat index of the element of
    ``base`` (in C order) at the same memory address; None when ``view`` reaches memory that is not one of
    ``base``'s elements (another array cut from one buffer) or their layouts do not line up. int32 for a
    base of under 2**31 elements: the graph keeps them (AsStrided, CopySlices) as long as it lives."""
    item = base.itemsize
    if view.dtype != base.dtype or any(s % item for s in base.strides + view.strides):
        return None
    index = np.dtype(np.int32 if base.size < 2 ** 31 else np.int64)
    if view.size == 0:
        return np.zeros(view.shape, dtype=index)
    lo_b, hi_b = _bounds(base)
    lo_v, hi_v = _bounds(view)
    if lo_v < lo_b or hi_v > hi_b:
        return None
    at = (view.__array_interface__["data"][0] - lo_b) // item
    if base.flags.c_contiguous:  # (the usual base, an op's fresh output) element k is at address lo_b + k * item
        idx = np.full(view.shape, at, dtype=index)
        for d, (n, s) in enumerate(zip(view.shape, view.strides)):
            idx += (np.arange(n, dtype=index) * (s // item)).reshape((n,) + (1,) * (view.ndim - d - 1))
        return idx
    # any other layout: shadow[k] = the flat index of base's element at address lo_b + k * item (-1: none)
    shadow = np.full((hi_b - lo_b) // item + 1, -1, dtype=index)
    start = (base.__array_interface__["data"][0] - lo_b) // item
    step = index.itemsize
    as_base = np.lib.stride_tricks.as_strided(shadow[start:], base.shape, [s // item * step for s in base.strides])
    as_base[...] = np.arange(base.size, dtype=index).reshape(base.shape)
    idx = np.lib.stride_tricks.as_strided(shadow[at:], view.shape, [s // item * step for s in view.strides]).copy()
    return None if (idx < 0).any() else idx


class AsStridedFunction(Function):
    """A view of ``base`` rebased after an in-place write (torch's AsStridedBackward): its output is the
    view's own array (the base's storage, with the new values); backward scatters the gradient into the
    base's shape at the view's elements (accumulating where an expanded view repeats one)."""

    is_view = True
    exact_dtype = True  # the output is the view's array itself
    handles_float64 = True

    @staticmethod
    def forward(ctx, base, view, idx):
        ctx.base_shape, ctx.idx, ctx.distinct = base.shape, idx, distinct_by_strides(view)
        return view

    @staticmethod
    def backward(ctx, g):
        out = np.zeros(ctx.base_shape, dtype=g.dtype)
        flat, idx = out.reshape(-1), ctx.idx.reshape(-1)
        g = np.asarray(g).reshape(-1)
        if ctx.distinct or np.unique(idx).size == idx.size:
            flat[idx] = g
        else:
            np.add.at(flat, idx, g)
        return out

    differentiable_reads = ()  # (create_graph: forgegrad._create_graph) the rule reads no tensor's values

    @staticmethod
    def differentiable_backward(ctx, args, kwargs, g):
        """The same with Tensor ops: linear in ``g``, so its own gradient is this view of the gradient again."""
        from .ops._double_backward import _scatter
        n = int(np.prod(ctx.base_shape))
        return _scatter(g.reshape(-1), (ctx.idx.reshape(-1),), (n,)).reshape(ctx.base_shape), None, None


class OverwrittenFunction(Function):
    """An in-place write of values that need no gradient (``zero_``, ``fill_(3)``, ``copy_`` of a constant)
    into a tensor that required one: its output is the new values, and the tensor stays in the graph (it
    requires grad, as torch's keeps its FillBackward/ZeroBackward node); nothing flows to the old values."""

    exact_dtype = True
    handles_float64 = True
    any_device = True  # (it passes the new values through on any device)

    @staticmethod
    def forward(ctx, old, new):
        return new

    @staticmethod
    def backward(ctx, g):
        return None, None

    differentiable_reads = ()

    @staticmethod
    def differentiable_backward(ctx, args, kwargs, g):
        return None, None


class CopySlicesFunction(Function):
    """An in-place write through a view of ``base`` (torch's CopySlices): ``src`` is written into the view's
    elements of the base's storage; the output is the base's array. Backward: ``src`` gets the gradient at
    those elements, the base's earlier node the gradient with them zeroed (they were overwritten)."""

    exact_dtype = True  # the output is the base's array itself
    handles_float64 = True

    @staticmethod
    def forward(ctx, base, src, view, idx):
        ctx.idx, ctx.src_shape = idx, src.shape
        if view.flags.writeable:
            view[...] = src
        else:  # a slice of an expanded view (read-only in numpy) whose elements are distinct
            base[np.unravel_index(idx, base.shape)] = src
        return base

    @staticmethod
    def backward(ctx, g):
        g = np.ascontiguousarray(g)
        idx = ctx.idx.reshape(-1)
        gb = gs = None
        if ctx.needs_input_grad[0]:
            gb = g.copy()
            gb.reshape(-1)[idx] = 0
        if ctx.needs_input_grad[1]:
            gs = g.reshape(-1)[idx].reshape(ctx.src_shape)
        return gb, gs, None, None

    differentiable_reads = ()

    @staticmethod
    def differentiable_backward(ctx, args, kwargs, g):
        """The same with Tensor ops (create_graph: forgegrad._create_graph)."""
        from .ops._double_backward import _const
        idx = ctx.idx.reshape(-1)
        keep = np.ones(g.shape, dtype=bool)
        keep.reshape(-1)[idx] = False
        return g * _const(keep, g), g.reshape(-1)[idx].reshape(ctx.src_shape), None, None


def base_of(t):
    """The base of view ``t`` (the tensor at the top of its chain of view ops on one storage), or None when
    ``t`` is no view (or lives on another device)."""
    d = t._data
    if type(d) is not _NDARRAY:
        return None
    r = _vc.root(d)
    cur = t
    while True:
        node = cur._ctx
        if node is None or not type(node).is_view:
            break
        p = node.parents[0]
        if node.weak_inputs:  # the base is held by the view tensor, weakly by the node (forgegrad._graph_memory)
            p = _live_parents(node)[0]
        if p is None or type(p._data) is not _NDARRAY or _vc.root(p._data) is not r:
            break
        cur = p
    return None if cur is t else cur


def is_view(t) -> bool:
    """Whether ``t`` is a view of another tensor (made by a view op, in the graph or outside it)."""
    if t._ctx is None:
        return unrecorded_base(t) is not None
    return type(t._ctx).is_view and base_of(t) is not None


def rebase_if_stale(t) -> None:
    """Rebase view ``t`` if its base was rebound by an in-place op after ``t``'s node was made."""
    node = t._ctx
    if node is None or not type(node).is_view:
        return
    base = base_of(t)
    if base is None:
        return
    hist = _rebound.get(id(base))
    if hist and hist[-1][0] > node.made_at:
        rebase(t, base)


def rebase_inputs(args) -> None:
    """``Function.apply``'s check, run while some tensor has been rebound: rebase its stale view inputs."""
    for a in args:
        if isinstance(a, Tensor):
            node = a._ctx
            if node is None:  # (a view's array never owns its memory: leaves and parameters skip the lookup)
                d = a._data
                if type(d) is _NDARRAY and d.base is not None and getattr(a, "_view_of", None) is not None:
                    rebase_if_base_recorded(a)
            elif node.made_at < _rebind_clock[0] and type(node).is_view:
                rebase_if_stale(a)


def unrecorded_base(t):
    """The base of ``t`` when ``t`` is a view made outside the graph of a tensor that had no node (the top
    of its chain of such views on one storage, ``buf`` in ``v = buf[:2]``), else None."""
    d = t._data
    if type(d) is not _NDARRAY:
        return None
    r = _vc.root(d)
    cur = t
    while True:
        p = getattr(cur, "_view_of", None)
        if p is None or type(p._data) is not _NDARRAY or _vc.root(p._data) is not r:
            break
        cur = p
    return None if cur is t else cur


def rebase_if_base_recorded(t) -> None:
    """View ``t`` made outside the graph of a base that has since been written in place under autograd (it
    has a node now, as torch's base would): t gets AsStrided of the base, so ops using t differentiate it."""
    base = unrecorded_base(t)
    if base is not None and base._ctx is not None and id(base) in _rebound:
        rebase(t, base)


def rebase(t, base, idx=None) -> None:
    """Give view ``t`` the node AsStrided(base): it stands for base's current values at t's elements. The
    ops that used ``t`` before keep its old node (a stand-in, as for an in-place op)."""
    if idx is None:
        idx = positions(base._data, t._data)
        if idx is None:  # not inside the base's elements: nothing there was written through the base
            return
    old = Tensor._wrap_exact(t._data)
    old._ctx, old._out_index, old.requires_grad = t._ctx, t._out_index, t.requires_grad
    _note_rebind(t, old)  # before the new node is made: the ops made until now read old in t's place
    # the view's node follows its base whatever the grad mode of its next use; no part of a trace
    with enable_grad(), untraced():
        out = AsStridedFunction.apply(base, t._data, idx)
    t._ctx, t._out_index, t.requires_grad = out._ctx, out._out_index, out.requires_grad
    if t._ctx is not None:
        t._ctx.rebound_from = old


DTYPE_VIEW_MESSAGE = ("an in-place write recorded by autograd into a view that changes the dtype ({view} view of a "
                      "{base} tensor: real, imag, view_as_real, view_as_complex) is not supported by forgegrad; build "
                      "the new value out of place instead (forgegrad.complex(re, im), torch.where, ...)")


def view_target(t, tracked: bool = False):
    """``(base, positions of t in base)`` for an in-place write into view ``t`` that is recorded on its base
    (``t`` rebased first if stale), or None when ``t`` is no view (it is written alone). A view made outside
    the graph of a tensor without a node is written through to that base, which then has a node (torch's
    CopySlices); refused (torch's message) when that base is a leaf that requires grad."""
    if t._ctx is None:
        base = unrecorded_base(t)
        if base is not None and base.requires_grad and base._ctx is None:
            from ._inplace import VIEW_OF_LEAF_MESSAGE
            raise RuntimeError(VIEW_OF_LEAF_MESSAGE)
    else:
        rebase_if_stale(t)
        base = base_of(t)
        if base is not None and base._ctx is None and not base.requires_grad:  # its base was detach_()ed
            from ._inplace import VIEW_OF_LEAF_MESSAGE
            raise RuntimeError(VIEW_OF_LEAF_MESSAGE)  # (torch's words)
    if base is None:
        return None
    if tracked and base._data.dtype != t._data.dtype:  # (no element map between the two: refused, not dropped)
        raise RuntimeError(DTYPE_VIEW_MESSAGE.format(view=t._data.dtype, base=base._data.dtype))
    idx = positions(base._data, t._data)
    return None if idx is None else (base, idx)


def distinct_by_strides(arr) -> bool:
    """True when ``arr``'s strides show that no two of its elements share a memory location: ordered by
    stride, each axis steps past everything the smaller ones span (every layout slicing, transposing and
    reshaping make). False: they may share one (an expanded view, or strides interleaved; the elements
    tell)."""
    extent = arr.itemsize
    for s, n in sorted((abs(s), n) for n, s in zip(arr.shape, arr.strides) if n > 1):
        if s < extent:
            return False
        extent += s * (n - 1)
    return True


def check_no_overlap(idx, view=None) -> None:
    """torch refuses a write in which two elements of the target are one memory location (an expanded
    view). ``idx``: the target's elements' flat indices in its base; ``view``: its array, whose strides
    usually settle it without sorting the indices (a cost that was most of a small training step)."""
    if view is not None and distinct_by_strides(view):
        return
    flat = idx.reshape(-1)
    if np.unique(flat).size != flat.size:
        raise RuntimeError(OVERLAP_MESSAGE)


def stand_in(base, idx, values):
    """``(base_old, view_old)`` for an in-place write through a view of ``base`` (``idx``: the view's elements
    in it; ``values``: a copy of them): base_old holds base's current node, and view_old is AsStrided of it
    (the view's old value, which the op reads), so the base's new graph never refers to the base itself."""
    base_old = Tensor._wrap_exact(base._data)
    base_old._ctx, base_old._out_index, base_old.requires_grad = base._ctx, base._out_index, base.requires_grad
    with enable_grad(), untraced():
        view_old = AsStridedFunction.apply(base_old, values, idx)
    return base_old, view_old


def write_through_view(t, base, idx, base_old, out) -> None:
    """Record the in-place op whose result is ``out`` (of ``t``'s shape and dtype) on view ``t``'s base
    (``base_old``: the stand-in for it from :func:`stand_in`): the base gets a CopySlices node (its storage
    takes ``out``'s values at ``t``'s elements) and ``t`` is rebased on it."""
    res = CopySlicesFunction.apply(base_old, out, t._data, idx)
    base._ctx, base._out_index, base.requires_grad = res._ctx, res._out_index, res.requires_grad
    _note_rebind(base, base_old)  # the ops that used the base before keep its old node
    if base._ctx is not None:
        base._ctx.rebound_from = base_old
    rebase(t, base, idx)
