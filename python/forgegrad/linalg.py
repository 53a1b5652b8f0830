"""forgegrad.linalg: torch.linalg's vector norm (``vector_norm``); the matrix functions are not here yet.

Norms are made of ops (abs, powers, sums, amax), so they are differentiable any number of times (the 2-norm of
a gradient in a gradient penalty), and the gradient of a zero vector's norm is 0, as torch's (see
``Tensor.norm``, which this shares)."""
from __future__ import annotations

import numpy as np

from .tensor import Tensor

__all__ = ["vector_norm"]


def vector_norm(x, ord=2, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:
    """``torch.linalg.vector_norm``: the ``ord``-norm of ``x`` over ``dim`` (an int, a tuple, or None: every
    element, whatever the shape). ``ord``: a number, ``inf`` (max |x|), ``-inf`` (min |x|) or 0 (the count of
    non-zeros). ``x`` must be floating, as torch's; ``dtype``: it is cast to that first (float32 -> float64)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"vector_norm(): argument 'x' must be a forgegrad.Tensor, got {type(x).__name__}")
    if np.dtype(x.dtype).kind != "f":  # dtype= does not make an integer tensor acceptable (torch)
        raise TypeError(f"vector_norm: expected a floating point tensor as input, got {x.dtype}; cast it first")
    if dtype is not None:
        x = x.to(dtype)
    if isinstance(ord, (bool, str)) or not isinstance(ord, (int, float, np.number)):
        raise ValueError(f"vector_norm: ord must be a number (inf, -inf and 0 included), got {ord!r}")
    if dim is None:  # every element, as one vector; keepdim: a 1 for each of x's dims
        out = x.reshape(-1).norm(ord, dim=0)
        return out.reshape((1,) * x.ndim) if keepdim else out
    return x.norm(ord, dim=dim, keepdim=keepdim)
