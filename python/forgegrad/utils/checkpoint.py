"""Activation checkpointing (torch.utils.checkpoint): trade compute for memory.

``checkpoint(function, *args, use_reentrant=False)`` runs ``function`` without recording a graph and keeps
only its inputs; backward() runs it again with grad enabled (the random generator restored, so dropout draws
the same masks) and backpropagates through that recomputation. The activations inside ``function`` live
only while its recomputed part of the backward pass runs, so a model checkpointed block by block holds one
block's activations at a time instead of all of them.

The forward runs the same kernels as a recorded forward (the no-graph fast paths are off inside it), so the
outputs, and the gradients, are those of the run without checkpointing bit for bit. An output requires grad
when an op inside ``function`` took a tensor that requires grad (a module's parameters count, so inputs that
don't require grad work). Both values of ``use_reentrant`` give torch's non-reentrant semantics (the
reentrant variant's limitations are not reproduced); see docs/torch_compat.md.
"""
from __future__ import annotations

import copy
import warnings
import weakref

from .. import _version_counter as _vc
from .. import autograd as _autograd
from .. import grad_mode as _grad_mode
from .. import random as _random
from ..tensor import Tensor

__all__ = ["checkpoint", "checkpoint_sequential"]

_REENTRANT_WARNING = (
    "forgegrad.utils.checkpoint: the use_reentrant parameter should be passed explicitly. As torch 2.x, pass "
    "use_reentrant=False (forgegrad implements the non-reentrant semantics for both values; see "
    "docs/torch_compat.md)")


class _Probe:
    """The recorder of a checkpointed forward: it keeps the recorded-forward kernels on (graph_free() is
    False) while no graph is recorded, and notes which outputs depend on a tensor that requires grad and
    which leaves that require grad the function used."""

    probe = True

    def __init__(self):
        self.tainted = {}  # id(tensor) -> weak reference (dropped with the tensor)
        self.leaves = {}   # id(leaf) -> leaf
        self.graph = {}    # id(tensor) -> a tensor with a node that an op inside took (an argument, or captured)

    def _taint(self, t) -> None:
        key = id(t)
        self.tainted[key] = weakref.ref(t, lambda _, key=key, d=self.tainted: d.pop(key, None))

    def depends(self, t) -> bool:
        if t.requires_grad:
            return True
        ref = self.tainted.get(id(t))
        return ref is not None and ref() is t

    def record(self, fn_cls, args, kwargs, outputs) -> None:
        hit = False
        for a in list(args) + list(kwargs.values()):
            if isinstance(a, Tensor) and self.depends(a):
                hit = True
                if a.requires_grad:
                    (self.leaves if a._ctx is None else self.graph)[id(a)] = a
        if hit:
            for o in outputs:
                if o._data.dtype.kind == "f":
                    self._taint(o)


class CheckpointFunction(_autograd.Function):
    """The graph node of one checkpointed call: its parents are the call's tensor arguments; its backward
    recomputes the call and backpropagates through it (autograd.run_recomputed_backward)."""

    @staticmethod
    def backward(ctx, *grad_outputs):
        inputs = _autograd._parents_of(ctx) if _autograd._rebound else ctx.parents
        n = len(ctx.parents) - len(ctx.captured)
        detached = []
        for t in inputs[:n]:
            d = Tensor._wrap_exact(t._data)
            d.requires_grad = t.requires_grad
            detached.append(d)
        args, kwargs = _fill(ctx.args_spec, ctx.kwargs_spec, detached)
        gen = _random.generator()
        now = None
        if ctx.rng_state is not None:
            now = gen.bit_generator.state
            gen.bit_generator.state = ctx.rng_state
        # the tensors with a node that ``function`` reads from elsewhere than its arguments (a closure, a
        # module attribute) are leaves of the recomputed graph while it runs: their gradient comes back through
        # this node to the outer pass, which runs their nodes once, after every use (torch's order)
        kept = [(t, t._ctx, t.grad, t._retains_grad) for t in ctx.captured]
        for t in ctx.captured:
            t._ctx, t.grad, t._retains_grad = None, None, False
        try:
            try:
                with _grad_mode.enable_grad():
                    out = ctx.function(*args, **kwargs)
            finally:
                if now is not None:
                    gen.bit_generator.state = now
            outs = _leaves(out)
            roots, grads = [], []
            for i, o in enumerate(outs):
                if i in ctx.differentiable and o.requires_grad and grad_outputs[i] is not None:
                    roots.append(o)
                    grads.append(grad_outputs[i])
            got = set()
            if roots:
                held = _autograd.run_recomputed_backward(roots, grads, got, detached + list(ctx.captured))
                ctx.inner_held = held or {}
            ctx.inner_got = got
            captured = [None if t.grad is None else t.grad._data for t in ctx.captured]
        finally:
            for t, node, grad, retains in kept:
                t._ctx, t.grad, t._retains_grad = node, grad, retains
        return tuple([None if d.grad is None else d.grad._data for d in detached] + captured)


