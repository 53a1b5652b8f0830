"""The backward pass with ``create_graph=True``: gradients that are Tensors with a graph of their own, so that
they can be differentiated again (double backward: gradient penalties, Hessian-vector products, MAML, the second
derivatives of physics-informed nets).

The ordinary pass (forgegrad.autograd, forgegrad._autograd_grad) runs each node's array rule and records
nothing. This one runs each node's *differentiable* rule instead (its op record's ``differentiable_backward``,
the table in ops/_double_backward.py): a function of the forward's Tensor arguments and the output gradients
written with forgegrad ops, under grad mode, so every gradient it hands on is recorded. A node whose op has no
such rule stops the pass with a NotImplementedError naming the op: a gradient silently cut from the graph would
give wrong second derivatives without a word.

Semantics follow torch's: gradients reaching a leaf are summed over the pass, its register_hook hooks see the
sum, then ``grad()`` returns it or ``backward()`` stores it in ``.grad`` (``.grad + g`` out of place when one is
there, so ``.grad`` carries the graph) and fires the post-accumulate hooks; a non-leaf's hooks and retain_grad
see its summed gradient before its node runs; nodes are released after use unless ``retain_graph``.
"""
from __future__ import annotations

import numpy as np

from . import autograd as _ag
from . import devices as _devices
from . import _version_counter as _vc
from .grad_mode import enable_grad
from ._graph_memory import is_edge
from .ops._double_backward import read_tensors
from .tensor import Tensor

__all__ = ["run_pass"]


def _order(roots) -> list:
    """The nodes reachable from ``roots`` (tensors with a node), each after every node that consumes its outputs."""
    return _ag._topo_order(*(t._ctx for t in roots))


def _rule_of(node):
    """The differentiable backward rule of ``node``'s op; NotImplementedError naming the op when it has none."""
    cls = type(node)
    if node.__dict__.get("inner_leaves") is not None:
        raise NotImplementedError("create_graph=True: a checkpointed region (forgegrad.utils.checkpoint) recomputes "
                                  "with array rules and cannot be differentiated twice; call the region without "
                                  "checkpoint for double backward")
    rule = cls.__dict__.get("differentiable_backward") if cls.op is None else cls.op.differentiable_backward
    if rule is None:
        if cls.op is not None:
            raise NotImplementedError(f"create_graph=True: op {cls.op.name!r} has no differentiable backward rule, so "
                                      "its gradient cannot be differentiated again (the rules are the table in "
                                      "forgegrad/ops/_double_backward.py); compute that part without create_graph")
        raise NotImplementedError(f"create_graph=True: Function {cls.__qualname__} has no differentiable backward "
                                  "rule, so its gradient cannot be differentiated again; give it a staticmethod "
                                  "differentiable_backward(ctx, args, kwargs, *grads) computing the gradients with "
                                  "Tensor ops")
    return rule


def _check_edges(node, args, kwargs) -> None:
    """A rule must not read an input the node dropped (forgegrad._graph_memory decides from the same table, so
    this guards that table against a rule that reads more than it declares)."""
    if any(is_edge(t) for t in read_tensors(node, args, kwargs)):
        raise RuntimeError(f"create_graph=True: the differentiable backward of {type(node).__name__} reads an input "
                           "the graph did not keep (forgegrad._graph_memory); this is a bug in forgegrad")


def _hooked(hooks, g: Tensor, retain=None) -> Tensor:
    """Run register_hook ``hooks`` on the Tensor gradient ``g`` (a Tensor returned replaces it)."""
    for fn in list(hooks.values()):
        out = fn(g)
        if out is not None:
            if not isinstance(out, Tensor):
                raise TypeError(f"a gradient hook returned {type(out).__name__}; it must return a Tensor or None")
            if tuple(out.shape) != tuple(g.shape):
                name = getattr(fn, "__name__", type(fn).__name__)
                raise RuntimeError(f"hook '{name}' has changed the size of value: the hook returned a gradient of "
                                   f"shape {tuple(out.shape)} for one of shape {tuple(g.shape)}")
            g = out
    return g


