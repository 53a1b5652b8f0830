"""``Module.summary``: a Keras-like table of a model's modules with their output shapes, parameter
counts and FLOPs, computed on the meta device.

The model runs once on meta inputs (shapes and dtypes, no data) in eval mode under ``no_grad``:
every op runs its shape rule instead of a kernel and reports its FLOP count (``count_flops``), which
goes to the innermost module running at that moment (``ModuleCallStack``). So the numbers come from
the same op records the kernels and the exporter use, and nothing the size of an activation or a
weight is allocated (a model built under ``forgegrad.device("meta")`` holds no weights at all).

    >>> model.summary((1, 28, 28))            # prints the table, returns a ModelSummary
    >>> s = model.summary((1, 28, 28), print_summary=False)
    >>> s.total_params, s.total_flops, s.layer("features.0").output_shapes
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Set, Tuple

import numpy as np

from ..autograd import no_grad
from ..devices import MetaArray
from ..ops.registry import count_flops
from ..tensor import Tensor
from .module import Module, ModuleCall, ModuleCallStack

__all__ = ["ModelSummary", "LayerSummary", "summarize"]

Shape = Tuple[int, ...]


@dataclasses.dataclass
class LayerSummary:
    """One module of the summary.

    ``params``/``trainable_params``: the module's own parameters (not its children's; a parameter
    shared by several modules counts in the first). ``flops``: the ops that ran directly in this
    module's forward, summed over its calls (its children's ops count in the children's rows).
    ``output_shapes``: the shapes of the tensors its first call returned (None when never called).
    """

    name: str
    type_name: str
    depth: int
    output_shapes: Optional[List[Shape]] = None
    params: int = 0
    trainable_params: int = 0
    flops: int = 0
    calls: int = 0
    has_children: bool = False


@dataclasses.dataclass(repr=False)
class ModelSummary:
    """The result of ``Module.summary``: ``rows`` and the totals; ``str()`` gives the table.

    ``uncounted_ops``: ops that ran but have no FLOP rule (counted as 0, named under the table)."""

    model_name: str
    rows: List[LayerSummary]
    input_shapes: List[Shape]
    input_dtypes: List[np.dtype]
    total_params: int
    trainable_params: int
    param_bytes: int
    uncounted_ops: List[str]

    @property
    def non_trainable_params(self) -> int:
        return self.total_params - self.trainable_params

    @property
    def total_flops(self) -> int:
        return sum(r.flops for r in self.rows)

    @property
    def output_shapes(self) -> Optional[List[Shape]]:
        return self.rows[0].output_shapes if self.rows else None

    def layer(self, name: str) -> LayerSummary:
        """The row of the module at dotted path ``name`` ("" for the model itself)."""
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no module {name!r} in the summary; modules: {[r.name for r in self.rows]}")

    def __repr__(self) -> str:
        return (f"<ModelSummary of {self.model_name}: {len(self.rows)} modules, {self.total_params:,} params, "
                f"{self.total_flops:,} FLOPs>")

    def __str__(self) -> str:
        header = ("Layer (type)", "Output shape", "Param #", "FLOPs")
        body = []
        for r in self.rows:
            label = f"{r.name} ({r.type_name})" if r.name else r.type_name
            if r.calls > 1:
                label += f" x{r.calls}"
            # a container with nothing of its own shows "--" (its children's rows hold the numbers)
            quiet = r.has_children
            body.append(("  " * r.depth + label, _shapes_text(r.output_shapes),
                         "--" if quiet and r.params == 0 else f"{r.params:,}",
                         "--" if quiet and r.flops == 0 else f"{r.flops:,}"))
        widths = [max(len(line[i]) for line in [header] + body) for i in range(4)]

        def fmt(line):
            return (f"{line[0]:<{widths[0]}}   {line[1]:<{widths[1]}}   {line[2]:>{widths[2]}}   "
                    f"{line[3]:>{widths[3]}}")

        rule = "=" * len(fmt(header))
        shapes = ", ".join(str(s) for s in self.input_shapes)
        lines = [fmt(header), rule] + [fmt(b) for b in body] + [rule]
        lines += [f"Total params: {self.total_params:,} ({_bytes(self.param_bytes)})",
                  f"Trainable params: {self.trainable_params:,}",
                  f"Non-trainable params: {self.non_trainable_params:,}",
                  f"Total FLOPs: {self.total_flops:,} ({_flops(self.total_flops)}) for input "
                  f"shape{'s' if len(self.input_shapes) > 1 else ''} {shapes}"]
        if self.uncounted_ops:
            lines.append(f"(ops without a FLOP count, counted as 0: {', '.join(self.uncounted_ops)})")
        return "\n".join(lines)


def _flops(n: int) -> str:
    for unit, scale in (("T", 10 ** 12), ("G", 10 ** 9), ("M", 10 ** 6), ("K", 10 ** 3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}FLOPs"
    return f"{n} FLOPs"


def _bytes(n: int) -> str:
    for unit, power in (("TiB", 4), ("GiB", 3), ("MiB", 2), ("KiB", 1)):
        if n >= 1024 ** power:
            return f"{n / 1024 ** power:.2f} {unit}"
    return f"{n} B"


def _shapes_text(shapes: Optional[List[Shape]]) -> str:
    if shapes is None:
        return "(not called)"
    if len(shapes) == 1:
        return str(shapes[0])
    return "[" + ", ".join(str(s) for s in shapes) + "]"


def _output_shapes(out) -> List[Shape]:
    """Shapes of the tensors in a module's output (a tensor, nested tuples/lists, a dict)."""
    if isinstance(out, Tensor):
        return [tuple(out.shape)]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return [s for v in out for s in _output_shapes(v)]
    return []


