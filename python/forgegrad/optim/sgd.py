"""SGD with momentum, dampening, Nesterov, weight decay and maximize (torch.optim.SGD's math): the
fused C++ step for float32 parameters, numpy for float64 ones."""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from .optimizer import Optimizer, _state_array
from .sparse_grads import sgd_sparse_first

__all__ = ["SGD"]


def _float64_first(opt, group, pairs):
    """Step the group's float64 parameters in numpy (torch.optim.SGD's single-tensor math, in float64;
    the kernel is float32); returns the float32 pairs, left for the kernel."""
    rest = []
    lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
    for p, g in pairs:
        if p._data.dtype != np.float64:
            rest.append((p, g))
            continue
        g = -g if group["maximize"] else g
        if group["weight_decay"] != 0:
            g = g + group["weight_decay"] * p._data
        if momentum != 0:
            state = opt.state[p]
            if state.get("momentum_buffer") is None:
                state.pop("momentum_buffer", None)
                buf = _state_array(state, "momentum_buffer", p)
                buf[...] = g
            else:
                buf = _state_array(state, "momentum_buffer", p)
                buf *= momentum
                buf += (1 - dampening) * g
            g = g + momentum * buf if group["nesterov"] else buf
        p._data -= lr * g
    return rest


class SGD(Optimizer):
    r"""Stochastic gradient descent, optionally with momentum.

    For each parameter, with :math:`g` its gradient (negated when ``maximize``):

    .. math::
        g \leftarrow g + \lambda\theta;\quad
        b \leftarrow \mu b + (1-\tau) g \ (b = g \text{ on the first step});\quad
        g \leftarrow g + \mu b \text{ (nesterov) or } b;\quad
        \theta \leftarrow \theta - \gamma g

    Args: as torch.optim.SGD: ``lr`` (default 1e-3), ``momentum``, ``dampening``,
    ``weight_decay``, ``nesterov``, keyword ``maximize``. ``foreach``: False updates the
    parameters one kernel call at a time; otherwise one call per group. ``fused`` is accepted
    for compatibility (the update is always one fused pass).
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False, *, maximize: bool = False,
                 foreach: Optional[bool] = None, fused: Optional[bool] = None):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize, foreach=foreach, fused=fused)
        self._check_group(defaults)
        super().__init__(params, defaults)

    _sparse_grads = True  # Embedding(sparse=True)'s gradients (optim/sparse_grads.py)

    def _check_group(self, group: Dict[str, Any]) -> None:
        lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not momentum >= 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if not wd >= 0.0:
            raise ValueError(f"Invalid weight_decay value: {wd}")
        if group["nesterov"] and (momentum <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def _step_group(self, group: Dict[str, Any], pairs) -> None:
        """One SGD update of the group's parameters that have a gradient (Optimizer.step calls it)."""
        pairs = sgd_sparse_first(self, group, pairs)
        pairs = _float64_first(self, group, pairs)
        if not pairs:
            return
        momentum = float(group["momentum"])
        params = [p._data for p, _ in pairs]
        grads = [g for _, g in pairs]
        bufs, init = None, []
        if momentum != 0:
            bufs = []
            for p, _ in pairs:
                state = self.state[p]
                is_new = state.get("momentum_buffer") is None
                if is_new:
                    state.pop("momentum_buffer", None)
                bufs.append(_state_array(state, "momentum_buffer", p))
                init.append(is_new)
        kw = dict(lr=float(group["lr"]), momentum=momentum, dampening=float(group["dampening"]),
                  weight_decay=float(group["weight_decay"]), nesterov=bool(group["nesterov"]),
                  maximize=bool(group["maximize"]))
        sgd_step = self._kernel("sgd", pairs)
        if group.get("foreach") is False:
            for i in range(len(params)):
                sgd_step([params[i]], [grads[i]], None if bufs is None else [bufs[i]], init[i:i + 1], **kw)
        else:
            sgd_step(params, grads, bufs, init, **kw)
