"""Helpers shared by op implementations."""
from __future__ import annotations

import numpy as np


def float_of_bool(fn):
    """fn computing a bool array in float32: numpy gives float functions of bools in float16, where
    torch (and forgegrad for integers, in float64 rounded to float32) computes them in float32."""
    def f(a):
        return fn(a.astype(np.float32) if a.dtype == np.bool_ else a)
    return f


def dropout_keep(shape, p: float, dtype=np.float32) -> np.ndarray:
    """The scaled keep mask of inverted dropout: 1 / (1 - p) where forgegrad's generator draws a
    uniform >= p, else 0 (all zeros for p >= 1). Every device draws its mask here, on the host, so a
    seeded run drops the same elements on the CPU and on a GPU."""
    dtype = np.dtype(dtype)
    if p >= 1.0:
        return np.zeros(shape, dtype)
    from .. import random as _random
    keep = (_random.generator().random(shape, dtype=np.float32) >= p).astype(dtype)
    keep *= dtype.type(1.0 / (1.0 - p))
    return keep


def sign0(x: np.ndarray) -> np.ndarray:
    """torch.sign: as numpy's, but 0 at NaN (torch's gradients of abs and of the 1- and inf-norms are 0 there)."""
    s = np.sign(x)
    if s.dtype.kind == "f" and np.isnan(s.sum()):  # a fix-up only where a NaN occurs
        s = np.nan_to_num(s, nan=0.0)
    return s


def unbroadcast(grad: np.ndarray, shape) -> np.ndarray:
    """Sum grad over the axes that broadcasting added or stretched, giving an array of `shape`."""
    if grad.shape == tuple(shape):
        return grad
    lead = grad.ndim - len(shape)
    if lead:
        grad = grad.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


def normalize_axis(dim, ndim: int, name: str = "dim"):
    """dim (int, tuple or None) -> tuple of non-negative axes; raises IndexError like torch."""
    if dim is None:
        return tuple(range(ndim))
    if type(dim) is int and -ndim <= dim < ndim:  # the common case, in range (the checks below say the same)
        return (dim % ndim,)
    if type(dim) is tuple:  # of ints in range: the same axes as the loop below, without its checks per axis
        out = []
        for d in dim:
            if type(d) is not int or not -ndim <= d < ndim:
                break
            out.append(d % ndim)
        else:
            return tuple(out)

    def bad():  # built only when raised: formatting it costs more than the whole check
        return TypeError(f"{name} must be an int, a tuple of ints or None, got {type(dim).__name__} {dim!r}")

    if isinstance(dim, (str, bytes)):  # iterable, but not a sequence of axes
        raise bad()
    try:
        dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
    except TypeError:
        raise bad() from None
    out = []
    for d in dims:
        # a bool or a float (1.5, 1.0) is no axis: int() would take it silently
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)):
            raise TypeError(f"{name} must be an int, a tuple of ints or None, got {type(d).__name__} {d!r}")
        d = int(d)
        lo, hi = (-ndim, ndim - 1) if ndim > 0 else (-1, 0)
        if d < lo or d > hi:
            raise IndexError(f"{name} out of range (expected to be in range of [{lo}, {hi}], but got {d})")
        out.append(d % max(ndim, 1))
    return tuple(out)


def single_axis(dim, ndim: int, name: str = "dim") -> int:
    """One dim (an int, not a tuple or list of one) -> a non-negative axis; raises like torch."""
    if type(dim) is int and -ndim <= dim < ndim:  # the common case, in range (normalize_axis's checks agree)
        return dim % ndim
    if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(dim).__name__} {dim!r}")
    return normalize_axis(dim, ndim, name)[0]


def f32(x) -> np.ndarray:
    """Python/numpy scalars to float32 arrays so results stay float32."""
    if isinstance(x, np.ndarray):
        return x
    return np.asarray(x, dtype=np.float32)
