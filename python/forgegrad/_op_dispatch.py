"""Which Function runs an op, chosen in Function.apply: the tensors' device (one device, or meta for shape rules),
the float64 Function of a float32 op, torch's rule that a 0-d float64 tensor does not widen float32 ones, complex
inputs and torch's result dtypes for integer, bool, float16 and bfloat16 tensors (dispatch).
Adding a device adds a Function to the op's record (ops/registry.py); nothing here changes."""
from __future__ import annotations

import numpy as np

from . import _cpu_fallback
from . import devices as _devices
from . import dtypes as _dtypes
from .tensor import Tensor

_NDARRAY = np.ndarray
_F64 = np.dtype(np.float64)
_F32 = np.dtype(np.float32)


def zero_dim_float64_demoted(args, raw):
    """torch's promotion: a 0-d tensor does not widen dimensioned tensors of its category, so float32 tensors with
    a 0-d float64 one compute (and give) float32. (raw with such 0-d float64 arrays as float32, whether a float64
    tensor is left.) The gradient of the 0-d tensor is cast back to float64 where it is accumulated."""
    dims = [d.dtype for a, d in zip(args, raw) if isinstance(a, Tensor) and d.ndim and d.dtype.kind == "f"]
    if not dims or any(dt != _F32 for dt in dims):
        return raw, True
    out = [d.astype(_F32) if isinstance(a, Tensor) and d.dtype is _F64 and d.ndim == 0 else d
           for a, d in zip(args, raw)]
    return out, False


def float64_function(cls):
    """The Function that runs op ``cls`` on float64 arrays; a clear error for an op whose kernels are
    float32 only (never a silent cast)."""
    if cls.op is None and cls.handles_float64:
        return cls
    fn = None if cls.op is None else cls.op.float64
    if fn is None:
        name = cls.__qualname__ if cls.op is None else f"op {cls.op.name!r}"
        raise TypeError(f"{name} has float32 kernels only and got a float64 tensor: convert with .float() "
                        "(see docs/torch_compat.md for the ops that run in float64)")
    return fn


def device_of_args(cls, args, raw) -> str:
    """The device of an op's tensor arguments, which must all be on one device. Meta is the exception:
    an op with any meta tensor runs its shape rule (real weights may meet a meta input)."""
    found = []
    for a, d in zip(args, raw):
        if isinstance(a, Tensor):
            if isinstance(d, _NDARRAY):
                dev = "cpu"
                freed = getattr(d, "fsdp_freed", None)  # a freed FSDP unit's parameter (distributed/_pages.py)
                if freed:
                    raise RuntimeError(f"{cls.__qualname__ if cls.op is None else cls.op.name}: {freed}")
            else:
                dev = _devices.device_of(d)
            if dev not in found:
                found.append(dev)
    if "meta" in found:
        return "meta"
    if len(found) > 1:
        name = cls.__qualname__ if cls.op is None else cls.op.name
        raise RuntimeError(f"{name}: expected all tensors to be on the same device, but found {found[0]} and "
                           f"{found[1]}; move them with .to(device)")
    return found[0] if found else "cpu"


def apply_on_meta(cls, raw, kwargs):
    """An op on meta tensors runs its shape rule; no graph is recorded (there are no values). An unregistered
    Function may bring its own rule (``meta_rule``: the complex views and constructors of _complex_tensor.py)."""
    rule = getattr(cls, "meta_rule", None) if cls.op is None else None
    if cls.op is None and rule is None:
        raise NotImplementedError(f"{cls.__qualname__} is not a registered op, so it has no shape rule for "
                                  "the meta device")
    if rule is not None:
        out = rule(*raw, **kwargs)
    else:
        out = cls.op.meta_call(raw, kwargs)
        if _complex_arg_raw(raw):
            out = _complex_meta_dtypes(cls.op.name, raw, kwargs, out)
        elif any(isinstance(d, (_NDARRAY, _devices.MetaArray)) and d.dtype == _F64 for d in raw):
            out = as_float64_meta(out)
    if type(out) is tuple:
        return tuple([Tensor._wrap_exact(o) for o in out])
    return Tensor._wrap_exact(out)


def as_float64_meta(out):
    """A float64 input's float outputs are float64, as its float64 Function gives (the shape rules
    are written for the float32 kernels)."""
    if type(out) is tuple:
        return tuple(as_float64_meta(o) for o in out)
    if out.dtype == np.float32:
        out.dtype = _F64
    return out


