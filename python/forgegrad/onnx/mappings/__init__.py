"""The op -> ONNX registry: one small function per forgegrad Function class.

A mapping is ``fn(ctx, op) -> list of ONNX value names`` (one per output of the op), where ``ctx``
is the ExportContext (emits nodes, constants; knows the opset) and ``op`` the OpCall (the traced
arguments, with ``op.input(name)`` giving an argument as an ONNX value). Register with::

    @register(MyFunction)
    def _my_function(ctx, op):
        return [ctx.node("Relu", [op.input("x")])]

Lookup is by exact class: a subclass of a mapped Function may compute something else, so it needs
its own mapping.
"""
from __future__ import annotations

from typing import Callable, Dict, List

REGISTRY: Dict[type, Callable] = {}
# functions (ctx) -> None run over the finished node list, e.g. fusing a layer's two directions
GRAPH_PASSES: List[Callable] = []


def register(fn_cls: type):
    """Decorator: ``@register(FunctionClass)`` installs the decorated mapping for that op."""

    def deco(fn):
        REGISTRY[fn_cls] = fn
        return fn

    return deco


def lookup(fn_cls: type):
    return REGISTRY.get(fn_cls)


def _load() -> None:
    from . import activation, compare, elementwise, linalg, loss, reduce, shape  # noqa: F401
    import importlib.util
    # conv / recurrent ops land on main separately: map them when their ops module exists
    for ops_mod, mapping_mod in (("forgegrad.ops.conv", "conv"), ("forgegrad.ops.rnn", "rnn")):
        if importlib.util.find_spec(ops_mod) is not None:
            try:
                importlib.import_module(f"{__name__}.{mapping_mod}")
            except Exception as e:  # never let an optional area break `import forgegrad.onnx`
                LOAD_ERRORS[mapping_mod] = f"{type(e).__name__}: {e}"


LOAD_ERRORS: Dict[str, str] = {}  # optional mapping modules that failed to import, and why


_load()
