"""The autograd engine: Function (one forward and one backward rule per op), grad mode, backward.

Every differentiable op is a ``Function`` subclass whose ``forward`` and ``backward`` work on plain
numpy arrays (the kernels' world) while ``apply`` handles Tensors: it unwraps inputs, runs forward,
wraps outputs and, when any input requires a gradient, links the outputs to the graph. Non-tensor
arguments (axes, strides, flags) pass through unchanged, positionally or by keyword; they are also
what the ONNX exporter reads as the op's attributes (see ``trace``).

    class Exp(Function):
        @staticmethod
        def forward(ctx, x):
            y = np.exp(x)
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, grad):
            (y,) = ctx.saved_tensors
            return grad * y
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, List, Optional, Sequence

import numpy as np

__all__ = ["Function", "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "trace"]

_state = threading.local()


def is_grad_enabled() -> bool:
    return _state.__dict__.get("grad_enabled", True)


def graph_free() -> bool:
    """True when no op needs to go through Function.apply: grad mode is off and no trace() is
    recording. Layers use it for their inference fast path (a kernel call, no graph bookkeeping)."""
    d = _state.__dict__
    return not d.get("grad_enabled", True) and d.get("recorder") is None


def _set_grad_enabled(mode: bool) -> None:
    _state.grad_enabled = bool(mode)


class set_grad_enabled(contextlib.ContextDecorator):
    """Context manager / decorator that turns graph recording on or off."""

    def __init__(self, mode: bool):
        self.mode = bool(mode)

    # Entered once per inference call: kept to a couple of dict operations.
    def __enter__(self):
        d = _state.__dict__
        self.prev = d.get("grad_enabled", True)
        d["grad_enabled"] = self.mode
        return self

    def __exit__(self, *exc):
        _state.__dict__["grad_enabled"] = self.prev
        return False


class no_grad(set_grad_enabled):
    """No graph is recorded inside: outputs do not require grad (inference, parameter updates)."""

    def __init__(self):
        self.mode = False


class enable_grad(set_grad_enabled):
    def __init__(self):
        self.mode = True


# ---- op recording (used by the ONNX exporter) ------------------------------------------------
class _Recorder:
    """Collects (function class, args, kwargs, outputs) for every Function.apply while active."""

    def __init__(self):
        self.records: List[tuple] = []

    def record(self, fn_cls, args, kwargs, outputs):
        self.records.append((fn_cls, args, kwargs, outputs))


@contextlib.contextmanager
def trace():
    """Record every op applied inside the block: ``with trace() as rec: model(x)``.

    ``rec.records`` is a list of ``(FunctionClass, args, kwargs, outputs)``, where args keeps the
    Tensor inputs and the non-tensor arguments in call order and outputs is a tuple of Tensors.
    """
    prev = _state.__dict__.get("recorder")
    rec = _Recorder()
    _state.recorder = rec
    try:
        yield rec
    finally:
        _state.recorder = prev


# ---- Function --------------------------------------------------------------------------------
class Function:
    """Base class of differentiable ops. Subclasses define static ``forward`` and ``backward``.

    ``forward(ctx, *args, **kwargs)`` receives numpy arrays in place of Tensors and returns an
    array or a tuple of arrays. ``backward(ctx, *grad_outputs)`` receives one gradient array per
    output (zeros for outputs that did not reach the loss) and returns one gradient (array or None)
    per positional argument of forward, each with that argument's shape.
    """

    # Outputs that are not differentiable (e.g. argmax indices) are listed by position.
    non_differentiable_outputs: Sequence[int] = ()

    __slots__ = ("parents", "needs_input_grad", "saved_tensors", "out_meta", "released", "__dict__")

    def save_for_backward(self, *arrays) -> None:
        self.saved_tensors = arrays

    @staticmethod
    def forward(ctx, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def backward(ctx, *grad_outputs):  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def apply(cls, *args, **kwargs):
        # Hot path of every op: kept free of imports and generic helpers (it runs once per op in
        # every training step, and at batch 1 its cost is comparable to the kernels').
        ctx = cls.__new__(cls)
        raw = []
        needs = []
        any_needs = False
        for a in args:
            if isinstance(a, Tensor):
                raw.append(a.data)
                r = a.requires_grad
                needs.append(r)
                any_needs = any_needs or r
            else:
                raw.append(a)
                needs.append(False)
        state = _state.__dict__
        record_graph = any_needs and state.get("grad_enabled", True)
        ctx.needs_input_grad = needs
        out = cls.forward(ctx, *raw, **kwargs)
        wrap = Tensor._wrap
        if type(out) is tuple:
            results = tuple([wrap(o) for o in out])
            single = False
        else:
            results = (wrap(out),)
            single = True
        if record_graph:
            ctx.parents = tuple([a if isinstance(a, Tensor) else None for a in args])
            ctx.out_meta = tuple([(t.data.shape, t.data.dtype) for t in results])
            ctx.released = False
            skip = cls.non_differentiable_outputs
            for i, t in enumerate(results):
                if t.data.dtype.kind == "f" and i not in skip:
                    t.requires_grad = True
                    t._ctx = ctx
                    t._out_index = i
        recorder = state.get("recorder")
        if recorder is not None:
            recorder.record(cls, args, kwargs, results)
        return results[0] if single else results

    def release(self) -> None:
        """Drop saved buffers once backward has used them (unless retain_graph=True)."""
        self.saved_tensors = ()
        self.__dict__.clear()
        self.released = True


def _topo_order(root_ctx) -> List[Any]:
    """Function nodes reachable from root_ctx, each after every node that consumes its outputs."""
    order, seen = [], set()
    stack = [(root_ctx, False)]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        for p in node.parents:
            if p is not None and p._ctx is not None and id(p._ctx) not in seen:
                stack.append((p._ctx, False))
    order.reverse()
    return order


def run_backward(root, grad: np.ndarray, retain_graph: bool = False) -> None:
    """Backpropagate grad from tensor root into the .grad of every leaf that requires grad."""

    if root._ctx is None:  # a leaf: its gradient is the seed itself
        root._accumulate_grad(grad)
        return
    # A leaf's first gradient is adopted without a copy when the array is a fresh one that nothing
    # else holds: it owns its memory, is not the caller's seed, and has not been handed to another
    # leaf in this pass (Add returns one array for both inputs; optimisers and clip_grad_norm_
    # modify .grad in place, so two leaves must never share one).
    adopted = set()

    def to_leaf(leaf, g):
        if (leaf.grad is None and g is not grad and g.base is None and g.flags.owndata and g.flags.writeable
                and g.dtype == leaf.data.dtype and id(g) not in adopted):
            adopted.add(id(g))
            leaf.grad = Tensor._wrap(g)
        else:
            leaf._accumulate_grad(g)

    pending = {id(root._ctx): [None] * len(root._ctx.out_meta)}
    pending[id(root._ctx)][root._out_index] = grad
    for node in _topo_order(root._ctx):
        gouts = pending.pop(id(node), None)
        if gouts is None:
            continue
        if node.released:
            raise RuntimeError(
                "Trying to backward through the graph a second time (or directly access saved "
                "tensors after they have already been freed). Specify retain_graph=True if you "
                "need to backward through the graph a second time."
            )
        gouts = [g if g is not None else np.zeros(shape, dtype) for g, (shape, dtype) in zip(gouts, node.out_meta)]
        gins = type(node).backward(node, *gouts)
        if not isinstance(gins, tuple):
            gins = (gins,)
        if len(gins) < len(node.parents):
            gins = gins + (None,) * (len(node.parents) - len(gins))
        for parent, g in zip(node.parents, gins):
            if parent is None or g is None or not parent.requires_grad:
                continue
            if g.shape != parent.shape:
                raise RuntimeError(
                    f"{type(node).__name__}.backward returned a gradient of shape {g.shape} for an "
                    f"input of shape {parent.shape}"
                )
            if parent._retains_grad:
                parent._accumulate_grad(g)
            if parent._ctx is None:
                to_leaf(parent, g)
            else:
                slots = pending.setdefault(id(parent._ctx), [None] * len(parent._ctx.out_meta))
                k = parent._out_index
                slots[k] = g if slots[k] is None else slots[k] + g
        if not retain_graph:
            node.release()


# Tensor is bound here once tensor.py has been imported (it imports this module first).
Tensor = None


def _bind_tensor_class(cls) -> None:
    global Tensor
    Tensor = cls
