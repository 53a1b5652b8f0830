"""Tensor.register_hook in the backward pass (forgegrad.autograd's engine calls these while hooks exist).

A non-leaf's hooks are kept by its node, by output index, with a weak reference to the tensor (for
retain_grad, which stores the hooked gradient after them, torch's order); a leaf's by the leaf
(``_grad_hooks``), whose contributions the engine sums over the pass before its hooks see them.
"""
from __future__ import annotations

from . import devices as _devices
from .tensor import Tensor


def _run_grad_hooks(hooks, g):
    """Call each of ``hooks`` (register_hook's, in registration order) on the gradient ``g``; one that returns
    a tensor replaces it for the hooks after it and for the rest of the pass."""
    for fn in list(hooks.values()):
        out = fn(Tensor._wrap_exact(g))
        if out is not None:
            if not isinstance(out, Tensor):
                raise TypeError(f"a gradient hook returned {type(out).__name__}; it must return a Tensor or None")
            name = getattr(fn, "__name__", type(fn).__name__)
            if tuple(out.shape) != tuple(g.shape):
                raise RuntimeError(f"hook '{name}' has changed the size of value: the hook returned a gradient "
                                   f"of shape {tuple(out.shape)} for one of shape {tuple(g.shape)}")
            if out._data.dtype != g.dtype or _devices.device_of(out._data) != _devices.device_of(g):
                raise RuntimeError(f"hook '{name}' has changed the type of value (was {g.dtype} on "
                                   f"{_devices.device_of(g)}, got {out._data.dtype} on "
                                   f"{_devices.device_of(out._data)})")
            g = out._data
    return g


def _node_tensor_hooks(node, gouts):
    """Run the register_hook hooks of ``node``'s outputs on their (complete) gradients, then store the gradient
    of an output that retains its grad and has hooks (torch's order: retain_grad sees the hooks' result)."""
    hooked = node.__dict__.get("tensor_hooks")
    if not hooked:
        return gouts
    gouts = list(gouts)
    for k, (ref, hooks) in hooked.items():
        if gouts[k] is None or not hooks:
            continue
        gouts[k] = _run_grad_hooks(hooks, gouts[k])
        t = ref()
        if t is not None and t._retains_grad and t._ctx is node:
            t._accumulate_grad(gouts[k])
    return gouts


def _retained_by_hooks(parent) -> bool:
    """True when ``parent`` (a non-leaf) has register_hook hooks: its retained grad is stored after them."""
    hooked = parent._ctx.__dict__.get("tensor_hooks")
    return bool(hooked and hooked.get(parent._out_index, (None, None))[1])


def _hold(held, leaf, g) -> None:
    """Add ``g`` to the gradient held for ``leaf`` (a leaf with register_hook hooks) until its last consumer."""
    h = held.get(id(leaf))
    held[id(leaf)] = (leaf, g if h is None else _devices.add(h[1], g))