def _split(args, kwargs):
    """The tensor arguments (the node's parents), found inside tuples, lists and dicts too (as torch's
    non-reentrant checkpoint, which sees every tensor an op inside saves), and the arguments with each
    tensor replaced by its index."""
    tensors = []
    return tensors, [_to_slots(a, tensors) for a in args], {k: _to_slots(v, tensors) for k, v in kwargs.items()}


# (module-level recursion, no nested closures: a closure calling itself is a reference cycle that would keep
# the tensors it saw, a recomputed block's activations among them, alive until the garbage collector runs)
def _map(a, fn, arg):
    """``a`` with ``fn(item, arg)`` for each item of a tuple (a named tuple too), list or dict; any other value
    as it is."""
    if isinstance(a, list):
        return [fn(v, arg) for v in a]
    if isinstance(a, dict):
        items = [(k, fn(v, arg)) for k, v in a.items()]
        if type(a) is dict:
            return dict(items)
        b = copy.copy(a)  # a dict subclass (OrderedDict, transformers' ModelOutput): its type and attributes
        for k, v in items:
            b[k] = v
        return b
    if isinstance(a, tuple):
        items = [fn(v, arg) for v in a]
        return type(a)(*items) if hasattr(a, "_fields") else type(a)(items)
    return a


def _to_slots(a, tensors):
    if isinstance(a, Tensor):
        tensors.append(a)
        return _Slot(len(tensors) - 1)
    return _map(a, _to_slots, tensors)


def _from_slots(a, tensors):
    return tensors[a.index] if isinstance(a, _Slot) else _map(a, _from_slots, tensors)


def _collect(a, found):
    if isinstance(a, Tensor):
        found.append(a)
        return a
    return _map(a, _collect, found)


def _leaves(out):
    """The tensors in ``out`` (a tensor, or tuples/lists/dicts of them), depth first in order."""
    found = []
    _collect(out, found)
    return found


def _put(a, new):
    return next(new) if isinstance(a, Tensor) else _map(a, _put, new)


def _replace(out, new):
    """``out`` with its tensors (in _leaves' order) replaced by ``new``'s items."""
    return _put(out, iter(new))


class _Slot:
    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index


def _fill(args_spec, kwargs_spec, tensors):
    return [_from_slots(a, tensors) for a in args_spec], {k: _from_slots(v, tensors) for k, v in kwargs_spec.items()}


