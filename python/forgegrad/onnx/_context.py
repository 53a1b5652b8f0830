"""The graph under construction (ExportContext) and the view of one traced op (OpCall) that a
mapping receives. Mappings emit ONNX nodes through the context only, so opset differences (axes as
attributes or inputs, ...) are handled in one place."""
from __future__ import annotations

import inspect
import re
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from ..tensor import Tensor
from ._errors import OnnxExportError, UnsupportedOpError
from ._symbolic import Dyn, Expr, Symbols

INT64_MAX = 9223372036854775807
INT64_MIN = -9223372036854775808

_NP_TO_ONNX = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE,
               np.dtype(np.int64): TensorProto.INT64, np.dtype(np.int32): TensorProto.INT32,
               np.dtype(bool): TensorProto.BOOL, np.dtype(np.float16): TensorProto.FLOAT16,
               np.dtype(np.int8): TensorProto.INT8, np.dtype(np.uint8): TensorProto.UINT8,
               np.dtype(np.int16): TensorProto.INT16, np.dtype(np.uint16): TensorProto.UINT16,
               np.dtype(np.uint32): TensorProto.UINT32, np.dtype(np.uint64): TensorProto.UINT64}


def onnx_dtype(dtype) -> int:
    try:
        return _NP_TO_ONNX[np.dtype(dtype)]
    except KeyError:
        raise OnnxExportError(f"dtype {np.dtype(dtype)} has no ONNX equivalent in forgegrad's exporter") from None


Dim = Union[int, Dyn]


def dims_of(shape_a, shape_b, shape_c=None) -> List[Dim]:
    """Per-dimension: an int where all traces agree, else Dyn(a, b, c)."""
    if shape_b is None or len(shape_a) != len(shape_b):
        return [int(d) for d in shape_a]
    if shape_c is None or len(shape_c) != len(shape_a):
        shape_c = (None,) * len(shape_a)
    return [int(x) if x == y and (z is None or x == z) else Dyn(int(x), int(y), None if z is None else int(z))
            for x, y, z in zip(shape_a, shape_b, shape_c)]


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def scalar_of(a, b, c=None):
    """An int/float argument: itself where the traces agree, else Dyn (ints only)."""
    if b is None or not _is_int(a) or not _is_int(b):
        return a
    c = c if _is_int(c) else None
    if a == b and (c is None or a == c):
        return a
    return Dyn(int(a), int(b), None if c is None else int(c))


