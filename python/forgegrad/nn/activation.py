"""Activation and dropout modules."""
from __future__ import annotations

from ..ops.registry import _OPS
from .._validate import check_flag, check_float
from . import functional as F
from .module import Module

__all__ = ["ReLU", "LeakyReLU", "GELU", "Sigmoid", "Tanh", "SiLU", "ELU", "Softplus", "Softmax", "LogSoftmax",
           "Dropout"]



class _Activation(Module):
    """An elementwise activation module over one op record (``op``: its name, also its nn.functional
    name; ``op_kwargs()``: its keyword arguments). Without a graph the record sends the call straight
    to the kernel (Function.apply's inference shortcut); ``epilogue()`` is the record's kernel code,
    which nn.Sequential and nn.Dense let a Linear layer apply in place."""

    op: str
    inplace = False  # the activations with torch's ``inplace=`` flag set it in __init__ (see _set_inplace)

    def _set_inplace(self, inplace) -> None:
        self.inplace = check_flag(inplace, "inplace")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "op" in cls.__dict__:
            cls._op_epilogue = staticmethod(_OPS[cls.op].epilogue)

    def op_kwargs(self) -> dict:
        return {}

    def forward(self, input):
        if self.inplace:  # written into input (torch's rules for in-place ops, see forgegrad._inplace)
            return getattr(F, self.op)(input, **self.op_kwargs(), inplace=True)
        return getattr(F, self.op)(input, **self.op_kwargs())

    def epilogue(self):
        """(kernel code, alpha) of this activation, for Linear layers that apply it in place."""
        return self._op_epilogue(**self.op_kwargs())

    def extra_repr(self):
        parts = [f"{k}={v!r}" for k, v in self.op_kwargs().items()]
        return ", ".join(parts + ["inplace=True"] if self.inplace else parts)


class ReLU(_Activation):
    op = "relu"

    def __init__(self, inplace: bool = False):
        super().__init__()
        self._set_inplace(inplace)


class LeakyReLU(_Activation):
    op = "leaky_relu"

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False):
        super().__init__()
        self.negative_slope = check_float(negative_slope, "negative_slope")
        self._set_inplace(inplace)

    def op_kwargs(self):
        return {"negative_slope": self.negative_slope}


class GELU(_Activation):
    op = "gelu"

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def op_kwargs(self):
        return {"approximate": self.approximate}


class Sigmoid(_Activation):
    op = "sigmoid"


class Tanh(_Activation):
    op = "tanh"


class SiLU(_Activation):
    """x * sigmoid(x) (also called swish)."""

    op = "silu"

    def __init__(self, inplace: bool = False):
        super().__init__()
        self._set_inplace(inplace)


class ELU(_Activation):
    """x where x > 0, else alpha * (exp(x) - 1)."""

    op = "elu"

    def __init__(self, alpha: float = 1.0, inplace: bool = False):
        super().__init__()
        self.alpha = check_float(alpha, "alpha")
        self._set_inplace(inplace)

    def op_kwargs(self):
        return {"alpha": self.alpha}


class Softplus(_Activation):
    """log(1 + exp(beta * x)) / beta, linear (x) where beta * x > threshold."""

    op = "softplus"

    def __init__(self, beta: float = 1.0, threshold: float = 20.0):
        super().__init__()
        self.beta, self.threshold = check_float(beta, "beta"), check_float(threshold, "threshold")

    def op_kwargs(self):
        return {"beta": self.beta, "threshold": self.threshold}


class Softmax(Module):
    """softmax along ``dim``; None (torch's default) picks torch's implicit dim (0 for 0-, 1- and 3-d input,
    else 1) with torch's deprecation warning."""

    def __init__(self, dim=None):
        super().__init__()
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int)):
            raise TypeError(f"{type(self).__name__}: dim must be an int or None, got {dim!r}")
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

    def __init__(self, p: float = 0.5, inplace: bool = False):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = p
        self.inplace = check_flag(inplace, "inplace")

    def forward(self, input):
        return F.dropout(input, self.p, self.training, self.inplace)

    def extra_repr(self):
        return f"p={self.p}" + (", inplace=True" if self.inplace else "")
