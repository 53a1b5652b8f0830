"""dtypes as objects, with torch's names: ``forgegrad.float32`` (``float``), ``float64`` (``double``),
``int64`` (``long``), ``int32`` (``int``), ``int16`` (``short``), ``int8``, ``uint8``, ``bool``, ``complex64``
(``cfloat``), ``complex128`` (``cdouble``), and ``bfloat16`` with the optional ml_dtypes package (``pip install
forgegrad[bf16]``), made on first use: forgegrad imports without it.

A dtype compares equal to the numpy dtype it stores as, to numpy scalar types and to its name as a
string (``x.dtype == np.float32``, ``x.dtype == "float32"`` keep working), and numpy accepts it
wherever it takes a dtype (``np.zeros(3, forgegrad.float32)``): its ``dtype`` attribute is the numpy
dtype. Other attributes (``kind``, ``itemsize``, ...) are the numpy dtype's.
"""
from __future__ import annotations

import builtins

import numpy as np

__all__ = ["dtype", "to_numpy", "of", "float32", "float", "float64", "double", "int64", "long", "int32", "int",
           "int16", "short", "int8", "uint8", "bool", "float16", "half", "complex64", "cfloat", "complex128", "cdouble",
           "default_float", "default_complex", "is_floating"]  # (bfloat16: made on first use, load_bfloat16)


class dtype:
    """A tensor element type (``forgegrad.float32`` ...)."""

    __slots__ = ("name", "dtype", "is_floating_point", "is_signed", "is_complex")

    def __init__(self, name: str, np_dtype):
        self.name = name
        self.dtype = np.dtype(np_dtype)  # what numpy reads when given this object as a dtype
        # bfloat16 (ml_dtypes) is numpy kind "V"
        self.is_floating_point = self.dtype.kind == "f" or self.dtype.name == "bfloat16"
        self.is_complex = self.dtype.kind == "c"
        self.is_signed = self.dtype.kind in "fic" or self.is_floating_point

    def to_real(self) -> "dtype":
        """torch's dtype.to_real(): complex64 -> float32, complex128 -> float64; a real dtype is itself."""
        return _BY_NUMPY[np.dtype(self.dtype.char.lower())] if self.is_complex else self

    def to_complex(self) -> "dtype":
        """torch's dtype.to_complex(): float32 -> complex64, float64 -> complex128 (float16: complex64, as
        forgegrad has no complex32); integer and bool dtypes raise, as torch."""
        if self.is_complex:
            return self
        if not self.is_floating_point:
            raise RuntimeError(f"to_complex: expected a floating or complex dtype, got {self}")
        return complex128 if self.dtype == np.float64 else complex64

    @property
    def itemsize(self) -> builtins.int:
        return self.dtype.itemsize

    def __getattr__(self, attr):  # kind, char, type, ...: the numpy dtype's
        if attr == "dtype":  # not set yet (unpickling): no recursion
            raise AttributeError(attr)
        return getattr(self.dtype, attr)

    def __eq__(self, other):
        if isinstance(other, dtype):
            return self.dtype == other.dtype
        try:
            return self.dtype == np.dtype(other)
        except TypeError:
            return NotImplemented

    def __ne__(self, other):
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __hash__(self):
        return hash(self.dtype)

    def __repr__(self) -> str:
        return f"forgegrad.{self.name}"

    __str__ = __repr__

    def __reduce__(self):
        return (of, (self.name,))


float32 = dtype("float32", np.float32)
float64 = dtype("float64", np.float64)
float16 = dtype("float16", np.float16)  # ops run on the float32 kernels and round back (_op_dispatch)
int64 = dtype("int64", np.int64)
int32 = dtype("int32", np.int32)
int16 = dtype("int16", np.int16)
int8 = dtype("int8", np.int8)
uint8 = dtype("uint8", np.uint8)
bool = dtype("bool", np.bool_)  # noqa: A001  (torch.bool)
# complex tensors run on numpy (ops/_complex.py), on the CPU only
complex64 = dtype("complex64", np.complex64)
complex128 = dtype("complex128", np.complex128)
cfloat = complex64
cdouble = complex128
float = float32  # noqa: A001
double = float64
half = float16
long = int64
int = int32  # noqa: A001
short = int16

