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

A view made by indexing another tensor of the graph (``row = h[0]; row[1] = v``, ``h[1:][0] = v``) is
written as torch writes it: the write is recorded on the base (``h``, whose gradient then skips the
overwritten elements) and the view is rebound to the base's new value indexed again. Other views and
tensors that shared the storage see the new values, but a view taken before the write keeps its graph
node (torch rebases it): its gradient still goes to the old values.

Refused, with a RuntimeError, rather than a wrong gradient: a leaf that requires grad or a view of one
(torch's message), and a view of a graph tensor made by another op (reshape, transpose, expand, ...),
whose write forgegrad cannot carry to the base; write into the base or clone the view first.
"""
from __future__ import annotations

import numpy as np

from . import _version_counter as _vc
from .autograd import Function, _note_rebind
from .ops._util import unbroadcast

VIEW_OF_GRAPH_MESSAGE = (
    "t[key] = value on a view (reshape, transpose, expand, ...) of another tensor of the autograd graph: torch "
    "propagates the write to the view's base; forgegrad does so for views made by indexing (h[1:], h[0]) only, "
    "and would leave the base's gradient wrong here. Write into the base instead or clone the view first")


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
    if t._ctx is not None:
        chain = _view_chain(t)
        if chain is not None:
            _setitem_through_base(t, *chain, key, value)
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


def _view_chain(t):
    """``(base, keys)`` when ``t`` is a view of another tensor of the graph made by indexing alone
    (``t`` is ``base[keys[0]][keys[1]]...``, basic keys, sharing base's storage), else None when ``t`` is
    no view. Refuses (RuntimeError) a view made by another op (reshape, transpose, expand, ...).

    t's own earlier ``t[key] = value`` writes (their input is t as it was, sharing its storage) end the
    walk: they make no view."""
    from .ops.shape import GetItemFunction
    r = _vc.root(t._data)
    keys = []
    cur = t
    while True:
        node = cur._ctx
        if node is None or type(node) is IndexPutFunction:
            break
        same = [p for p in node.parents if p is not None and _vc.root(p._data) is r]
        if not same:
            break
        if type(node) is not GetItemFunction or "key" not in node.__dict__:  # a released node keeps no key
            raise RuntimeError(VIEW_OF_GRAPH_MESSAGE)
        keys.append(node.key)
        cur = node.parents[0]
    return None if cur is t else (cur, keys[::-1])


def _setitem_through_base(t, base, keys, key, value) -> None:
    """``t[key] = value`` for a view ``t = base[keys[0]]...`` of a graph tensor: recorded on the base (the
    elements of base that t[key] names, found by indexing base's element numbers as t was indexed) and
    t rebound to the base's new value indexed again, as torch propagates a view's write to its base."""
    from .ops.shape import GetItemFunction
    from .tensor import Tensor
    numbers = np.arange(base._data.size).reshape(base._data.shape)
    for k in keys:
        numbers = numbers[k]
    where = np.unravel_index(np.asarray(numbers[key]), base._data.shape)
    old = Tensor._wrap_exact(t._data)
    old._ctx, old._out_index, old.requires_grad = t._ctx, t._out_index, t.requires_grad
    setitem_tracked(base, where, value)  # writes the shared storage once, counted once
    cur = base
    for k in keys:
        cur = GetItemFunction.apply(cur, k)
    t._ctx, t._out_index, t.requires_grad = cur._ctx, cur._out_index, cur.requires_grad
    _note_rebind(t, old)
    if t._ctx is not None:
        t._ctx.rebound_from = old
