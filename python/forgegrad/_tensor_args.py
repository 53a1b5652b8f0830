"""Argument handling shared by Tensor's methods: torch's shape forms (``reshape(2, 3)`` / ``reshape((2, 3))`` /
``reshape(shape=...)``), the ``dtype=`` of reductions, and var / std's ``unbiased`` / ``correction``."""
from __future__ import annotations

import numpy as np

from .ops._util import normalize_axis
from .ops.registry import _OPS


def _np_dtype(dtype):
    from .dtypes import to_numpy
    return to_numpy(dtype)


def _shape_args(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def _args_or_keyword(args, value, name, who):
    """torch's ``x.reshape(2, 3)`` / ``x.reshape((2, 3))`` or, by keyword, ``x.reshape(shape=(2, 3))``."""
    if value is None:
        return _shape_args(args)
    if args:
        raise TypeError(f"{who}() got multiple values for argument '{name}'")
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _as_dtype(t, dtype, who, floating=False, error=RuntimeError):
    """torch's ``dtype=`` on reductions and softmax: the input cast to ``dtype`` before the op (the cast is
    differentiated, so the gradient comes back in the input's dtype). ``floating``: the op has no integer result
    (mean, norm, softmax), so an integer dtype raises ``error``, as torch's."""
    if dtype is None:
        return t
    from .dtypes import dtype as _dtype_cls
    if not isinstance(dtype, _dtype_cls):
        raise TypeError(f"{who}(): argument 'dtype' must be a forgegrad dtype (e.g. forgegrad.float64), "
                        f"got {type(dtype).__name__} {dtype!r}")
    if floating and not dtype.is_floating_point:
        raise error(f"{who}(): dtype must be a floating point dtype, got {dtype}")
    return t._cast(dtype)


def _corrected(t, op, dim, unbiased, keepdim, correction):
    """var / std with torch's ``unbiased`` or ``correction`` (divisor n - correction, at least 0)."""
    if correction is not None and unbiased is not None:
        raise TypeError(f"{op}(): pass unbiased or correction, not both")
    if correction is None:
        correction = 1 if unbiased is None else unbiased
    if isinstance(correction, (bool, np.bool_)):
        correction = int(correction)
    if not isinstance(correction, (int, float, np.integer, np.floating)):
        raise TypeError(f"{op}(): argument 'correction' must be a number, got {type(correction).__name__}")
    if correction in (0, 1):  # the op's own unbiased=False / True
        return _OPS[op](t, dim=dim, unbiased=bool(correction), keepdim=keepdim)
    n = int(np.prod([t.shape[a] for a in normalize_axis(dim, t.ndim)]))
    if n - correction <= 0:
        import warnings
        warnings.warn(f"{op}(): degrees of freedom is <= 0. Correction should be strictly less than the reduction "
                      "factor (input numel divided by output numel).", UserWarning, stacklevel=3)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.float64(n) / np.float64(max(n - correction, 0))
    out = _OPS[op](t, dim=dim, unbiased=False, keepdim=keepdim)
    return out * float(np.sqrt(scale) if op == "std" else scale)
