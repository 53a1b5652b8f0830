"""More of torch.nn's activation modules (MobileNetV3's Hardswish / Hardsigmoid, YOLO's Mish, GLU, SELU, ...): each
runs its op record (ops/activation_hard.py, activation_more.py, activation_param.py) through nn.functional, with
torch's arguments, ``inplace`` where torch has it, and torch's repr."""
from __future__ import annotations

from .. import devices, dtypes
from .._validate import check_float, check_int
from ..ops import activation_hard as _hard  # noqa: F401  (the records _Activation subclasses look up)
from ..ops import activation_more as _more
from ..ops import activation_param as _param
from . import functional as F
from .activation import _Activation
from .module import Module
from .parameter import Parameter

__all__ = ["ReLU6", "Hardtanh", "Hardsigmoid", "Hardswish", "Mish", "LogSigmoid", "PReLU", "SELU", "CELU", "GLU",
           "Softsign", "Softshrink", "Hardshrink", "Tanhshrink", "Threshold", "Softmin", "Softmax2d", "RReLU"]


def _number(value, name):
    check_float(value, name)
    return value  # as given (torch's repr prints an int bound as an int)


def _inplace_repr(self) -> str:
    return ", inplace=True" if self.inplace else ""


class Hardtanh(_Activation):
    """min(max(x, min_val), max_val); gradient 1 strictly between the bounds."""

    op = "hardtanh"

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False,
                 min_value=None, max_value=None):
        super().__init__()
        if min_value is not None:  # torch's deprecated names
            min_val = min_value
        if max_value is not None:
            max_val = max_value
        self.min_val, self.max_val = _number(min_val, "min_val"), _number(max_val, "max_val")
        if self.max_val <= self.min_val:  # torch's module refuses equal bounds too (F.hardtanh does not)
            raise ValueError(f"Hardtanh: max_val ({self.max_val}) must be greater than min_val ({self.min_val})")
        self._set_inplace(inplace)

    def op_kwargs(self):
        return {"min_val": float(self.min_val), "max_val": float(self.max_val)}

    def extra_repr(self):
        return f"min_val={self.min_val}, max_val={self.max_val}{_inplace_repr(self)}"


class ReLU6(Hardtanh):
    """min(max(x, 0), 6): Hardtanh(0, 6), as torch's."""

    def __init__(self, inplace: bool = False):
        super().__init__(0.0, 6.0, inplace)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class Hardsigmoid(_Activation):
    """clip(x + 3, 0, 6) / 6 (torch's repr shows no inplace flag)."""

    op = "hardsigmoid"

    def __init__(self, inplace: bool = False):
        super().__init__()
        self._set_inplace(inplace)

    def extra_repr(self):
        return ""


class Hardswish(Hardsigmoid):
    """x * clip(x + 3, 0, 6) / 6 (MobileNetV3's)."""

    op = "hardswish"


class Mish(_Activation):
    """x * tanh(softplus(x))."""

    op = "mish"

    def __init__(self, inplace: bool = False):
        super().__init__()
        self._set_inplace(inplace)


class SELU(Mish):
    """scale * (x where x > 0, else alpha * (exp(x) - 1)), torch's alpha and scale."""

    op = "selu"


class CELU(_Activation):
    """x where x > 0, else alpha * (exp(x / alpha) - 1)."""

    op = "celu"

    def __init__(self, alpha: float = 1.0, inplace: bool = False):
        super().__init__()
        _more._celu_alpha(alpha)
        self.alpha = alpha
        self._set_inplace(inplace)

    def op_kwargs(self):
        return {"alpha": float(self.alpha)}

    def extra_repr(self):
        return f"alpha={self.alpha}{_inplace_repr(self)}"


