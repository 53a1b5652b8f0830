"""float64 graphs. Each op is mapped under its floating dtype (float_dtype_of, into ExportContext.float_dtype),
an op's float64 Function through its op's own mapping (float64_twin_of).

onnxruntime's CPU provider has no double kernel for some ONNX ops (Conv, AveragePool, Erf, Resize, ...). A float64
model's graph computes each such node in float32 between two Casts (``cast_double_islands``), or, with
``float64="strict"``, the export stops naming the node. Which ops lack a double kernel is read from onnxruntime's
kernel registry where it is installed (the list below otherwise: onnxruntime 1.32's CPU provider)."""
from __future__ import annotations

import functools
from typing import List, Optional, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..tensor import Tensor
from ._errors import UnsupportedOpError

# onnxruntime 1.32 CPUExecutionProvider: ops with a float kernel and no double one
_STATIC_NO_DOUBLE = frozenset((
    "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "AveragePool", "Col2Im", "Conv", "ConvTranspose", "Cosh",
    "Det", "Elu", "Erf", "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "HardSigmoid", "Hardmax",
    "InstanceNormalization", "LRN", "LeakyRelu", "LpPool", "MaxUnpool", "Mean", "MeanVarianceNormalization",
    "NonZero", "OneHot", "PRelu", "RNN", "Resize", "Selu", "Sinh", "Softplus", "Softsign", "Tan",
    "ThresholdedRelu", "Upsample", "GridSample"))
# registered for double, but refused when run ("LSTM operator does not support double yet", 1.32)
# onnxruntime 1.32: GridSample registered for float only at opsets 16-19; ONNX functions whose expansion
# holds such an op (HardSwish -> HardSigmoid, Mish -> Softplus, Gelu -> Erf) or whose type is float only (Celu)
_DOUBLE_REFUSED_AT_RUN_TIME = frozenset(("LSTM", "GRU", "GridSample", "HardSwish", "Mish", "Gelu", "Celu"))


@functools.lru_cache(maxsize=1)
def no_double_kernel() -> frozenset:
    """ONNX ops (default domain) onnxruntime's CPU provider runs on float but not on double."""
    try:
        from onnxruntime.capi import _pybind_state as C
        types = {}
        for k in C.get_all_opkernel_def():
            if k.provider != "CPUExecutionProvider" or k.domain not in ("", "ai.onnx"):
                continue
            s = types.setdefault(k.op_name, set())
            for ts in k.type_constraints.values():
                s.update(ts)
    except Exception:  # no onnxruntime, or its private registry API changed
        return _STATIC_NO_DOUBLE | _DOUBLE_REFUSED_AT_RUN_TIME
    return frozenset(op for op, t in types.items() if "tensor(float)" in t and "tensor(double)" not in t) | \
        _DOUBLE_REFUSED_AT_RUN_TIME


def _value_types(model: onnx.ModelProto) -> dict:
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(g.value_info) + list(g.input) + list(g.output)}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


