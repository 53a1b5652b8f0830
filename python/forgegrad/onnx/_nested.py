"""Nested example inputs, as torch.onnx.export takes them: ``(input, (h, c))`` for an LSTM model.

The graph's inputs are the flat list of tensors (depth first); the model is called through a stand-in
module that rebuilds the nesting, and that shares the model's parameters, buffers and submodules (so
the graph's initializer names are the model's own).
"""
from __future__ import annotations

from typing import Any, List, Tuple

import numpy as np

from ..nn.module import Module
from ..tensor import Tensor


def is_nested(example_inputs) -> bool:
    return isinstance(example_inputs, (tuple, list)) and any(isinstance(x, (tuple, list)) for x in example_inputs)


def flatten(example_inputs) -> Tuple[List[Any], list]:
    """(flat tensors, the nesting as a spec: a flat index, or (tuple or list, [specs]))."""
    flat: List[Any] = []

    def walk(x):
        if isinstance(x, (tuple, list)):
            return (type(x), [walk(v) for v in x])
        if not isinstance(x, (Tensor, np.ndarray)):
            raise TypeError(f"export: an example input is a {type(x).__name__}; expected forgegrad Tensors or numpy "
                            "arrays, in (nested) tuples")
        flat.append(x)
        return len(flat) - 1

    spec = [walk(x) for x in example_inputs]
    return flat, spec


def _rebuild(spec, flat):
    if isinstance(spec, tuple):
        kind, items = spec
        return kind(_rebuild(s, flat) for s in items)
    return flat[spec]


class NestedInputs(Module):
    """Calls ``model`` with its nested arguments rebuilt from the flat graph inputs."""

    def __init__(self, model, spec):
        super().__init__()
        for store in ("_parameters", "_buffers", "_modules"):
            object.__setattr__(self, store, getattr(model, store))  # shared: names stay the model's
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_spec", spec)

    def forward(self, *flat):
        return self._model(*[_rebuild(s, flat) for s in self._spec])

    def train(self, mode: bool = True):
        self._model.train(mode)
        object.__setattr__(self, "training", mode)
        return self


def wrap(model, spec):
    """A NestedInputs named like the model's class (the graph is named after it)."""
    cls = type(type(model).__name__, (NestedInputs,), {"__module__": NestedInputs.__module__})
    return cls(model, spec)


def default_names(model, spec) -> List[str]:
    """forward's parameter names, with the place in the nesting for nested ones: input, hidden_0, hidden_1."""
    import inspect
    try:
        params = [p.name for p in inspect.signature(model.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError, AttributeError):
        params = []
    names = []
    for top, s in enumerate(spec):
        base = params[top] if top < len(params) else f"input_{top}"
        names += [base] if isinstance(s, int) else [f"{base}_{k}" for k in range(_count(s))]
    return names


def _count(spec) -> int:
    return 1 if isinstance(spec, int) else sum(_count(s) for s in spec[1])
