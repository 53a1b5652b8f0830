"""Running the model under forgegrad.autograd.trace() for export.

Besides the trace itself this records, for every op, the innermost module whose forward was running
(for error messages, through nn.module.ModuleCallStack). Every Tensor method the exporter needs to
see goes through Function.apply (comparisons, casts and argmax/argmin are ops in
forgegrad.ops.compare, ``where`` keeps its tensor condition, variance is forgegrad.ops.stats.Var),
so the model runs unchanged.

``check_on_meta`` runs the model on meta inputs (shapes only, no kernels) at every size the export
will try, so that a model that cannot run at one of them fails before any real trace, naming the
module that raised and the shapes.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .. import autograd
from ..devices import MetaArray, has_data
from ..tensor import Tensor
from ._errors import OnnxExportError, UnsupportedOpError


class Capture:
    """The result of one traced forward: records, where each op ran, inputs and flat outputs."""

    def __init__(self, records, where, inputs, outputs, output_keys):
        self.records: List[tuple] = records
        self.where: List[Tuple[str, str]] = where
        self.inputs: List[Tensor] = inputs
        self.outputs: List[Any] = outputs
        self.output_keys: Optional[List[str]] = output_keys


def flatten_outputs(out) -> Tuple[List[Any], Optional[List[str]]]:
    """Model output (tensor, nested tuple/list, dict) -> flat list (and dict keys when a dict). None inside a
    tuple, list or dict is an optional output the model did not produce (BertOutput's pooler_output of an encoder
    without a pooler): left out, as torch.onnx leaves it out."""
    if isinstance(out, dict):
        flat, keys = [], []
        for k, v in out.items():
            if v is None:
                continue
            sub, _ = flatten_outputs(v)
            flat += sub
            keys += [str(k)] if len(sub) == 1 else [f"{k}_{i}" for i in range(len(sub))]
        return flat, keys
    if isinstance(out, (tuple, list)):
        flat = []
        for v in out:
            if v is not None:
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
            if getattr(fn_cls, "complex_path", False) or any(
                    isinstance(t, Tensor) and t._data.dtype.kind == "c" for t in (*args, *outputs)):
                name = fn_cls.__qualname__ if fn_cls.op is None else fn_cls.op.name
                raise UnsupportedOpError(
                    f"ONNX export of complex tensors is not supported ({name} takes or gives one); ONNX has no "
                    "complex dtype forgegrad maps to: keep the complex part (forgegrad.fft, ...) out of the exported "
                    "model, or carry real and imaginary parts as real tensors (view_as_real)")
            call = calls.current
            where.append(root if call is None else (call.path, call.type_name))
            original_record(fn_cls, args, kwargs, outputs)

        rec.record = record
        out = model(*inputs)
    flat, keys = flatten_outputs(out)
    return Capture(rec.records, where, list(inputs), flat, keys)


def _where(calls, model) -> str:
    failed = calls.failed
    if failed is not None and failed.module is not model:
        return f"in {failed.describe()}"
    return f"in {type(model).__name__}'s own forward"


def check_on_meta(model, inputs: List[Tensor], runs: Sequence[tuple],
                  real_inputs: Callable[[Optional[Dict[str, int]]], List[Tensor]]) -> bool:
    """Run ``model`` on meta copies of ``inputs`` (shapes only, no kernels) at each of ``runs``:
    (which sizes these are, the dynamic axes' sizes (None: the example's), the inputs' shapes, a hint).

    When a meta run fails, the model runs once for real at those sizes (``real_inputs(sizes)``): if
    that fails too, OnnxExportError names the module that raised, its input shapes and the model's;
    if it runs, the meta device could not judge this model (a forward that reads values, an op with
    no shape rule) and the real traces decide, as without this check. So the check never rejects a
    model that runs, and costs one meta forward per size when all is well.

    Returns whether the meta device ran every size (False: a real run had to judge one).
    """
    from ..nn.module import Module, ModuleCallStack

    if isinstance(model, Module):
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if not has_data(t._data):
                raise OnnxExportError(
                    f"export: {name!r} of the model is on the meta device (a shape, no values to export); "
                    "build the model on the CPU, or give it values with load_state_dict")
    for label, sizes, shapes, hint in runs:
        meta = [Tensor._wrap(MetaArray(s, x.dtype)) for s, x in zip(shapes, inputs)]
        try:
            with autograd.no_grad():
                model(*meta)
            continue
        except Exception:
            pass
        # as the traces run it (under trace(), so no fused shortcut hides which module raised)
        with autograd.trace(), autograd.no_grad(), ModuleCallStack(model) as calls:
            try:
                model(*real_inputs(sizes))
            except Exception as e:
                raise OnnxExportError(
                    f"the model cannot run {label}: on inputs of shape {', '.join(map(str, shapes))} it raised "
                    f"{_where(calls, model)}: {type(e).__name__}: {e}{hint}") from e
        return False
    return True


def meta_runs(inputs: List[Tensor], input_axes: List[Dict[int, str]], symbols, verify_sizes) -> Tuple[list, list]:
    """The runs check_on_meta makes for an export, as (label, sizes, input shapes, hint): those at the
    sizes it will trace at (the example's and two others), and those at the sizes it will verify at."""
    runs: Tuple[list, list] = ([("at the example's sizes", None, [tuple(x.shape) for x in inputs], "")], [])
    if not symbols.names:
        return runs
    hint = (". These axes cannot be dynamic: pass dynamic_axes= naming the axes that really are dynamic ({} "
            "for a static graph)")
    tried = [dict(symbols.a)]
    later = [("traced", symbols.b), ("traced", symbols.c)] + [("verified", v) for v in verify_sizes]
    for kind, sizes in later:
        if not isinstance(sizes, dict) or set(sizes) - set(symbols.names):
            continue  # verify_sizes naming unknown axes: the verification reports it
        full = symbols.full(sizes)
        if full in tried:
            continue
        tried.append(full)
        shapes = [tuple(full[ax[a]] if a in ax else d for a, d in enumerate(x.shape))
                  for x, ax in zip(inputs, input_axes)]
        label = f"with its dynamic axes at {full} (to be {kind} there; the example has {symbols.a})"
        extra = "" if kind == "traced" else ", or verify_sizes= with sizes the model accepts"
        runs[kind == "verified"].append((label, full, shapes, hint + extra))
    return runs