_BY_NUMPY = {d.dtype: d for d in (float32, float64, float16, int64, int32, int16, int8, uint8, bool, complex64,
                                   complex128)}
_NAMES = {"float32": float32, "float": float32, "float64": float64, "double": float64, "float16": float16,
          "half": float16, "int64": int64, "long": int64, "int32": int32, "int": int32, "int16": int16,
          "short": int16, "int8": int8, "uint8": uint8, "bool": bool, "complex64": complex64, "cfloat": complex64,
          "complex128": complex128, "cdouble": complex128}


def of(value) -> dtype:
    """The forgegrad dtype for a dtype object, numpy dtype or type, or a name ("float32", "long", "bfloat16")."""
    if isinstance(value, dtype):
        return value
    if isinstance(value, str):
        name = value.replace("torch.", "").replace("forgegrad.", "")
        found = _NAMES.get(name)
        if found is not None:
            return found
        if name == "bfloat16":
            return load_bfloat16()
    try:
        np_dtype = np.dtype(value)
        if np_dtype.kind == "V" and np_dtype.name == "bfloat16":  # ml_dtypes' bfloat16, not yet registered
            return load_bfloat16()
        return _BY_NUMPY[np_dtype]
    except (TypeError, KeyError):
        raise TypeError(f"expected a dtype (forgegrad.float32, forgegrad.int64, ...), got {value!r}") from None


# ---- bfloat16 ------------------------------------------------------------------------------------------
# numpy has no bfloat16: ml_dtypes (an optional dependency) gives it as a numpy dtype of kind "V", so everything
# that asks whether a dtype is floating asks is_floating(), never ``kind == "f"`` alone. Until forgegrad.bfloat16
# is first asked for, no tensor can hold one and _BF16 is None.
_BF16 = None
BF16_INSTALL_HINT = ("forgegrad.bfloat16 needs the ml_dtypes package (numpy's bfloat16 dtype): "
                     "pip install forgegrad[bf16]")


def load_bfloat16() -> dtype:
    """forgegrad.bfloat16, made (and registered with the other dtypes) on first use; a clear ImportError without
    ml_dtypes."""
    global _BF16
    found = globals().get("bfloat16")
    if found is not None:
        return found
    try:
        import ml_dtypes
    except ImportError:
        raise ImportError(BF16_INSTALL_HINT) from None
    _BF16 = np.dtype(ml_dtypes.bfloat16)
    made = dtype("bfloat16", _BF16)
    _BY_NUMPY[_BF16] = made
    _NAMES["bfloat16"] = made
    globals()["bfloat16"] = made
    from ._version_counter import TYPE_NAMES
    TYPE_NAMES[_BF16] = "BFloat16Tensor"  # torch's x.type()
    return made


def __getattr__(name):  # forgegrad.dtypes.bfloat16, made on first use
    if name == "bfloat16":
        return load_bfloat16()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def astype(arr: np.ndarray, dt: np.dtype) -> np.ndarray:
    """``arr.astype(dt)`` as torch casts: to and from bfloat16 through float32 (c10::BFloat16 is made from a float, so
    float64 1 + 2**-8 + 2**-30 gives 1.0 there; ml_dtypes' direct cast gives 1.0078125). float32 <-> bfloat16 runs
    forgegrad's C++ conversions (_C.bf16: the bits of ml_dtypes' casts, several times faster)."""
    if _BF16 is not None and arr.dtype is not dt:
        if dt is _BF16:
            src = arr if arr.dtype == _F32 else arr.astype(_F32)
            out = _converted(src, _BF16, "round_from_float32")
            return out if out is not None else src.astype(_BF16)
        if arr.dtype is _BF16 and dt.kind in "fiub":
            # (to integers as from its float32 values: -63 -> uint8 193; to float64 / float16 exactly as from them)
            out = _converted(arr, _F32, "widen_to_float32")
            if out is None:
                out = arr.astype(_F32)
            return out if dt == _F32 else out.astype(dt)
    return arr.astype(dt)


