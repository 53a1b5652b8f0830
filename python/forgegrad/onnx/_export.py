"""forgegrad.onnx.export: trace the model, map every op to ONNX nodes, check, save, verify."""
from __future__ import annotations

import contextlib
import inspect
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import helper

from .._atomic_io import atomic_write
from .._version import __version__
from ..tensor import Tensor
from ._capture import Capture, check_on_meta, meta_runs, run_traced
from ._context import ExportContext, OpCall, bind_args, dims_of, onnx_dtype, scalar_of
from . import _nested
from ._errors import OnnxExportError, UnsupportedOpError
from ._export_args import check_dynamic_axes, check_flag, check_names, check_tolerance, check_verify_sizes
from ._graph_edit import prune, rename
from ._float64 import float64_twin_of as _float64_twin_of, float_dtype_of as _float_dtype_of
from ._shapes import declared_dims, output_shapes, probe_output_shapes
from ._symbolic import Dyn, Symbols
from .mappings import lookup

MIN_OPSET, MAX_OPSET = 13, 21


# ---- inputs, names and dynamic axes ---------------------------------------------------------------
def _as_tensors(example_inputs) -> List[Tensor]:
    if isinstance(example_inputs, (Tensor, np.ndarray)):
        example_inputs = (example_inputs,)
    out = []
    for i, x in enumerate(example_inputs):
        if isinstance(x, Tensor):
            out.append(Tensor._wrap_exact(x._data))  # a fresh Tensor object: graph inputs are matched by identity
        elif isinstance(x, np.ndarray) or np.isscalar(x):
            out.append(Tensor._stored(np.asarray(x)))
        else:
            raise TypeError(f"export: example input {i} is a {type(x).__name__}; expected forgegrad Tensors "
                            "or numpy arrays")
    return out


