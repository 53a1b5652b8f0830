"""torch's dtype utilities at package level: finfo, iinfo, get_default_dtype / set_default_dtype,
promote_types, result_type, can_cast and broadcast_shapes, with torch's rules (not numpy's: an integer
and a floating dtype promote to the floating one, and Python numbers take part in result_type as torch's
"wrapped numbers"). ``install()`` puts them on the package (forgegrad/__init__.py calls it once)."""
from __future__ import annotations

import builtins

import numpy as np

from . import dtypes as _dtypes
from .tensor import Tensor

__all__ = ["finfo", "iinfo", "get_default_dtype", "set_default_dtype", "promote_types", "result_type", "can_cast",
           "broadcast_shapes", "FUNCTIONS", "install"]

_FLOATS = (_dtypes.float16, _dtypes.float32, _dtypes.float64)


def _dtype_arg(value, who, name="type"):
    """A forgegrad dtype from ``value`` (a forgegrad dtype or a numpy dtype / scalar type)."""
    if isinstance(value, _dtypes.dtype):
        return value
    if isinstance(value, (np.dtype, type)) and not isinstance(value, str):
        try:
            return _dtypes.of(value)
        except TypeError:
            pass
    raise TypeError(f"{who}(): argument {name!r} must be a forgegrad dtype (forgegrad.float32, forgegrad.int64, ...), "
                    f"got {value!r}")


class finfo:
    """torch.finfo(type=None): the limits of a floating dtype (the default dtype when None): bits, eps, max, min,
    tiny (= smallest_normal), resolution and dtype (its name, as torch's)."""

    def __init__(self, type=None):  # noqa: A002  (torch's argument name)
        d = get_default_dtype() if type is None else _dtype_arg(type, "finfo")
        d = d.to_real()  # a complex dtype: its parts' (torch.finfo(complex64) is float32's)
        if not d.is_floating_point:
            raise TypeError(f"finfo(): {d} is not a floating point dtype; use forgegrad.iinfo for integer and bool "
                            "dtypes")
        info = np.finfo(d.dtype)
        self.bits = builtins.int(info.bits)
        self.eps = builtins.float(info.eps)
        self.max = builtins.float(info.max)
        self.min = builtins.float(info.min)
        self.tiny = self.smallest_normal = builtins.float(info.smallest_normal)
        self.resolution = 10.0 ** -builtins.int(info.precision)  # torch: 10 ** -(decimal digits)
        self.dtype = d.name

    def __eq__(self, other):
        return isinstance(other, finfo) and other.dtype == self.dtype

    def __hash__(self):
        return hash(("finfo", self.dtype))

    def __repr__(self):
        return (f"finfo(resolution={self.resolution:g}, min={self.min:g}, max={self.max:g}, eps={self.eps:g}, "
                f"smallest_normal={self.smallest_normal:g}, tiny={self.tiny:g}, dtype={self.dtype})")


class iinfo:
    """torch.iinfo(type): the limits of an integer dtype: bits, max, min and dtype (its name). bool is refused, as
    torch's."""

    def __init__(self, type):  # noqa: A002
        d = _dtype_arg(type, "iinfo")
        if d.is_floating_point or d.is_complex:
            raise TypeError(f"iinfo(): {d} is a floating point or complex dtype; use forgegrad.finfo")
        if d == _dtypes.bool:
            raise TypeError("iinfo(): forgegrad.bool is not supported by iinfo (as torch's)")
        info = np.iinfo(d.dtype)
        self.bits, self.max, self.min, self.dtype = builtins.int(info.bits), builtins.int(info.max), \
            builtins.int(info.min), d.name

    def __eq__(self, other):
        return isinstance(other, iinfo) and other.dtype == self.dtype

    def __hash__(self):
        return hash(("iinfo", self.dtype))

    def __repr__(self):
        return f"iinfo(min={self.min:g}, max={self.max:g}, dtype={self.dtype})"  # torch's %g: -2.14748e+09


def get_default_dtype():
    """The dtype that floating factories (tensor() of Python floats, zeros, ones, rand, arange with float
    arguments, linspace, ...) and nn layers' parameters get: forgegrad.float32 unless set_default_dtype changed it."""
    return _dtypes._DEFAULT_FLOAT


def set_default_dtype(d) -> None:
    """torch.set_default_dtype(d): float32 or float64 (forgegrad's tensors hold no other floating dtype).

    Tensors that already exist keep their dtype; ``Tensor(ndarray)`` gives the new default (torch's),
    ``tensor(ndarray)`` keeps the array's dtype."""
    d = _dtype_arg(d, "set_default_dtype", "d")
    if d not in (_dtypes.float32, _dtypes.float64):
        raise TypeError(f"set_default_dtype(): argument 'd' must be forgegrad.float32 or forgegrad.float64, got {d}"
                        + ("" if d.is_floating_point else " (only floating point types can be the default)"))
    _dtypes._DEFAULT_FLOAT = _dtypes.float32 if d == _dtypes.float32 else _dtypes.float64


