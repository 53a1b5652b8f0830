"""dtypes as objects, with torch's names: ``forgegrad.float32`` (``float``), ``float64`` (``double``),
``int64`` (``long``), ``int32`` (``int``), ``int16`` (``short``), ``int8``, ``uint8``, ``bool``.

A dtype compares equal to the numpy dtype it stores as, to numpy scalar types and to its name as a
string (``x.dtype == np.float32``, ``x.dtype == "float32"`` keep working), and numpy accepts it
wherever it takes a dtype (``np.zeros(3, forgegrad.float32)``): its ``dtype`` attribute is the numpy
dtype. Other attributes (``kind``, ``itemsize``, ...) are the numpy dtype's.
"""
from __future__ import annotations

import builtins

import numpy as np

__all__ = ["dtype", "to_numpy", "of", "float32", "float", "float64", "double", "int64", "long", "int32", "int",
           "int16", "short", "int8", "uint8", "bool", "float16", "half", "default_float"]


class dtype:
    """A tensor element type (``forgegrad.float32`` ...)."""

    __slots__ = ("name", "dtype", "is_floating_point", "is_signed")

    def __init__(self, name: str, np_dtype):
        self.name = name
        self.dtype = np.dtype(np_dtype)  # what numpy reads when given this object as a dtype
        self.is_floating_point = self.dtype.kind == "f"
        self.is_signed = self.dtype.kind in "fi"

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
float16 = dtype("float16", np.float16)  # a name only: tensors hold float32/float64 (creating one raises)
int64 = dtype("int64", np.int64)
int32 = dtype("int32", np.int32)
int16 = dtype("int16", np.int16)
int8 = dtype("int8", np.int8)
uint8 = dtype("uint8", np.uint8)
bool = dtype("bool", np.bool_)  # noqa: A001  (torch.bool)
float = float32  # noqa: A001
double = float64
half = float16
long = int64
int = int32  # noqa: A001
short = int16

_BY_NUMPY = {d.dtype: d for d in (float32, float64, float16, int64, int32, int16, int8, uint8, bool)}
_NAMES = {"float32": float32, "float": float32, "float64": float64, "double": float64, "float16": float16,
          "half": float16, "int64": int64, "long": int64, "int32": int32, "int": int32, "int16": int16,
          "short": int16, "int8": int8, "uint8": uint8, "bool": bool}


def of(value) -> dtype:
    """The forgegrad dtype for a dtype object, numpy dtype or type, or a name ("float32", "long")."""
    if isinstance(value, dtype):
        return value
    if isinstance(value, str):
        found = _NAMES.get(value.replace("torch.", "").replace("forgegrad.", ""))
        if found is not None:
            return found
    try:
        return _BY_NUMPY[np.dtype(value)]
    except (TypeError, KeyError):
        raise TypeError(f"expected a dtype (forgegrad.float32, forgegrad.int64, ...), got {value!r}") from None


# torch.set_default_dtype's state (forgegrad._torch_dtype_utils sets it): the dtype that factories give
# floating tensors made from Python floats or without a dtype, and nn layers their parameters
_DEFAULT_FLOAT = float32


def default_float() -> np.dtype:
    """The numpy dtype of the default floating dtype (float32 unless set_default_dtype(float64))."""
    return _DEFAULT_FLOAT.dtype


def to_numpy(value) -> np.dtype:
    """The numpy dtype of a forgegrad dtype, numpy dtype or name."""
    return of(value).dtype