def function_for_device(cls, dev: str):
    """The Function that runs op ``cls`` on device ``dev`` (its forward/backward take that device's arrays)."""
    fn = None if cls.op is None else cls.op.functions.get(dev)
    if fn is None:
        if cls.op is None:
            raise NotImplementedError(f"{cls.__qualname__} has no kernel for device {dev!r} (it is not a registered "
                                      "op, so it runs on the CPU only)")
        if _cpu_fallback.enabled():
            return _cpu_fallback.function_for(cls.op, dev)
        hint = "" if _cpu_fallback.refusal(cls.op, dev) else (
            f"; to run it on the CPU (its inputs copied there and its results back), {_cpu_fallback.SWITCH}")
        raise NotImplementedError(f"op {cls.op.name!r} has no kernel for device {dev!r} (it runs on: "
                                  f"{', '.join(cls.op.devices)}){hint}")
    return fn


# ---- torch's result dtypes where numpy's differ (narrow integers, float16, integer ops under a float64 default) --
_F16 = np.dtype(np.float16)
# the ops whose result dtype is torch's promotion of all their arguments (tensors with dims, then 0-d tensors, then
# numbers): they compute in that dtype (float32 for float16) and give it
PROMOTING = frozenset({"add", "sub", "mul", "div", "pow", "maximum", "minimum", "remainder", "floor_divide", "fmod",
                       "atan2", "hypot", "copysign", "logaddexp", "logaddexp2", "xlogy", "fmax", "fmin"})
# the normalizations whose result has their input's dtype, whatever their weights' (torch's CPU mixed-type kernels:
# a bfloat16 activation with float32 weights and running statistics gives bfloat16)
INPUT_DTYPE = frozenset({"batch_norm", "group_norm", "layer_norm", "instance_norm", "rms_norm"})
# products whose operands torch requires in one dtype (a bfloat16 input with a float32 weight raises there; autocast
# casts both first)
SAME_DTYPE = frozenset({"linear", "matmul", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                        "conv_transpose3d"})
# ops whose Function computes integer inputs as torch does (local_response_norm: the average pool of the integer
# squares truncates the window mean), so their floating result is not recomputed from the inputs cast to floats
OWN_INTEGER_RULE = frozenset({"local_response_norm"})
# torch has no bool kernel for these (numpy computes them in int8): the name its NotImplementedError gives
NO_BOOL_KERNEL = {"pow": "pow", "remainder": "remainder_cpu", "floor_divide": "div_floor_cpu", "fmod": "fmod_cpu"}
BOOL_SUBTRACTION = ("Subtraction, the `-` operator, with a bool tensor is not supported. If you are trying to invert a "
                    "mask, use the `~` or `logical_not()` operator instead.")


def _cast(t, dt, state):
    """``t`` as ``dt``: a recorded cast where it needs a gradient or a trace is recorded, else a plain one."""
    if t._data.dtype == dt:
        return t
    if t.requires_grad or state.get("recorder") is not None:
        return t._cast(dt)  # (the recorded cast op; Tensor.to's argument parsing skipped)
    return Tensor._wrap_exact(_dtypes.astype(t._data, dt))


def _cast_outputs(out, dt, state, only=None):
    """Floating outputs (of dtype ``only`` where given) as ``dt``."""
    if type(out) is tuple:
        return tuple(_cast_outputs(o, dt, state, only) for o in out)
    d = out._data.dtype
    if _dtypes.is_floating(d) and d != dt and (only is None or d == only):
        return _cast(out, dt, state)
    return out


def wrapped_int(a, dt):
    """A Python int outside integer dtype ``dt``'s range wrapped into it, as torch does (``int8 + 300``: + 44);
    numpy would raise OverflowError."""
    if dt.kind in "iu" and type(a) is int:
        info = np.iinfo(dt)
        if not info.min <= a <= info.max:
            return np.array(a & 0xFFFFFFFFFFFFFFFF, np.uint64).astype(dt)[()]
    return a


def _floating_other_than(out, dt) -> bool:
    """Whether ``out`` has a floating tensor of a dtype other than ``dt`` (None: any floating tensor)."""
    outs = out if type(out) is tuple else (out,)
    return any(o._data.dtype.kind == "f" and o._data.dtype != dt for o in outs)