def _fit(node, parent, g: Tensor) -> Tensor:
    """A rule's gradient for ``parent``, in its dtype (a float32 input of a float64 op gets float32), checked."""
    if not isinstance(g, Tensor):
        g = Tensor._wrap_exact(np.asarray(g, dtype=parent._data.dtype))
    # (g.dtype, not g._data: in forgegrad.func's vmap over a backward, g is a BatchedTensor with no _data)
    if g.dtype != parent.dtype:
        g = g._cast(parent._data.dtype)
    if g.shape != parent.shape:
        raise RuntimeError(f"the differentiable backward of {type(node).__name__} returned a gradient of shape "
                           f"{g.shape} for an input of shape {parent.shape}")
    return g


def _first_array(grads):
    """The storage of the first gradient (a BatchedTensor's batch: vmap over a backward)."""
    g = next(grads)
    return getattr(g, "_phys", g)._data


def _add(a, b):
    return b if a is None else a + b


def _store(t: Tensor, g: Tensor) -> None:
    """``t.grad`` += g out of place, so that it keeps g's graph (torch's accumulation under create_graph)."""
    if getattr(g, "_phys", None) is not None:  # a BatchedTensor (vmap over a backward): only the loop can store
        from .func._batched import NeedLoop
        raise NeedLoop("retain_grad in a batched backward")
    t.grad = g if t.grad is None else t.grad + g


def run_pass(outputs, seeds, inputs, retain_graph: bool, accumulate: bool):
    """Backpropagate the Tensor ``seeds`` from ``outputs`` recording the graph of every gradient.

    ``inputs`` None: every leaf that requires grad accumulates into ``.grad`` (backward()). Otherwise only the
    gradients of ``inputs`` (leaves or not) are computed: returned as a list (Tensor or None per input) and, with
    ``accumulate`` (backward(inputs=...)), also added to their ``.grad``."""
    # numpy's RuntimeWarnings (inf * 0, log(0) in a gradient formula at an edge value) stay quiet, as torch's
    with np.errstate(all="ignore"):
        return _run_pass(outputs, seeds, inputs, retain_graph, accumulate)