def _converted(src: np.ndarray, dt: np.dtype, kernel: str):
    """``src`` (float32 or bfloat16) as ``dt`` by forgegrad._C.bf16's ``kernel``, in the layout astype gives (C or
    Fortran order); None for a layout that is neither (astype keeps its axis order), or without the C module."""
    conv = _BF16_C if _BF16_C is not None else _bf16_kernels()
    if conv is False:
        return None
    out = np.empty_like(src, dtype=dt)  # (order "K": src's axis order)
    if out.flags.c_contiguous:
        getattr(conv, kernel)(np.ascontiguousarray(src).reshape(-1), out.reshape(-1))
    elif out.flags.f_contiguous:
        getattr(conv, kernel)(np.ascontiguousarray(src.T).reshape(-1), out.T.reshape(-1))
    else:
        return None
    return out


_BF16_C = None  # forgegrad._C.bf16 once loaded (False: not there)


def _bf16_kernels():
    """forgegrad._C.bf16, loaded on first use (dtypes is imported before _C); False for a build without it."""
    global _BF16_C
    try:
        from . import _C
        _BF16_C = _C.bf16
    except (ImportError, AttributeError):  # (an older build: ml_dtypes' casts)
        _BF16_C = False
    return _BF16_C


def cast_into(dst: np.ndarray, src: np.ndarray) -> None:
    """``dst[...] = astype(src, dst.dtype)``, rounding float32 straight into a C-contiguous bfloat16 ``dst``."""
    if dst.dtype is _BF16 and src.dtype == _F32 and src.shape == dst.shape and dst.flags.c_contiguous and \
            dst.flags.writeable and (_BF16_C if _BF16_C is not None else _bf16_kernels()):
        _BF16_C.round_from_float32(np.ascontiguousarray(src).reshape(-1), dst.reshape(-1))
        return
    dst[...] = astype(src, dst.dtype)


def is_floating(d: np.dtype) -> builtins.bool:
    """Whether numpy dtype ``d`` is a floating one: float16/32/64, or bfloat16 (whose numpy kind is "V")."""
    k = d.kind
    return k == "f" or (k == "V" and d is _BF16)


def is_low_precision(d: np.dtype) -> builtins.bool:
    """float16 or bfloat16: stored as such, computed on the float32 kernels and rounded back (_op_dispatch)."""
    return d == _F16 or (_BF16 is not None and d is _BF16)


def finfo_eps(d: np.dtype) -> builtins.float:
    """The machine epsilon of floating numpy dtype ``d`` (bfloat16's 2**-7 too, which np.finfo does not know)."""
    return 2.0 ** -7 if d is _BF16 else builtins.float(np.finfo(d).eps)


def float_kind(d: np.dtype) -> str:
    """``d.kind``, with bfloat16's "V" read as "f"."""
    k = d.kind
    return "f" if k == "V" and d is _BF16 else k


# torch.set_default_dtype's state (forgegrad._torch_dtype_utils sets it): the dtype that factories give
# floating tensors made from Python floats or without a dtype, and nn layers their parameters
_DEFAULT_FLOAT = float32


def default_float() -> np.dtype:
    """The numpy dtype of the default floating dtype (float32 unless set_default_dtype(float64))."""
    return _DEFAULT_FLOAT.dtype


def default_complex() -> np.dtype:
    """torch's default complex dtype: complex64, complex128 under set_default_dtype(float64)."""
    return np.dtype(np.complex128) if _DEFAULT_FLOAT is float64 else np.dtype(np.complex64)


_CATEGORY = {"b": 0, "f": 2, "c": 3}
_C64, _C128 = np.dtype(np.complex64), np.dtype(np.complex128)
_F16, _F32 = np.dtype(np.float16), np.dtype(np.float32)


def _category(d: np.dtype) -> builtins.int:
    return _CATEGORY.get(float_kind(d), 1)


def promote(a: np.dtype, b: np.dtype) -> np.dtype:
    """torch.promote_types on numpy dtypes: bool < integers < floats < complex, the higher category's dtype when the
    categories differ (int64 with float16: float16; int64 with complex64: complex64), save that a float with a complex
    takes the wider of the two precisions (float64 with complex64: complex128), else the smallest dtype holding both
    (uint8 with int8: int16)."""
    if a == b:
        return a
    ca, cb = _category(a), _category(b)
    if ca != cb:
        if 3 in (ca, cb) and 2 in (ca, cb):
            return _C128 if np.float64 in (a, b) or _C128 in (a, b) else _C64
        return a if ca > cb else b
    if ca == 2 and _BF16 is not None and _BF16 in (a, b):  # bfloat16 with float16: float32 (numpy's too, said here)
        return _F32 if _F16 in (a, b) else np.promote_types(a, b)
    return np.promote_types(a, b)


