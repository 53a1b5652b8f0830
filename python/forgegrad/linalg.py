"""forgegrad.linalg: torch.linalg's vector norm (``vector_norm``); the matrix functions are not here yet.

Norms are made of ops (abs, powers, sums, amax), so they are differentiable any number of times (the 2-norm of
a gradient in a gradient penalty), and the gradient of a zero vector's norm is 0, as torch's (see
``Tensor.norm``, which this shares)."""
from __future__ import annotations

import numpy as np

from .tensor import Tensor

__all__ = ["vector_norm", "multi_dot"]


def vector_norm(x, ord=2, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:
    """``torch.linalg.vector_norm``: the ``ord``-norm of ``x`` over ``dim`` (an int, a tuple, or None: every
    element, whatever the shape). ``ord``: a number, ``inf`` (max |x|), ``-inf`` (min |x|) or 0 (the count of
    non-zeros). ``x`` must be floating, as torch's; ``dtype``: it is cast to that first (float32 -> float64)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"vector_norm(): argument 'x' must be a forgegrad.Tensor, got {type(x).__name__}")
    if np.dtype(x.dtype).kind != "f":  # dtype= does not make an integer tensor acceptable (torch)
        raise TypeError(f"vector_norm: expected a floating point tensor as input, got {x.dtype}; cast it first")
    if dtype is not None:
        from .dtypes import to_numpy
        want = to_numpy(dtype)
        if np.promote_types(np.dtype(x.dtype), want) != want:  # torch refuses a narrowing dtype= too
            raise ValueError(f"vector_norm: dtype={dtype} would narrow the input's {x.dtype}; pass a dtype at least "
                             "as wide (or cast the input first)")
        x = x.to(dtype)
    if isinstance(ord, (bool, str)) or not isinstance(ord, (int, float, np.number)):
        raise ValueError(f"vector_norm: ord must be a number (inf, -inf and 0 included), got {ord!r}")
    if x.ndim == 0 and dim is not None:  # a 0-d tensor has dims 0 and -1 (size 1), as torch
        dims = dim if isinstance(dim, (tuple, list)) else (dim,)
        for d in dims:
            if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d not in (0, -1):
                raise IndexError(f"vector_norm: dim {d!r} is out of range for a 0-d tensor (expected 0 or -1)")
        dim = None
    if dim is None or (isinstance(dim, (tuple, list)) and len(dim) == 0):  # every element, as torch's dim=()
        out = x.reshape(-1).norm(ord, dim=0)
        return out.reshape((1,) * x.ndim) if keepdim else out
    return x.norm(ord, dim=dim, keepdim=keepdim)


def multi_dot(tensors) -> Tensor:
    """``torch.linalg.multi_dot``: the chain product in the cheapest order (forgegrad._torch_math)."""
    from ._torch_math import multi_dot as _multi_dot
    return _multi_dot(tensors)
