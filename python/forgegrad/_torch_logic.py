"""torch's comparison, logical, bitwise and boolean-reduction functions as ``forgegrad.xxx`` and Tensor methods (with
torch's in-place ``xxx_`` variants and the operators & | ^ ~ << >>): the ops of ops/compare.py, ops/logic.py,
ops/logic_more.py and ops/histogram.py, plus the dtype and size tests (is_signed, is_nonzero, ...). ``install()``
puts them on the package and on the Tensor class, never replacing a method Tensor has (forgegrad/__init__.py calls
it once)."""
from __future__ import annotations

import builtins
from collections import namedtuple

import numpy as np

from . import return_types
from ._torch_install import method, method_signature, op_function, positional
from .ops.registry import _OPS
from .tensor import Tensor

if not hasattr(return_types, "histogram"):
    return_types.histogram = namedtuple("histogram", ("hist", "bin_edges"))


def _t(x, name, who):
    if not isinstance(x, Tensor):
        raise TypeError(f"{who}(): argument {name!r} must be a forgegrad.Tensor, got {type(x).__name__}")
    return x


# ---- comparisons (the compare op: torch's promotion, a bool result) ---------------------------------------------
def _comparison(name, op):
    def fn(input, other):
        _t(input, "input", name)
        if isinstance(other, (list, tuple)):
            other = np.asarray(other)
        return _OPS["compare"](input, other, op=op)
    fn.__name__ = name
    fn.__doc__ = f"torch.{name}(input, other): elementwise ``input {op} other`` as a bool tensor (broadcast)."
    return fn


_COMPARISONS = {"eq": "eq", "ne": "ne", "lt": "lt", "le": "le", "gt": "gt", "ge": "ge", "greater": "gt",
                "greater_equal": "ge", "less": "lt", "less_equal": "le", "not_equal": "ne"}
FUNCTIONS = {n: _comparison(n, op) for n, op in _COMPARISONS.items()}


# ---- boolean reductions, logical and bitwise ops -------------------------------------------------------------
def _numpy_aliases(who, dim, keepdim, axis, keepdims, out):
    """torch's numpy aliases ``axis`` / ``keepdims``: ``np.all(t)`` calls ``t.all(axis=None, out=None)``."""
    if out is not None:
        raise TypeError(f"{who}(): out= is not supported")
    if axis is not None:
        if dim is not None:
            raise TypeError(f"{who}(): pass dim or its alias axis, not both")
        dim = axis
    return dim, (keepdim if keepdims is None else keepdims)


def all(input, dim=None, keepdim=False, *, axis=None, keepdims=None, out=None):  # noqa: A001  (torch.all)
    """torch.all: whether every element (over ``dim``: None, an int or a tuple) is non-zero; bool (uint8 for a uint8
    input, as torch's); NaN counts as true."""
    dim, keepdim = _numpy_aliases("all", dim, keepdim, axis, keepdims, out)
    return _OPS["all"](_t(input, "input", "all"), dim, keepdim)


def any(input, dim=None, keepdim=False, *, axis=None, keepdims=None, out=None):  # noqa: A001  (torch.any)
    """torch.any: whether some element (over ``dim``) is non-zero; see all."""
    dim, keepdim = _numpy_aliases("any", dim, keepdim, axis, keepdims, out)
    return _OPS["any"](_t(input, "input", "any"), dim, keepdim)


def _binary(name):
    return op_function(name, 2, doc=f"torch.{name}(input, other), broadcast, with torch's dtype promotion "
                                    "(see forgegrad/ops/logic.py).")


def _unary(name):
    return op_function(name, 1, doc=f"torch.{name}(input) (see forgegrad/ops/logic.py).")


_BINARY = ("logical_and", "logical_or", "logical_xor", "bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_left_shift",
           "bitwise_right_shift", "gcd", "lcm")
FUNCTIONS.update({n: _binary(n) for n in _BINARY})


def heaviside(input, values):
    """torch.heaviside(input, values): 0 where input < 0, 1 where input > 0, ``values`` where input == 0."""
    return _OPS["heaviside"](input, values)


FUNCTIONS["heaviside"] = heaviside
FUNCTIONS.update({n: _unary(n) for n in ("logical_not", "bitwise_not")})


def isin(elements, test_elements, *, assume_unique=False, invert=False):
    """torch.isin: whether each element of ``elements`` is in ``test_elements`` (either may be a number)."""
    return _OPS["isin"](elements, test_elements, assume_unique, invert)


def histc(input, bins=100, min=0, max=0):  # noqa: A002  (torch's names)
    """torch.histc: counts in ``bins`` equal bins over [min, max] (the data's range when min == max)."""
    return _OPS["histc"](input, bins, min, max)