def _to_complex(d: np.dtype) -> np.dtype:
    return _C128 if d in (np.float64, _C128) else _C64


def _number_dtype(a):
    if isinstance(a, (builtins.bool, np.bool_)):
        return np.dtype(np.bool_)
    if isinstance(a, (builtins.int, np.integer)):
        return np.dtype(np.int64)
    if isinstance(a, (builtins.float, np.floating)):
        return _DEFAULT_FLOAT.dtype
    if isinstance(a, (builtins.complex, np.complexfloating)):
        return default_complex()
    return None


def _combine(higher, lower):
    """torch's combine_categories: a lower-priority group only matters when its category is higher (a complex one
    keeps a floating group's precision: float64 with a Python complex gives complex128, float32 complex64)."""
    if higher is None:
        return lower
    if lower is None or higher.kind == "c":
        return higher
    hk, lk = float_kind(higher), float_kind(lower)
    if lk == "c":
        return _to_complex(higher) if hk == "f" else lower
    if hk == "f":
        return higher
    if hk == "b" or lk == "f":
        return promote(higher, lower)
    return higher


def result_of(args):
    """torch's result dtype (numpy's) of an op over ``args``: arrays (storage) and numbers. Arrays with dimensions
    decide first, then 0-d arrays, then numbers (int: int64, float: the default dtype); a later group only
    matters where its category is higher (float32 with a 0-d float64: float32; int8 with 2.5: the default)."""
    groups = [None, None, None]
    for a in args:
        if hasattr(a, "dtype") and hasattr(a, "shape") and not isinstance(a, np.generic):
            i, d = (0 if len(a.shape) else 1), a.dtype
        else:
            i, d = 2, _number_dtype(a)
            if d is None:
                continue
        groups[i] = d if groups[i] is None else promote(groups[i], d)
    return _combine(groups[0], _combine(groups[1], groups[2]))


def _element_dtype(x, found: list) -> None:
    """The dtypes torch reads from the elements of a nested sequence (Python int: int64, float: the default)."""
    if isinstance(x, (list, tuple)):
        for e in x:
            _element_dtype(e, found)
    elif isinstance(x, (builtins.bool, np.bool_)):
        found.append(np.dtype(np.bool_))
    elif isinstance(x, (np.generic, np.ndarray)):
        found.append(x.dtype)
        found.append(None)  # a numpy value decides (else numpy's own inference stands)
    elif isinstance(x, builtins.int):
        found.append(np.dtype(np.int64))
    elif isinstance(x, builtins.float):
        found.append(_DEFAULT_FLOAT.dtype)
    elif isinstance(x, builtins.complex):
        found.append(default_complex())
    else:
        found.append(np.dtype(object))


def inferred_dtype(data):
    """torch.tensor's dtype for ``data`` given without one, as a numpy dtype; None: numpy's inference stands
    (Python numbers: int64, the default floating dtype, bool). An ndarray or numpy scalar keeps its dtype; a
    sequence with numpy values in it promotes its elements' dtypes (torch.promote_types)."""
    if isinstance(data, (np.ndarray, np.generic)):
        if data.dtype.kind == "V" and data.dtype.name == "bfloat16":
            load_bfloat16()
        return data.dtype if data.dtype in _BY_NUMPY else None
    if hasattr(data, "_data") and hasattr(data, "requires_grad"):  # a Tensor keeps its dtype
        return data._data.dtype
    if not isinstance(data, (list, tuple)):
        return None
    found: list = []
    _element_dtype(data, found)
    if None not in found:
        return None
    dt = None
    for d in found:
        if d is None:
            continue
        if d not in _BY_NUMPY:
            return None
        dt = d if dt is None else promote(dt, d)
    return dt


def to_numpy(value) -> np.dtype:
    """The numpy dtype of a forgegrad dtype, numpy dtype or name."""
    return of(value).dtype
