"""Running the model under forgegrad.autograd.trace() for export.

Besides the trace itself this records, for every op, the innermost module whose forward was running
(for error messages), and records a few Tensor methods that bypass Function.apply in forgegrad
(comparisons, argmax/argmin, dtype casts, ``where`` with a tensor condition): while the model runs
for export they are replaced by the recorded stand-ins below, which compute the same values.
Without that, ``where(x > 0, ...)`` would reach the trace as a constant mask.
"""
from __future__ import annotations

import contextlib
from typing import Any, List, Optional, Tuple

import numpy as np

from .. import autograd
from ..autograd import Function
from ..tensor import Tensor

_CMP = {"Less": np.less, "LessOrEqual": np.less_equal, "Greater": np.greater,
        "GreaterOrEqual": np.greater_equal, "Equal": np.equal, "NotEqual": np.not_equal}


class Compare(Function):
    """a <op> b -> bool; not differentiable (stand-in for Tensor.__lt__ & co. during export)."""

    non_differentiable_outputs = (0,)

    @staticmethod
    def forward(ctx, a, b, op="Less"):
        return np.asarray(_CMP[op](a, b))

    @staticmethod
    def backward(ctx, g):  # pragma: no cover - bool output
        return None, None


class ArgExtreme(Function):
    """argmax/argmin (stand-in for Tensor.argmax/argmin during export)."""

    non_differentiable_outputs = (0,)

    @staticmethod
    def forward(ctx, a, dim=None, keepdim=False, op="ArgMax"):
        fn = np.argmax if op == "ArgMax" else np.argmin
        return np.asarray(fn(a, axis=dim, keepdims=keepdim)).astype(np.int64)

    @staticmethod
    def backward(ctx, g):  # pragma: no cover - int output
        return None


class Cast(Function):
    """a.astype(dtype) (stand-in for Tensor.float/long/bool/to during export)."""

    @staticmethod
    def forward(ctx, a, dtype="float32"):
        return a.astype(np.dtype(dtype))

    @staticmethod
    def backward(ctx, g):
        return g


def _cmp_method(op_name):
    def method(self, other):
        return Compare.apply(self, other, op=op_name)
    return method


def _to(self, device_or_dtype=None, dtype=None):
    target = dtype if dtype is not None else device_or_dtype
    if target is None or target == "cpu" or (isinstance(target, str) and target.startswith("cuda")):
        return _ORIGINAL["to"](self, device_or_dtype, dtype)
    return self if np.dtype(target) == self.dtype else Cast.apply(self, dtype=np.dtype(target).name)


def _where(condition, a, b):
    from ..ops import elementwise as E
    if isinstance(condition, Tensor):
        if condition.dtype != bool:
            condition = Cast.apply(condition, dtype="bool")
        return E.Where.apply(condition, a, b)
    return _ORIGINAL["where"](condition, a, b)


_ORIGINAL = {}


@contextlib.contextmanager
def _patched_tensor_methods():
    import sys
    import forgegrad
    tensor_mod = sys.modules["forgegrad.tensor"]  # forgegrad.tensor is also the name of a function
    patches = {
        "__lt__": _cmp_method("Less"), "__le__": _cmp_method("LessOrEqual"),
        "__gt__": _cmp_method("Greater"), "__ge__": _cmp_method("GreaterOrEqual"),
        "__eq__": _cmp_method("Equal"), "__ne__": _cmp_method("NotEqual"),
        "lt": _cmp_method("Less"), "le": _cmp_method("LessOrEqual"), "gt": _cmp_method("Greater"),
        "ge": _cmp_method("GreaterOrEqual"), "eq": _cmp_method("Equal"), "ne": _cmp_method("NotEqual"),
        "argmax": lambda self, dim=None, keepdim=False: ArgExtreme.apply(self, dim=dim, keepdim=keepdim, op="ArgMax"),
        "argmin": lambda self, dim=None, keepdim=False: ArgExtreme.apply(self, dim=dim, keepdim=keepdim, op="ArgMin"),
        "float": lambda self: self if self.dtype == np.float32 else Cast.apply(self, dtype="float32"),
        "long": lambda self: self if self.dtype == np.int64 else Cast.apply(self, dtype="int64"),
        "bool": lambda self: self if self.dtype == bool else Cast.apply(self, dtype="bool"),
        "to": _to,
    }
    saved = {k: Tensor.__dict__[k] for k in patches if k in Tensor.__dict__}
    _ORIGINAL["to"] = saved.get("to")
    _ORIGINAL["where"] = tensor_mod.where
    try:
        for k, v in patches.items():
            setattr(Tensor, k, v)
        tensor_mod.where = _where
        forgegrad.where = _where
        yield
    finally:
        for k in patches:
            if k in saved:
                setattr(Tensor, k, saved[k])
            else:
                delattr(Tensor, k)
        tensor_mod.where = _ORIGINAL["where"]
        forgegrad.where = _ORIGINAL["where"]


class Capture:
    """The result of one traced forward: records, where each op ran, inputs and flat outputs."""

    def __init__(self, records, where, inputs, outputs, output_keys):
        self.records: List[tuple] = records
        self.where: List[Tuple[str, str]] = where
        self.inputs: List[Tensor] = inputs
        self.outputs: List[Any] = outputs
        self.output_keys: Optional[List[str]] = output_keys


def flatten_outputs(out) -> Tuple[List[Any], Optional[List[str]]]:
    """Model output (tensor, nested tuple/list, dict) -> flat list (and dict keys when a dict)."""
    if isinstance(out, dict):
        flat, keys = [], []
        for k, v in out.items():
            sub, _ = flatten_outputs(v)
            flat += sub
            keys += [str(k)] if len(sub) == 1 else [f"{k}_{i}" for i in range(len(sub))]
        return flat, keys
    if isinstance(out, (tuple, list)):
        flat = []
        for v in out:
            flat += flatten_outputs(v)[0]
        return flat, None
    return [out], None


def run_traced(model, inputs: List[Tensor]) -> Capture:
    """model(*inputs) under trace() and no_grad(), recording the module path of every op."""
    from ..nn.module import Module

    paths = {id(m): p for p, m in model.named_modules()} if isinstance(model, Module) else {}
    stack: List[Tuple[str, str]] = []
    where: List[Tuple[str, str]] = []
    original_call = Module.__call__

    def call(self, *args, **kwargs):
        stack.append((paths.get(id(self), f"<unregistered {type(self).__name__}>"), type(self).__name__))
        try:
            return original_call(self, *args, **kwargs)
        finally:
            stack.pop()

    with autograd.trace() as rec, autograd.no_grad(), _patched_tensor_methods():
        original_record = rec.record

        def record(fn_cls, args, kwargs, outputs):
            where.append(stack[-1] if stack else ("", type(model).__name__))
            original_record(fn_cls, args, kwargs, outputs)

        rec.record = record
        Module.__call__ = call
        try:
            out = model(*inputs)
        finally:
            Module.__call__ = original_call
    flat, keys = flatten_outputs(out)
    return Capture(rec.records, where, list(inputs), flat, keys)