def _default_input_names(model, n: int) -> List[str]:
    try:
        params = [p for p in inspect.signature(getattr(model, "forward", model)).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(params) >= n:
            return [p.name for p in params[:n]]
    except (TypeError, ValueError, AttributeError):
        pass
    return ["input"] if n == 1 else [f"input_{i}" for i in range(n)]


# modules over sequences: their input's sequence axis is dynamic by default (batch_first says where)
_SEQUENCE_MODULES = ("LSTM", "GRU", "RNN", "MultiheadAttention", "CausalSelfAttention", "DynamicQuantizedLSTM",
                     "DynamicQuantizedGRU")


# modules over (batch, channels, length): one of these ahead of the sequence module reads the model's 3-D input,
# whose axis 1 is then channels (an audio CNN + LSTM), not the sequence
_CHANNELS_FIRST_1D = ("Conv1d", "ConvTranspose1d", "MaxPool1d", "AvgPool1d", "AdaptiveAvgPool1d", "AdaptiveMaxPool1d",
                      "LPPool1d", "InstanceNorm1d")


def _recurrent_layout(model, features_input: bool = True) -> Optional[bool]:
    """batch_first of the first sequence module (LSTM/GRU/RNN, attention), or None when the model has none or (for
    a 3-D ``features_input``; token ids go to an embedding first) a 1-d convolution, pool or instance norm comes
    before it."""
    for m in getattr(model, "modules", lambda: [])():
        if features_input and type(m).__name__ in _CHANNELS_FIRST_1D:
            return None
        if type(m).__name__ in _SEQUENCE_MODULES and hasattr(m, "batch_first"):
            return bool(m.batch_first)
    return None


def _default_dynamic_axes(model, inputs: List[Tensor], names: List[str]) -> Dict[str, Dict[int, str]]:
    """Batch axes (and a recurrent model's sequence axis) of the inputs, whatever the example's sizes."""
    axes: Dict[str, Dict[int, str]] = {}
    if not inputs or inputs[0].ndim == 0:
        return axes
    x0 = inputs[0]
    batch_first = _recurrent_layout(model, x0.ndim == 3)
    # a recurrent model's first input: features (T, B, F) / (B, T, F), or token ids (T, B) / (B, T)
    if batch_first is not None and (x0.ndim == 3 or (x0.ndim == 2 and x0.dtype.kind in "iu")):
        axes[names[0]] = {0: "batch", 1: "seq"} if batch_first else {0: "seq", 1: "batch"}
        bsize = x0.shape[0 if batch_first else 1]
    else:
        axes[names[0]] = {0: "batch"}
        bsize = x0.shape[0]
    for name, x in zip(names[1:], inputs[1:]):
        if batch_first is not None and x.ndim == 3 and x.shape[1] == bsize:
            axes[name] = {1: "batch"}  # initial states (layers * directions, batch, hidden)
        elif x.ndim >= 1 and x.shape[0] == bsize:
            axes[name] = {0: "batch"}
    return axes


def _normalize_axes(dynamic_axes, names) -> Dict[str, Dict[int, str]]:
    out = {}
    for name, spec in (dynamic_axes or {}).items():
        if isinstance(spec, dict):
            out[name] = {int(k): str(v) for k, v in spec.items()}
        else:
            out[name] = {int(a): ("batch" if int(a) == 0 else f"{name}_dim{int(a)}") for a in spec}
    return out


def _resample(x: Tensor, axes: Dict[int, str], sizes: Dict[str, int]) -> Tensor:
    """x with each dynamic axis cut or repeated to the requested size (valid values, e.g. token ids)."""
    arr = x._data
    for axis, sym in axes.items():
        n = arr.shape[axis]
        if n == 0:
            raise OnnxExportError(f"dynamic axis {axis} of an example input has size 0")
        arr = np.take(arr, np.arange(sizes[sym]) % n, axis=axis)
    return Tensor(np.ascontiguousarray(arr), dtype=x.dtype)


@contextlib.contextmanager
def _eval_mode(model):
    """Eval mode, and sampling (randn_like, rand_like) at its mean: see forgegrad._functions."""
    from .._functions import sampling_at_mean
    modes = [(m, m.training) for m in model.modules()] if hasattr(model, "modules") else []
    if hasattr(model, "eval"):
        model.eval()
    try:
        with sampling_at_mean():
            yield
    finally:
        for m, mode in modes:
            object.__setattr__(m, "training", mode)


# ---- building the graph ------------------------------------------------------------------------------
class _Exporter:
    def __init__(self, model, cap_a: Capture, cap_b: Optional[Capture], symbols: Symbols, opset: int,
                 cap_c: Optional[Capture] = None):
        self.model = model
        self.cap_a, self.cap_b, self.cap_c = cap_a, cap_b, cap_c
        self.records = cap_a.records
        self.symbols = symbols
        self.ctx = ExportContext(opset, symbols)
        self.values: Dict[int, str] = {}      # id(Tensor) -> ONNX value
        self.data_alias: Dict[int, str] = {}  # id(ndarray) -> ONNX value (detach(), Tensor(t._data))
        self.keep_alive: List[Any] = []
        self.bool_values: List[Tuple[str, np.ndarray]] = []
        self.params: Dict[int, str] = {}
        self.param_data: Dict[int, str] = {}
        self.attr_tensors: Dict[int, str] = {}
        if hasattr(model, "named_parameters"):
            for k, p in list(model.named_parameters()) + list(model.named_buffers()):
                self.params[id(p)] = k
                self.param_data[id(p._data)] = k
            for path, m in model.named_modules():
                for k, v in vars(m).items():
                    if isinstance(v, Tensor) and id(v) not in self.params:
                        self.attr_tensors[id(v)] = f"{path}.{k}" if path else k
        self.param_values: Dict[str, str] = {}

    def _bind(self, name: str, t: Tensor, tb: Optional[Tensor] = None, tc: Optional[Tensor] = None) -> None:
        self.values[id(t)] = name
        self.data_alias[id(t._data)] = name
        self.keep_alive.append(t)
        self.ctx.dtypes[name] = t.dtype
        self.ctx.dims[name] = dims_of(t.shape, tb.shape if tb is not None else None,
                                      tc.shape if tc is not None else None)
        if t.dtype == bool:
            self.bool_values.append((name, t._data))

    def check_same_structure(self, cap_b: Capture, sizes) -> None:
        ra, rb = self.cap_a.records, cap_b.records
        for i, (x, y) in enumerate(zip(ra, rb)):
            if x[0] is not y[0]:
                raise OnnxExportError(
                    f"the model ran different ops when re-run with the dynamic axes at {sizes} "
                    f"(op #{i}: {x[0].__name__} at the example's sizes, {y[0].__name__} at the other sizes): "
                    "size-dependent control flow cannot be exported with dynamic axes; pass dynamic_axes={} "
                    "to export a static graph")
        if len(ra) != len(rb):
            raise OnnxExportError(
                f"the model ran {len(ra)} ops at the example's sizes but {len(rb)} at {sizes}; "
                "size-dependent control flow cannot be exported with dynamic axes (pass dynamic_axes={})")
        if len(self.cap_a.outputs) != len(cap_b.outputs):
            raise OnnxExportError("the model returned a different number of outputs at other input sizes")

    # ---- values of op arguments ----------------------------------------------------------------------
    def value_for(self, a, b, op: OpCall, dtype, argname: str, c=None) -> Optional[str]:
        ctx = self.ctx
        if a is None:
            return None
        if isinstance(a, Tensor):
            name = self._tensor_value(a, b if isinstance(b, Tensor) else None, op, argname,
                                      c if isinstance(c, Tensor) else None)
        elif isinstance(a, np.ndarray) and a.ndim > 0 or isinstance(a, np.ndarray) and a.dtype == bool:
            name = self._array_value(a, b if isinstance(b, np.ndarray) else None, op, argname,
                                     arr_c=c if isinstance(c, np.ndarray) else None)
        elif isinstance(a, (bool, int, float, np.number)):
            s = scalar_of(a, b, c)
            want = np.dtype(dtype) if dtype is not None else op.out_dtype()
            if isinstance(s, Dyn):  # e.g. x.sum() / x.shape[0]: computed from the input shapes
                v = ctx.squeeze(ctx.dim_value(s, f"argument {argname!r}"), [0])
                ctx.dtypes[v] = np.dtype(np.int64)
                return ctx.cast(v, want)
            return ctx.const(np.asarray(a, dtype=want))
        else:
            raise op.unsupported(f"argument {argname!r} of type {type(a).__name__} cannot be exported")
        return ctx.cast(name, dtype) if dtype is not None else name

    def _tensor_value(self, t: Tensor, tb: Optional[Tensor], op: OpCall, argname: str,
                      tc: Optional[Tensor] = None) -> str:
        name = self.values.get(id(t)) or self.data_alias.get(id(t._data))
        if name is not None:
            return name
        key = self.params.get(id(t)) or self.param_data.get(id(t._data))
        if key is not None:
            if key not in self.param_values:
                nm = self.ctx.const(np.array(t._data, copy=True), name=key, exact=True)
                self.param_values[key] = nm
            self._bind(self.param_values[key], t)
            return self.param_values[key]
        name = self._array_value(t._data, tb._data if tb is not None else None, op, argname,
                                 label=self.attr_tensors.get(id(t)), arr_c=tc._data if tc is not None else None)
        self._bind(name, t, tb, tc)
        return name

    def _array_value(self, arr: np.ndarray, arr_b, op: OpCall, argname: str, label=None, arr_c=None) -> str:
        ctx = self.ctx
        if arr.dtype == bool:  # where()'s condition reaches the trace as a raw array: find its producer
            for nm, data in reversed(self.bool_values):
                if data.shape == arr.shape and np.array_equal(data, arr):
                    return nm
        dims = dims_of(arr.shape, arr_b.shape if arr_b is not None else None,
                       arr_c.shape if arr_c is not None else None)
        if any(isinstance(d, Dyn) for d in dims):
            flat = arr.reshape(-1)
            if flat.size and np.all(flat == flat[0]):  # zeros(batch, h) and friends
                v = ctx.node("ConstantOfShape", [ctx.shape_tensor(dims, f"size of constant {argname!r}")],
                             value=onnx.numpy_helper.from_array(flat[:1].copy()))
                ctx.dtypes[v] = arr.dtype
                return v
            raise op.unsupported(
                f"argument {argname!r} is a tensor made inside forward whose shape {arr.shape} depends on the "
                f"input sizes ({ctx.size_dependence(dims)}) and whose values are not all equal: compute it with "
                "Tensor ops on the inputs while tracing, or pass it to the model as an input")
        if arr_b is not None and arr_b.shape == arr.shape and not np.array_equal(arr, arr_b, equal_nan=True):
            raise op.unsupported(
                f"argument {argname!r} is a tensor made inside forward whose values change from run to run "
                f"(random numbers? values computed from the input sizes? {ctx.size_dependence(dims)}): compute it "
                "with Tensor ops on the inputs while tracing, or pass it to the model as an input")
        return ctx.const(np.array(arr, copy=True), name=self._const_name(label), exact=True)

    def _const_name(self, label):
        if label is None or label in self.ctx._used:
            return None
        return label

    # ---- the graph -----------------------------------------------------------------------------------
    def map_ops(self) -> None:
        ctx = self.ctx
        recs_b = self.cap_b.records if self.cap_b is not None else None
        recs_c = self.cap_c.records if self.cap_c is not None else None
        for i, (fn_cls, args, kwargs, outs) in enumerate(self.records):
            # an op's float64 Function (ops/_float64*.py) exports through the op's own mapping, its arguments
            # bound by the op's Function's names
            canon = _float64_twin_of(fn_cls) or fn_cls
            bound_a = bind_args(canon, args, kwargs)
            bound_b = outs_b = bound_c = outs_c = None
            if recs_b is not None:
                _, args_b, kwargs_b, outs_b = recs_b[i]
                bound_b = bind_args(canon, args_b, kwargs_b)
            if recs_c is not None:
                _, args_c, kwargs_c, outs_c = recs_c[i]
                bound_c = bind_args(canon, args_c, kwargs_c)
            op = OpCall(self, i, fn_cls, bound_a, bound_b, outs, outs_b, self.cap_a.where[i], bound_c, outs_c)
            ctx.float_dtype = _float_dtype_of(outs, args, kwargs)
            mapping = lookup(canon)
            if mapping is None:
                raise UnsupportedOpError(
                    f"no ONNX mapping for op {fn_cls.__module__}.{fn_cls.__qualname__} ({op.describe()}); "
                    f"register one with @forgegrad.onnx.register_mapping({fn_cls.__name__})")
            ctx.scope = op.where[0] if op.where else ""
            ctx.current_op = op
            try:
                names = mapping(ctx, op)
            except (OnnxExportError, TypeError, ValueError, KeyError, IndexError) as e:
                if isinstance(e, OnnxExportError):
                    raise
                raise OnnxExportError(f"mapping {fn_cls.__name__} to ONNX failed: {e} ({op.describe()})") from e
            if len(names) != len(outs):
                raise OnnxExportError(f"the ONNX mapping of {fn_cls.__name__} returned {len(names)} values for "
                                      f"{len(outs)} outputs ({op.describe()})")
            for j, (t, nm) in enumerate(zip(outs, names)):
                self._bind(nm, t, outs_b[j] if outs_b is not None else None,
                           outs_c[j] if outs_c is not None else None)
        ctx.scope, ctx.current_op, ctx.float_dtype = "", None, np.dtype(np.float32)

    def output_value(self, t, i: int) -> str:
        if not isinstance(t, Tensor):
            raise OnnxExportError(f"model output {i} is a {type(t).__name__}, not a Tensor")
        name = self.values.get(id(t)) or self.data_alias.get(id(t._data))
        if name is None:
            key = self.params.get(id(t)) or self.param_data.get(id(t._data))
            if key is None:
                raise OnnxExportError(f"model output {i} (shape {t.shape}) was not computed by traced ops and "
                                      "is not a parameter")
            name = self._tensor_value(t, None, None, f"output {i}")
        return name


def _verification_hint(records) -> str:
    """What to tell a user whose export fails verification for a known, bounded reason."""
    from ..quantization._traced import DynamicQuantizedRNNCall, QuantizedLayerCall
    from ..quantization.bf16 import WeightOnlyBF16Linear
    # (bfloat16 weight-only layers compute in float32: no quantization step to land on)
    kinds = {r[0] for r in records if not any(isinstance(a, WeightOnlyBF16Linear) for a in r[1])}
    if DynamicQuantizedRNNCall in kinds:
        return ("\nThe model has dynamic-int8 LSTM/GRU layers: onnxruntime's sigmoid and tanh round differently in "
                "the last bit, and where such a hidden value sits on a quantization boundary the next step's "
                "integer differs by one, moving outputs by about one hidden-state quantization step. Pass an atol "
                "of that size (about 2 / 127 times the largest recurrent weight, carried through the layers after).")
    if QuantizedLayerCall in kinds:
        return ("\nThe model has int8 layers: onnxruntime computes forgegrad's integers from the same inputs, but "
                "float layers before them (normalization, softmax, GELU...) may round differently in the last bit, "
                "and a value on a quantization boundary then lands one step away. Pass an atol of about one "
                "quantization step of the outputs that differ.")
    return ""


def atomic_save(model_proto, path: str) -> None:
    """Write atomically (temp file in the target folder, fsync, rename), keeping the target's
    permissions (the umask default for a new file) and writing through a symlink."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    data = model_proto.SerializeToString()
    atomic_write(path, lambda f: f.write(data), who="onnx export")


def export(model, example_inputs, path, *, opset: int = 17, dynamic_axes=None, input_names=None,
           output_names=None, verify: bool = True, rtol: Optional[float] = None, atol: Optional[float] = None,
           verify_sizes: Optional[Sequence[Dict[str, int]]] = None, metadata: Optional[Dict[str, str]] = None,
           float64: str = "cast", axis_divisors: Optional[Dict[str, int]] = None, nan_exact_pooling: bool = False,
           axis_ceil_divisors: Optional[Dict[str, int]] = None):
    """Export a forgegrad model to an ONNX file and (by default) check it with onnxruntime.

    The model first runs on the meta device (shapes only, no kernels) at the sizes it will be traced
    at, so that one it cannot run at fails at once, naming the module and the shapes (see
    ``_capture.check_on_meta``; the sizes it will be verified at are checked so before the file is
    written). Then it runs in eval mode under ``forgegrad.autograd.trace()`` and ``no_grad``, at the
    example's sizes and twice more at other sizes of its dynamic axes (to tell which sizes and
    size-derived arguments are dynamic, and how they follow the input sizes); every recorded op of the
    first run is mapped to ONNX nodes, so models whose forward uses functional ops export like any other.
    The outputs' declared shapes name every dim that follows a dynamic axis (``batch``, ``batch*seq``,
    else ``<output>_dim<k>``) and fix the rest; two more meta runs far from the traced sizes tell a dim
    a stride or pool only made look constant (see ``_shapes``). Sampling (``randn_like``, ``rand_like``)
    is exported deterministically, at the distribution's mean (a VAE's exported forward decodes z = mu);
    see docs/torch_compat.md.

    Args:
        model: a forgegrad.nn.Module (or any callable on Tensors).
        example_inputs: a Tensor / numpy array, or a tuple of them (the graph inputs, in order); nested
            tuples such as ``(input, (h, c))`` are passed to the model nested and are graph inputs
            in depth-first order (default names: ``input``, ``hidden_0``, ``hidden_1``).
        path: where to write the .onnx file (written atomically).
        opset: ONNX opset, 13 to 21.
        dynamic_axes: ``{input_or_output_name: {axis: "symbol"} or [axes]}``. Default: axis 0 of each
            input that shares the first input's batch size, plus the sequence axis when the model has
            an LSTM/GRU/RNN (following its batch_first) and, for a 3-D input, no 1-d conv, pool or
            instance norm ahead of it (their input is (batch, channels, length)). ``{}`` exports a fully static graph.
        input_names / output_names: graph names (default: forward's parameter names; "output").
        verify: run the file with onnxruntime on the example and on random inputs of other dynamic
            sizes and compare with forgegrad; raise OnnxVerificationError past tolerance.
        rtol, atol: the comparison's tolerance, ``|ort - fg| <= atol + rtol * |fg|``. Default 1e-5, 1e-6;
            for a float64 graph that runs in double throughout, 1e-9, 1e-10.
        float64: for a float64 model (``.double()``, ``set_default_dtype(float64)``; the graph is then double
            throughout: inputs, initializers, constants, Casts), what to do with a node onnxruntime has no
            double kernel for (Conv, AveragePool, Erf, Resize, ...): "cast" runs it in float32 between Casts
            (listed in ``report.float32_nodes``; verified at the float32 tolerances), "strict" raises
            UnsupportedOpError naming those nodes.
        verify_sizes: sizes of the dynamic axes to verify at besides the example's, as a list of
            ``{"batch": 1, ...}`` dicts (default: every dynamic axis at 1, then at 7).
        metadata: string key/value pairs written to the model's ``metadata_props`` (onnxruntime reads them
            back as ``session.get_modelmeta().custom_metadata_map``).
        axis_divisors: ``{symbol: d}``: dynamic axes the model divides by an integer (an image's sides by a patch
            size); sizes it computes as floor(axis / d) (a patch grid) then become integer Divs of the input's shape.
        axis_ceil_divisors: ``{symbol: d}``: dynamic axes the model cuts into blocks of d, the last one padded (a
            block-local attention); sizes it computes as ceil(axis / d) (the number of blocks) and their multiples (the
            padded length) are then computed from the input's shape. The padding itself must be a whole block sliced to
            that length (``F.pad(x, (0, 0, 0, d))[:, :d * blocks]``): the remainder d*blocks - axis is no product of
            the symbols.
        nan_exact_pooling: max pools (``max_pool1d/2d/3d``, the adaptive max pools) give NaN for a window holding
            a NaN, as torch's, in onnxruntime too. onnxruntime's MaxPool / ReduceMax skip a NaN that is not the
            window's first element, so this adds an IsNaN mask pooled alongside each max pool (about twice the
            pooling work; onnxruntime's ``quantize_static`` rejects the pattern). Default False: a plain MaxPool, as
            ``torch.onnx.export`` writes (the same values wherever the input holds no NaN).

    Returns:
        ExportReport: the file, names, dynamic axes and, when verified, the errors per run and output.

    Raises:
        UnsupportedOpError: an op has no mapping (the message names the op, its index in the trace,
            the module it ran in and its input shapes) or uses a form with no ONNX equivalent.
        OnnxExportError: anything else that stops the export (size-dependent control flow, a size
            expression that cannot be computed, onnx's checker rejecting the graph). No file is written.
        OnnxVerificationError: onnxruntime disagrees past rtol/atol; the file is kept for inspection
            and ``error.report`` holds the numbers. All three are RuntimeErrors.
    """
    if float64 not in ("cast", "strict"):
        raise ValueError(f"export: float64 must be 'cast' or 'strict', got {float64!r}")
    check_flag(nan_exact_pooling, "nan_exact_pooling")
    check_flag(verify, "verify")
    rtol, atol = check_tolerance(rtol, "rtol"), check_tolerance(atol, "atol")
    input_names, output_names = check_names(input_names, "input_names"), check_names(output_names, "output_names")
    dynamic_axes, verify_sizes = check_dynamic_axes(dynamic_axes), check_verify_sizes(verify_sizes)
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"export: opset must be an int from {MIN_OPSET} to {MAX_OPSET}, got {opset!r}")
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        raise TypeError(f"export: metadata must map str keys to str values, got {metadata!r}")
    default_names = None
    if _nested.is_nested(example_inputs):  # (input, (h, c)): flat graph inputs, the model called nested
        example_inputs, spec = _nested.flatten(example_inputs)
        default_names = _nested.default_names(model, spec)
        model = _nested.wrap(model, spec)
    inputs = _as_tensors(example_inputs)
    if input_names is not None:
        names = list(input_names)
    else:
        names = default_names or _default_input_names(model, len(inputs))
    if len(names) != len(inputs) or len(set(names)) != len(names):
        raise ValueError(f"export: input_names {names} must be {len(inputs)} distinct names, one per example input")
    axes = (_default_dynamic_axes(model, inputs, names) if dynamic_axes is None
            else _normalize_axes(dynamic_axes, names))
    input_axes = []
    symbols = Symbols()
    for name, x in zip(names, inputs):
        ax = {}
        for a, s in axes.get(name, {}).items():
            if not -x.ndim <= a < x.ndim:
                raise ValueError(f"export: dynamic axis {a} of input {name!r} is out of range for shape {x.shape}")
            ax[a % x.ndim] = s
            symbols.add(s, x.shape[a], (name, a % x.ndim))
        input_axes.append(ax)
    symbols.divide_all(axis_divisors)
    symbols.divide_all(axis_ceil_divisors, ceil=True)
    symbols.choose_sizes()

    from ._verify import ExportReport, default_verify_sizes, verify_model
    def real_inputs(sizes):  # the example's values at other sizes of its dynamic axes (as traced)
        return inputs if sizes is None else [_resample(x, ax, sizes) if ax else x for x, ax in zip(inputs, input_axes)]

    trace_runs, verify_runs = meta_runs(inputs, input_axes, symbols, (
        [] if not verify else default_verify_sizes(symbols) if verify_sizes is None else list(verify_sizes)))
    with _eval_mode(model):
        # shapes first, on the meta device (no kernels run): a model that cannot run at one of the
        # sizes this export will trace at fails here, naming the module and the shapes
        meta_ok = check_on_meta(model, inputs, trace_runs, real_inputs)
        cap_a = run_traced(model, inputs)
        cap_b = cap_c = None
        if symbols.names:
            caps = []
            for sizes in (symbols.b, symbols.c):
                resized = [_resample(x, ax, sizes) for x, ax in zip(inputs, input_axes)]
                try:
                    caps.append(run_traced(model, resized))
                except Exception as e:
                    raise OnnxExportError(
                        f"the model failed when re-run with its dynamic axes at other sizes {sizes} (the example "
                        f"has {symbols.a}), so these axes cannot be dynamic: {type(e).__name__}: {e}. Pass "
                        "dynamic_axes= naming the axes that really are dynamic ({} for a static graph)") from e
            cap_b, cap_c = caps
        ex = _Exporter(model, cap_a, cap_b, symbols, opset, cap_c)
        if cap_b is not None:
            ex.check_same_structure(cap_b, symbols.b)
            ex.check_same_structure(cap_c, symbols.c)
        ctx = ex.ctx
        ctx.nan_exact_pooling = nan_exact_pooling
        for name in names:
            ctx.reserve(name)
        n_out = len(cap_a.outputs)
        if output_names is None:
            output_names = cap_a.output_keys or (["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)])
        output_names = list(output_names)
        if len(output_names) != n_out or len(set(output_names) | set(names)) != n_out + len(names):
            raise ValueError(f"export: output_names {output_names} must be {n_out} distinct names not used "
                             f"by the inputs {names}")
        for name in output_names:
            ctx.reserve(name)
        graph_inputs = []
        for name, x, ax in zip(names, inputs, input_axes):
            xb = _resample(x, ax, symbols.b) if ax else x
            xc = _resample(x, ax, symbols.c) if ax else x
            ex._bind(name, x, xb, xc)
            shape = [ax.get(a, d) for a, d in enumerate(x.shape)]
            graph_inputs.append(helper.make_tensor_value_info(name, onnx_dtype(x.dtype), shape))
        ex.map_ops()
        from .mappings import GRAPH_PASSES
        for graph_pass in GRAPH_PASSES:
            graph_pass(ctx)

        unknown = set(axes) - set(names) - set(output_names)
        if unknown:
            raise ValueError(f"export: dynamic_axes names {sorted(unknown)}, which are neither inputs {names} "
                             f"nor outputs {output_names}")
        out_axes = _normalize_axes({k: v for k, v in (dynamic_axes or {}).items() if k in output_names}, output_names)
        # declared output shapes: the traces' sizes, and the meta probes' for dims the traces cannot tell
        probes = probe_output_shapes(model, inputs, input_axes, symbols) if meta_ok else []
        declared = declared_dims(output_shapes(cap_a.outputs), cap_b and output_shapes(cap_b.outputs),
                                 cap_c and output_shapes(cap_c.outputs), probes, symbols, output_names, out_axes)
        graph_outputs, produced = [], {o for n in ctx.nodes for o in n.output}
        taken = set()
        for i, (t, oname) in enumerate(zip(cap_a.outputs, output_names)):
            v = ex.output_value(t, i)
            if v in produced and v not in taken and v not in names:
                rename(ctx.nodes, v, oname)
                for d in (ctx.dtypes, ctx.dims):
                    if v in d:
                        d[oname] = d[v]
                # later outputs that are the same tensor now refer to the renamed value
                for k in list(ex.values):
                    if ex.values[k] == v:
                        ex.values[k] = oname
                for k in list(ex.data_alias):
                    if ex.data_alias[k] == v:
                        ex.data_alias[k] = oname
            else:
                ctx.nodes.append(helper.make_node("Identity", [v], [oname], name=ctx.fresh(f"Identity_{oname}")))
            taken.add(oname)
            graph_outputs.append(helper.make_tensor_value_info(oname, onnx_dtype(t.dtype), declared[i]))

    nodes, inits = prune(ctx.nodes, ctx.initializers, output_names)
    graph = helper.make_graph(nodes, f"forgegrad_{type(model).__name__}", graph_inputs, graph_outputs,
                              initializer=inits)
    opset_ids = [helper.make_opsetid("", opset)]
    # onnxruntime's contrib ops (MatMulNBits for int8-weight layers) are version 1 of their domain
    extra_domains = sorted({n.domain for n in nodes if n.domain})
    proto = helper.make_model(graph, opset_imports=opset_ids + [helper.make_opsetid(d, 1) for d in extra_domains],
                              producer_name="forgegrad", producer_version=__version__)
    proto.ir_version = helper.find_min_ir_version_for(opset_ids)
    helper.set_model_props(proto, metadata)
    from ._float64 import cast_double_islands, default_tolerances
    try:
        float32_nodes = cast_double_islands(proto, float64)
    except onnx.shape_inference.InferenceError as e:
        raise OnnxExportError(f"the exported graph failed onnx's shape inference: {e}") from e
    try:
        onnx.checker.check_model(proto, full_check=True)
        proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise OnnxExportError(f"the exported graph failed onnx's checker / shape inference: {e}") from e
    if verify_runs:  # the sizes the verification will run the model at, before a file is written
        with _eval_mode(model):
            check_on_meta(model, inputs, verify_runs, real_inputs)
    atomic_save(proto, path)

    report = ExportReport(path=os.fspath(path), opset=opset, input_names=names, output_names=output_names,
                          dynamic_axes={n: dict(ax) for n, ax in zip(names, input_axes) if ax},
                          num_nodes=len(proto.graph.node), num_initializers=len(inits), rtol=rtol, atol=atol,
                          float32_nodes=[f"{t} ({nm})" for nm, t in float32_nodes])
    report.rtol, report.atol = default_tolerances(proto, float32_nodes, rtol, atol)
    if verify:
        with _eval_mode(model):
            verify_model(model, report, inputs, input_axes, symbols, verify_sizes, hint=_verification_hint(ex.records))
    return report
