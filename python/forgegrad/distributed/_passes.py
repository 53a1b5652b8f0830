"""Whose backward pass is it, on a rank that holds distributed wrappers of several process groups.

A wrapper (DDP's and DistributedOptimizer's reducer, ZeRO-2/3's shard reducer, FullyShardedDataParallel)
joins its group's reduction at every backward pass after its forward (or zero_grad), even a pass that
reaches none of its parameters on this rank: the pass of another rank of the group may reach them, and
the ranks' rounds pair up one for one. That holds when every rank of the group runs the same passes. A
rank in two groups also runs passes for the other group's model, which this group's other ranks never
run: a pass that reaches a wrapper of another group, and none of this wrapper's parameters, is not this
wrapper's pass (counting it paired real gradients with zeros, then waited for a round the others never
started). A pass that reaches no wrapper at all still counts for every armed one, as before; with the
wrappers of one group only (the world's, say) nothing changes.
"""
from __future__ import annotations

import weakref

from .. import autograd

# the live wrappers: objects with ``process_group`` and ``_reached_by(leaf_ids, nodes)``
_LIVE: "weakref.WeakSet" = weakref.WeakSet()


def register(wrapper) -> None:
    _LIVE.add(wrapper)


def for_another_group(wrapper, nodes) -> bool:
    """True when the backward pass over ``nodes`` reaches a wrapper of a group other than ``wrapper``'s and
    none of ``wrapper``'s parameters: ``wrapper`` sits it out."""
    live = list(_LIVE)
    if len({id(w.process_group) for w in live}) < 2 or not nodes:
        return False
    leaf_ids = set()
    for node in nodes:
        for p in (autograd._parents_of(node) if autograd._rebound else node.parents):
            if p is not None and p._ctx is None:
                leaf_ids.add(id(p))
        leaf_ids.update(id(p) for p in node.__dict__.get("inner_leaves", ()))  # a checkpoint's (utils.checkpoint)
    if wrapper._reached_by(leaf_ids, nodes):
        return False
    return any(w.process_group is not wrapper.process_group and w._reached_by(leaf_ids, nodes) for w in live)
