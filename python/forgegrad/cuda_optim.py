"""Multi-tensor optimizer updates on the GPU: one kernel launch updates every parameter.

``adam_step`` and ``sgd_step`` take the arguments of :func:`forgegrad.kernels.optim.adam_step` /
``sgd_step`` with ``forgegrad._C.cuda.DeviceArray`` lists instead of numpy arrays, so they are the
``cuda`` entries of the optimizers' per-device kernel table (``register()`` installs them where that
table exists). Step-dependent scalars are computed here in double exactly as on the CPU, and the
per-element math is the shared host/device code (cpp/include/forgegrad/hd/optim.h) that the CPU
kernels' portable build runs and tests/test_hd_math.py checks against the CPU kernels and torch.

The kernels launch on forgegrad's CUDA stream and do not synchronise. tests/test_cuda_pointwise.py
checks them against the CPU kernels where a GPU is (it passes on an H200).
"""
from __future__ import annotations

from typing import Optional, Sequence

from . import _C
from .kernels.optim import adam_arguments, sgd_arguments

__all__ = ["adam_step", "sgd_step", "register"]


def _require():
    from . import cuda
    if not cuda.is_available():
        raise RuntimeError(f"CUDA is not available: {cuda.unavailable_reason()}")


def _as_list(xs, name: str) -> list:
    if not isinstance(xs, (list, tuple)):
        raise TypeError(f"{name} must be a list of forgegrad._C.cuda.DeviceArray, got {type(xs).__name__}")
    return list(xs)


def adam_step(params: Sequence, grads: Sequence, exp_avgs: Sequence, exp_avg_sqs: Sequence,
              max_exp_avg_sqs: Optional[Sequence], steps: Sequence[float], *, lr: float, beta1: float, beta2: float,
              eps: float, weight_decay: float = 0.0, decoupled_weight_decay: bool = False,
              maximize: bool = False) -> None:
    """One Adam (AdamW with ``decoupled_weight_decay=True``) update of every device parameter, in place,
    in one kernel launch. ``steps[i]``: parameter i's step count after this step (from 1)."""
    _require()
    params = _as_list(params, "params")
    step_sizes, bc2_sqrts, kw = adam_arguments(len(params), steps, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                                               weight_decay=weight_decay,
                                               decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)
    _C.cuda_pointwise.adam_step(params, _as_list(grads, "grads"), _as_list(exp_avgs, "exp_avgs"),
                                _as_list(exp_avg_sqs, "exp_avg_sqs"),
                                None if max_exp_avg_sqs is None else _as_list(max_exp_avg_sqs, "max_exp_avg_sqs"),
                                step_sizes, bc2_sqrts, **kw)


def sgd_step(params: Sequence, grads: Sequence, momentum_buffers: Optional[Sequence], init_buffers: Sequence[bool], *,
             lr: float, momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
             nesterov: bool = False, maximize: bool = False) -> None:
    """One SGD update of every device parameter, in place, in one kernel launch (torch.optim.SGD's
    formulas; ``init_buffers[i]``: momentum buffer i is new and takes the gradient)."""
    _require()
    params = _as_list(params, "params")
    momentum_buffers, init_buffers, kw = sgd_arguments(
        momentum_buffers, init_buffers, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
        nesterov=nesterov, maximize=maximize)
    if momentum_buffers is not None:
        momentum_buffers = _as_list(momentum_buffers, "momentum_buffers")
    _C.cuda_pointwise.sgd_step(params, _as_list(grads, "grads"), momentum_buffers, init_buffers, **kw)


def register() -> bool:
    """Install ``adam_step`` / ``sgd_step`` as the ``cuda`` entries of the optimizers' per-device kernel
    table (forgegrad.optim.kernels.register_kernel) in a CUDA build; False where there is no such
    table or no CUDA build."""
    try:
        from .optim import kernels as table
    except ImportError:
        return False
    if not hasattr(table, "register_kernel") or not _C.cuda_pointwise.built:
        return False
    table.register_kernel("adam", "cuda", adam_step)
    table.register_kernel("sgd", "cuda", sgd_step)
    return True
