"""Shared pieces of the nn.Module hook tests (tests/test_module_hooks.py, tests/test_module_backward_hooks.py): the
same small models built in forgegrad and torch with the same weights, and comparisons."""
from __future__ import annotations

import numpy as np
import torch

import forgegrad as fg
from forgegrad import nn


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _copy_into(fg_model, torch_model):
    fg_model.load_state_dict({k: v.detach().numpy() for k, v in torch_model.state_dict().items()})
    return fg_model


def _linear(i=7, o=5, seed=0):
    torch.manual_seed(seed)
    t = torch.nn.Linear(i, o)
    return _copy_into(nn.Linear(i, o), t), t


def _mlp(seed=0):
    torch.manual_seed(seed)
    t = torch.nn.Sequential(torch.nn.Linear(11, 9), torch.nn.ReLU(), torch.nn.Linear(9, 6), torch.nn.ReLU(),
                            torch.nn.Linear(6, 3)).eval()
    f = nn.Sequential(nn.Linear(11, 9), nn.ReLU(), nn.Linear(9, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    return _copy_into(f, t), t


def _np(t):
    return None if t is None else t.detach().numpy()


def _close(a, b, atol=1e-5):
    np.testing.assert_allclose(_np(a), _np(b), rtol=1e-5, atol=atol)


class _Scale:
    """The same module class for both libraries: forward(x, scale=1.0, *, shift=0.0)."""

    @staticmethod
    def make(lib):
        base = nn.Module if lib is fg else torch.nn.Module

        class Scale(base):
            def forward(self, x, scale=1.0, shift=0.0):
                return x * scale + shift
        return Scale()


def _both(fn):
    """fn(lib, tensor_of) for forgegrad and torch."""
    return fn(fg, fg.tensor), fn(torch, torch.tensor)
