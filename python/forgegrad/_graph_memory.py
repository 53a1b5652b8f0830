"""What a graph node keeps of its inputs: only what some backward rule reads (torch's graph keeps saved tensors).

A node links to its inputs through ``ctx.parents`` (the edges backward follows: each parent's ``_ctx`` and
``_out_index``) and ``ctx.call`` (the arguments its ``create_graph`` rule recomputes from). Holding the input
Tensors there keeps their arrays alive as long as the graph: a convolution's output, the input of the ReLU after
it, whose backward reads only its own output, would live until backward though no rule reads it.

So ``Function.apply`` calls ``drop_inputs`` for each recorded node: an input that is a non-leaf CPU tensor, which
the node's differentiable rule does not read the values of (ops/_double_backward.read_tensors; the array rule
reads only what forward saved) and whose producer's rule does not read it either (relu, exp, tanh, ... read
their output), is held weakly. ``ctx.parents`` keeps an ``Edge`` in its place: a Tensor without data that names
the same node and output (torch's Edge: grad_fn, output_nr), so the graph and its order are unchanged while the
array goes when user code drops the tensor. While the tensor lives, the engines read it itself (``parents_of``):
retain_grad, identity and in-place rebinding behave as before; once it is gone nothing can observe more than the
edge. Leaves are always held (torch's AccumulateGrad holds them too), and so are the inputs of Functions outside
the registry that do not declare what their rules read.

A view op (reshape, flatten, transpose, expand, slicing, unfold) reads only shapes too: its node holds its input
weakly like any other. When the view shares its input's storage, the view tensor holds the input instead
(``_graph_base``, torch's ``_base``): while a view lives its base does, so forgegrad._view_rebase still finds it
(``base_of`` reads the live input) and an in-place write through the view is recorded on it, and the walk from a
view up to a leaf (forgegrad._inplace) finds it. A conv output flattened into a ReLU goes when user code drops
both, as torch frees it.

No reference cycle: the Edge holds the producer's node, which holds nothing of its consumers.
"""
from __future__ import annotations

import weakref

import numpy as np

from . import _version_counter as _vc
from .tensor import Tensor

_NDARRAY = np.ndarray
# cls -> what its nodes may drop (_NONE, _SOME, _ALL below)
_KIND = {}
_read_tensors = None
# ops whose create_graph rule reads their own output (from the graph, else recomputed from their input, which they
# do not keep): a consumer keeps that output (they save it anyway, so keeping it costs nothing)
_READS_OUTPUT = frozenset(("relu", "elu", "exp", "sqrt", "tanh", "sigmoid", "softmax", "log_softmax"))


class Edge(Tensor):
    """The place of a dropped input in ``ctx.parents``: its node, output index, shape and dtype, no values. Its
    ``_data`` is a read-only array of zeros that takes no memory (stride 0), for the engines' shape and dtype
    checks; ``is_edge`` tells it from a tensor (the create_graph pass refuses to hand it to a rule that reads it)."""

    __slots__ = ("_meta", "_zeros", "_root")

    @property
    def _data(self):
        z = self._zeros
        if z is None:
            shape, dtype = self._meta
            z = self._zeros = np.broadcast_to(np.zeros((), dtype), shape)
        return z

    def __repr__(self):
        return f"<graph edge to output {self._out_index} of {type(self._ctx).__name__}, shape {self._meta[0]}>"


def _edge(a: Tensor, root) -> Edge:
    e = Edge.__new__(Edge)
    e._meta, e._zeros, e._root = (a._data.shape, a._data.dtype), None, root
    e._ctx, e._out_index, e.requires_grad, e.grad, e._retains_grad = a._ctx, a._out_index, a.requires_grad, None, False
    return e


def edge_root(e: Edge):
    """The array owning the storage of the tensor ``e`` stands for while that is still alive, else None (for the
    walk from an in-place target up its storage's ops: forgegrad._inplace._views_a_leaf)."""
    r = e._root
    return None if r is None else r()


def is_edge(t) -> bool:
    return type(t) is Edge


# a class's nodes: drop nothing, what read_tensors leaves, every candidate, what the other factor's gradient leaves,
# the input of a view op whose rules read no values of it (reshape, permute, expand, getitem: drop_view_input)
_NONE, _SOME, _ALL, _FACTOR, _VIEW = 0, 1, 2, 3, 4
# ops whose rules read no tensor's values whatever the arguments (ops/_double_backward's _SHAPES_ONLY and its
# output readers): no need to ask read_tensors per node
_READS_NONE = _READS_OUTPUT - {"elu"}


def _kind(cls) -> int:
    kind = _KIND.get(cls)
    if kind is None:
        kind = _NONE
        # (a view op outside the registry, AsStrided after an in-place write, keeps its base: it stands for it)
        if not (cls.complex_path or cls.any_device or cls.is_view and cls.op is None):
            if cls.op is not None:
                from .ops._double_backward import _FACTORS, _SHAPES_ONLY
                name = cls.op.name
                kind = _ALL if name in _SHAPES_ONLY or name in _READS_NONE else _FACTOR if name in _FACTORS else _SOME
                rule = cls.op.differentiable_backward
                # (getitem's rules read its index tensors, never the indexed one)
                if (kind == _ALL or name == "getitem") and cls.is_view and rule is not None and not getattr(
                        rule, "recomputes", False):
                    kind = _VIEW
            elif cls.__dict__.get("differentiable_reads") is not None:
                kind = _SOME
        _KIND[cls] = kind
    return kind


