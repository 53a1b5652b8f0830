"""The activations of ``_C.activation.pw_forward`` / ``pw_backward`` (C++ SIMD kernels) on numpy float32 arrays:
elu (also selu and celu, through scale / negcoef / input_scale), softplus, mish, logsigmoid, hardsigmoid,
hardswish, softsign, tanhshrink, hardtanh (also relu6), softshrink, hardshrink and threshold, forward and backward.

``op`` is a name of ``OPS``; ``params`` its float parameters (see ``_C.activation.pw_forward``). Inputs of any
shape; non C-contiguous inputs are copied once. Results are bit-identical for any thread count. ``out=`` may be
an input itself (in place, elementwise); an ``out`` that partially overlaps an input raises ValueError.
"""
from __future__ import annotations

import numpy as np

from .. import _C
from ._checks import as_f32, check_no_overlap, check_out

__all__ = ["OPS", "pointwise", "pointwise_backward"]

_A = _C.activation
_pw_forward = _A.pw_forward
_pw_backward = _A.pw_backward
_F32 = np.dtype(np.float32)
# name -> (code, number of parameters forward, number backward)
OPS = {"elu": (_A.PW_ELU, 3, 3), "elu_from_output": (_A.PW_ELU_FROM_OUTPUT, None, 1),
       "softplus": (_A.PW_SOFTPLUS, 2, 2), "mish": (_A.PW_MISH, 0, 0), "logsigmoid": (_A.PW_LOGSIGMOID, 0, 0),
       "hardsigmoid": (_A.PW_HARDSIGMOID, 0, 0), "hardswish": (_A.PW_HARDSWISH, 0, 0),
       "softsign": (_A.PW_SOFTSIGN, 0, 0), "tanhshrink": (_A.PW_TANHSHRINK, 0, 0),
       "hardtanh": (_A.PW_HARDTANH, 2, 2), "softshrink": (_A.PW_SOFTSHRINK, 1, 1),
       "hardshrink": (_A.PW_HARDSHRINK, 1, 1), "threshold": (_A.PW_THRESHOLD, 2, 1)}


def _code(op, params, backward):
    try:
        code, n_fwd, n_bwd = OPS[op]
    except (KeyError, TypeError):
        raise ValueError(f"op must be one of {sorted(OPS)}, got {op!r}") from None
    n = n_bwd if backward else n_fwd
    if n is None:
        raise ValueError(f"op {op!r} has a backward only (its forward is elu's)")
    if len(params) != n:
        raise TypeError(f"{op}: expected {n} float parameters, got {len(params)}")
    for p in params:
        if isinstance(p, bool) or not isinstance(p, (int, float, np.floating, np.integer)):
            raise TypeError(f"{op}: parameters must be numbers, got {type(p).__name__}")
    return code, tuple(float(p) for p in params) + (0.0,) * (3 - n)


def _fast(*arrays):
    return all(type(a) is np.ndarray and a.dtype is _F32 and a.flags.c_contiguous and a.flags.aligned
               for a in arrays)


def _contig(x, name):
    x = as_f32(x, name)
    return x if x.flags.c_contiguous else np.ascontiguousarray(x)


def pointwise(op: str, x, *params, out=None) -> np.ndarray:
    """out = op(x; params) elementwise (``out`` may be ``x``: in place)."""
    code, p = _code(op, params, False)
    if out is None and _fast(x):  # the hot path of the autograd ops
        out = np.empty(x.shape, _F32)
        _pw_forward(code, x, out, *p)
        return out
    x = _contig(x, "x")
    if out is None:
        out = np.empty(x.shape, _F32)
    else:
        check_no_overlap(check_out(out, "out", x.shape), "out", (x, "x"), in_place=("x",))
    if out.flags.c_contiguous:
        _pw_forward(code, x, out, *p)
    else:
        out[...] = pointwise(op, x, *params)
    return out


def pointwise_backward(op: str, grad, saved, *params, out=None) -> np.ndarray:
    """out = grad * op'(.) from ``saved``, the forward input x (``elu_from_output``: elu's output y)."""
    code, p = _code(op, params, True)
    if out is None and _fast(grad, saved) and grad.shape == saved.shape:
        out = np.empty(grad.shape, _F32)
        _pw_backward(code, grad, saved, out, *p)
        return out
    grad, saved = _contig(grad, "grad"), _contig(saved, "saved")
    if saved.shape != grad.shape:
        raise ValueError(f"saved must have the shape of grad {grad.shape}, got {saved.shape}")
    if out is None:
        out = np.empty(grad.shape, _F32)
    else:
        check_no_overlap(check_out(out, "out", grad.shape), "out", (grad, "grad"), (saved, "saved"),
                         in_place=("grad", "saved"))
    if out.flags.c_contiguous:
        _pw_backward(code, grad, saved, out, *p)
    else:
        out[...] = pointwise_backward(op, grad, saved, *params)
    return out
