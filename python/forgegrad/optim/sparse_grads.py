"""Sparse gradients in the optimizers (Embedding(sparse=True)'s weight gradient, a COO tensor), as torch.optim's:
SGD and Adagrad update only the rows the gradient names (torch's sparse paths), SparseAdam is torch's masked Adam;
every other optimizer refuses a sparse gradient with torch's RuntimeError (Optimizer._check_sparse_grads)."""
from __future__ import annotations

import math
from typing import Any, Dict

import numpy as np

from .optimizer import Optimizer, _state_array, _zeros_like


def _is_sparse(g) -> bool:
    return getattr(type(g), "_is_sparse_storage", False)


def _rows_and_values(g, maximize: bool):
    """The coalesced gradient's index tuple (entries unique) and its values, negated when maximizing."""
    c = g.coalesce() if hasattr(g, "coalesce") else g.to_coo().coalesce()
    vals = -c.values if maximize else c.values
    return tuple(c.indices), vals


def sgd_sparse_first(opt, group: Dict[str, Any], pairs):
    """Step the parameters with a sparse gradient (torch's SGD math on it); returns the dense pairs."""
    rest = []
    for p, g in pairs:
        if not _is_sparse(g):
            rest.append((p, g))
            continue
        if group["weight_decay"] != 0:  # torch: grad.add(param) is add(sparse, dense)
            raise RuntimeError("SGD: weight_decay is not supported with sparse gradients (torch raises "
                               "'add(sparse, dense) is not supported')")
        data = p._data
        lr = data.dtype.type(group["lr"])
        momentum = group["momentum"]
        if momentum == 0:  # only the named rows change
            idx, vals = _rows_and_values(g, group["maximize"])
            data[idx] -= lr * vals.astype(data.dtype, copy=False)
            continue
        # with momentum torch keeps a sparse buffer whose dense values are these: b = mu*b + (1-tau)*g
        dense = g.to_dense().astype(data.dtype, copy=False)
        dense = -dense if group["maximize"] else dense
        state = opt.state[p]
        if state.get("momentum_buffer") is None:
            state.pop("momentum_buffer", None)
            buf = _state_array(state, "momentum_buffer", p)
            buf[...] = dense
        else:
            buf = _state_array(state, "momentum_buffer", p)
            buf *= data.dtype.type(momentum)
            buf += data.dtype.type(1 - group["dampening"]) * dense
        step = dense + data.dtype.type(momentum) * buf if group["nesterov"] else buf
        data -= lr * step
    return rest


def adagrad_sparse_first(opt, group: Dict[str, Any], pairs):
    """torch's sparse Adagrad: the accumulator and the parameter change at the gradient's rows only."""
    from .adaptive import _count_step
    rest = []
    for p, g in pairs:
        if not _is_sparse(g):
            rest.append((p, g))
            continue
        if group["weight_decay"] != 0:
            raise RuntimeError("weight_decay option is not compatible with sparse gradients")
        state = opt.state[p]
        step = _count_step(state)
        clr = group["lr"] / (1 + (step - 1) * group["lr_decay"])
        idx, vals = _rows_and_values(g, group["maximize"])
        total = _state_array(state, "sum", p)
        dt = total.dtype.type
        total[idx] += vals * vals
        std = np.sqrt(total[idx]) + dt(group["eps"])
        p._data[idx] -= dt(clr) * (vals / std)
    return rest


class SparseAdam(Optimizer):
    r"""torch.optim.SparseAdam: Adam's moments and parameters updated only at the rows a sparse gradient names
    (for Embedding(sparse=True)); a dense gradient raises RuntimeError, as torch's.

    Args: ``lr`` (1e-3), ``betas`` ((0.9, 0.999)), ``eps`` (1e-8), keyword ``maximize``.
    """

    _sparse_grads = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, maximize: bool = False):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, maximize=maximize)
        self._check_group(defaults)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if _is_sparse(p._data):
                    raise ValueError("SparseAdam requires dense parameter tensors")

    def _check_group(self, group: Dict[str, Any]) -> None:
        if not 0.0 < group["lr"]:
            raise ValueError(f"Invalid learning rate: {group['lr']}")
        if not 0.0 < group["eps"]:
            raise ValueError(f"Invalid epsilon value: {group['eps']}")
        for i, b in enumerate(group["betas"]):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {b}")

    def _step_group(self, group: Dict[str, Any], pairs) -> None:
        beta1, beta2 = group["betas"]
        for p, g in pairs:
            if not _is_sparse(g):
                raise RuntimeError("SparseAdam does not support dense gradients, please consider Adam instead")
            state = self.state[p]
            if len(state) == 0:
                state["step"] = 0
                state["exp_avg"], state["exp_avg_sq"] = _zeros_like(p), _zeros_like(p)
            # an int, as torch's SparseAdam keeps it (a state loaded through load_state_dict may hold a 0-d tensor)
            state["step"] = int(float(state["step"])) + 1
            idx, vals = _rows_and_values(g, group["maximize"])
            if vals.size == 0:
                continue
            exp_avg, exp_avg_sq = state["exp_avg"]._data, state["exp_avg_sq"]._data
            dt = exp_avg.dtype.type
            old = exp_avg[idx]
            upd = (vals - old) * dt(1 - beta1)
            exp_avg[idx] += upd
            old_sq = exp_avg_sq[idx]
            upd_sq = (vals * vals - old_sq) * dt(1 - beta2)
            exp_avg_sq[idx] += upd_sq
            numer = upd + old
            denom = np.sqrt(upd_sq + old_sq) + dt(group["eps"])
            step = state["step"]
            step_size = group["lr"] * math.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
            p._data[idx] += dt(-step_size) * (numer / denom)
