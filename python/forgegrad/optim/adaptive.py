"""Adagrad, RMSprop and Adadelta: torch.optim's arguments, state names and update order, in numpy.

Each update is a few vectorised numpy passes per parameter (no fused kernel yet: SGD/Adam/AdamW are
the fused C++ ones). The arithmetic follows torch's single-tensor implementation step by step in
float32, so results match torch to float32 rounding.
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np

from .optimizer import Optimizer

__all__ = ["Adagrad", "RMSprop", "Adadelta"]


def _check(name: str, value, low: float = 0.0) -> None:
    if not value >= low:
        raise ValueError(f"Invalid {name}: {value}")


def _state(opt: Optimizer, p, init: Dict[str, Any]):
    """The parameter's state, created on first use (torch's keys: step plus per-element buffers)."""
    from ..tensor import Tensor
    st = opt.state[p]
    if not st:
        st["step"] = Tensor._wrap(np.zeros((), np.float32))
        for key, fill in init.items():
            st[key] = Tensor._wrap(np.full(p._data.shape, fill, np.float32))
    return st


def _grad(group, p, g):
    g = -g if group["maximize"] else g
    wd = group["weight_decay"]
    return g + np.float32(wd) * p._data if wd != 0 else g


class Adagrad(Optimizer):
    """torch.optim.Adagrad: ``lr`` (1e-2), ``lr_decay``, ``weight_decay``, ``initial_accumulator_value``,
    ``eps`` (1e-10), keyword ``maximize``. State: ``step``, ``sum``."""

    def __init__(self, params, lr: float = 1e-2, lr_decay: float = 0, weight_decay: float = 0,
                 initial_accumulator_value: float = 0, eps: float = 1e-10, foreach=None, *, maximize: bool = False,
                 differentiable: bool = False, fused=None):
        defaults = dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps, maximize=maximize,
                        initial_accumulator_value=initial_accumulator_value, foreach=foreach)
        self._check_group(defaults)
        super().__init__(params, defaults)
        for group in self.param_groups:  # torch creates the state up front
            for p in group["params"]:
                _state(self, p, {"sum": group["initial_accumulator_value"]})

    def _check_group(self, group):
        for key in ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"):
            _check(f"{key} value", group[key])

    def _step_group(self, group, pairs):
        lr, lr_decay, eps = group["lr"], group["lr_decay"], group["eps"]
        for p, g in pairs:
            st = _state(self, p, {"sum": group["initial_accumulator_value"]})
            st["step"]._data += 1
            step = float(st["step"]._data)
            g = _grad(group, p, g)
            clr = lr / (1 + (step - 1) * lr_decay)
            s = st["sum"]._data
            s += g * g
            p._data -= np.float32(clr) * (g / (np.sqrt(s) + np.float32(eps)))


class RMSprop(Optimizer):
    """torch.optim.RMSprop: ``lr`` (1e-2), ``alpha`` (0.99), ``eps`` (1e-8), ``weight_decay``, ``momentum``,
    ``centered``, keyword ``maximize``. State: ``step``, ``square_avg``, ``momentum_buffer``, ``grad_avg``."""

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0,
                 momentum: float = 0, centered: bool = False, capturable: bool = False, foreach=None,
                 maximize: bool = False, differentiable: bool = False):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                        centered=centered, maximize=maximize, foreach=foreach)
        self._check_group(defaults)
        super().__init__(params, defaults)

    def _check_group(self, group):
        for key in ("lr", "eps", "momentum", "weight_decay", "alpha"):
            _check(f"{key} value", group[key])

    def _step_group(self, group, pairs):
        alpha, eps, momentum = np.float32(group["alpha"]), np.float32(group["eps"]), group["momentum"]
        for p, g in pairs:
            init = {"square_avg": 0.0}
            if momentum > 0:
                init["momentum_buffer"] = 0.0
            if group["centered"]:
                init["grad_avg"] = 0.0
            st = _state(self, p, init)
            st["step"]._data += 1
            g = _grad(group, p, g)
            sq = st["square_avg"]._data
            sq *= alpha
            sq += (np.float32(1) - alpha) * g * g
            if group["centered"]:
                ga = st["grad_avg"]._data
                ga += (np.float32(1) - alpha) * (g - ga)  # lerp towards g
                avg = np.sqrt(sq - ga * ga)
            else:
                avg = np.sqrt(sq)
            avg += eps
            if momentum > 0:
                buf = st["momentum_buffer"]._data
                buf *= np.float32(momentum)
                buf += g / avg
                p._data -= np.float32(group["lr"]) * buf
            else:
                p._data -= np.float32(group["lr"]) * (g / avg)


class Adadelta(Optimizer):
    """torch.optim.Adadelta: ``lr`` (1.0), ``rho`` (0.9), ``eps`` (1e-6), ``weight_decay``, keyword
    ``maximize``. State: ``step``, ``square_avg``, ``acc_delta``."""

    def __init__(self, params, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6, weight_decay: float = 0,
                 foreach=None, *, capturable: bool = False, maximize: bool = False, differentiable: bool = False):
        defaults = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize, foreach=foreach)
        self._check_group(defaults)
        super().__init__(params, defaults)

    def _check_group(self, group):
        _check("learning rate", group["lr"])
        if not 0.0 <= group["rho"] <= 1.0:
            raise ValueError(f"Invalid rho value: {group['rho']}")
        _check("epsilon value", group["eps"])
        _check("weight_decay value", group["weight_decay"])

    def _step_group(self, group, pairs):
        rho, eps = np.float32(group["rho"]), np.float32(group["eps"])
        for p, g in pairs:
            st = _state(self, p, {"square_avg": 0.0, "acc_delta": 0.0})
            st["step"]._data += 1
            g = _grad(group, p, g)
            sq, acc = st["square_avg"]._data, st["acc_delta"]._data
            sq *= rho
            sq += (np.float32(1) - rho) * g * g
            delta = np.sqrt(acc + eps) / np.sqrt(sq + eps) * g
            acc *= rho
            acc += (np.float32(1) - rho) * delta * delta
            p._data -= np.float32(group["lr"]) * delta