def _one_integer_dtype(args) -> bool:
    """Whether the tensors of ``args`` share one integer dtype and its other arguments are Python ints in its range:
    numpy's result is torch's then (``i + 1``, ``i * j``, ``i / 2``: numpy's float64, stored as the default dtype)."""
    dt = None
    for a in args:
        if isinstance(a, Tensor):
            d = a._data.dtype
            if d.kind not in "iu" or (dt is not None and d != dt):
                return False
            dt = d
    if dt is None:
        return False
    for a in args:
        if not isinstance(a, Tensor) and (type(a) is not int or wrapped_int(a, dt) is not a):
            return False
    return True


def needs_torch_dtypes(cls, args) -> int:
    """How an op over a CPU tensor that is neither float32 nor float64 follows torch's dtypes: 1: through
    apply_with_torch_dtypes (a promoting op, a float16 tensor); 2: integer / bool tensors only, a floating result
    recomputed by ints_as_floats; 0: as it is (an integer index next to float data: embedding, cross_entropy)."""
    if cls.op is not None and cls.op.name in PROMOTING:
        return 0 if _one_integer_dtype(args) else 1
    if cls.op is not None and cls.op.name in OWN_INTEGER_RULE:
        return 0
    floating = False
    for a in args:
        if isinstance(a, Tensor) and _dtypes.is_floating(a._data.dtype):
            if _dtypes.is_low_precision(a._data.dtype):
                return 1
            floating = True
    # an unregistered Function, or an argument that is neither a tensor nor a number (an array, a module), may hold
    # the float data that integer tensors index: run as it is
    if floating or cls.op is None or not all(a is None or isinstance(a, (Tensor, str, int, float, np.number))
                                             for a in args):
        return 0
    return 2


def floating_out(out) -> bool:
    """Whether an op's output (arrays or tensors, one or a tuple) has a floating one."""
    for o in (out if type(out) is tuple else (out,)):
        d = o._data if isinstance(o, Tensor) else o
        if getattr(d, "dtype", None) is not None and d.dtype.kind == "f":
            return True
    return False


def ints_as_floats(cls, args, kwargs, state):
    """An op that made floats of integer or bool tensors, recomputed as torch's: in the default dtype (tanh of
    int8 is not numpy's float16, sigmoid of uint8 not of ``-x`` wrapped around, float64 under a float64 default).
    Bool tensors stay bool where they can (where's condition). The casts are recorded in a trace."""
    state["plain_dtypes"] = True
    try:
        default = _dtypes.default_float()
        for kinds in ("iu", "iub"):
            new = [_cast(a, default, state) if isinstance(a, Tensor) and a._data.dtype.kind in kinds else a
                   for a in args]
            out = cls.apply(*new, **kwargs)
            if not _floating_other_than(out, default):
                return out
        return _cast_outputs(out, default, state)
    finally:
        state["plain_dtypes"] = False


def _bool_result(cls, args, kwargs, state):
    """A bool result of pow / remainder / floor_divide / fmod: torch raises, save for a bool tensor to the power of
    a Python bool, which it gives as bool (a copy for True, ones for False); numpy's int8 is cast back."""
    base, exponent = args[0], args[1]
    if cls.op.name == "pow" and isinstance(base, Tensor) and isinstance(exponent, (bool, np.bool_)):
        return _cast(cls.apply(*args, **kwargs), np.dtype(np.bool_), state)
    raise NotImplementedError(f'"{NO_BOOL_KERNEL[cls.op.name]}" not implemented for \'Bool\'')


