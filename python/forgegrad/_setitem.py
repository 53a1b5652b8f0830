"""``t[key] = value`` under autograd, recorded as torch records it (an in-place op on ``t``).

When grad mode is on and ``t`` or ``value`` requires grad, the values are written into ``t``'s storage
(views of it and tensors sharing it see them, as with torch) and ``t`` is rebound to a new graph node,
:class:`IndexPutFunction`, whose inputs are ``t`` as it was and ``value``. Its backward sends
``grad[key]`` to ``value`` (summed over the dims the value was broadcast over, in the value's dtype) and
``grad`` with ``grad[key]`` zeroed to ``t``'s previous node: the elements that were overwritten no longer
depend on what was there. A ``t`` that required no grad requires it afterwards if ``value`` does.

The rebinding goes through autograd's stand-ins (autograd._rebound), so ops that used ``t`` before the
write keep differentiating its old value, and the write is counted in ``t``'s version, so an op that
saved ``t``'s array before raises torch's error at backward.

A view of another tensor of the graph (``row = h[0]; row[1] = v``, ``h.t()[0] = v``, ``h.reshape(-1)[2:] = v``)
is written as torch writes it: the write is recorded on the base (``h``, whose gradient then skips the
overwritten elements) at the elements the view's key names, and the view is rebased on the base's new
value; other views taken before the write are rebased when next used (forgegrad._view_rebase). A write in
which two elements are one memory location (through an expanded view) is refused, as torch refuses it.

Refused, with a RuntimeError, rather than a wrong gradient: a leaf that requires grad or a view of one
(torch's message).
"""
from __future__ import annotations

import warnings

import numpy as np

from . import _version_counter as _vc
from .autograd import Function, _note_rebind
from .ops._util import unbroadcast

EXPANDED_INDEX_PUT_MESSAGE = (
    "Use of index_put_ on expanded tensors is deprecated. Please clone() the tensor before performing this "
    "operation. This also applies to advanced indexing e.g. tensor[indices] = tensor")


class IndexPutFunction(Function):
    """``a[key] = v`` written into ``a``'s own array (its output shares ``a``'s storage); ``v`` is a Tensor
    (differentiable) or any value numpy assigns (a number, an array)."""

    exact_dtype = True  # the output is a's array, in a's dtype
    handles_float64 = True

    @staticmethod
    def forward(ctx, a, v, key):
        ctx.key = key
        v_arr = np.asarray(v)
        ctx.v_shape, ctx.v_dtype = v_arr.shape, v_arr.dtype
        arrays = [k for k in (key if isinstance(key, tuple) else (key,)) if isinstance(k, np.ndarray)]
        if arrays:  # backward indexes with them: changing one in place before backward raises, as torch's
            ctx.save_for_backward(*arrays)
        assign(a, key, v)
        return a

    @staticmethod
    def backward(ctx, g):
        key = ctx.key
        ga = gv = None
        if ctx.needs_input_grad[0]:
            ga = g.copy()
            ga[key] = 0  # the overwritten elements no longer depend on a's old values
        if ctx.needs_input_grad[1]:
            picked = np.asarray(g[key])
            lead = len(ctx.v_shape) - picked.ndim
            if lead > 0:  # numpy and torch accept a value with extra leading dims of size 1
                picked = picked.reshape((1,) * lead + picked.shape)
            gv = unbroadcast(picked, ctx.v_shape).astype(ctx.v_dtype, copy=False)
        return ga, gv, None

    differentiable_reads = ()  # the rule reads no tensor's values (the key is kept on ctx)

    @staticmethod
    def differentiable_backward(ctx, args, kwargs, g):
        """The same with Tensor ops (create_graph: forgegrad._create_graph)."""
        from .ops._double_backward import _const, _sum_to
        key, v = ctx.key, args[1]
        keep = np.ones(g.shape, dtype=bool)
        keep[key] = False
        gv = None
        if hasattr(v, "requires_grad") and v.requires_grad:
            picked = g[key]
            lead = len(ctx.v_shape) - picked.ndim
            gv = _sum_to(picked.reshape((1,) * lead + picked.shape) if lead > 0 else picked, ctx.v_shape)
        return g * _const(keep, g), gv, None


def assign(a: np.ndarray, key, v) -> None:
    """``a[key] = v`` as torch assigns: a value may have more leading dims of size 1 than the target has
    dims (numpy refuses a (1,) value for one element)."""
    try:
        a[key] = v
    except ValueError:
        v = np.asarray(v)
        lead = v.ndim - np.ndim(a[key])
        if lead <= 0 or v.shape[:lead] != (1,) * lead:
            raise
        a[key] = v.reshape(v.shape[lead:])


def setitem_tracked(t, key, value) -> None:
    """``t[key] = value`` recorded in the graph (grad mode on, ``t`` or ``value`` requires grad; ``t`` is
    a CPU tensor and no leaf that requires grad, which the caller checked). ``key`` holds numpy arrays in
    place of index Tensors."""
    from .tensor import Tensor
    from ._view_rebase import view_target
    # (base, t's elements in it) for a view (of a graph tensor, or made outside it)
    target = view_target(t, tracked=True)
    if target is not None:
        _setitem_through_base(t, target[0], target[1], key, value)
        return
    # the op's input is a stand-in holding t's current node (t itself becomes the output: a node listing t
    # as its own input would loop); it shares t's array, which only the version check reads after this
    old = Tensor._wrap_exact(t._data)
    old._ctx, old._out_index, old.requires_grad = t._ctx, t._out_index, t.requires_grad
    # counted first: what saved t's array before is outdated (torch raises for it at backward)
    _vc.bump(t)
    try:
        out = IndexPutFunction.apply(old, value, key)
    except BaseException:
        _vc.unbump(t)  # numpy refused the assignment (shape, index): nothing was written
        raise
    t._ctx, t._out_index, t.requires_grad = out._ctx, out._out_index, out.requires_grad
    _note_rebind(t, old)  # the ops that used t before keep using it as it was (old)
    if t._ctx is not None:
        t._ctx.rebound_from = old


def _setitem_through_base(t, base, idx, key, value) -> None:
    """``t[key] = value`` for a view ``t`` of graph tensor ``base`` (``idx``: t's elements' flat indices in
    base): recorded on the base at the elements that t[key] names and t rebased on the base's new value,
    as torch propagates a view's write to its base."""
    from ._view_rebase import check_no_overlap, distinct_by_strides, rebase
    picked = np.asarray(idx[key])
    # as torch: a basic key copies into the view t[key], refused when two of its elements are one memory
    # location (e[0] = v of an expanded e; e[1, 1] = v is one element); an index array runs index_put_ on t,
    # which only warns for an expanded t (the last value written to a location stays, as numpy's). A key
    # naming one element twice (t[[1, 1]] = v) is no overlap
    if _basic_key(key):
        check_no_overlap(picked, t._data[key])
    elif not distinct_by_strides(t._data) and np.unique(idx).size != idx.size:
        warnings.warn(EXPANDED_INDEX_PUT_MESSAGE, UserWarning, stacklevel=4)
    setitem_tracked(base, np.unravel_index(picked, base._data.shape), value)  # writes the storage once, counted once
    rebase(t, base, idx)


def _basic_key(key) -> bool:
    """Whether ``key`` indexes by integers, slices, None and Ellipsis only (numpy's basic indexing: a view)."""
    for k in key if type(key) is tuple else (key,):
        if not (k is None or k is Ellipsis or type(k) is slice or isinstance(k, (int, np.integer))) or \
                isinstance(k, (bool, np.bool_)):
            return False
    return True