def checkpoint(function, *args, use_reentrant=None, context_fn=None, determinism_check="default",
               debug=False, preserve_rng_state=True, **kwargs):
    """Run ``function(*args, **kwargs)`` keeping only its inputs; backward() recomputes it.

    Args:
        function: a callable (an nn.Module, a function) returning a Tensor or tuples/lists/dicts of them
            (other values pass through).
        *args, **kwargs: its arguments; the Tensors among them (inside tuples, lists and dicts too) get
            gradients.
        use_reentrant: as torch 2.x, pass it explicitly (a warning otherwise); both values run the
            non-reentrant semantics.
        preserve_rng_state: restore forgegrad's random generator for the recomputation, so random ops
            (dropout) draw what the forward drew.
    """
    if use_reentrant is None:
        warnings.warn(_REENTRANT_WARNING, stacklevel=2)
    if not callable(function):
        raise TypeError(f"checkpoint: function must be callable, got {type(function).__name__}")
    if context_fn is not None or determinism_check != "default" or debug:
        raise ValueError("checkpoint: context_fn, determinism_check and debug are not supported by forgegrad")
    rec = _grad_mode.recorder()
    state = _grad_mode._state.__dict__
    if not state.get("grad_enabled", True) or rec is not None or isinstance(state.get("recorder"), _Probe):
        # no graph to record (or an export tracing, or an enclosing checkpoint's forward): a plain call
        return function(*args, **kwargs)
    tensors, args_spec, kwargs_spec = _split(args, kwargs)
    rng_state = _random.generator().bit_generator.state if preserve_rng_state else None
    ctx = CheckpointFunction.__new__(CheckpointFunction)
    # saved before the call: a write into an input inside ``function`` (or after it) makes backward refuse,
    # as torch's (the recomputation would read the written value and write it again)
    ctx.save_for_backward(*[t._data for t in tensors])
    probe = _Probe()
    prev_rec, prev_grad = state.get("recorder"), state.get("grad_enabled", True)
    state["recorder"], state["grad_enabled"] = probe, False
    try:
        out = function(*args, **kwargs)
    finally:
        state["recorder"], state["grad_enabled"] = prev_rec, prev_grad
    outs = _leaves(out)
    differentiable = [i for i, o in enumerate(outs) if probe.depends(o) and o._data.dtype.kind == "f"]
    if not differentiable:
        return out
    mine = {id(t) for t in tensors}
    ctx.captured = tuple(t for k, t in probe.graph.items() if k not in mine)
    ctx.parents = tuple(tensors) + ctx.captured
    ctx.needs_input_grad = [t.requires_grad for t in ctx.parents]
    if ctx.captured:  # a write into one after the forward makes backward refuse, as into an argument
        ctx.saved_tensors = ctx.saved_tensors + tuple(t._data for t in ctx.captured)
    ctx.made_at = _vc.clock
    ctx.released = False
    ctx.function, ctx.args_spec, ctx.kwargs_spec, ctx.rng_state = function, args_spec, kwargs_spec, rng_state
    ctx.differentiable = set(differentiable)
    ctx.inner_leaves = tuple(probe.leaves.values())
    wrapped = []
    for i, o in enumerate(outs):
        if i in ctx.differentiable:
            o = Tensor._wrap_exact(o._data)
            o.requires_grad, o._ctx, o._out_index = True, ctx, i
        wrapped.append(o)
    ctx.out_meta = tuple([(o.shape, o._data.dtype) for o in outs])
    return _replace(out, wrapped)


def checkpoint_sequential(functions, segments, input, use_reentrant=None, **kwargs):
    """Run ``functions`` (an nn.Sequential or a list of modules/functions) in ``segments`` checkpointed
    chunks, as torch: every segment but the last is checkpointed; the last runs normally."""
    if use_reentrant is None:
        warnings.warn(_REENTRANT_WARNING, stacklevel=2)
        use_reentrant = True
    if hasattr(functions, "children") and not isinstance(functions, (list, tuple)):
        functions = list(functions.children())
    functions = list(functions)
    if isinstance(segments, bool) or not isinstance(segments, int) or segments < 1:
        raise ValueError(f"checkpoint_sequential: segments must be a positive int, got {segments!r}")

    def run(start, end):
        def forward(x):
            for j in range(start, end + 1):
                x = functions[j](x)
            return x
        return forward

    size = len(functions) // segments
    end = -1
    for start in range(0, size * (segments - 1), size):
        end = start + size - 1
        input = checkpoint(run(start, end), input, use_reentrant=use_reentrant, **kwargs)
    return run(end + 1, len(functions) - 1)(input)