def apply_with_torch_dtypes(cls, args, kwargs, state):
    """An op over an integer, bool or float16 tensor, given torch's result dtype: a promoting op computes in torch's
    result dtype (uint8 with int8: int16; a 0-d tensor of the same category does not widen: int8 with a 0-d int64
    stays int8), float16 runs on the float32 kernels and is cast back. Casts are recorded (gradients, ONNX traces);
    the op runs its own dispatch once more with these rules off."""
    state["plain_dtypes"] = True
    try:
        if cls.op is not None and cls.op.name in PROMOTING:
            if cls.op.name == "sub" and any(isinstance(a, (bool, np.bool_)) or isinstance(a, Tensor) and
                                            a._data.dtype.kind == "b" for a in args):
                raise RuntimeError(BOOL_SUBTRACTION)  # before a cast to the promoted dtype hides the bool
            rt = _dtypes.result_of([a._data if isinstance(a, Tensor) else a for a in args])
            if rt.kind == "b" and cls.op.name in NO_BOOL_KERNEL:
                return _bool_result(cls, args, kwargs, state)
            low = _dtypes.is_low_precision(rt)
            ct = _F32 if low else rt
            if low:  # torch casts tensors with dims to the result dtype first (int64 257 + bfloat16 1: 256 + 1)
                args = [_cast(a, rt, state) if isinstance(a, Tensor) and a._data.ndim else a for a in args]
            out = cls.apply(*[_cast(a, ct, state) if isinstance(a, Tensor) else wrapped_int(a, ct) for a in args],
                            **kwargs)
            return _cast_outputs(out, rt, state) if low else out
        # float16 / bfloat16 tensors: the float32 kernels, float32 results rounded back to the tensors' floating
        # dtype (float32 where float16 meets bfloat16, or a float32 / float64 tensor with dims is there)
        floats = _dtypes.result_of([a._data for a in args if isinstance(a, Tensor) and
                                    _dtypes.is_floating(a._data.dtype)])
        if cls.op is not None and cls.op.name in SAME_DTYPE:
            _same_floating_dtype(cls.op.name, args)
            if cls.op.name == "linear" and floats is _dtypes._BF16:
                out = _bf16_linear(args, kwargs, state)
                if out is not None:
                    return out
            if cls.op.name == "matmul" and floats is _dtypes._BF16:
                out = _bf16_matmul(args, kwargs, state)
                if out is not None:
                    return out
            if cls.op.name == "conv2d" and floats is _dtypes._BF16:
                out = _bf16_conv2d(args, kwargs, state)
                if out is not None:
                    return out
        if cls.op is not None and cls.op.name in INPUT_DTYPE and isinstance(args[0], Tensor):
            floats = args[0]._data.dtype  # torch's mixed-type norms: float32 weights keep a bfloat16 input's dtype
        new = [_cast(a, _F32, state) if isinstance(a, Tensor) and _dtypes.is_low_precision(a._data.dtype) else a
               for a in args]
        if cls.op is not None and cls.op.name == "compare" and _dtypes.is_low_precision(floats):
            # torch compares in the tensor's dtype: the number rounded to it first (bfloat16 3.3 == 3.3 holds)
            new = [_rounded_number(a, floats) for a in new]
        out = cls.apply(*new, **kwargs)
        return _cast_outputs(out, floats, state, only=_F32) if _dtypes.is_low_precision(floats) else out
    finally:
        state["plain_dtypes"] = False


def _bf16_linear(args, kwargs, state):
    """linear of bfloat16 x, weight (and bias): _C.bf16.linear, one C++ call that makes no float32 copy of the weight
    (the bfloat16 GEMM where _C.bf16.gemm_path() is "avx512_bf16", else the generic path's bits: the float32 Linear
    of the widened operands, rounded once), as one graph node (ops/_bf16_linear.py) where a gradient is asked for;
    None where the generic path runs (traces, vmap, shapes it refuses with its errors)."""
    if state.get("recorder") is not None or len(args) + len(kwargs) not in (2, 3) or set(kwargs) - {"bias"}:
        return None
    x, w = args[0], args[1]
    b = args[2] if len(args) == 3 else kwargs.get("bias")
    tensors = (x, w) if b is None else (x, w, b)
    for t in tensors:
        if not isinstance(t, Tensor) or type(t._data) is not _NDARRAY or t._data.dtype is not _dtypes._BF16:
            return None
    xd, wd = x._data, w._data
    if wd.ndim != 2 or xd.ndim < 1 or xd.shape[-1] != wd.shape[1] or b is not None and b._data.shape != wd.shape[:1]:
        return None
    kernels = _dtypes._BF16_C if _dtypes._BF16_C is not None else _dtypes._bf16_kernels()
    if kernels is False:
        return None
    if state.get("grad_enabled", True) and any([t.requires_grad for t in tensors]):
        if state.get("batching"):
            return None  # (a vmap's batched ops: the generic path, which its rules know)
        return _bf16_linear_function().apply(*tensors)
    y = kernels.linear(np.ascontiguousarray(xd).reshape(_rows(xd.shape), wd.shape[1]), np.ascontiguousarray(wd),
                       None if b is None else np.ascontiguousarray(b._data))
    return Tensor._wrap_exact(y.view(_dtypes._BF16).reshape(*xd.shape[:-1], wd.shape[0]))


