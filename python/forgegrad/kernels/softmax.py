"""Softmax and log-softmax over the last axis of numpy float32 arrays (C++ kernels).

Rows are independent; each is computed with the row maximum subtracted (no overflow). Backward
functions take the saved forward output ``y``. Non C-contiguous inputs are copied once. ``out=`` may be
``x`` (forward) or ``grad`` / ``y`` (backward) itself, in place; a partial overlap raises ValueError.
"""
from __future__ import annotations

import numpy as np

from .. import _C
from ._checks import as_f32, check_no_overlap, check_out

__all__ = ["softmax", "log_softmax", "softmax_backward", "log_softmax_backward"]


def _contig(x, name):
    x = as_f32(x, name)
    return x if x.flags.c_contiguous else np.ascontiguousarray(x)


def _forward(x, out, log):
    x = _contig(x, "x")
    if out is None:
        out = np.empty(x.shape, np.float32)
    else:  # each row is read whole before it is written: out may be x itself, not overlap it partly
        check_no_overlap(check_out(out, "out", x.shape), "out", (x, "x"), in_place=("x",))
    if out.flags.c_contiguous:
        _C.softmax.softmax_forward(x, out, log)
    else:
        out[...] = _forward(x, None, log)
    return out


def _backward(grad, y, out, log):
    grad = _contig(grad, "grad")
    y = _contig(y, "y")
    if y.shape != grad.shape:
        raise ValueError(f"y must have the shape of grad {grad.shape}, got {y.shape}")
    if out is None:
        out = np.empty(grad.shape, np.float32)
    else:  # rows read whole (the dot product) before written: out may be grad or y, no partial overlap
        check_no_overlap(check_out(out, "out", grad.shape), "out", (grad, "grad"), (y, "y"),
                         in_place=("grad", "y"))
    if out.flags.c_contiguous:
        _C.softmax.softmax_backward(grad, y, out, log)
    else:
        out[...] = _backward(grad, y, None, log)
    return out


def softmax(x, *, out=None) -> np.ndarray:
    """exp(x - max) / sum(exp(x - max)) over the last axis."""
    return _forward(x, out, False)


def log_softmax(x, *, out=None) -> np.ndarray:
    """(x - max) - log(sum(exp(x - max))) over the last axis."""
    return _forward(x, out, True)


def softmax_backward(grad, y, *, out=None) -> np.ndarray:
    """y * (grad - sum(grad * y)) over the last axis, y = softmax output."""
    return _backward(grad, y, out, False)


def log_softmax_backward(grad, y, *, out=None) -> np.ndarray:
    """grad - exp(y) * sum(grad) over the last axis, y = log_softmax output."""
    return _backward(grad, y, out, True)
