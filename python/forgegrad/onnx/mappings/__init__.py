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
    """The mapping of an op: the one its registry record carries (ops added with the recipe), else one
    registered here for its Function class."""
    from ...ops.registry import of_function
    opdef = of_function(fn_cls)
    if opdef is not None and opdef.onnx is not None:
        return opdef.onnx
    return REGISTRY.get(fn_cls)


def _load() -> None:
    from . import activation, compare, conv, elementwise, linalg, loss, quantized, reduce, rnn, shape  # noqa: F401


_load()