def _bf16_matmul(args, kwargs, state):
    """matmul of bfloat16 tensors on the vdpbf16ps GEMM (ops/_bf16_linear.py's Bf16MatmulFunction), where
    _C.bf16.gemm_path() is "avx512_bf16" and the shapes are its own; None elsewhere (the generic path: float32
    kernels on the widened operands, rounded back)."""
    if state.get("recorder") is not None or state.get("batching") or len(args) != 2 or kwargs:
        return None
    a, b = args
    for t in (a, b):
        if not isinstance(t, Tensor) or type(t._data) is not _NDARRAY or t._data.dtype is not _dtypes._BF16:
            return None
    kernels = _dtypes._BF16_C if _dtypes._BF16_C is not None else _dtypes._bf16_kernels()
    if kernels is False or kernels.gemm_path() != "avx512_bf16":
        return None
    from .ops._bf16_linear import Bf16MatmulFunction, matmul_shapes_ok
    if not matmul_shapes_ok(a._data.shape, b._data.shape):
        return None
    return Bf16MatmulFunction.apply(a, b)


def _bf16_conv2d(args, kwargs, state):
    """conv2d of bfloat16 tensors with groups == 1 and a geometry ops/_bf16_conv.routed takes (1x1 kernels) on the
    vdpbf16ps GEMM (im2col + _C.bf16.gemm, one graph node), where _C.bf16.gemm_path() is "avx512_bf16"; None
    elsewhere (the generic path: the float32 conv of the widened operands, rounded back; it also raises the errors for
    bad arguments)."""
    if state.get("recorder") is not None or state.get("batching"):
        return None
    kernels = _dtypes._BF16_C if _dtypes._BF16_C is not None else _dtypes._bf16_kernels()
    if kernels is False or kernels.gemm_path() != "avx512_bf16":
        return None
    from .kernels.geometry import conv2d_geometry
    from .ops._bf16_conv import Bf16Conv2dFunction, conv2d_args, routed
    parsed = conv2d_args(args, kwargs)
    if parsed is None:
        return None
    x, w, b, stride, padding, dilation, groups = parsed
    tensors = (x, w) if b is None else (x, w, b)
    for t in tensors:
        if not isinstance(t, Tensor) or type(t._data) is not _NDARRAY or t._data.dtype is not _dtypes._BF16:
            return None
    if groups != 1 or x._data.ndim != 4 or w._data.ndim != 4 or x._data.shape[1] != w._data.shape[1] or \
            b is not None and b._data.shape != w._data.shape[:1]:
        return None
    try:
        geo = conv2d_geometry(x._data.shape, w._data.shape, stride, padding, dilation, 1)
    except (TypeError, ValueError):
        return None  # (the generic path raises its own message)
    if not routed(w._data.shape, geo.stride):
        return None
    return Bf16Conv2dFunction.apply(*tensors, stride=stride, padding=padding, dilation=dilation)


def _rows(shape) -> int:
    n = 1
    for s in shape[:-1]:
        n *= s
    return n


def _bf16_linear_function():
    global _bf16_linear_function
    from .ops._bf16_linear import Bf16LinearFunction  # (imports autograd: bound on first use)
    _bf16_linear_function = lambda: Bf16LinearFunction  # noqa: E731
    return Bf16LinearFunction


def _same_floating_dtype(name, args) -> None:
    found = []
    for a in args:
        if isinstance(a, Tensor) and _dtypes.is_floating(a._data.dtype) and a._data.dtype not in found:
            found.append(a._data.dtype)
    if len(found) > 1:
        raise RuntimeError(f"{name}: expected its tensors to have the same dtype, but got {found[0]} and {found[1]} "
                           "(as torch); convert them with .to(dtype), or run the model under forgegrad.autocast")


def _rounded_number(a, dt):
    """A real Python / numpy number as float32 after rounding to low-precision dtype ``dt``; anything else as is."""
    if isinstance(a, (int, float, np.integer, np.floating)) and not isinstance(a, (bool, np.bool_)):
        with np.errstate(over="ignore"):  # past the dtype's range: inf, as torch's cast
            return np.float32(np.asarray(np.float32(a)).astype(dt))
    return a


COMPLEX_SCALARS = (complex, np.complexfloating)


def _complex_arg(args) -> bool:
    for a in args:
        if isinstance(a, Tensor) and a._data.dtype.kind == "c" or isinstance(a, COMPLEX_SCALARS):
            return True
    return False


def _complex_arg_raw(raw) -> bool:
    """A complex array (meta or not) or number among an op's raw arguments, or in a list of them (cat)."""
    for a in raw:
        for e in (a if isinstance(a, (list, tuple)) else (a,)):
            if isinstance(e, COMPLEX_SCALARS) or getattr(getattr(e, "dtype", None), "kind", "") == "c":
                return True
    return False


