"""prelu, glu and rrelu's training forward on numpy float32 arrays, backed by C++ SIMD kernels
(``_C.activation.prelu_forward`` / ``prelu_backward``, ``glu_forward`` / ``glu_backward``, ``rrelu_train_forward``).

- prelu: ``weight`` of 1 element or one per channel (dim 1 of x; a 0-d or 1-d x has one channel), torch's rule;
  the weight gradient is a float64 sum over a fixed blocking, so it has the same bits at any thread count.
- glu: x's halves along ``dim``; the backward writes both halves' gradients into one array of x's shape.
- rrelu (training): ``noise`` holds a uniform draw and is overwritten with the slopes used (1 where x > 0).

Inputs of any shape; non C-contiguous (or unaligned) inputs are copied once.
"""
from __future__ import annotations

import numpy as np

from .. import _C
from ._checks import as_f32

__all__ = ["prelu", "prelu_backward", "glu", "glu_backward", "rrelu_train"]

_A = _C.activation
_F32 = np.dtype(np.float32)


def _contig(x, name):
    x = as_f32(x, name)
    return x if x.flags.c_contiguous else np.ascontiguousarray(x)


def prelu(x, weight) -> np.ndarray:
    """x where x > 0, else weight[c] * x."""
    x, weight = _contig(x, "x"), _contig(weight, "weight")
    out = np.empty(x.shape, _F32)
    _A.prelu_forward(x, weight, out)
    return out


def prelu_backward(grad, x, weight, *, need_input=True, need_weight=True):
    """(grad_input or None, grad_weight or None): grad where x > 0 else weight[c] * grad, and the sum over all but
    the channel dim of (x > 0 ? 0 : grad * x), of weight's shape."""
    grad, x, weight = _contig(grad, "grad"), _contig(x, "x"), _contig(weight, "weight")
    gx = np.empty(x.shape, _F32) if need_input else None
    gw = np.empty(weight.shape, _F32) if need_weight else None
    _A.prelu_backward(grad, x, weight, gx, gw)
    return gx, gw


def _half_shape(shape, dim):
    axis = dim % len(shape) if len(shape) else 0
    return tuple(s // 2 if i == axis else s for i, s in enumerate(shape))


def glu(x, dim: int = -1) -> np.ndarray:
    """a * sigmoid(b), a and b the halves of x along dim."""
    x = _contig(x, "x")
    if x.ndim == 0:
        raise ValueError("glu: x must have at least one dim, got a 0-d array")
    out = np.empty(_half_shape(x.shape, int(dim)) if -x.ndim <= dim < x.ndim else x.shape, _F32)
    _A.glu_forward(x, int(dim), out)  # the binding checks dim and the halves (and out's shape)
    return out


def glu_backward(grad, x, dim: int = -1) -> np.ndarray:
    """The gradient of glu with respect to x (x's shape): s * grad for a, (1 - s) * s * a * grad for b."""
    grad, x = _contig(grad, "grad"), _contig(x, "x")
    out = np.empty(x.shape, _F32)
    _A.glu_backward(grad, x, int(dim), out)
    return out


def rrelu_train(x, noise) -> np.ndarray:
    """x * noise', noise' = (x <= 0 ? noise : 1) written into ``noise`` (a C-contiguous float32 array of x's shape)."""
    x = _contig(x, "x")
    out = np.empty(x.shape, _F32)
    _A.rrelu_train_forward(x, noise, out)
    return out
