"""The backward pass's bookkeeping for leaves and devices (forgegrad.autograd's engine and
forgegrad._autograd_grad's pass share it): when a hooked leaf's gradient is final, and the check that a device
Function's gradient is on its input's device and dtype."""
from __future__ import annotations

import numpy as np

from . import devices as _devices
from ._tensor_hooks import _run_grad_hooks

_NDARRAY = np.ndarray


def _fire_post_hooks(leaf) -> None:
    for fn in list(leaf._post_hooks.values()):
        fn(leaf)


def _hooked_leaf_uses(order):
    """{id(leaf): number of edges into it} for the leaves in the graph that have post-accumulate hooks or
    gradient hooks (register_hook); a checkpoint node (forgegrad.utils.checkpoint) also counts as a consumer
    of the leaves its recomputation reaches.

    A leaf's gradient is final once every node that consumes it has run; its hooks fire then.
    """
    uses = {}
    for node in order:
        inner = node.__dict__.get("inner_leaves")
        for p in (node.parents if inner is None else node.parents + inner):
            if p is not None and p._ctx is None and (getattr(p, "_post_hooks", None) or
                                                     getattr(p, "_grad_hooks", None)):
                uses[id(p)] = uses.get(id(p), 0) + 1
    return uses


def _check_device_grad(node, parent, g) -> None:
    """A gradient computed on a device must be on its input's device, in its dtype (a device Function
    returns what its input needs; the engine does not convert device arrays)."""
    want, got = _devices.device_of(parent._data), _devices.device_of(g)
    if isinstance(g, _NDARRAY) and isinstance(parent._data, _NDARRAY):
        return  # ndarray subclasses: the CPU
    if want != got:
        raise RuntimeError(f"{type(node).__qualname__}.backward returned a gradient on {got} for an input on {want}")
    if g.dtype != parent._data.dtype:
        raise RuntimeError(f"{type(node).__qualname__}.backward returned a {g.dtype} gradient for a "
                           f"{parent._data.dtype} input on {want}")


def _count_down(node, uses, got_grad, held, to_leaf) -> None:
    """``node`` has run (or was skipped): its hooked leaf inputs have one consumer fewer to wait for. A leaf
    whose last consumer has run gets its summed gradient through its register_hook hooks, then into .grad,
    then its post-accumulate hooks fire."""
    inner = node.__dict__.get("inner_leaves")
    for p in (node.parents if inner is None else node.parents + inner):
        if p is not None and id(p) in uses:
            left = uses[id(p)] - 1
            uses[id(p)] = left
            if left == 0 and id(p) in got_grad:
                h = held.pop(id(p), None)
                if h is not None:
                    to_leaf(p, _run_grad_hooks(p._grad_hooks, h[1]))
                if getattr(p, "_post_hooks", None):
                    _fire_post_hooks(p)
