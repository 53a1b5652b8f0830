"""Activation and dropout modules."""
from __future__ import annotations

import numpy as np

from .. import _C
from .._validate import check_float
from ..autograd import graph_free
from ..kernels import activation as _KA
from ..tensor import Tensor
from . import functional as F
from .module import Module

_ACT = _C.activation
_F32 = np.dtype(np.float32)


def _kernel_only(input, code, alpha=0.0):
    """Inference fast path: with no graph to record (no_grad, no trace) a float32 activation is
    just its kernel; None sends the caller through the autograd op instead."""
    if graph_free() and isinstance(input, Tensor) and input.data.dtype is _F32:
        return Tensor._wrap(_KA._forward(code, input.data, None, alpha))
    return None


class ReLU(Module):
    def epilogue(self):
        """(kernel code, alpha) of this activation, for Linear layers that apply it in place."""
        return _ACT.RELU, 0.0

    def forward(self, input):
        y = _kernel_only(input, _ACT.RELU)
        return F.relu(input) if y is None else y


class LeakyReLU(Module):
    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.negative_slope = check_float(negative_slope, "negative_slope")

    def epilogue(self):
        return _ACT.LEAKY_RELU, float(self.negative_slope)

    def forward(self, input):
        y = _kernel_only(input, _ACT.LEAKY_RELU, float(self.negative_slope))
        return F.leaky_relu(input, self.negative_slope) if y is None else y

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
        y = _kernel_only(input, _ACT.SIGMOID)
        return F.sigmoid(input) if y is None else y


class Tanh(Module):
    def epilogue(self):
        return _ACT.TANH, 0.0

    def forward(self, input):
        y = _kernel_only(input, _ACT.TANH)
        return F.tanh(input) if y is None else y


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
