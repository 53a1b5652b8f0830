"""Adagrad, RMSprop and Adadelta with torch.optim's arguments, state and math.

These updates are a handful of elementwise passes; on the CPU they run as in-place numpy operations
on the parameter, gradient and state arrays (memory-bound either way) in the parameter's dtype
(float32 or float64, state in the same dtype, as torch), in torch's operation order so that a step
matches torch's to that dtype's rounding. Parameters on another device step through that device's
kernel in forgegrad.optim.kernels (one kernel per optimizer and device).
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from .optimizer import Optimizer, _new_step, _state_array, _zeros_like
from .sparse_grads import adagrad_sparse_first

__all__ = ["Adagrad", "RMSprop", "Adadelta"]


def _nonneg(group, *names):
    for name in names:
        value = group[name]
        if not value >= 0.0:
            raise ValueError(f"Invalid {name.replace('_', ' ')} value: {value}")


def _grad(group, p, g):
    """The gradient as the update uses it: negated when maximizing, plus weight decay (a new array)."""
    g = -g if group["maximize"] else g
    wd = group["weight_decay"]
    dt = p.numpy().dtype
    return g + dt.type(wd) * p.numpy() if wd != 0 else np.array(g, dtype=dt, copy=True)


def _on_cpu(pairs) -> bool:
    """Whether every parameter of the group lives on the CPU (numpy storage)."""
    return all(isinstance(p._data, np.ndarray) for p, _ in pairs)


def _count_step(state) -> float:
    if "step" not in state:
        state["step"] = _new_step()
    step = state["step"].numpy()
    step += 1
    return float(step)


class Adagrad(Optimizer):
    r"""Adagrad: :math:`s \leftarrow s + g^2;\ \theta \leftarrow \theta - \frac{\gamma}{1 + (t-1)\eta}
    \frac{g}{\sqrt{s} + \epsilon}`.

    Args: as torch.optim.Adagrad: ``lr`` (1e-2), ``lr_decay`` (0), ``weight_decay`` (0),
    ``initial_accumulator_value`` (0), ``eps`` (1e-10), ``foreach``, keyword ``maximize``
    (``foreach``/``differentiable``/``fused`` are accepted for compatibility).
    """

    def __init__(self, params, lr: float = 1e-2, lr_decay: float = 0, weight_decay: float = 0,
                 initial_accumulator_value: float = 0, eps: float = 1e-10, foreach: Optional[bool] = None, *,
                 maximize: bool = False, differentiable: bool = False, fused: Optional[bool] = None):
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, foreach=foreach, maximize=maximize,
                        differentiable=differentiable, fused=fused)
        self._check_group(defaults)
        super().__init__(params, defaults)
        for group in self.param_groups:  # torch creates the state eagerly
            for p in group["params"]:
                state = self.state[p]
                state["step"] = _new_step()
                state["sum"] = _zeros_like(p, group["initial_accumulator_value"])

    def _check_group(self, group: Dict[str, Any]) -> None:
        if not group["lr"] >= 0.0:
            raise ValueError(f"Invalid learning rate: {group['lr']}")
        _nonneg(group, "lr_decay", "weight_decay", "initial_accumulator_value", "eps")

    _sparse_grads = True  # Embedding(sparse=True)'s gradients (optim/sparse_grads.py)

    def _step_group(self, group: Dict[str, Any], pairs) -> None:
        pairs = adagrad_sparse_first(self, group, pairs)
        if _on_cpu(pairs):
            for p, g in pairs:
                state = self.state[p]
                step = _count_step(state)
                grad = _grad(group, p, g)
                clr = group["lr"] / (1 + (step - 1) * group["lr_decay"])
                total = _state_array(state, "sum", p)
                total += grad * grad
                std = np.sqrt(total)
                std += std.dtype.type(group["eps"])
                grad /= std
                grad *= grad.dtype.type(clr)
                data = p.numpy()
                data -= grad
            return
        steps = [_count_step(self.state[p]) for p, _ in pairs]
        sums = [_state_array(self.state[p], "sum", p) for p, _ in pairs]
        self._kernel("adagrad", pairs)([p._data for p, _ in pairs], [g for _, g in pairs], sums, steps,
                                       lr=group["lr"], lr_decay=group["lr_decay"], weight_decay=group["weight_decay"],
                                       eps=group["eps"], maximize=bool(group["maximize"]))


class RMSprop(Optimizer):
    r"""RMSprop: :math:`v \leftarrow \alpha v + (1-\alpha) g^2`; the step divides by
    :math:`\sqrt{v} + \epsilon` (centered: :math:`\sqrt{v - \bar g^2} + \epsilon`), with optional momentum.

    Args: as torch.optim.RMSprop: ``lr`` (1e-2), ``alpha`` (0.99), ``eps`` (1e-8), ``weight_decay`` (0),
    ``momentum`` (0), ``centered`` (False), keyword ``maximize``.
    """

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0,
                 momentum: float = 0, centered: bool = False, capturable: bool = False,
                 foreach: Optional[bool] = None, maximize: bool = False, differentiable: bool = False):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                        centered=centered, capturable=capturable, foreach=foreach, maximize=maximize,
                        differentiable=differentiable)
        self._check_group(defaults)
        super().__init__(params, defaults)

    def _check_group(self, group: Dict[str, Any]) -> None:
        if not group["lr"] >= 0.0:
            raise ValueError(f"Invalid learning rate: {group['lr']}")
        _nonneg(group, "eps", "momentum", "weight_decay", "alpha")

    def _step_group(self, group: Dict[str, Any], pairs) -> None:
        if _on_cpu(pairs):
            momentum = group["momentum"]
            for p, g in pairs:
                # (1 - alpha) in double, then the parameter's dtype: torch's scalar argument
                f = p.numpy().dtype.type
                alpha, one_minus = f(group["alpha"]), f(1 - group["alpha"])
                state = self.state[p]
                _count_step(state)
                grad = _grad(group, p, g)
                square_avg = _state_array(state, "square_avg", p)
                square_avg *= alpha
                square_avg += one_minus * grad * grad
                if group["centered"]:
                    grad_avg = _state_array(state, "grad_avg", p)
                    grad_avg += one_minus * (grad - grad_avg)  # lerp, as torch
                    avg = np.sqrt(square_avg - grad_avg * grad_avg)
                else:
                    avg = np.sqrt(square_avg)
                avg += f(group["eps"])
                if momentum > 0:
                    buf = _state_array(state, "momentum_buffer", p)
                    buf *= f(momentum)
                    buf += grad / avg
                    data = p.numpy()
                    data -= f(group["lr"]) * buf
                else:
                    data = p.numpy()
                    data -= f(group["lr"]) * (grad / avg)
            return
        centered, momentum = bool(group["centered"]), group["momentum"]
        square_avgs, grad_avgs, bufs = [], [] if centered else None, [] if momentum > 0 else None
        for p, _ in pairs:
            state = self.state[p]
            _count_step(state)
            square_avgs.append(_state_array(state, "square_avg", p))
            if centered:
                grad_avgs.append(_state_array(state, "grad_avg", p))
            if momentum > 0:
                bufs.append(_state_array(state, "momentum_buffer", p))
        self._kernel("rmsprop", pairs)([p._data for p, _ in pairs], [g for _, g in pairs], square_avgs, grad_avgs,
                                       bufs, lr=group["lr"], alpha=group["alpha"], eps=group["eps"],
                                       weight_decay=group["weight_decay"], momentum=momentum, centered=centered,
                                       maximize=bool(group["maximize"]))


class Adadelta(Optimizer):
    r"""Adadelta: :math:`v \leftarrow \rho v + (1-\rho) g^2;\ \Delta = \frac{\sqrt{u + \epsilon}}
    {\sqrt{v + \epsilon}} g;\ u \leftarrow \rho u + (1-\rho)\Delta^2;\ \theta \leftarrow \theta - \gamma\Delta`.

    Args: as torch.optim.Adadelta: ``lr`` (1.0), ``rho`` (0.9), ``eps`` (1e-6), ``weight_decay`` (0),
    keyword ``maximize``.
    """

    def __init__(self, params, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6, weight_decay: float = 0,
                 foreach: Optional[bool] = None, *, capturable: bool = False, maximize: bool = False,
                 differentiable: bool = False):
        defaults = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, foreach=foreach, capturable=capturable,
                        maximize=maximize, differentiable=differentiable)
        self._check_group(defaults)
        super().__init__(params, defaults)

    def _check_group(self, group: Dict[str, Any]) -> None:
        if not group["lr"] >= 0.0:
            raise ValueError(f"Invalid learning rate: {group['lr']}")
        if not 0.0 <= group["rho"] <= 1.0:
            raise ValueError(f"Invalid rho value: {group['rho']}")
        _nonneg(group, "eps", "weight_decay")

    def _step_group(self, group: Dict[str, Any], pairs) -> None:
        if _on_cpu(pairs):
            for p, g in pairs:
                f = p.numpy().dtype.type
                rho, one_minus, eps = f(group["rho"]), f(1 - group["rho"]), f(group["eps"])
                state = self.state[p]
                _count_step(state)
                grad = _grad(group, p, g)
                square_avg = _state_array(state, "square_avg", p)
                acc_delta = _state_array(state, "acc_delta", p)
                square_avg *= rho
                square_avg += one_minus * grad * grad
                std = np.sqrt(square_avg + eps)
                delta = np.sqrt(acc_delta + eps) / std * grad
                acc_delta *= rho
                acc_delta += one_minus * delta * delta
                data = p.numpy()
                data -= f(group["lr"]) * delta
            return
        for p, _ in pairs:
            _count_step(self.state[p])
        self._kernel("adadelta", pairs)(
            [p._data for p, _ in pairs], [g for _, g in pairs],
            [_state_array(self.state[p], "square_avg", p) for p, _ in pairs],
            [_state_array(self.state[p], "acc_delta", p) for p, _ in pairs],
            lr=group["lr"], rho=group["rho"], eps=group["eps"], weight_decay=group["weight_decay"],
            maximize=bool(group["maximize"]))