def _complex_meta_dtypes(name, raw, kwargs, out):
    global _complex_meta_dtypes
    from .ops._complex import meta_dtypes  # (imports autograd: bound on first use)
    _complex_meta_dtypes = meta_dtypes
    return meta_dtypes(name, raw, kwargs, out)


def _apply_complex(cls, args, kwargs):
    global _apply_complex
    from .ops._complex import apply_complex  # (imports autograd: bound on first use)
    _apply_complex = apply_complex
    return apply_complex(cls, args, kwargs)


# forgegrad.sparse._dispatch.sparse_op, set when forgegrad.sparse loads: how an op meets a sparse tensor
SPARSE_OP = None


def _bf16_through_float32(cls, args, kwargs) -> bool:
    """Whether an exact_dtype op over a bfloat16 tensor runs on its float32 values, rounded back: every registered
    one but the cast itself, and but a call given a result dtype (prod(x, dtype=float32) keeps it)."""
    if cls.op is None or cls.op.name == "cast":
        return False
    for v in (*args, *kwargs.values()):
        if isinstance(v, (_dtypes.dtype, np.dtype, type)):
            return False
    return True


class Done:
    """An op that dispatch ran elsewhere (meta, complex, torch's dtypes): its result."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


def dispatch(cls, args, kwargs, raw, state):
    """Function.apply's choices for any argument other than a CPU float32 tensor or a real number: the device's
    Function, the meta shape rule, complex ops, torch's result dtypes, the float64 Function. Returns _Done(result)
    for an op run here, else (cls, raw, wrap, ints_only, inference kernel or None) for apply to run."""
    other_device = False
    f64 = False
    odd = False  # a CPU tensor neither float32 nor float64 (integers, bool, float16, bfloat16)
    bf16 = False
    for a, d in zip(args, raw):
        if isinstance(a, Tensor):
            if type(d) is not _NDARRAY:
                other_device = True
            elif d.dtype is _F64:
                f64 = True
            elif d.dtype is not _F32:
                odd = True
                bf16 = bf16 or d.dtype is _dtypes._BF16
        elif isinstance(a, COMPLEX_SCALARS):
            odd = True
    if other_device:
        if SPARSE_OP is not None and any([getattr(type(d), "_is_sparse_storage", False) for d in raw]):
            return Done(SPARSE_OP(cls, args, kwargs))  # a sparse tensor: its rule or a TypeError (sparse/_dispatch.py)
        dev = device_of_args(cls, args, raw)
        if dev == "meta":
            return Done(apply_on_meta(cls, raw, kwargs))
        if dev != "cpu" and not cls.any_device:
            cls = function_for_device(cls, dev)  # same graph logic, that device's kernels
    if odd and not cls.complex_path and not other_device and _complex_arg(args):
        return Done(_apply_complex(cls, args, kwargs))  # complex tensors: the op's numpy Function (ops/_complex.py)
    ints_only = False  # integer / bool tensors only: a floating result is recomputed in the default dtype
    # bfloat16 also takes the ops that keep their own result dtypes (exact_dtype: prod, logsumexp, the pointwise
    # math ops) to the float32 kernels: numpy's bfloat16 arithmetic (ml_dtypes) would round every step
    if odd and not other_device and (not cls.exact_dtype or bf16 and _bf16_through_float32(cls, args, kwargs)) and \
            not cls.is_view and not cls.any_device and not state.get("plain_dtypes"):
        how = needs_torch_dtypes(cls, args)
        if how == 1:
            return Done(apply_with_torch_dtypes(cls, args, kwargs, state))
        ints_only = how == 2
    wrap = Tensor._wrap_exact if cls.exact_dtype else Tensor._wrap
    if f64 and not other_device and not cls.any_device and not cls.is_view and not cls.exact_dtype:
        raw, f64 = zero_dim_float64_demoted(args, raw)
    if _dtypes._DEFAULT_FLOAT is _dtypes.float64 and not f64 and not other_device and not any(
            [isinstance(a, Tensor) and a._data.dtype.kind == "f" for a in args]):
        # no floating tensor in: a floating result is torch's default-dtype promotion (int tensor * 0.5,
        # sqrt of ints), float64 under set_default_dtype(float64), so numpy's float64 is kept
        wrap = Tensor._wrap_exact
    if f64 and not other_device and not cls.any_device:
        # float64 inputs: the op's float64 Function (numpy), whose results keep their dtype; its forward runs
        return float64_function(cls), raw, Tensor._wrap_exact, ints_only, None
    return cls, raw, wrap, ints_only, cls.inference
