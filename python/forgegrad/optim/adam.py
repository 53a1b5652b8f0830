"""Adam and AdamW (torch.optim.Adam / AdamW's math): one fused C++ pass per step for float32
parameters, numpy in float64 for float64 ones."""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

from .optimizer import Optimizer, _new_step, _state_array, _zeros_like

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    r"""Adam (Kingma & Ba), with torch's options.

    For each parameter, at its step :math:`t` (counted per parameter), gradient :math:`g`
    (negated when ``maximize``):

    .. math::
        g \leftarrow g + \lambda\theta \text{ (Adam) or } \theta \leftarrow \theta(1-\gamma\lambda)
        \text{ (decoupled, AdamW)};\quad
        m \leftarrow \mathrm{lerp}(m, g, 1-\beta_1);\quad
        v \leftarrow \beta_2 v + (1-\beta_2) g^2;\quad
        \theta \leftarrow \theta - \frac{\gamma}{1-\beta_1^t}\,
            \frac{m}{\sqrt{\hat v}/\sqrt{1-\beta_2^t} + \epsilon}

    with :math:`\hat v = v`, or its running maximum when ``amsgrad``.

    Args: as torch.optim.Adam: ``lr`` (1e-3), ``betas`` ((0.9, 0.999)), ``eps`` (1e-8),
    ``weight_decay`` (0), ``amsgrad``, keyword ``maximize``, ``decoupled_weight_decay``.
    ``foreach``: False updates the parameters one kernel call at a time; otherwise one call per
    group. ``fused`` is accepted for compatibility (the update is always one fused pass).
    """

    def __init__(self, params, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, amsgrad: bool = False, *, foreach: Optional[bool] = None,
                 maximize: bool = False, fused: Optional[bool] = None, decoupled_weight_decay: bool = False):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize, foreach=foreach, fused=fused,
                        decoupled_weight_decay=decoupled_weight_decay)
        self._check_group(defaults)
        super().__init__(params, defaults)

    def _check_group(self, group: Dict[str, Any]) -> None:
        lr, eps, betas, wd = group["lr"], group["eps"], group["betas"], group["weight_decay"]
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not 0.0 <= wd:
            raise ValueError(f"Invalid weight_decay value: {wd}")

    def _step_group(self, group: Dict[str, Any], pairs) -> None:
        """One Adam update of the group's parameters that have a gradient (Optimizer.step calls it)."""
        amsgrad = bool(group["amsgrad"])
        params, grads, exp_avgs, exp_avg_sqs, maxes, steps = [], [], [], [], [], []
        f64 = []
        for p, g in pairs:
            state = self.state[p]
            if "step" not in state:  # lazy init, as torch: on the parameter's first step
                state["step"] = _new_step()
                state["exp_avg"] = _zeros_like(p)
                state["exp_avg_sq"] = _zeros_like(p)
            step = state["step"]._data
            step += 1  # a 0-d array of the default floating dtype, like torch's step tensor
            if p._data.dtype == np.float64:  # the float64 C++ kernel (numpy off the CPU)
                if type(p._data) is np.ndarray:
                    f64.append((p, g, state, step.item()))
                else:
                    _adam_step_float64(group, state, p._data, g, step.item())
                continue
            steps.append(step.item())
            params.append(p._data)
            grads.append(g)
            exp_avgs.append(_state_array(state, "exp_avg", p))
            exp_avg_sqs.append(_state_array(state, "exp_avg_sq", p))
            if amsgrad:
                maxes.append(_state_array(state, "max_exp_avg_sq", p))
        if f64:
            _adam_step_float64_kernel(group, f64)
        if not params:
            return
        beta1, beta2 = group["betas"]
        kw = dict(lr=float(group["lr"]), beta1=float(beta1), beta2=float(beta2), eps=float(group["eps"]),
                  weight_decay=float(group["weight_decay"]),
                  decoupled_weight_decay=bool(group["decoupled_weight_decay"]), maximize=bool(group["maximize"]))
        adam_step = self._kernel("adam", pairs)
        if group.get("foreach") is False:
            for i in range(len(params)):
                adam_step([params[i]], [grads[i]], [exp_avgs[i]], [exp_avg_sqs[i]],
                             [maxes[i]] if amsgrad else None, [steps[i]], **kw)
        else:
            adam_step(params, grads, exp_avgs, exp_avg_sqs, maxes if amsgrad else None, steps, **kw)


def _adam_step_float64_kernel(group, entries):
    """The float64 parameters' update on the float64 C++ kernel (_C.float64.adam_step: the same operations as
    _adam_step_float64 below, the same bits); entries are (param, grad, state, step)."""
    from ..kernels.float64 import adam_step
    amsgrad = bool(group["amsgrad"])
    beta1, beta2 = group["betas"]
    adam_step([p._data for p, _, _, _ in entries], [g for _, g, _, _ in entries],
              [_state_array(st, "exp_avg", p) for p, _, st, _ in entries],
              [_state_array(st, "exp_avg_sq", p) for p, _, st, _ in entries],
              [_state_array(st, "max_exp_avg_sq", p) for p, _, st, _ in entries] if amsgrad else None,
              [s for _, _, _, s in entries], lr=float(group["lr"]), beta1=float(beta1), beta2=float(beta2),
              eps=float(group["eps"]), weight_decay=float(group["weight_decay"]),
              decoupled_weight_decay=bool(group["decoupled_weight_decay"]), maximize=bool(group["maximize"]))


def _adam_step_float64(group, state, param, grad, step):
    """torch.optim.Adam's single-tensor update of one float64 parameter, state in float64 (numpy: the reference
    the float64 kernel is tested against)."""
    lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    grad = -grad if group["maximize"] else grad
    if wd != 0:
        if group["decoupled_weight_decay"]:
            param *= 1 - lr * wd
        else:
            grad = grad + wd * param
    exp_avg, exp_avg_sq = state["exp_avg"]._data, state["exp_avg_sq"]._data
    exp_avg += (grad - exp_avg) * (1 - beta1)  # lerp, as torch
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * grad * grad
    bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
    second = exp_avg_sq
    if group["amsgrad"]:
        second = _state_array(state, "max_exp_avg_sq", _Like(param))
        np.maximum(second, exp_avg_sq, out=second)
    denom = np.sqrt(second) / bias_correction2_sqrt + eps
    param -= (lr / (1 - beta1 ** step)) * (exp_avg / denom)


class _Like:
    """What _state_array needs of a parameter (its array) when only the array is at hand."""

    def __init__(self, data):
        self._data = data


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): ``param *= 1 - lr * weight_decay``
    before the Adam update, instead of adding ``weight_decay * param`` to the gradient.

    Same arguments as :class:`Adam`, with ``weight_decay`` defaulting to 1e-2 (torch's default).
    """

    def __init__(self, params, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
                 foreach: Optional[bool] = None, fused: Optional[bool] = None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
                         fused=fused, decoupled_weight_decay=True)

    def _after_load(self) -> None:
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
