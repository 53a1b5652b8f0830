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
    return getattr(_state, "grad_enabled", True)


def _set_grad_enabled(mode: bool) -> None:
    _state.grad_enabled = bool(mode)


class set_grad_enabled(contextlib.ContextDecorator):
    """Context manager / decorator that turns graph recording on or off."""

    def __init__(self, mode: bool):
        self.mode = bool(mode)

    def __enter__(self):
        self.prev = is_grad_enabled()
        _set_grad_enabled(self.mode)
        return self

    def __exit__(self, *exc):
        _set_grad_enabled(self.prev)
        return False


class no_grad(set_grad_enabled):
    """No graph is recorded inside: outputs do not require grad (inference, parameter updates)."""

    def __init__(self):
        super().__init__(False)


class enable_grad(set_grad_enabled):
    def __init__(self):
        super().__init__(True)


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
    prev = getattr(_state, "recorder", None)
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
        from .tensor import Tensor

        ctx = cls()
        raw = [a.data if isinstance(a, Tensor) else a for a in args]
        needs = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        record_graph = is_grad_enabled() and any(needs)
        ctx.needs_input_grad = needs
        out = cls.forward(ctx, *raw, **kwargs)
        single = not isinstance(out, tuple)
        outs = (out,) if single else out
        results = tuple(Tensor._wrap(o) for o in outs)
        if record_graph:
            ctx.parents = tuple(a if isinstance(a, Tensor) else None for a in args)
            ctx.out_meta = tuple((o.shape, o.dtype) for o in outs)
            ctx.released = False
            for i, t in enumerate(results):
                if i not in cls.non_differentiable_outputs and t.data.dtype.kind == "f":
                    t.requires_grad = True
                    t._ctx = ctx
                    t._out_index = i
        recorder = getattr(_state, "recorder", None)
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
    from .tensor import Tensor

    if root._ctx is None:  # a leaf: its gradient is the seed itself
        root._accumulate_grad(grad)
        return
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
                parent._accumulate_grad(g)
            else:
                slots = pending.setdefault(id(parent._ctx), [None] * len(parent._ctx.out_meta))
                k = parent._out_index
                slots[k] = g if slots[k] is None else slots[k] + g
        if not retain_graph:
            node.release()