def _run_pass(outputs, seeds, inputs, retain_graph: bool, accumulate: bool):
    if _ag._rebound:
        from ._view_rebase import rebase_inputs
        rebase_inputs(tuple(outputs) + tuple(inputs or ()))
    leaf_sum = {}  # id(leaf) -> [leaf, summed gradient]
    out_sum = {}  # (id(node), k) -> summed gradient of a non-leaf input
    wanted_leaves = None if inputs is None else {id(t) for t in inputs if t._ctx is None}
    wanted_outs = set() if inputs is None else {(id(t._ctx), t._out_index) for t in inputs if t._ctx is not None}
    pending = {}
    seen_outputs = {}  # id(node) -> {output index: the output tensor}, as met in the graph (see _output in rules)
    roots = []
    for t, g in zip(outputs, seeds):
        if t._ctx is None:  # an output that is itself a leaf: its seed is its gradient
            if wanted_leaves is None or id(t) in wanted_leaves:
                slot = leaf_sum.setdefault(id(t), [t, None])
                slot[1] = _add(slot[1], g)
            continue
        roots.append(t)
        seen_outputs.setdefault(id(t._ctx), {})[t._out_index] = t
        slots = pending.setdefault(id(t._ctx), [None] * len(t._ctx.out_meta))
        slots[t._out_index] = _add(slots[t._out_index], g)
    order = _order(roots) if roots else []
    need = None
    if inputs is not None:
        need = set()
        for node in reversed(order):  # producers first
            for p in (_ag._parents_of(node) if _ag._rebound else node.parents):
                if p is None or not p.requires_grad:
                    continue
                if (p._ctx is None and id(p) in wanted_leaves) or (p._ctx is not None and (
                        id(p._ctx) in need or (id(p._ctx), p._out_index) in wanted_outs)):
                    need.add(id(node))
                    break
    if accumulate and _ag._pass_observers:
        _ag._notify_pass(order if need is None else [n for n in order if id(n) in need],
                         [t for t in outputs if t._ctx is None], wanted_leaves)
    with enable_grad():  # torch records the backward graph under create_graph even inside no_grad
        for node in order:
            gouts = pending.pop(id(node), None)
            if gouts is None:
                continue
            if node.materialize_grads and any(g is None for g in gouts):  # outputs that did not reach the loss:
                # zeros on the others' device
                dev = _devices.device_of(_first_array(g for g in gouts if g is not None))
                gouts = [g if g is not None else Tensor._wrap_exact(_ag._no_grad_zeros(shape, dtype, dev))
                         for g, (shape, dtype) in zip(gouts, node.out_meta)]
            hooks = node.__dict__.get("tensor_hooks")
            if hooks:
                for k, (ref, fns) in hooks.items():
                    if fns:
                        gouts[k] = _hooked(fns, gouts[k])
                        t = ref()
                        if t is not None and t._retains_grad and t._ctx is node:
                            _store(t, gouts[k])
            for k, g in enumerate(gouts):
                if (id(node), k) in wanted_outs:
                    out_sum[(id(node), k)] = _add(out_sum.get((id(node), k)), g)
            if need is not None and id(node) not in need:
                continue
            _ag._check_usable(node)
            parents = _ag._parents_of(node) if _ag._rebound or node.weak_inputs else node.parents
            if isinstance(node, _ag._Seed):
                gins = tuple(node.grads)
            else:
                rule = _rule_of(node)
                call = node.__dict__.get("call")
                if call is None:  # a node made outside Function.apply keeps no call to differentiate
                    raise NotImplementedError(f"create_graph=True: {type(node).__qualname__} was recorded without its "
                                              "arguments, so its gradient cannot be differentiated again")
                args, kwargs = call
                args = tuple(p if p is not None else a for a, p in zip(args, parents))
                if node.weak_inputs and any(is_edge(a) for a in args):
                    _check_edges(node, args, kwargs)
                if _vc.clock != node.made_at:  # what the rule reads must not have been written in place since
                    _vc.check(node, [t._data for t in read_tensors(node, args, kwargs)], node.made_at)
                node.__dict__["graph_outputs"] = seen_outputs.pop(id(node), {})
                try:
                    gins = rule(node, args, kwargs, *gouts)
                finally:
                    node.__dict__.pop("graph_outputs", None)
                if not isinstance(gins, tuple):
                    gins = (gins,)
            for parent, g in zip(parents, gins):
                if parent is None or g is None or not parent.requires_grad:
                    continue
                if parent._ctx is not None and not is_edge(parent):  # (an Edge has no values to hand a rule)
                    seen_outputs.setdefault(id(parent._ctx), {})[parent._out_index] = parent
                g = _fit(node, parent, g)
                if parent._ctx is None:
                    if wanted_leaves is None or id(parent) in wanted_leaves:
                        slot = leaf_sum.setdefault(id(parent), [parent, None])
                        slot[1] = _add(slot[1], g)
                    continue
                key = id(parent._ctx)
                if need is not None and key not in need and (key, parent._out_index) not in wanted_outs:
                    continue
                if parent._retains_grad and not _ag._retained_by_hooks(parent):
                    _store(parent, g)
                slots = pending.setdefault(key, [None] * len(parent._ctx.out_meta))
                slots[parent._out_index] = _add(slots[parent._out_index], g)
            if not retain_graph:
                node.release()
        finished = {}
        for key, (leaf, g) in leaf_sum.items():
            if getattr(leaf, "_grad_hooks", None):
                g = _hooked(leaf._grad_hooks, g)
            finished[key] = g
            if accumulate:
                _store(leaf, g)
                if getattr(leaf, "_post_hooks", None):
                    _ag._fire_post_hooks(leaf)
    if inputs is None:
        return None
    return [finished.get(id(t)) if t._ctx is None else out_sum.get((id(t._ctx), t._out_index)) for t in inputs]
