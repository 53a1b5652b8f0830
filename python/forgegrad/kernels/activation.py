"""Elementwise activations on numpy float32 arrays, forward and backward, backed by C++ SIMD kernels.

Each ``*_backward`` takes the incoming gradient and what the forward saved: the output ``y`` for
relu, sigmoid and tanh, the input ``x`` for leaky_relu, gelu and silu. Inputs of any shape; non
C-contiguous inputs are copied once. Results are bit-identical for any thread count. ``out=`` may be
an input itself (in place, elementwise); an ``out`` that partially overlaps an input raises ValueError.
"""
from __future__ import annotations

import numpy as np

from .. import _C
from ._checks import as_f32, check_no_overlap, check_out

__all__ = [
    "relu", "relu_backward", "leaky_relu", "leaky_relu_backward", "gelu", "gelu_backward",
    "sigmoid", "sigmoid_backward", "tanh", "tanh_backward", "silu", "silu_backward", "column_sums",
]

_A = _C.activation
_act_forward = _A.act_forward
_act_backward = _A.act_backward
_F32 = np.dtype(np.float32)
_GELU_OPS = {"none": _A.GELU, "tanh": _A.GELU_TANH}


def _contig(x, name):
    x = as_f32(x, name)
    return x if x.flags.c_contiguous else np.ascontiguousarray(x)


def _forward(op, x, out, alpha=0.0):
    # Hot path (autograd ops call this per layer): a contiguous float32 array and no out.
    if out is None and type(x) is np.ndarray and x.dtype is _F32 and x.flags.c_contiguous and x.flags.aligned:
        out = np.empty(x.shape, _F32)
        _act_forward(op, x, out, alpha)
        return out
    x = _contig(x, "x")
    if out is None:
        out = np.empty(x.shape, np.float32)
    else:  # elementwise: out may be x itself, but a partial overlap would read written values
        check_no_overlap(check_out(out, "out", x.shape), "out", (x, "x"), in_place=("x",))
    if out.flags.c_contiguous:
        _A.act_forward(op, x, out, alpha)
    else:
        out[...] = _forward(op, x, None, alpha)
    return out


def _backward(op, grad, saved, saved_name, out, alpha=0.0):
    if (out is None and type(grad) is np.ndarray and type(saved) is np.ndarray and grad.dtype is _F32
            and saved.dtype is _F32 and grad.flags.c_contiguous and saved.flags.c_contiguous
            and grad.shape == saved.shape and grad.flags.aligned and saved.flags.aligned):
        out = np.empty(grad.shape, _F32)
        _act_backward(op, grad, saved, out, alpha)
        return out
    grad = _contig(grad, "grad")
    saved = _contig(saved, saved_name)
    if saved.shape != grad.shape:
        raise ValueError(f"{saved_name} must have the shape of grad {grad.shape}, got {saved.shape}")
    if out is None:
        out = np.empty(grad.shape, np.float32)
    else:  # elementwise: out may be grad or the saved array itself, never a partial overlap
        check_no_overlap(check_out(out, "out", grad.shape), "out", (grad, "grad"), (saved, saved_name),
                         in_place=("grad", saved_name))
    if out.flags.c_contiguous:
        _A.act_backward(op, grad, saved, out, alpha)
    else:
        out[...] = _backward(op, grad, saved, saved_name, None, alpha)
    return out


def relu(x, *, out=None) -> np.ndarray:
    """max(x, 0); NaN stays NaN. ``out`` may be ``x`` (in place)."""
    return _forward(_A.RELU, x, out)


def relu_backward(grad, y, *, out=None) -> np.ndarray:
    """0 where the forward output y <= 0, else grad (also where y is NaN, as torch)."""
    return _backward(_A.RELU, grad, y, "y", out)


def _slope(negative_slope):
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float, np.floating, np.integer)):
        raise TypeError(f"negative_slope must be a number, got {type(negative_slope).__name__}")
    return float(negative_slope)


def leaky_relu(x, negative_slope: float = 0.01, *, out=None) -> np.ndarray:
    """x where x > 0, else negative_slope * x."""
    return _forward(_A.LEAKY_RELU, x, out, _slope(negative_slope))


def leaky_relu_backward(grad, x, negative_slope: float = 0.01, *, out=None) -> np.ndarray:
    """grad where the forward input x > 0, else negative_slope * grad."""
    return _backward(_A.LEAKY_RELU, grad, x, "x", out, _slope(negative_slope))


def _gelu_op(approximate):
    try:
        return _GELU_OPS[approximate]
    except (KeyError, TypeError):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}") from None


def gelu(x, approximate: str = "none", *, out=None) -> np.ndarray:
    """x * Phi(x) (exact, erf form; torch's default) or the tanh approximation."""
    return _forward(_gelu_op(approximate), x, out)


def gelu_backward(grad, x, approximate: str = "none", *, out=None) -> np.ndarray:
    """grad * d gelu(x) / dx from the forward input x."""
    return _backward(_gelu_op(approximate), grad, x, "x", out)


def sigmoid(x, *, out=None) -> np.ndarray:
    """1 / (1 + exp(-x))."""
    return _forward(_A.SIGMOID, x, out)


def sigmoid_backward(grad, y, *, out=None) -> np.ndarray:
    """grad * (1 - y) * y from the forward output y."""
    return _backward(_A.SIGMOID, grad, y, "y", out)


def tanh(x, *, out=None) -> np.ndarray:
    return _forward(_A.TANH, x, out)


def tanh_backward(grad, y, *, out=None) -> np.ndarray:
    """grad * (1 - y * y) from the forward output y."""
    return _backward(_A.TANH, grad, y, "y", out)


def silu(x, *, out=None) -> np.ndarray:
    """x * sigmoid(x) (SiLU / swish). Finite for any finite x; -inf gives -0 (the limit, where torch
    gives NaN), +inf gives inf, NaN stays NaN."""
    return _forward(_A.SILU, x, out)


def silu_backward(grad, x, *, out=None) -> np.ndarray:
    """grad * s * (1 + x * (1 - s)), s = sigmoid(x), from the forward input x. At x = +-inf the
    limits (grad and -0 * grad) where torch's formula gives NaN."""
    return _backward(_A.SILU, grad, x, "x", out)


def column_sums(x, *, out=None) -> np.ndarray:
    """Sum of a 2-D array over its rows (axis 0), e.g. a bias gradient; fixed row order."""
    x = _contig(x, "x")
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D, got {x.ndim}-D with shape {x.shape}")
    if out is None:
        out = np.empty(x.shape[1], np.float32)
    else:
        check_no_overlap(check_out(out, "out", (x.shape[1],)), "out", (x, "x"))
    if out.flags.c_contiguous:
        _A.column_sums(x, out)
    else:
        out[...] = column_sums(x)
    return out
