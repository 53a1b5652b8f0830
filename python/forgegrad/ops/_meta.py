"""Shape rules (the meta device) and FLOP counts shared by many ops.

A shape rule takes the op's forward arguments with ``MetaArray`` in place of arrays and returns
``MetaArray`` outputs, raising the same errors as the kernels for shapes that do not fit. A FLOP
rule takes ``(outputs, inputs, kwargs)``; a multiply-add counts as 2 FLOPs, every other arithmetic
operation as 1.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..devices import MetaArray


from ._util import normalize_axis


def _is_array(a) -> bool:
    return isinstance(a, (MetaArray, np.ndarray))


def _shape(a):
    return a.shape if _is_array(a) else np.shape(a)


def _first_dtype(args) -> np.dtype:
    for a in args:
        if _is_array(a):
            return a.dtype
    return np.dtype(np.float32)


class _Ctx:
    """What a Function's forward may write to its ctx, accepted and dropped."""

    def __init__(self, n_args: int):
        self.needs_input_grad = [False] * n_args

    def save_for_backward(self, *arrays):
        pass


# ---- rules -----------------------------------------------------------------------------------------
def same(x, *args, **kwargs) -> MetaArray:
    """Output like the first input (elementwise unary ops, activations, softmax, dropout)."""
    return MetaArray(x.shape, x.dtype)


def broadcast(*args, **kwargs) -> MetaArray:
    """Elementwise binary ops: numpy broadcasting and float32/int64 promotion of the arrays."""
    arrays = [a for a in args if _is_array(a)]
    try:
        shape = np.broadcast_shapes(*(_shape(a) for a in args if a is not None))
    except ValueError:
        raise ValueError(f"operands could not be broadcast together with shapes "
                         f"{' '.join(str(_shape(a)) for a in args if a is not None)}") from None
    dtype = np.result_type(*[a.dtype for a in arrays]) if arrays else np.dtype(np.float32)
    if dtype == np.float64:
        dtype = np.dtype(np.float32)
    return MetaArray(shape, dtype)


def broadcast_bool(*args, **kwargs) -> MetaArray:
    return MetaArray(broadcast(*args).shape, np.bool_)


def structural(function):
    """A shape op's rule: its own forward, run on zero-byte stand-ins (numpy's shape rules)."""

    def rule(*args, **kwargs):
        dtype = _first_dtype(args)
        stand_ins = [a.view() if type(a) is MetaArray else a for a in args]
        out = function.forward(_Ctx(len(args)), *stand_ins, **kwargs)
        return MetaArray(np.shape(out), dtype)

    return rule


def _reduced_shape(shape, axes, keepdim):
    if keepdim:
        return tuple(1 if i in axes else s for i, s in enumerate(shape))
    return tuple(s for i, s in enumerate(shape) if i not in axes)


def reduction(a, dim=None, keepdim=False, **kwargs) -> MetaArray:
    axes = normalize_axis(dim, a.ndim)
    dtype = a.dtype if a.dtype.kind == "f" else np.dtype(np.int64)
    return MetaArray(_reduced_shape(a.shape, axes, keepdim), dtype)


def float_reduction(a, dim=None, keepdim=False, **kwargs) -> MetaArray:
    axes = normalize_axis(dim, a.ndim)
    return MetaArray(_reduced_shape(a.shape, axes, keepdim), np.float32)


def reduction_with_indices(a, dim, keepdim=False) -> tuple:
    axes = normalize_axis(dim, a.ndim)
    shape = _reduced_shape(a.shape, axes, keepdim)
    return MetaArray(shape, a.dtype), MetaArray(shape, np.int64)


def arg_reduction(a, dim=None, keepdim=False) -> MetaArray:
    if dim is None:
        return MetaArray((1,) * a.ndim if keepdim else (), np.int64)
    axes = normalize_axis(dim, a.ndim)
    return MetaArray(_reduced_shape(a.shape, axes, keepdim), np.int64)


def loss(inp, target, *args, reduction="mean", **kwargs) -> MetaArray:
    """Losses: the input's shape for reduction='none', a scalar otherwise."""
    if reduction == "none":
        return MetaArray(inp.shape, np.float32)
    return MetaArray((), np.float32)


# ---- FLOPs ---------------------------------------------------------------------------------------------
def _outputs(out) -> Sequence[Any]:
    return out if isinstance(out, tuple) else (out,)


def per_output_element(k: int = 1):
    """k FLOPs for each output element (elementwise arithmetic and activations)."""

    def flops(out, inputs, kwargs) -> int:
        return k * sum(o.size for o in _outputs(out) if o.dtype.kind == "f")

    return flops


def per_input_element(k: int = 1):
    """k FLOPs per element of the first input (reductions, softmax, losses)."""

    def flops(out, inputs, kwargs) -> int:
        return k * inputs[0].size

    return flops


def no_flops(out, inputs, kwargs) -> int:
    """Data movement only (shape ops, casts, comparisons counted as free)."""
    return 0