def histogram(input, bins=100, *, range=None, weight=None, density=False):  # noqa: A002
    """torch.histogram -> torch.return_types.histogram(hist, bin_edges); ``bins`` an int or a 1-D tensor of edges."""
    _t(input, "input", "histogram")
    if weight is not None:
        _t(weight, "weight", "histogram")
    if isinstance(bins, Tensor) and range is not None:
        raise TypeError("histogram(): range cannot be given with a tensor of bin edges (as torch's)")
    return return_types.histogram(*_OPS["histogram"](input, bins, range, weight, density))


# ---- dtype and size tests ---------------------------------------------------------------------------------------
def isreal(input):
    """torch.isreal: True where the imaginary part is 0 (everywhere for a real tensor)."""
    from ._functions import ones_like
    from .dtypes import bool as bool_dtype
    t = _t(input, "input", "isreal")
    if t._data.dtype.kind == "c":
        return Tensor._wrap_exact(np.asarray(t._data.imag == 0))
    return ones_like(t, dtype=bool_dtype)


def is_nonzero(input) -> bool:
    """torch.is_nonzero: whether the single element of ``input`` is non-zero (RuntimeError unless it has one)."""
    n = _t(input, "input", "is_nonzero").numel()
    if n != 1:
        what = "no values" if n == 0 else "more than one value"
        raise RuntimeError(f"is_nonzero(): Boolean value of Tensor with {what} is ambiguous "
                           f"(shape {tuple(input.shape)})")
    return bool(input.item() != 0)


def is_same_size(input, other) -> bool:
    return tuple(_t(input, "input", "is_same_size").shape) == tuple(_t(other, "other", "is_same_size").shape)


def is_signed(input) -> bool:
    """Whether the dtype is signed: False for uint8 and bool, True for the others."""
    return np.dtype(_t(input, "input", "is_signed")._data.dtype).kind not in "ub"


def is_complex(input) -> bool:
    """Whether the dtype is complex (complex64, complex128)."""
    return _t(input, "input", "is_complex")._data.dtype.kind == "c"


FUNCTIONS.update({f.__name__: f for f in (all, any, isin, histc, histogram, isreal, is_nonzero, is_same_size,
                                          is_signed, is_complex)})


# ---- Tensor methods ------------------------------------------------------------------------------------------
_method = method


def _inplace_method(name, cast):
    fn = FUNCTIONS[name]
    sig = method_signature(fn)

    def m(self, *args, **kwargs):
        args, kwargs = positional(sig, self, args, kwargs)
        if kwargs:
            raise TypeError(f"{name}_() got an unexpected keyword argument {next(iter(kwargs))!r}")
        others = tuple(a for a in args if isinstance(a, Tensor))
        pos = [i for i, a in enumerate(args) if isinstance(a, Tensor)]

        def compute(t, *tensors):
            full = list(args)
            for i, v in zip(pos, tensors):
                full[i] = v
            return fn(t, *full)
        return self._inplace(compute, name + "_", *others, cast=cast)
    m.__name__ = name + "_"
    m.__doc__ = f"In-place {name} (Tensor.{name}_ of torch)" + (": 0/1 in self's dtype." if cast else ".")
    m.__signature__ = sig
    return m


# comparisons and logical ops write their bool result as 0/1 into any dtype (torch's rule); the others keep the kind
_CAST_INPLACE = tuple(_COMPARISONS) + ("logical_and", "logical_or", "logical_xor", "logical_not")
_INPLACE = _CAST_INPLACE + ("bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not", "bitwise_left_shift",
                            "bitwise_right_shift", "gcd", "lcm", "heaviside")
_METHOD_NAMES = tuple(n for n in FUNCTIONS if n != "isin")  # torch.Tensor has no isin


def _reflected(name):
    return lambda self, other: FUNCTIONS[name](other, self)


def _own(cls, name) -> bool:
    """Whether Tensor defines ``name`` (hasattr is True for __or__ through ``type.__or__``, the metaclass's)."""
    return builtins.any(name in vars(c) for c in cls.__mro__ if c is not object)


def install(package_namespace: dict) -> None:
    """Put the functions on the package and the methods on Tensor (never replacing one it has)."""
    from ._tensor_methods import TensorMethods
    for name, fn in FUNCTIONS.items():
        package_namespace.setdefault(name, fn)
    methods = {n: _method(FUNCTIONS[n]) for n in _METHOD_NAMES}
    methods.update({n + "_": _inplace_method(n, n in _CAST_INPLACE) for n in _INPLACE})
    for op, name in (("and", "bitwise_and"), ("or", "bitwise_or"), ("xor", "bitwise_xor"),
                     ("lshift", "bitwise_left_shift"), ("rshift", "bitwise_right_shift")):
        methods[f"__{op}__"] = methods[name]
        methods[f"__r{op}__"] = _reflected(name)
        methods[f"__i{op}__"] = methods[name + "_"]
    methods["__invert__"] = methods["bitwise_not"]
    for name, m in methods.items():
        if not _own(Tensor, name):
            setattr(TensorMethods, name, m)


__all__ = sorted(FUNCTIONS) + ["install"]