class Threshold(_Activation):
    """value where x <= threshold, else x."""

    op = "threshold"

    def __init__(self, threshold: float, value: float, inplace: bool = False):
        super().__init__()
        self.threshold, self.value = _number(threshold, "threshold"), _number(value, "value")
        self._set_inplace(inplace)

    def op_kwargs(self):
        return {"threshold": float(self.threshold), "value": float(self.value)}

    def extra_repr(self):
        return f"threshold={self.threshold}, value={self.value}{_inplace_repr(self)}"


class LogSigmoid(_Activation):
    op = "logsigmoid"


class Softsign(_Activation):
    op = "softsign"


class Tanhshrink(_Activation):
    op = "tanhshrink"


class Softshrink(_Activation):
    """x - lambd above lambd, x + lambd below -lambd, else 0 (lambd >= 0)."""

    op = "softshrink"

    def __init__(self, lambd: float = 0.5):
        super().__init__()
        self.lambd = _number(lambd, "lambd")

    def op_kwargs(self):
        return {"lambd": float(self.lambd)}

    def extra_repr(self):
        return str(self.lambd)


class Hardshrink(Softshrink):
    """x outside [-lambd, lambd], else 0."""

    op = "hardshrink"


class RReLU(_Activation):
    """Randomized leaky ReLU: in training a slope per element drawn uniform in [lower, upper] (forgegrad's
    generator), in eval the mean slope (lower + upper) / 2. Its forward reads ``self.training``, so a
    Sequential never folds it into a Linear's GEMM (the eval form's kernel code is the op's epilogue)."""

    op = "rrelu"

    def __init__(self, lower: float = 1.0 / 8, upper: float = 1.0 / 3, inplace: bool = False):
        super().__init__()
        self.lower, self.upper = _number(lower, "lower"), _number(upper, "upper")
        _param._rrelu_args(lower, upper, False)
        self._set_inplace(inplace)

    def op_kwargs(self):
        return {"lower": float(self.lower), "upper": float(self.upper)}

    def forward(self, input):
        return F.rrelu(input, float(self.lower), float(self.upper), self.training, self.inplace)

    def epilogue(self):
        return self._op_epilogue(**self.op_kwargs(), training=self.training)

    def extra_repr(self):
        return f"lower={self.lower}, upper={self.upper}{_inplace_repr(self)}"


class PReLU(Module):
    """x where x > 0, else weight * x; ``weight`` (a Parameter of num_parameters slopes, filled with ``init``): one
    slope, or one per channel (input dim 1)."""

    def __init__(self, num_parameters: int = 1, init: float = 0.25, device=None, dtype=None):
        super().__init__()
        self.num_parameters = check_int(num_parameters, "num_parameters", low=1)
        self.init = check_float(init, "init")
        dtype = dtypes.default_float() if dtype is None else dtypes.to_numpy(dtype)
        dev = devices.default_device() if device is None else str(device)
        self.weight = Parameter(devices.full((self.num_parameters,), self.init, dtype, dev))

    def reset_parameters(self) -> None:
        from . import init
        init.constant_(self.weight, self.init)

    def forward(self, input):
        return F.prelu(input, self.weight)

    def extra_repr(self):
        return f"num_parameters={self.num_parameters}"


class GLU(Module):
    """a * sigmoid(b), a and b the halves of the input along ``dim`` (it halves that size)."""

    def __init__(self, dim: int = -1):
        super().__init__()
        self.dim = check_int(dim, "dim")

    def forward(self, input):
        return F.glu(input, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class Softmin(Module):
    """softmax(-x) along ``dim`` (None: torch's implicit dim, with its deprecation warning)."""

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        return F.softmin(input, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class Softmax2d(Module):
    """softmax over the channels (dim -3) of a (C, H, W) or (N, C, H, W) input."""

    def forward(self, input):
        from .functional_conv import _t
        input = _t(input, "input")
        if input.ndim not in (3, 4):
            raise ValueError(f"Softmax2d: expected input to be 3D or 4D, got {input.ndim}D instead")
        return F.softmax(input, -3)
