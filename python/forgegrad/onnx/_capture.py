"""Running the model under forgegrad.autograd.trace() for export.

Besides the trace itself this records, for every op, the innermost module whose forward was running
(for error messages). Every Tensor method the exporter needs to see goes through Function.apply
(comparisons, casts and argmax/argmin are ops in forgegrad.ops.compare, ``where`` keeps its tensor
condition, variance is forgegrad.ops.stats.Var), so the model runs unchanged.
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

from .. import autograd
from ..tensor import Tensor


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
    from ..nn.module import ModuleCallStack

    where: List[Tuple[str, str]] = []
    root = ("", type(model).__name__)
    with autograd.trace() as rec, autograd.no_grad(), ModuleCallStack(model) as calls:
        original_record = rec.record

        def record(fn_cls, args, kwargs, outputs):
            call = calls.current
            where.append(root if call is None else (call.path, call.type_name))
            original_record(fn_cls, args, kwargs, outputs)

        rec.record = record
        out = model(*inputs)
    flat, keys = flatten_outputs(out)
    return Capture(rec.records, where, list(inputs), flat, keys)