def _reads(ctx, args, kwargs):
    """The tensors ``ctx``'s create_graph rule reads the values of; None: every argument."""
    global _read_tensors
    op = type(ctx).op
    if op is not None:
        rule = op.differentiable_backward
        if rule is None:
            return ()  # no create_graph rule: nothing differentiates it again (that pass raises at this node)
        if getattr(rule, "recomputes", False):
            return None  # a decomposition reruns the op on its arguments: every one is read
    if _read_tensors is None:
        from .ops._double_backward import read_tensors
        _read_tensors = read_tensors
    return _read_tensors(ctx, args, kwargs)


def _shares_storage(a, results) -> bool:
    d = a._data
    if d.base is None:  # (the common case: two arrays that own their memory share it only if they are one)
        for o in results:
            od = o._data
            if od is d or od.base is not None and _vc.root(od) is d:
                return True
        return False
    r = _vc.root(d)
    return any(_vc.root(o._data) is r for o in results)


def drop_inputs(ctx, cls, args, kwargs, results) -> None:
    """Hold weakly the inputs of the recorded node ``ctx`` that no rule reads (see the module's docstring);
    ``ctx.parents`` and ``ctx.call`` are set."""
    kind = _KIND.get(cls)
    if kind is None:
        kind = _kind(cls)
    if not kind:
        return
    if kind == _VIEW:
        _drop_view_input(ctx, args, results)
        return
    cand = None
    for i, a in enumerate(args):
        # a non-leaf CPU tensor (no subclass: a Parameter, an Edge) whose maker does not read it
        if type(a) is Tensor:
            p = a._ctx
            if p is not None and type(a._data) is _NDARRAY:
                op = type(p).op
                if op is not None and op.name not in _READS_OUTPUT:
                    if cand is None:
                        cand = [i]
                    else:
                        cand.append(i)
    if cand is None:
        return
    rule = cls.op.differentiable_backward if cls.op is not None else None
    if kind >= _ALL and rule is not None and not getattr(rule, "recomputes", False) and (
            kind == _ALL or len(args) >= 2):
        # (the same answer as read_tensors, without its generic walk: this runs for every recorded op)
        needs = ctx.needs_input_grad
        read_ids = () if kind == _ALL else [id(args[1 - i]) for i in (0, 1) if needs[i]]
    else:
        reads = _reads(ctx, args, kwargs)
        if reads is None:
            return
        read_ids = [id(t) for t in reads]
    parents = None
    weak = []
    made = None  # id(tensor) -> its Edge (a tensor passed twice gets one, as it was one parent)
    view = cls.is_view
    for i in cand:
        a = args[i]
        if id(a) in read_ids:
            continue
        if _shares_storage(a, results):
            if not (view and i == 0):  # (an op that returned its input's storage: nothing to free)
                continue
            results[0]._graph_base = a  # a view holds its base, not the graph (see drop_view_input)
        if parents is None:
            parents, call_args, made = list(ctx.parents), list(args), {}
        e = made.get(id(a))
        if e is None:
            e = made[id(a)] = _edge(a, None)
        parents[i] = e
        call_args[i] = None
        weak.append((i, weakref.ref(a)))
    if parents is not None:
        ctx.parents = tuple(parents)
        ctx.call = (tuple(call_args), kwargs)
        ctx.weak_inputs = tuple(weak)


def _drop_view_input(ctx, args, results) -> None:
    """drop_inputs for a view op of one tensor whose rules read only shapes (the same steps, without their
    generic lookups: every reshape, flatten, transpose and expand of a training step runs it). The input goes
    weakly into the node; when the output shares its storage, the output holds it (``_graph_base``, torch's
    ``_base``), so that a view's base lives as long as the view (forgegrad._view_rebase and
    forgegrad._inplace walk from a view to its base through the node's live inputs)."""
    a = args[0]
    if type(a) is not Tensor:
        return
    p = a._ctx
    if p is None or type(a._data) is not _NDARRAY:
        return
    op = type(p).op
    if op is None or op.name in _READS_OUTPUT:
        return
    out = results[0]
    od = out._data
    if od is a._data or od.base is not None and _vc.root(od) is _vc.root(a._data):
        out._graph_base = a
    parents = ctx.parents
    ctx.parents = (_edge(a, None),) + parents[1:]
    ctx.call = ((None,) + tuple(args[1:]), ctx.call[1])
    ctx.weak_inputs = ((0, weakref.ref(a)),)


def parents_of(node) -> tuple:
    """``node.parents`` with each dropped input that is still alive in its place (see the module's docstring)."""
    weak = node.weak_inputs
    if not weak:
        return node.parents
    out = list(node.parents)
    for i, ref in weak:
        t = ref()
        if t is not None:
            out[i] = t
    return tuple(out)


def release_parents(node) -> None:
    """Once ``node`` has run and is released, its non-leaf inputs are only the graph's shape (a second pass
    refuses the node): Edges in their place, so that their arrays go as torch frees its saved variables, not
    when the root goes. A view op's node keeps its inputs (forgegrad._view_rebase walks from a view to its base
    through it; an input no rule reads is an Edge already, its tensor held by the view). An Edge notes its
    tensor's storage weakly for forgegrad._inplace's walk to a leaf through an op that returned its input's
    storage."""
    if type(node).is_view:
        return
    parents = node.parents
    out = None
    for i, p in enumerate(parents):
        if type(p) is Tensor and p._ctx is not None and type(p._data) is _NDARRAY:
            if out is None:
                out = list(parents)
            out[i] = _edge(p, weakref.ref(_vc.root(p._data)))
    if out is not None:
        node.parents = tuple(out)