def cast_double_islands(model: onnx.ModelProto, mode: str) -> List[Tuple[str, str]]:
    """Wrap every top-level node that reads a double input and has no double kernel in onnxruntime in
    Casts (double -> float inputs, float -> double outputs); returns the (node name, op type) wrapped.
    mode "strict": raise UnsupportedOpError naming them instead. Edits ``model`` in place."""
    no_double = no_double_kernel()
    graph = model.graph
    if not any(n.op_type in no_double and not n.domain for n in graph.node):
        return []
    types = _value_types(model)
    wrapped, new_nodes, down = [], [], {}
    used = {o for n in graph.node for o in n.output} | {i.name for i in graph.input} | \
        {t.name for t in graph.initializer}

    def fresh(base):
        k, name = 0, base
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        return name

    for n in graph.node:
        doubles = [i for i in n.input if i and types.get(i) == TensorProto.DOUBLE]
        if n.domain or n.op_type not in no_double or not doubles:
            new_nodes.append(n)
            continue
        wrapped.append((n.name, n.op_type))
        if mode == "strict":
            continue
        for k, i in enumerate(n.input):
            if i in doubles:
                if i not in down:
                    down[i] = fresh(f"{i}_as_float")
                    new_nodes.append(helper.make_node("Cast", [i], [down[i]], name=fresh(f"{n.name}_in{k}_to_float"),
                                                      to=TensorProto.FLOAT))
                n.input[k] = down[i]
        ups = []
        for k, o in enumerate(n.output):
            # outputs of unknown type follow the inputs (double); integer outputs (NonZero's) stay
            if o and types.get(o, TensorProto.DOUBLE) == TensorProto.DOUBLE:
                f = fresh(f"{o}_float")
                n.output[k] = f
                ups.append(helper.make_node("Cast", [f], [o], name=fresh(f"{n.name}_out{k}_to_double"),
                                            to=TensorProto.DOUBLE))
        new_nodes.append(n)
        new_nodes.extend(ups)
    if mode == "strict":
        names = ", ".join(f"{t} ({nm})" for nm, t in wrapped)
        raise UnsupportedOpError(
            f"float64 export: onnxruntime has no double kernel for {names}; export with float64='cast' to run "
            "these nodes in float32 between Casts (float32 accuracy there), or convert the model to float32")
    del graph.node[:]
    graph.node.extend(new_nodes)
    return wrapped


def float64_twin_of(fn_cls) -> Optional[type]:
    """The op's own Function when fn_cls is the float64 Function of a registry op (not registered itself)."""
    from ..ops.registry import of_function
    opdef = getattr(fn_cls, "op", None)
    if of_function(fn_cls) is None and opdef is not None and getattr(opdef, "float64", None) is fn_cls:
        return opdef.function
    return None


def float_dtype_of(outs, args, kwargs) -> np.dtype:
    """The floating dtype an op computes in: its first floating output's, else its first floating tensor
    argument's (a comparison of float64 tensors), else float32."""
    for t in list(outs) + list(args) + list(kwargs.values()):
        for x in (t if isinstance(t, (tuple, list)) else (t,)):
            dt = getattr(x, "dtype", None)
            if isinstance(x, (Tensor, np.ndarray)) and dt is not None and np.dtype(dt) in (np.float32, np.float64):
                return np.dtype(dt)
    return np.dtype(np.float32)


# ops whose float32 result is the same in onnxruntime as in numpy (data movement, correctly rounded arithmetic):
# float32 values made only by these (a float32 scale cast to double, torch's float32 rounding of a product) leave
# a double graph's results reproducible to float64's tolerance
_EXACT_FLOAT32 = frozenset((
    "Cast", "Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Slice", "Gather",
    "GatherElements", "GatherND", "Expand", "Flatten", "Where", "Split", "Tile", "Pad", "Constant",
    "ConstantOfShape", "Add", "Sub", "Mul", "Div", "Neg", "Abs", "Sqrt", "Round", "Floor", "Ceil", "Clip", "Max",
    "Min", "Relu", "Sign", "ScatterElements", "ScatterND"))


def _computes_in_float32(model: onnx.ModelProto) -> bool:
    """Whether a node of the (shape-inferred) graph computes a float32 value by an op whose rounding may differ
    from forgegrad's (a MatMul, a Gemm, an Exp...): a float32 submodule ahead of a float64 one, whose rounding
    float64's tolerance would not allow."""
    g = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in list(g.value_info) + list(g.output)}
    return any(n.op_type not in _EXACT_FLOAT32 and any(types.get(o) == TensorProto.FLOAT for o in n.output)
               for n in g.node)


def default_tolerances(model: onnx.ModelProto, float32_nodes, rtol, atol):
    """(rtol, atol) for the verification: those given, else float64's (1e-9, 1e-10) for a graph that is double
    throughout (no float32 arithmetic but correctly rounded ops, after shape inference), float32's (1e-5, 1e-6)
    otherwise."""
    all_double = not float32_nodes and any(o.type.tensor_type.elem_type == TensorProto.DOUBLE
                                           for o in model.graph.output) and not _computes_in_float32(model)
    return ((1e-9 if all_double else 1e-5) if rtol is None else rtol,
            (1e-10 if all_double else 1e-6) if atol is None else atol)
