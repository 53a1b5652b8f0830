"""The backward pass in progress, per thread, and who is told about it: the callbacks queued for its end
(``queue_callback``), the callbacks run after each node, and the pass observers (the data-parallel wrappers)
called when an outermost pass starts. Part of forgegrad.autograd, which re-exports these names."""
from __future__ import annotations

import threading
import weakref
from typing import Any, Dict, List


class _PassState(threading.local):
    """The backward pass in progress in this thread: Python threads may run backward passes at once (on separate
    graphs), and none of them must see, run or end another's callbacks.

    ``depth`` counts nested backward() calls; ``callbacks`` run once the outermost pass has finished (torch's
    engine.queue_callback: data parallelism waits for its gradient reductions there); ``node_callbacks`` are called
    after every node of a pass while non-empty (data parallelism drives MPI's progress engine from here, so that
    allreduces already started advance during the rest of the pass); ``grad_capture`` is the capture of the
    grad() / backward(inputs=...) pass in progress (forgegrad._autograd_grad), or None: a checkpoint recomputed
    inside that pass captures its inputs' gradients the same way."""

    def __init__(self):
        self.depth = 0
        self.callbacks: List[Any] = []
        self.node_callbacks: List[Any] = []
        self.grad_capture = None


_pass_state = _PassState()


def queue_callback(fn) -> None:
    """Run ``fn()`` when the backward pass in progress (in this thread) ends (call it from a gradient hook)."""
    if _pass_state.depth == 0:
        raise RuntimeError("queue_callback can only be called during a backward pass (from a gradient hook)")
    _pass_state.callbacks.append(fn)


# Bound methods (held weakly) called at the start of every outermost backward pass with the Function nodes
# the pass will visit. An observer whose object has ``_owns_pass(pass_)`` (the data-parallel wrappers:
# distributed/_passes.py) is called only for the passes that method accepts, given a ``_Pass`` (the nodes and
# the leaves the pass accumulates into); the others see every pass. Data parallelism queues its end-of-pass
# work from here, so that a rank whose loss reaches none of its parameters still takes part in the gradient
# reduction the other ranks start from their gradient hooks.
_pass_observers: List[Any] = []


def _add_pass_observer(method) -> None:
    _pass_observers.append(weakref.WeakMethod(method))


class _Pass:
    """One backward pass as its observers see it: ``nodes`` and, computed on first use, ``leaves`` (id -> the
    leaf tensors requiring grad that it accumulates into, a checkpointed region's included)."""
    __slots__ = ("nodes", "_roots", "_only", "_leaves")

    def __init__(self, nodes, roots=(), only=None):
        self.nodes, self._roots, self._only, self._leaves = nodes, roots, only, None

    @property
    def leaves(self) -> Dict[int, Any]:
        if self._leaves is None:
            from . import autograd as _ag  # (imports this module: bound on use)
            out = {id(t): t for t in self._roots}
            for node in self.nodes:
                for p in (_ag._parents_of(node) if _ag._rebound else node.parents):
                    if p is not None and p._ctx is None and p.requires_grad:
                        out[id(p)] = p
                for p in node.__dict__.get("inner_leaves", ()):
                    out[id(p)] = p
            if self._only is not None:  # backward(inputs=...): only those accumulate
                out = {k: t for k, t in out.items() if k in self._only}
            self._leaves = out
        return self._leaves


def _notify_pass(nodes, roots=(), only=None) -> None:
    """A backward pass over ``nodes`` starts (``roots``: leaves it is seeded on directly; ``only``: the ids of
    the only leaves it accumulates into, backward(inputs=...))."""
    if _pass_state.depth != 1:
        return
    info = None
    for ref in list(_pass_observers):
        fn = ref()
        if fn is None:
            try:
                _pass_observers.remove(ref)
            except ValueError:  # another thread's pass dropped it first
                pass
            continue
        owns = getattr(fn.__self__, "_owns_pass", None)
        if owns is not None:
            if info is None:
                info = _Pass(nodes, roots, only)
            if not owns(info):
                continue
        fn(nodes)