class ExportContext:
    """Accumulates nodes and initializers; hands out unique value names."""

    def __init__(self, opset: int, symbols: Symbols):
        self.opset = opset
        self.symbols = symbols
        self.nodes: List[Any] = []
        self.initializers: List[Any] = []
        self.constants: Dict[str, np.ndarray] = {}  # initializer name -> its value
        self.memo: Dict[Any, str] = {}  # mappings' own caches (e.g. a weight stored transposed once)
        self.dtypes: Dict[str, np.dtype] = {}
        self.dims: Dict[str, List[Dim]] = {}
        self._used = set()
        self._counter: Dict[str, int] = {}
        self._const_cache: Dict[Any, str] = {}
        self._expr_cache: Dict[Any, str] = {}
        self.scope = ""  # module path of the op being mapped, prefixes node names
        # the floating dtype of the op being mapped (its first floating output's, else input's): under a
        # float64 op, float32 constants, Casts to float and op.input(..., float32) become float64, so the
        # mappings written for float32 emit a float64 graph (see docs/onnx.md, float64 models)
        self.float_dtype = np.dtype(np.float32)
        self.current_op: Optional["OpCall"] = None
        # export(nan_exact_pooling=True): max pools keep a window's NaN in onnxruntime (ops/_pool_onnx.py)
        self.nan_exact_pooling = False

    # ---- names -------------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_.:/-]", "_", base) or "v"
        k = self._counter.get(base, 0)
        while True:
            name = base if k == 0 and base not in self._used else f"{base}_{k}"
            k += 1
            if name not in self._used:
                self._counter[base] = k
                self._used.add(name)
                return name

    def reserve(self, name: str) -> str:
        if name in self._used:
            raise OnnxExportError(f"ONNX value name {name!r} is used twice")
        self._used.add(name)
        return name

    # ---- nodes -------------------------------------------------------------------------------
    def node(self, op_type: str, inputs: Sequence[Optional[str]], outputs: int = 1, _exact: bool = False, **attrs):
        """Append one node; returns its output name (or list of names when outputs > 1). Under a float64 op a
        Cast to float is a Cast to double unless ``_exact``."""
        prefix = (self.scope.replace(".", "/") + "/") if self.scope else ""
        if op_type == "Cast" and attrs.get("to") == TensorProto.FLOAT and self.float_dtype == np.float64 and not _exact:
            attrs["to"] = TensorProto.DOUBLE  # a float64 op's "Cast to float" (ctx.node("Cast", to=1))
        outs = [self.fresh(f"{prefix}{op_type}_out") for _ in range(outputs)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        n = helper.make_node(op_type, ["" if i is None else i for i in inputs], outs,
                             name=self.fresh(f"{prefix}{op_type}"), **attrs)
        self.nodes.append(n)
        return outs[0] if outputs == 1 else outs

    def const(self, value, dtype=None, name: Optional[str] = None, hint: str = "const", exact: bool = False) -> str:
        """An initializer holding value (named `name`, else a fresh name from `hint`); small unnamed
        constants are shared. A float constant takes the mapped op's float dtype (an unqualified Python
        float; a float32 one under a float64 op) unless ``exact`` (parameters, Resize's float32 scales)."""
        if not exact and dtype is not None:
            dtype = self.promote(dtype)  # const(eps, "float32") under a float64 op: eps in float64, unrounded
        arr = np.asarray(value, dtype=dtype)
        if not exact and arr.dtype == np.float64 and dtype is None:
            arr = arr.astype(self.float_dtype)
        elif not exact and arr.dtype == np.float32 and self.float_dtype == np.float64:
            # a scalar the mapping rounded to float32 (np.float32(eps)): the shortest decimal that reads back
            # as it, in float64 (0.1, not 0.10000000149); arrays as they are
            if arr.size == 1:
                arr = np.asarray(float(str(arr.reshape(-1)[0])), np.float64).reshape(arr.shape)
            else:
                arr = arr.astype(np.float64)
        key = None
        if name is None and hint == "const" and arr.size <= 16:
            key = (arr.dtype.str, arr.shape, arr.tobytes())
            if key in self._const_cache:
                return self._const_cache[key]
        nm = self.reserve(name) if name is not None else self.fresh(hint)
        # np.array keeps 0-d arrays 0-d (np.ascontiguousarray would make them 1-d)
        self.initializers.append(numpy_helper.from_array(np.array(arr, order="C"), nm))
        self.constants[nm] = arr
        self.dtypes[nm] = arr.dtype
        self.dims[nm] = list(arr.shape)
        if key is not None:
            self._const_cache[key] = nm
        return nm

    def const_bfloat16(self, bits: np.ndarray, hint: str = "const") -> str:
        """An initializer of ONNX type BFLOAT16 holding the uint16 bit patterns ``bits`` (numpy has no
        bfloat16 dtype; a uint16 initializer would hold the integers instead)."""
        from onnx import TensorProto, helper
        bits = np.ascontiguousarray(bits, dtype=np.uint16)
        nm = self.fresh(hint)
        self.initializers.append(helper.make_tensor(nm, TensorProto.BFLOAT16, list(bits.shape),
                                                    bits.astype("<u2").tobytes(), raw=True))
        self.dtypes[nm] = np.dtype(np.uint16)
        self.dims[nm] = list(bits.shape)
        return nm

    def promote(self, dtype) -> np.dtype:
        """float32 becomes float64 while a float64 op is mapped (mappings name float32 for "the float type")."""
        dtype = np.dtype(dtype)
        return np.dtype(np.float64) if dtype == np.float32 and self.float_dtype == np.float64 else dtype

    def ints(self, values: Sequence[int]) -> str:
        return self.const(np.asarray(list(values), dtype=np.int64))

    def cast(self, name: str, dtype) -> str:
        dtype = self.promote(dtype)
        known = self.dtypes.get(name)
        if known is not None and known == dtype:  # (np.dtype(float64) == None holds: None is float64 to numpy)
            return name
        out = self.node("Cast", [name], to=onnx_dtype(dtype))
        self.dtypes[out] = dtype
        if name in self.dims:
            self.dims[out] = self.dims[name]
        return out

    # ---- opset-dependent forms -----------------------------------------------------------------
    def unsqueeze(self, x: str, axes: Sequence[int]) -> str:
        return self.node("Unsqueeze", [x, self.ints(axes)])  # axes is an input from opset 13

    def squeeze(self, x: str, axes: Sequence[int]) -> str:
        return self.node("Squeeze", [x, self.ints(axes)])

    def reduce(self, op_type: str, x: str, axes: Sequence[int], keepdims: bool) -> str:
        """ReduceSum takes axes as an input from opset 13, the other Reduce* ops from opset 18."""
        axes = list(axes)
        as_input = op_type == "ReduceSum" or self.opset >= 18
        if as_input:
            return self.node(op_type, [x, self.ints(axes)], keepdims=int(keepdims))
        return self.node(op_type, [x], axes=axes, keepdims=int(keepdims))

    # ---- run-time sizes ------------------------------------------------------------------------
    def symbol_value(self, sym: str) -> str:
        """1-D int64 [1] tensor: the size of a dynamic input axis, read from the input's Shape."""
        key = ("sym", sym)
        if key not in self._expr_cache:
            saved, self.scope = self.scope, ""
            if sym in self.symbols.quotients:  # floor(axis / d): int64 Div of sizes (non-negative) floors
                parent, d = self.symbols.quotients[sym]
                self._expr_cache[key] = self.node("Div", [self.symbol_value(parent), self.ints([d])])
            elif sym in self.symbols.ceilings:  # ceil(axis / d) = floor((axis + d - 1) / d)
                parent, d = self.symbols.ceilings[sym]
                up = self.node("Add", [self.symbol_value(parent), self.ints([d - 1])])
                self._expr_cache[key] = self.node("Div", [up, self.ints([d])])
            else:
                inp, axis = self.symbols.source[sym]
                shape = self.node("Shape", [inp])
                self._expr_cache[key] = self.node("Gather", [shape, self.ints([axis])], axis=0)
            self.scope = saved
        return self._expr_cache[key]

    def expr_value(self, expr: Expr) -> str:
        key = ("expr", expr)
        if key not in self._expr_cache:
            saved, self.scope = self.scope, ""
            v = None
            for s in expr.syms:
                sv = self.symbol_value(s)
                v = sv if v is None else self.node("Mul", [v, sv])
            if expr.coef != 1:
                v = self.node("Mul", [v, self.ints([expr.coef])])
            if expr.offset:
                v = self.node("Add", [v, self.ints([expr.offset])])
            self.scope = saved
            self._expr_cache[key] = v
        return self._expr_cache[key]

    def size_dependence(self, dims) -> str:
        """Which dynamic axes a tensor made inside forward follows, for an error: its shape with each dynamic
        dimension named ((tokens, tokens), batch*tokens...), or, where only its values change, every dynamic
        axis with the sizes the traces ran at."""
        labels = [str(self.symbols.label(d) or f"{d.a}, {d.b} or {d.c}") if isinstance(d, Dyn) else str(d)
                  for d in dims]
        axes = ", ".join(f"{n} (input {self.symbols.source[n][0]!r} axis {self.symbols.source[n][1]})"
                         for n in self.symbols.names)
        runs = f"the example's sizes {self.symbols.a}, then {self.symbols.b}"
        if any(isinstance(d, Dyn) for d in dims):
            return f"its shape ({', '.join(labels)}) follows the dynamic axes (traced at {runs})"
        return f"its values change with the dynamic axes {axes} (traced at {runs})"

    def solve(self, dim: Dyn, what: str) -> Expr:
        e = self.symbols.solve(dim)
        if e is None:
            where = self.current_op.describe() if self.current_op is not None else ""
            raise OnnxExportError(
                f"{what} depends on the dynamic input sizes ({dim.a} at the example's sizes {self.symbols.a}, "
                f"{dim.b} at {self.symbols.b}, {dim.c} at {self.symbols.c}) in a way the exporter cannot express "
                f"(it handles c*batch*seq... and axis+k); {where}. Pass dynamic_axes={{}} for a static graph.")
        return e

    def dim_value(self, dim: Dim, what: str = "a size") -> str:
        """1-D int64 [1] tensor holding dim (a constant when static)."""
        if isinstance(dim, Dyn):
            return self.expr_value(self.solve(dim, what))
        return self.ints([int(dim)])

    def shape_tensor(self, dims: Sequence[Union[int, Dyn, Expr]], what: str = "a shape") -> str:
        """1-D int64 tensor of the given sizes; static runs become constants, dynamic ones are computed."""
        pieces, run = [], []
        for d in dims:
            if isinstance(d, (Dyn, Expr)):
                if run:
                    pieces.append(self.ints(run))
                    run = []
                pieces.append(self.expr_value(d) if isinstance(d, Expr) else self.dim_value(d, what))
            else:
                run.append(int(d))
        if run or not pieces:
            pieces.append(self.ints(run))
        return pieces[0] if len(pieces) == 1 else self.node("Concat", pieces, axis=0)


# ---- one traced op, as a mapping sees it -----------------------------------------------------------
_SIGNATURES: Dict[type, inspect.Signature] = {}


def bind_args(fn_cls, args, kwargs) -> Dict[str, Any]:
    """args/kwargs of a Function.apply call, keyed by forward's parameter names, defaults applied."""
    sig = _SIGNATURES.get(fn_cls)
    if sig is None:
        sig = _SIGNATURES[fn_cls] = inspect.signature(fn_cls.forward)
    try:
        ba = sig.bind(None, *args, **kwargs)
    except TypeError:
        return {**{f"arg{i}": a for i, a in enumerate(args)}, **kwargs}
    ba.apply_defaults()
    out = dict(ba.arguments)
    out.pop(next(iter(sig.parameters)), None)  # ctx
    return out


class OpCall:
    """One record of the trace, with its trace-B twin, and helpers to fetch its inputs as ONNX values."""

    def __init__(self, exporter, index: int, fn_cls, bound_a: Dict[str, Any], bound_b: Optional[Dict[str, Any]],
                 outputs_a, outputs_b, where, bound_c: Optional[Dict[str, Any]] = None, outputs_c=None):
        self.exporter = exporter
        self.ctx: ExportContext = exporter.ctx
        self.index = index
        self.fn_cls = fn_cls
        self.args = bound_a
        self.args_b = bound_b if bound_b is not None else bound_a
        self.outputs = outputs_a
        self.outputs_b = outputs_b if outputs_b is not None else outputs_a
        self.args_c = bound_c if bound_c is not None else {}
        self.outputs_c = outputs_c if outputs_c is not None else ()
        self.where = where  # (module path, module type name) or None

    # ---- description for errors ----------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.fn_cls.__name__

    def describe(self) -> str:
        shapes = []
        for k, v in self.args.items():
            if isinstance(v, Tensor):
                shapes.append(f"{k}={tuple(v.shape)}")
            elif isinstance(v, (tuple, list)) and v and all(isinstance(t, Tensor) for t in v):
                shapes.append(f"{k}=[" + ", ".join(str(tuple(t.shape)) for t in v) + "]")
        mod = ""
        if self.where is not None:
            path, typ = self.where
            mod = f" inside module '{path or '<root>'}' ({typ})"
        n = len(self.exporter.records)
        return (f"op #{self.index} of {n} in the trace, {self.fn_cls.__module__}.{self.fn_cls.__qualname__}"
                f"{mod}, input shapes {', '.join(shapes) or '()'}")

    def unsupported(self, why: str) -> UnsupportedOpError:
        return UnsupportedOpError(f"{why} ({self.describe()})")

    # ---- arguments -----------------------------------------------------------------------------
    def attr(self, name: str, default=None):
        return self.args.get(name, default)

    def attr_b(self, name: str, default=None):
        return self.args_b.get(name, default)

    def attr_c(self, name: str, default=None):
        return self.args_c.get(name, default)

    def input(self, name: str, dtype=None) -> Optional[str]:
        """The ONNX value for argument `name`: a traced tensor, a parameter, or a constant made from a
        scalar (in `dtype`, else the first output's dtype). Cast to dtype when given. None stays None."""
        return self.exporter.value_for(self.args.get(name), self.args_b.get(name), self, dtype, name,
                                       self.args_c.get(name))

    def inputs(self, name: str, dtype=None) -> List[str]:
        """The ONNX values of a *args parameter (Cat/Stack's tensors)."""
        va, vb, vc = self.args.get(name, ()), self.args_b.get(name, ()), self.args_c.get(name, ())
        if len(vb) != len(va):
            vb = (None,) * len(va)
        if len(vc) != len(va):
            vc = (None,) * len(va)
        return [self.exporter.value_for(a, b, self, dtype, f"{name}[{i}]", c)
                for i, (a, b, c) in enumerate(zip(va, vb, vc))]

    def in_dims(self, name: str) -> List[Dim]:
        a, b, c = self.args.get(name), self.args_b.get(name), self.args_c.get(name)
        return dims_of(np.shape(a), np.shape(b) if b is not None else None, np.shape(c) if c is not None else None)

    def out_dims(self, i: int = 0) -> List[Dim]:
        b = self.outputs_b[i] if i < len(self.outputs_b) else None
        c = self.outputs_c[i] if i < len(self.outputs_c) else None
        return dims_of(self.outputs[i].shape, b.shape if b is not None else None, c.shape if c is not None else None)

    def out_dtype(self, i: int = 0) -> np.dtype:
        return self.outputs[i].dtype
