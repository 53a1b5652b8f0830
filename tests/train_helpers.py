"""Test helpers for the data/train tests: a tiny SGD and Adam with torch's optimizer API.

forgegrad.optim is developed on another branch; these stand-ins let the training loop and the
examples be tested before it lands. ``optim_module()`` returns the real forgegrad.optim when it is
importable, else a stand-in module with SGD / Adam / AdamW.
"""
from __future__ import annotations

import sys
import types

import numpy as np


class TinySGD:
    def __init__(self, params, lr=0.1, momentum=0.0):
        self.param_groups = [{"params": list(params), "lr": lr, "momentum": momentum}]
        self._buf = {}

    def zero_grad(self, set_to_none=True):
        for g in self.param_groups:
            for p in g["params"]:
                p.grad = None

    def step(self):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                d = p.grad.data
                if g["momentum"]:
                    b = self._buf.get(id(p))
                    b = d.copy() if b is None else g["momentum"] * b + d
                    self._buf[id(p)] = b
                    d = b
                p.data -= (g["lr"] * d).astype(np.float32)


class TinyAdam(TinySGD):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.param_groups = [{"params": list(params), "lr": lr, "betas": betas, "eps": eps,
                              "weight_decay": weight_decay}]
        self._state = {}

    def step(self):
        for g in self.param_groups:
            b1, b2 = g["betas"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                m, v, t = self._state.get(id(p), (0.0, 0.0, 0))
                grad = p.grad.data
                t += 1
                m = b1 * m + (1 - b1) * grad
                v = b2 * v + (1 - b2) * grad * grad
                self._state[id(p)] = (m, v, t)
                mhat, vhat = m / (1 - b1 ** t), v / (1 - b2 ** t)
                if g["weight_decay"]:
                    p.data *= np.float32(1 - g["lr"] * g["weight_decay"])
                p.data -= (g["lr"] * mhat / (np.sqrt(vhat) + g["eps"])).astype(np.float32)


def optim_module():
    """forgegrad.optim if it exists, else a stand-in (registered in sys.modules so that
    ``from forgegrad import optim`` works in the code under test)."""
    import forgegrad
    try:
        from forgegrad import optim
        return optim
    except ImportError:
        pass
    mod = types.ModuleType("forgegrad.optim")
    mod.SGD, mod.Adam, mod.AdamW = TinySGD, TinyAdam, TinyAdam
    mod.__stand_in__ = True
    sys.modules["forgegrad.optim"] = mod
    forgegrad.optim = mod
    return mod
