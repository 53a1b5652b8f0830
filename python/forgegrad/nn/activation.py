"""Activation and dropout modules."""
from __future__ import annotations

from .. import _C
from .._validate import check_float
from . import functional as F
from .module import Module

__all__ = ["ReLU", "LeakyReLU", "GELU", "Sigmoid", "Tanh", "SiLU", "Softmax", "LogSoftmax", "Dropout"]

_ACT = _C.activation

# Activation modules call nn.functional; without a graph the op's record sends the call straight to
# its kernel (Function.apply's inference shortcut). ``epilogue()`` tells nn.Sequential which kernel
# code a Linear layer can apply in place when this module follows it.


class ReLU(Module):
    def epilogue(self):
        """(kernel code, alpha) of this activation, for Linear layers that apply it in place."""
        return _ACT.RELU, 0.0

    def forward(self, input):
        return F.relu(input)


class LeakyReLU(Module):
    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.negative_slope = check_float(negative_slope, "negative_slope")

    def epilogue(self):
        return _ACT.LEAKY_RELU, float(self.negative_slope)

    def forward(self, input):
        return F.leaky_relu(input, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class GELU(Module):
    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def epilogue(self):
        return (_ACT.GELU if self.approximate == "none" else _ACT.GELU_TANH), 0.0

    def forward(self, input):
        return F.gelu(input, self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class Sigmoid(Module):
    def epilogue(self):
        return _ACT.SIGMOID, 0.0

    def forward(self, input):
        return F.sigmoid(input)


class Tanh(Module):
    def epilogue(self):
        return _ACT.TANH, 0.0

    def forward(self, input):
        return F.tanh(input)


class SiLU(Module):
    """x * sigmoid(x) (also called swish)."""

    def epilogue(self):
        return _ACT.SILU, 0.0

    def forward(self, input):
        return F.silu(input)


class Softmax(Module):
    def __init__(self, dim: int = -1):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        return F.softmax(input, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    def forward(self, input):
        return F.log_softmax(input, self.dim)


class Dropout(Module):
    """Zeroes elements with probability p in training mode (scaled by 1/(1-p)); identity in eval."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = p

    def forward(self, input):
        return F.dropout(input, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"
