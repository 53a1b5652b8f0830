"""Argument checks shared by the numpy-level kernel wrappers."""
from __future__ import annotations

import numpy as np


def as_f32(x, name: str) -> np.ndarray:
    """Return x as a float32 ndarray without copying, or raise TypeError naming the argument."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray of float32, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise TypeError(f"{name} must have dtype float32, got {x.dtype}")
    return x


def check_ndim(x: np.ndarray, name: str, ndims) -> None:
    ndims = (ndims,) if isinstance(ndims, int) else tuple(ndims)
    if x.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name} must be {want}, got {x.ndim}-D with shape {x.shape}")


def check_out(out, name: str, shape) -> np.ndarray:
    """Validate a caller-supplied output buffer: float32, exact shape, writeable."""
    out = as_f32(out, name)
    if out.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {out.shape}")
    if not out.flags.writeable:
        raise ValueError(f"{name} must be writeable")
    return out
