"""Argument checks shared by the numpy-level kernel wrappers."""
from __future__ import annotations

import numpy as np


def as_f32(x, name: str) -> np.ndarray:
    """Return x as a float32 ndarray, or raise TypeError naming the argument.

    No copy, except of an unaligned buffer (numpy allows one, e.g. ``np.frombuffer(b, offset=1)``):
    the C++ kernels load through float pointers, so their bindings refuse unaligned arrays and
    inputs get an aligned copy here."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray of float32, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise TypeError(f"{name} must have dtype float32, got {x.dtype}")
    return x if x.flags.aligned else np.require(x, requirements="A")


def check_ndim(x: np.ndarray, name: str, ndims) -> None:
    ndims = (ndims,) if isinstance(ndims, int) else tuple(ndims)
    if x.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name} must be {want}, got {x.ndim}-D with shape {x.shape}")


def check_out(out, name: str, shape) -> np.ndarray:
    """Validate a caller-supplied output buffer: float32, exact shape, writeable, aligned."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray of float32, got {type(out).__name__}")
    if out.dtype != np.float32:
        raise TypeError(f"{name} must have dtype float32, got {out.dtype}")
    if out.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {out.shape}")
    if not out.flags.writeable:
        raise ValueError(f"{name} must be writeable")
    if not out.flags.aligned:
        raise ValueError(f"{name} is not aligned to 4 bytes (numpy flags.aligned is False)")
    return out


def check_no_overlap(out: np.ndarray, name: str, *inputs, in_place=()) -> None:
    """Raise ValueError when ``out`` shares memory with an input other than exactly (same data
    pointer, shape and strides) one of ``in_place``: the kernels read and write in one pass, so a
    partial overlap would silently read already-written values.

    ``inputs`` are (array, name) pairs."""
    for arr, arr_name in inputs:
        if arr is None or arr.size == 0 or out.size == 0:
            continue
        if arr_name in in_place and _same_view(out, arr):
            continue
        if np.may_share_memory(out, arr) and np.shares_memory(out, arr):
            what = "partially overlaps" if arr_name in in_place else "overlaps"
            raise ValueError(f"{name} {what} {arr_name}; pass a separate array"
                             + (f" (or {arr_name} itself, to work in place)" if arr_name in in_place else ""))


def _same_view(a: np.ndarray, b: np.ndarray) -> bool:
    return (a.__array_interface__["data"][0] == b.__array_interface__["data"][0] and a.shape == b.shape
            and a.strides == b.strides)


def optional_f32(v, name: str, shape, mismatch: str):
    """None, or ``v`` as a C-contiguous float32 array of ``shape``; ``mismatch`` is the ValueError's
    message, formatted with ``name``, ``shape`` and ``got`` (the array's shape)."""
    if v is None:
        return None
    v = as_f32(v, name)
    if v.shape != tuple(shape):
        raise ValueError(mismatch.format(name=name, shape=tuple(shape), got=v.shape))
    return v if v.flags.c_contiguous else np.ascontiguousarray(v)