# ---- promotion -----------------------------------------------------------------------------------------------
def _promote(a, b):
    """bool < integers < floats < complex: the higher category's dtype (torch: int64 + float16 -> float16), a float
    with a complex the complex of the wider precision (float64 + complex64 -> complex128); dtypes.promote."""
    if a is None:
        return b
    if b is None or a == b:
        return a
    return _dtypes.of(_dtypes.promote(a.dtype, b.dtype))


def promote_types(type1, type2):
    """torch.promote_types: the smallest dtype both ``type1`` and ``type2`` convert to without changing category."""
    return _promote(_dtype_arg(type1, "promote_types", "type1"), _dtype_arg(type2, "promote_types", "type2"))


def _combine(higher, lower):
    """torch's combine_categories: a lower-priority operand only matters when its category is higher
    (dtypes._combine)."""
    if higher is None or lower is None:
        return lower if higher is None else higher
    return _dtypes.of(_dtypes._combine(higher.dtype, lower.dtype))


def result_type(tensor, other):
    """torch.result_type(tensor, other) (torch's docstring says tensor1, tensor2; torch takes these names): the dtype
    an arithmetic op on the two would give. Each is a Tensor or a Python number; tensors with dimensions take priority
    over 0-d tensors, which take priority over numbers (a float number gives the default dtype)."""
    groups = [None, None, None]  # dimensioned tensors, 0-d tensors, numbers
    for name, v in (("tensor", tensor), ("other", other)):
        if isinstance(v, Tensor):
            i, d = (0 if v.ndim else 1), v.dtype
        elif isinstance(v, (builtins.bool, np.bool_)):
            i, d = 2, _dtypes.bool
        elif isinstance(v, (builtins.int, np.integer)):
            i, d = 2, _dtypes.int64
        elif isinstance(v, (builtins.float, np.floating)):
            i, d = 2, get_default_dtype()
        elif isinstance(v, (builtins.complex, np.complexfloating)):
            i, d = 2, _dtypes.of(_dtypes.default_complex())
        else:
            raise TypeError(f"result_type(): argument {name!r} must be a Tensor or a number, got {type(v).__name__}")
        groups[i] = _promote(groups[i], d)
    return _combine(groups[0], _combine(groups[1], groups[2]))


def can_cast(from_, to) -> builtins.bool:
    """torch.can_cast(from_, to): False for floating -> integer or bool, and for anything but bool -> bool."""
    f, t = _dtype_arg(from_, "can_cast", "from_"), _dtype_arg(to, "can_cast", "to")
    if f.is_complex and not t.is_complex:
        return False
    if f.is_floating_point and not (t.is_floating_point or t.is_complex):
        return False
    return not (f != _dtypes.bool and t == _dtypes.bool)


def broadcast_shapes(*shapes):
    """torch.broadcast_shapes(*shapes): the shape that tensors of these shapes broadcast to (a tuple: forgegrad's
    shapes are tuples). Each shape is an int or a sequence of ints."""
    norm = []
    for i, s in enumerate(shapes):
        if isinstance(s, (builtins.int, np.integer)) and not isinstance(s, builtins.bool):
            s = (s,)
        if not isinstance(s, (tuple, list)) or not all(
                isinstance(n, (builtins.int, np.integer)) and not isinstance(n, builtins.bool) for n in s):
            raise TypeError(f"broadcast_shapes(): shape {i} must be an int or a sequence of ints, got {s!r}")
        if any(n < 0 for n in s):
            raise RuntimeError(f"broadcast_shapes(): shape {i} has a negative dimension: {tuple(s)}")
        norm.append(tuple(builtins.int(n) for n in s))
    out = [1] * builtins.max((len(s) for s in norm), default=0)
    for i, s in enumerate(norm):
        for k, n in enumerate(s, start=len(out) - len(s)):
            if n != out[k] and n != 1 and out[k] != 1:
                raise RuntimeError(f"broadcast_shapes(): shape {i} {s} cannot be broadcast with the shape so far "
                                   f"{tuple(out)} (dimension {k - len(out)}: {n} vs {out[k]})")
            if n != 1:
                out[k] = n
    return tuple(out)


FUNCTIONS = {f.__name__: f for f in (finfo, iinfo, get_default_dtype, set_default_dtype, promote_types,
                                     result_type, can_cast, broadcast_shapes)}


def install(package_namespace: dict) -> None:
    for name, fn in FUNCTIONS.items():
        package_namespace.setdefault(name, fn)
