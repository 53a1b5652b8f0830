"""The optimizer kernels, per optimizer and device: each optimizer updates its parameters where they live.

An optimizer's step collects, per device, lists of the parameter, gradient and state arrays of its
parameters on that device and calls ``kernel(name, device)`` once with them; the kernel updates the
parameters and state in place. A device adds its updates with ``register_kernel(name, device, fn)``;
an optimizer whose parameters are on a device without its kernel raises NotImplementedError naming
both. The signatures (lists are per parameter, in the same order; ``steps`` are each parameter's
step count after this step, from 1):

- ``"adam"`` (Adam, AdamW): ``fn(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs_or_None, steps, *,
  lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay, maximize)`` (forgegrad.kernels.optim.adam_step)
- ``"sgd"``: ``fn(params, grads, momentum_buffers_or_None, init_buffers, *, lr, momentum, dampening,
  weight_decay, nesterov, maximize)`` (``init_buffers[i]``: buffer i is new, it takes the gradient)
- ``"adagrad"``: ``fn(params, grads, sums, steps, *, lr, lr_decay, weight_decay, eps, maximize)``
- ``"rmsprop"``: ``fn(params, grads, square_avgs, grad_avgs_or_None, momentum_buffers_or_None, *, lr, alpha,
  eps, weight_decay, momentum, centered, maximize)``
- ``"adadelta"``: ``fn(params, grads, square_avgs, acc_deltas, *, lr, rho, eps, weight_decay, maximize)``

On the CPU, SGD and Adam/AdamW are the fused multithreaded C++ kernels; Adagrad, RMSprop and Adadelta
are in-place float32 numpy passes in torch's operation order (memory-bound either way), so a step
matches torch's to float32 rounding.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from ..kernels import optim as _k

__all__ = ["register_kernel", "unregister_kernel", "kernel", "optimizers", "devices_of"]

_TABLE: Dict[str, Dict[str, Callable]] = {}


def register_kernel(optimizer: str, device: str, fn: Callable) -> None:
    """Make ``fn`` the ``optimizer`` update (one of :func:`optimizers`) for parameters on ``device``."""
    if optimizer not in _TABLE:
        raise ValueError(f"register_kernel: unknown optimizer kernel {optimizer!r}; expected one of {optimizers()}")
    if not callable(fn):
        raise TypeError(f"register_kernel: fn must be callable, got {type(fn).__name__}")
    _TABLE[optimizer][device] = fn


def unregister_kernel(optimizer: str, device: str) -> None:
    _TABLE.get(optimizer, {}).pop(device, None)


def optimizers() -> Tuple[str, ...]:
    return tuple(_TABLE)


def devices_of(optimizer: str) -> Tuple[str, ...]:
    return tuple(_TABLE.get(optimizer, ()))


def kernel(optimizer: str, device: str, who: Optional[str] = None) -> Callable:
    """The ``optimizer`` update on ``device``; ``who`` (the optimizer class) names it in the error."""
    fn = _TABLE.get(optimizer, {}).get(device)
    if fn is None:
        raise NotImplementedError(f"{who or optimizer} has no kernel for device {device!r} (its update "
                                  f"{optimizer!r} runs on: {', '.join(devices_of(optimizer)) or 'nothing'})")
    return fn


# ---- the CPU kernels of the numpy optimizers ----------------------------------------------------------
def _grad(p: np.ndarray, g: np.ndarray, weight_decay: float, maximize: bool) -> np.ndarray:
    """The gradient as the update uses it: negated when maximizing, plus weight decay (a new array)."""
    g = -g if maximize else g
    return g + np.float32(weight_decay) * p if weight_decay != 0 else np.array(g, dtype=np.float32, copy=True)


def adagrad_step(params: Sequence[np.ndarray], grads: Sequence[np.ndarray], sums: Sequence[np.ndarray],
                 steps: Sequence[float], *, lr: float, lr_decay: float, weight_decay: float, eps: float,
                 maximize: bool) -> None:
    for p, g, total, step in zip(params, grads, sums, steps):
        grad = _grad(p, g, weight_decay, maximize)
        clr = lr / (1 + (step - 1) * lr_decay)
        total += grad * grad
        std = np.sqrt(total)
        std += np.float32(eps)
        grad /= std
        grad *= np.float32(clr)
        p -= grad


def rmsprop_step(params, grads, square_avgs, grad_avgs, momentum_buffers, *, lr: float, alpha: float, eps: float,
                 weight_decay: float, momentum: float, centered: bool, maximize: bool) -> None:
    # (1 - alpha) in double, then float32: torch's scalar argument
    a, one_minus = np.float32(alpha), np.float32(1 - alpha)
    for i, (p, g, square_avg) in enumerate(zip(params, grads, square_avgs)):
        grad = _grad(p, g, weight_decay, maximize)
        square_avg *= a
        square_avg += one_minus * grad * grad
        if centered:
            grad_avg = grad_avgs[i]
            grad_avg += one_minus * (grad - grad_avg)  # lerp, as torch
            avg = np.sqrt(square_avg - grad_avg * grad_avg)
        else:
            avg = np.sqrt(square_avg)
        avg += np.float32(eps)
        if momentum > 0:
            buf = momentum_buffers[i]
            buf *= np.float32(momentum)
            buf += grad / avg
            p -= np.float32(lr) * buf
        else:
            p -= np.float32(lr) * (grad / avg)


def adadelta_step(params, grads, square_avgs, acc_deltas, *, lr: float, rho: float, eps: float, weight_decay: float,
                  maximize: bool) -> None:
    r, one_minus, e = np.float32(rho), np.float32(1 - rho), np.float32(eps)
    for p, g, square_avg, acc_delta in zip(params, grads, square_avgs, acc_deltas):
        grad = _grad(p, g, weight_decay, maximize)
        square_avg *= r
        square_avg += one_minus * grad * grad
        std = np.sqrt(square_avg + e)
        delta = np.sqrt(acc_delta + e) / std * grad
        acc_delta *= r
        acc_delta += one_minus * delta * delta
        p -= np.float32(lr) * delta


_TABLE.update({
    "adam": {"cpu": _k.adam_step},
    "sgd": {"cpu": _k.sgd_step},
    "adagrad": {"cpu": adagrad_step},
    "rmsprop": {"cpu": rmsprop_step},
    "adadelta": {"cpu": adadelta_step},
})
