"""Which backward passes a distributed wrapper observes, and how it stays collectable.

A wrapper (DDP's and DistributedOptimizer's reducer, ZeRO-2/3's shard reducer, FullyShardedDataParallel) ends
its group's reduction round at the end of a backward pass (``autograd._pass_observers``; the engine asks the
wrapper's ``_owns_pass`` first, and calls its observer only for the passes it owns). A pass is the wrapper's:

* when it accumulates into one of the wrapper's parameters (from any thread), or
* when the wrapper is *armed* (a round is due: after its forward, or from zero_grad() to step(); see each
  wrapper), the pass runs in the thread that armed it, and it reaches no parameter of another model: none of
  a live wrapper of another process group (a rank in two groups runs passes for the other group's model, which
  this group's other ranks never run), and no ``nn.Parameter`` that no wrapper of this group owns (an
  unwrapped model's). That is a rank whose loss reaches none of the model's parameters (a loss made of other
  tensors only): it still takes part, with zeros, in the round the group's other ranks start, so the ranks'
  rounds pair up one for one.

Every other pass (over an unrelated model, from another thread, or while the wrapper is not armed) never runs
the wrapper's code, so a wrapper kept alive but unused cannot change or fail it. The wrappers hold their
parameters' hooks and their modules' hooks weakly (``weak_hook``): a wrapper that is dropped is collected at
once (no reference cycle waiting for the garbage collector) and its hooks are removed with it.
"""
from __future__ import annotations

import threading
import weakref

from .. import autograd
from ..nn.parameter import Parameter
from . import comm as _c

# the live wrappers: objects with ``process_group``, ``_reached_by(leaves, nodes)`` (the pass accumulates into
# one of its parameters), ``_owns_leaf(id)``, ``_awaits_pass()`` (armed) and ``_armed_in`` (the arming thread)
_LIVE: "weakref.WeakSet" = weakref.WeakSet()


def register(wrapper) -> None:
    _LIVE.add(wrapper)


def _group(w):
    return w.process_group if w.process_group is not None else _c.GroupMember.WORLD


def owns(wrapper, pass_) -> bool:
    """Whether the backward pass ``pass_`` (an ``autograd._Pass``) is ``wrapper``'s (see the module docstring)."""
    leaves, nodes = pass_.leaves, pass_.nodes
    if wrapper._reached_by(leaves, nodes):
        return True
    if not wrapper._awaits_pass() or wrapper._armed_in != threading.get_ident():
        return False
    mine = _group(wrapper)
    same = []
    for w in list(_LIVE):
        if w is wrapper:
            continue
        if _group(w) is mine:
            same.append(w)
        elif w._reached_by(leaves, nodes):
            return False  # another group's pass
    for i, t in leaves.items():
        if isinstance(t, Parameter) and not any(w._owns_leaf(i) for w in same):
            return False  # an unwrapped model's pass
    return True


def weak_hook(method):
    """A hook that calls the bound ``method`` while its object lives, without keeping it alive (a parameter's
    or a module's hook would otherwise hold the wrapper, which holds the parameter: a cycle)."""
    ref = weakref.WeakMethod(method)

    def hook(*args):
        fn = ref()
        return None if fn is None else fn(*args)
    return hook


def remove_hooks_with(owner, handles) -> None:
    """Remove ``handles`` (a list, read when ``owner`` is collected) once ``owner`` is collected."""
    weakref.finalize(owner, _remove, handles).atexit = False


def _remove(handles) -> None:
    for h in handles:
        h.remove()


class ParameterReducer:
    """The observer half shared by DDP's and ZeRO's gradient reducers: ``where`` holds the ids of the parameters
    they reduce, ``armed`` says a round is due (set by the wrapper) and notes the arming thread; ``observe(params)``
    hooks each parameter's accumulated gradient to ``_on_grad`` and the end of the reducer's own passes to
    ``_on_pass``, both weakly, and registers the reducer with the live wrappers."""

    _armed = False
    _armed_in = None  # the thread that armed it

    def observe(self, params) -> None:
        hook = weak_hook(self._on_grad)
        self.handles = [p.register_post_accumulate_grad_hook(hook) for p in params]
        remove_hooks_with(self, self.handles)
        autograd._add_pass_observer(self._on_pass)
        register(self)

    @property
    def armed(self) -> bool:
        return self._armed

    @armed.setter
    def armed(self, value: bool) -> None:
        self._armed = value
        if value:
            self._armed_in = threading.get_ident()

    def _awaits_pass(self) -> bool:
        return self._armed

    def _owns_pass(self, pass_) -> bool:
        return owns(self, pass_)

    def _owns_leaf(self, i: int) -> bool:
        return i in self.where

    def _reached_by(self, leaves, nodes) -> bool:
        return any(i in self.where for i in leaves)
