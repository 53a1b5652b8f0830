"""Adam and AdamW (torch.optim.Adam / AdamW's math, one fused C++ pass per step)."""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

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
        for p, g in pairs:
            state = self.state[p]
            if "step" not in state:  # lazy init, as torch: on the parameter's first step
                state["step"] = _new_step()
                state["exp_avg"] = _zeros_like(p)
                state["exp_avg_sq"] = _zeros_like(p)
            step = state["step"]._data
            step += 1  # a 0-d float32 array, like torch's step tensor
            steps.append(step.item())
            params.append(p._data)
            grads.append(g)
            exp_avgs.append(_state_array(state, "exp_avg", p))
            exp_avg_sqs.append(_state_array(state, "exp_avg_sq", p))
            if amsgrad:
                maxes.append(_state_array(state, "max_exp_avg_sq", p))
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
