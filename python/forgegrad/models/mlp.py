"""MLP: a stack of Linear layers with an activation (and optional dropout) between them."""
from __future__ import annotations

from typing import Sequence

from .. import nn

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU,
                "leaky_relu": nn.LeakyReLU}


def activation_module(name: str, owner: str) -> nn.Module:
    """A fresh activation module by name; ValueError listing the valid names."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"{owner}: unknown activation {name!r}; expected one of {', '.join(sorted(_ACTIVATIONS))}")
    return _ACTIVATIONS[name]()


def hidden_sizes(hidden, owner: str):
    """hidden as a tuple of positive ints (an int means one hidden layer)."""
    if isinstance(hidden, int) and not isinstance(hidden, bool):
        hidden = (hidden,)
    try:
        sizes = tuple(hidden)
    except TypeError:
        raise ValueError(f"{owner}: hidden must be an int or a sequence of ints, got {hidden!r}") from None
    for h in sizes:
        if isinstance(h, bool) or not isinstance(h, int) or h <= 0:
            raise ValueError(f"{owner}: hidden sizes must be positive ints, got {hidden!r}")
    return sizes


class MLP(nn.Sequential):
    """Linear -> activation [-> Dropout] ... -> Linear (logits; no final activation).

    Args:
        in_features: input size F; input is (N, F).
        hidden: hidden layer sizes, e.g. (128, 64); () gives a linear model.
        out_features: output size (classes).
        activation: "relu", "tanh", "sigmoid", "gelu" or "leaky_relu".
        dropout: dropout probability after each hidden activation (0 disables it).

    It is an nn.Sequential, so its state_dict keys are "0.weight", "0.bias", "2.weight", ...
    """

    def __init__(self, in_features: int, hidden: Sequence[int] = (128,), out_features: int = 10,
                 activation: str = "relu", dropout: float = 0.0):
        sizes = hidden_sizes(hidden, "MLP")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"MLP: dropout must be in [0, 1), got {dropout}")
        layers = []
        prev = in_features
        for h in sizes:
            layers.append(nn.Linear(prev, h))
            layers.append(activation_module(activation, "MLP"))
            if dropout > 0:
                layers.append(nn.Dropout(float(dropout)))
            prev = h
        layers.append(nn.Linear(prev, out_features))
        super().__init__(*layers)
        self.in_features, self.out_features, self.hidden = in_features, out_features, sizes