# ---- arguments ---------------------------------------------------------------------------------------
def _is_size(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _parse_shapes(input_shape) -> List[Shape]:
    """One shape (a tuple of ints) or a list of them -> a list of shapes."""
    if not isinstance(input_shape, (tuple, list)):
        raise TypeError(f"summary: input_shape must be a tuple of ints such as (1, 28, 28), or a list of them for "
                        f"several inputs, got {type(input_shape).__name__}")
    several = len(input_shape) > 0 and all(isinstance(s, (tuple, list)) for s in input_shape)
    shapes = list(input_shape) if several else [input_shape]
    for i, shape in enumerate(shapes):
        if not isinstance(shape, (tuple, list)) or not all(_is_size(v) and v >= 0 for v in shape):
            where = f" (input {i})" if several else ""
            raise ValueError(f"summary: input_shape{where} must hold sizes >= 0, got {shape!r}")
    return [tuple(int(v) for v in s) for s in shapes]


def _parse_dtypes(dtypes, n: int) -> List[np.dtype]:
    if dtypes is None:
        return [np.dtype(np.float32)] * n
    many = isinstance(dtypes, (list, tuple))
    if many and len(dtypes) != n:
        raise ValueError(f"summary: dtypes has {len(dtypes)} entries for {n} input shapes")
    out = []
    for d in (dtypes if many else [dtypes] * n):
        try:
            out.append(np.dtype(d))
        except TypeError:
            raise TypeError(f"summary: dtypes must be numpy dtypes (e.g. 'float32', 'int64'), got {d!r}") from None
    return out


# ---- the run ---------------------------------------------------------------------------------------
def summarize(model: Module, input_shape, batch_size: Optional[int] = 1, dtypes=None) -> ModelSummary:
    """Run ``model`` on meta inputs and collect its ModelSummary (see ``Module.summary``)."""
    if not isinstance(model, Module):
        raise TypeError(f"summary: expected a forgegrad.nn.Module, got {type(model).__name__}")
    shapes = _parse_shapes(input_shape)
    if batch_size is not None:
        if not _is_size(batch_size) or batch_size < 1:
            raise ValueError(f"summary: batch_size must be a positive int or None, got {batch_size!r}")
        shapes = [(int(batch_size),) + s for s in shapes]
    types = _parse_dtypes(dtypes, len(shapes))
    inputs = [Tensor._wrap(MetaArray(s, d)) for s, d in zip(shapes, types)]

    rows: Dict[int, LayerSummary] = {}  # id(module) -> its row, in the order of first calls
    modules: Dict[int, Module] = {}
    uncounted: Set[str] = set()
    calls_box: List[ModuleCallStack] = []

    def on_enter(call: ModuleCall):
        row = rows.get(id(call.module))
        if row is None:
            row = rows[id(call.module)] = LayerSummary(call.path, call.type_name, len(calls_box[0].stack) - 1)
            modules[id(call.module)] = call.module
        row.calls += 1

    def on_exit(call: ModuleCall, out):
        row = rows[id(call.module)]
        if row.output_shapes is None:
            row.output_shapes = _output_shapes(out)

    def on_op(op, out, raw, kwargs):
        call = calls_box[0].current
        if call is None:  # not inside any module (the model is always called as a module, so rare)
            return
        if op.flops is None:
            uncounted.add(op.name)
            return
        rows[id(call.module)].flops += int(op.flops(out, raw, kwargs))

    modes = [(m, m.training) for m in model.modules()]
    model.eval()  # the summary describes inference (batch norm uses its running statistics, no dropout)
    try:
        with ModuleCallStack(model, on_enter, on_exit) as calls, no_grad(), count_flops(on_op):
            calls_box.append(calls)
            try:
                model(*inputs)
            except Exception as e:
                if calls.failed is not None:
                    e.add_note(f"(Module.summary: raised in {calls.failed.describe()}, for model input shapes "
                               f"{', '.join(map(str, shapes))})")
                raise
    finally:
        for m, mode in modes:
            object.__setattr__(m, "training", mode)

    for path, m in model.named_modules():  # registered modules that forward never called
        if id(m) not in rows:
            rows[id(m)] = LayerSummary(path, type(m).__name__, path.count(".") + 1 if path else 0)
            modules[id(m)] = m
    ordered = list(rows.values())
    seen: Set[int] = set()
    for key, row in rows.items():
        for p in modules[key]._parameters.values():
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                row.params += p.numel()
                row.trainable_params += p.numel() if p.requires_grad else 0
    for i, row in enumerate(ordered[:-1]):
        row.has_children = ordered[i + 1].depth > row.depth
    params = list(model.parameters())
    return ModelSummary(type(model).__name__, ordered, shapes, types,
                        total_params=sum(p.numel() for p in params),
                        trainable_params=sum(p.numel() for p in params if p.requires_grad),
                        param_bytes=sum(p.numel() * p.dtype.itemsize for p in params),
                        uncounted_ops=sorted(uncounted))
