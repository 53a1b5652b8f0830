"""Aligned array allocation for long-lived buffers the kernels stream (weights)."""
from __future__ import annotations

import numpy as np

__all__ = ["empty_aligned"]

ALIGN = 64  # bytes: one cache line, one AVX-512 vector


def empty_aligned(shape, dtype=np.float32) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on a 64-byte boundary.

    numpy aligns to 16 bytes only. A kernel that streams a weight matrix with vector loads
    (the small-batch recurrent step reads all of W_hh every step) then splits every load across two
    cache lines: an LSTM at batch 1 ran 1.5x slower with a misaligned W_hh.
    """
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    n = int(np.prod(shape, dtype=np.int64))
    nbytes = max(n * dtype.itemsize, ALIGN)  # numpy would place an empty slice anywhere: keep one line
    raw = np.empty(nbytes + ALIGN, np.uint8)
    start = (-raw.ctypes.data) % ALIGN
    return raw[start:start + nbytes].view(dtype)[:n].reshape(shape)
