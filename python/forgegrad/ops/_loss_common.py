"""What the margin, ranking and likelihood losses (ops/loss_margin.py, ops/loss_metric.py) share: the
registration of a numpy loss (float64 runs the same Function, its double backward is a Tensor-op composition of
torch's formula), reductions of per-sample losses, argument checks, and ONNX helpers."""
from __future__ import annotations

import numpy as np

from .._validate import check_float
from ..devices import MetaArray
from ._util import unbroadcast
from .loss import _check_reduction, _dt, _reduce, _reduce_grad
from .registry import register_op

__all__ = ["register_loss", "reduced", "reduced_grad", "out_meta", "check_reduction", "broadcast_shape",
           "number", "unbroadcast", "dt", "dt_of", "reduce_tensor", "const", "constant"]

check_reduction = _check_reduction
dt = _dt


def dt_of(*arrays):
    """The dtype a loss of several floating inputs computes and returns in: float64 when any of them is float64
    (torch's type promotion: a float32 input with a float64 target gives a float64 loss), else float32."""
    return np.dtype(np.float64 if any(getattr(a, "dtype", None) == np.float64 for a in arrays) else np.float32)


def register_loss(name, cls, *, meta, samples, torch, bad_inputs, onnx, compose, flops_per_element=6, gaps=None,
                  tol=(1e-5, 1e-5)):
    """Registers ``cls`` as op ``name``: numpy forward and backward in the inputs' dtype (so float64 is the
    same Function) and ``compose`` (the op written with Tensor ops, same arguments) as its double backward."""
    from . import _meta as M

    def rule(ctx, args, kwargs, *grads):
        from ._double_backward import decomposition  # imported once every op is registered
        return decomposition(compose)(ctx, args, kwargs, *grads)

    cls = register_op(name, meta=meta, flops=M.per_input_element(flops_per_element), samples=samples, torch=torch,
                      bad_inputs=bad_inputs, onnx=onnx, differentiable_backward=rule,
                      gaps=gaps or {}, tol=tol)(cls)
    cls.op.float64 = cls
    return cls


def reduced(loss, reduction, dtype):
    return _reduce(np.asarray(loss, dtype), reduction)


def reduced_grad(g, shape, reduction, dtype):
    """The upstream gradient per sample of a loss of ``shape`` (before reduction), in ``dtype``."""
    return np.asarray(_reduce_grad(np.asarray(g), tuple(shape), reduction), dtype)


def out_meta(shape, reduction):
    return MetaArray(tuple(shape) if reduction == "none" else (), np.float32)


def broadcast_shape(name, **arrays):
    """The shape the named arrays broadcast to; a ValueError naming them when they do not."""
    try:
        return tuple(np.broadcast_shapes(*(a.shape for a in arrays.values())))
    except ValueError:
        shapes = ", ".join(f"{k} {tuple(a.shape)}" for k, a in arrays.items())
        raise ValueError(f"{name}: {' and '.join(arrays)} must broadcast to one shape, got {shapes}") from None


def number(value, what, name, positive=False):
    """A finite float (``positive``: > 0), else a ValueError naming ``what``."""
    v = float(check_float(value, what))
    if not np.isfinite(v) or (positive and v <= 0):
        raise ValueError(f"{name}: {what} must be a finite number{' > 0' if positive else ''}, got {value!r}")
    return v


def reduce_tensor(loss, reduction):
    """A per-sample loss Tensor reduced as torch's apply_loss_reduction."""
    return loss if reduction == "none" else loss.sum() if reduction == "sum" else loss.mean()


def const(ctx, v):
    from ..onnx.mappings.loss import _c
    return _c(ctx, v)


def constant(arr):
    """A constant Tensor of ``arr`` in its own dtype (Tensor(arr) would store float64 as float32)."""
    from ..factories import tensor
    return tensor(np.asarray(arr))
