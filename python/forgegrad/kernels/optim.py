"""Optimizer updates and gradient norms on numpy float32 arrays, backed by ``_C.optim``.

Each update is one fused C++ pass over parameter, gradient and state, for a whole list of
parameters per call (the parameters are cut into fixed blocks spread over threads, so results are
bit-identical for any thread count). Step-dependent scalars (bias corrections) are computed here
in double, exactly as ``torch.optim`` computes them, and passed down per parameter.

Arrays are updated in place. State arrays must be C-contiguous with the parameter's shape (the
optimizers allocate them so). A gradient in another layout is copied once; a parameter in another
layout is updated through a contiguous copy that is written back.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import numpy as np

from .. import _C
from .._validate import check_bool, check_float

__all__ = ["adam_step", "sgd_step", "vector_norms"]


def _check_list(xs, name: str, n: Optional[int] = None) -> list:
    """A list of float32 ndarrays (the full check, for vector_norms' numpy path)."""
    if not isinstance(xs, (list, tuple)):
        raise TypeError(f"{name} must be a list of numpy float32 arrays, got {type(xs).__name__}")
    for i, x in enumerate(xs):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{name}[{i}] must be a numpy.ndarray of float32, got {type(x).__name__}")
        if x.dtype != np.float32:
            raise TypeError(f"{name}[{i}] must have dtype float32, got {x.dtype}")
    if n is not None and len(xs) != n:
        raise ValueError(f"{name} must have {n} entries (one per param), got {len(xs)}")
    return list(xs)


def adam_arguments(n_params: int, steps, *, lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay,
                   maximize):
    """Adam's checked hyperparameters (torch.optim.Adam's ranges: beta1 = 1 would divide by 1 - beta1 ** step = 0)
    and each parameter's step scalars, as torch computes them in double: bias_correction1 = 1 - beta1 ** step,
    step_size = lr / bias_correction1, bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5. Returns (step_sizes,
    bc2_sqrts, the kernel's keyword arguments); shared by the CPU kernel and forgegrad.cuda_optim's."""
    if len(steps) != n_params:
        raise ValueError(f"steps must have {n_params} entries (one per param), got {len(steps)}")
    lr = check_float(lr, "lr", low=0.0)
    beta1 = check_float(beta1, "beta1", low=0.0, high=1.0, high_open=True)
    beta2 = check_float(beta2, "beta2", low=0.0, high=1.0, high_open=True)
    kw = dict(beta1=beta1, beta2=beta2, eps=check_float(eps, "eps", low=0.0), lr=lr,
              weight_decay=check_float(weight_decay, "weight_decay", low=0.0),
              decoupled=check_bool(decoupled_weight_decay, "decoupled_weight_decay"),
              maximize=check_bool(maximize, "maximize"))
    step_sizes, bc2_sqrts = [], []
    for i, s in enumerate(steps):
        if type(s) is not int:  # the step counts the optimizers pass are ints: no per-step check cost
            s = check_float(s, f"steps[{i}]")
        if not s >= 1.0:
            raise ValueError(f"steps[{i}] must be >= 1 (the step count including this step), got {s}")
        step_sizes.append(lr / (1 - beta1 ** s))
        bc2_sqrts.append((1 - beta2 ** s) ** 0.5)
    return step_sizes, bc2_sqrts, kw


def sgd_arguments(momentum_buffers, init_buffers, *, lr, momentum, dampening, weight_decay, nesterov, maximize):
    """SGD's checked hyperparameters (torch.optim.SGD's ranges). Returns (momentum_buffers, init_buffers, the
    kernel's keyword arguments): no buffers when momentum is 0. Shared with forgegrad.cuda_optim."""
    lr = check_float(lr, "lr", low=0.0)
    momentum = check_float(momentum, "momentum", low=0.0)
    dampening = check_float(dampening, "dampening")
    weight_decay = check_float(weight_decay, "weight_decay", low=0.0)
    nesterov, maximize = check_bool(nesterov, "nesterov"), check_bool(maximize, "maximize")
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("sgd_step: nesterov=True requires momentum > 0 and dampening = 0")
    if momentum != 0:
        if momentum_buffers is None:
            raise ValueError("sgd_step: momentum_buffers are required when momentum != 0")
        init_buffers = [check_bool(b, f"init_buffers[{i}]") for i, b in enumerate(init_buffers)]
    else:
        momentum_buffers, init_buffers = None, []
    return momentum_buffers, init_buffers, dict(lr=lr, momentum=momentum, dampening=dampening,
                                                weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)


def _as_list(xs, name: str) -> list:
    if not isinstance(xs, (list, tuple)):
        raise TypeError(f"{name} must be a list of numpy float32 arrays, got {type(xs).__name__}")
    return xs


# The binding checks every item (float32, C-contiguous, shapes, writeable, no overlap) and names it
# in its errors; here only layouts the kernel cannot take directly are adapted.
def _direct(a) -> bool:
    """The kernel reads/writes it as is: C-contiguous and aligned (numpy allows unaligned buffers)."""
    return a.flags.c_contiguous and a.flags.aligned


def _contiguous_grads(grads: list) -> list:
    for g in grads:
        if isinstance(g, np.ndarray) and not _direct(g):
            return [np.require(x, requirements="CA") if isinstance(x, np.ndarray) else x for x in grads]
    return grads


def _contiguous_params(params: list):
    """Params the kernel can write: (list to pass, [(original, copy)] to write back afterwards)."""
    write_back = []
    for p in params:
        if isinstance(p, np.ndarray) and not _direct(p) and p.flags.writeable:
            break
    else:
        return params, write_back
    passed = []
    for p in params:
        if isinstance(p, np.ndarray) and not _direct(p) and p.flags.writeable:
            c = np.require(p, requirements="CA")
            write_back.append((p, c))
            p = c
        passed.append(p)
    return passed, write_back


def adam_step(params: Sequence[np.ndarray], grads: Sequence[np.ndarray], exp_avgs: Sequence[np.ndarray],
              exp_avg_sqs: Sequence[np.ndarray], max_exp_avg_sqs: Optional[Sequence[np.ndarray]],
              steps: Sequence[float], *, lr: float, beta1: float, beta2: float, eps: float,
              weight_decay: float = 0.0, decoupled_weight_decay: bool = False, maximize: bool = False) -> None:
    """One Adam (or AdamW with ``decoupled_weight_decay=True``) update of every parameter, in place.

    ``steps[i]`` is parameter i's step count *after* this step (1 on the first step); its bias
    corrections are ``1 - beta**steps[i]``. ``max_exp_avg_sqs`` is None unless amsgrad.
    """
    params = _as_list(params, "params")
    grads = _contiguous_grads(_as_list(grads, "grads"))
    step_sizes, bc2_sqrts, kw = adam_arguments(len(params), steps, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                                               weight_decay=weight_decay,
                                               decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)
    passed, write_back = _contiguous_params(params)
    _C.optim.adam_step(passed, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, step_sizes, bc2_sqrts, **kw)
    for orig, copy in write_back:
        orig[...] = copy


def sgd_step(params: Sequence[np.ndarray], grads: Sequence[np.ndarray],
             momentum_buffers: Optional[Sequence[np.ndarray]], init_buffers: Sequence[bool], *, lr: float,
             momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
             maximize: bool = False) -> None:
    """One SGD update of every parameter, in place (torch.optim.SGD's formulas).

    With ``momentum != 0`` each parameter needs a momentum buffer; ``init_buffers[i]`` says the
    buffer is new (first step): it takes the (decayed) gradient, as torch's ``clone``.
    """
    params = _as_list(params, "params")
    grads = _contiguous_grads(_as_list(grads, "grads"))
    momentum_buffers, init_buffers, kw = sgd_arguments(
        momentum_buffers, init_buffers, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
        nesterov=nesterov, maximize=maximize)
    passed, write_back = _contiguous_params(params)
    _C.optim.sgd_step(passed, grads, momentum_buffers, init_buffers, **kw)
    for orig, copy in write_back:
        orig[...] = copy


def vector_norms(arrays: Sequence[np.ndarray], norm_type: float = 2.0) -> List[float]:
    """The ``norm_type``-norm of each array (flattened), in double.

    1, 2 and inf run in C++ (multithreaded, fixed-chunk reductions: bit-identical for any thread
    count); other orders (0, -inf, 3, ...) use numpy in double. NaN in an array gives NaN.
    """
    arrays = [np.require(a, requirements="CA") for a in _check_list(arrays, "arrays")]
    p = check_float(norm_type, "norm_type")  # not float(): the string "2" is no order
    if p == 2.0:
        return [math.sqrt(s) for s in _C.optim.norms(arrays, "l2sq")]
    if p == 1.0:
        return list(_C.optim.norms(arrays, "l1"))
    if p == math.inf:
        return list(_C.optim.norms(arrays, "inf"))
    out = []
    for a in arrays:
        x = np.abs(a.astype(np.float64)).ravel()
        if x.size == 0:
            out.append(0.0 if p >= 0 else math.inf)  # torch: norm of an empty tensor is 0 (inf for -inf)
        elif p == -math.inf:
            out.append(float(x.min()) if not np.isnan(x).any() else math.nan)
        elif p == 0.0:
            out.append(float(np.count_nonzero(x)))
        else:
            out.append(float(np.sum(x ** p) ** (1.0 / p)))
    return out
