"""torch's basic pointwise float math (ops/pointwise_math.py) as ``forgegrad.xxx``, Tensor methods and torch's in-place
``xxx_`` variants; torch's aliases (arcsin..arctanh, absolute, negative, positive, subtract, multiply, divide,
true_divide); and the in-place methods torch has for functions forgegrad already had (abs_, exp_, sigmoid_, ...).
``install()`` adds them to the package and the Tensor class, never replacing a name either has (forgegrad/__init__.py
calls it once, after forgegrad._torch_math)."""
from __future__ import annotations

from . import dtypes
from ._torch_install import inplace_method, method, op_function
from .ops.registry import _OPS
from .tensor import Tensor

_UNARY = ("floor", "ceil", "log1p", "expm1", "log2", "log10", "exp2", "rsqrt", "reciprocal", "square", "tan", "sinh",
          "cosh", "asin", "acos", "atan", "asinh", "acosh", "atanh", "sinc", "i0")
# torch's numpy-style names of the inverse trigonometric and hyperbolic functions
_ARC = {"arcsin": "asin", "arccos": "acos", "arctan": "atan", "arcsinh": "asinh", "arccosh": "acosh",
        "arctanh": "atanh"}


def _t(x, name, who):
    if not isinstance(x, Tensor):
        raise TypeError(f"{who}(): argument {name!r} must be a forgegrad.Tensor, got {type(x).__name__}")
    return x


def _op1(name, alias=None):
    return op_function(name, 1, alias, f"torch.{alias or name}(input) (see forgegrad/ops/pointwise_math.py).")


def logit(input, eps=None):
    """torch.logit: log(p / (1 - p)), p clamped to [eps, 1 - eps] when eps is given (its gradient 0 outside)."""
    return _OPS["logit"](input, eps)


def float_power(input, exponent):
    """torch.float_power: input ** exponent computed and returned in float64, whatever the inputs' dtypes."""
    return _OPS["float_power"](input, exponent)


def ldexp(input, other):
    """torch.ldexp: input * 2 ** other (a float result)."""
    return _OPS["ldexp"](input, other)


def negative(input):
    return -_t(input, "input", "negative")


def absolute(input):
    return _t(input, "input", "absolute").abs()


def positive(input):
    """torch.positive: the input itself (refused for bool, as torch's unary +)."""
    _t(input, "input", "positive")
    if input.dtype == dtypes.bool:
        raise TypeError("positive(): the `+` operator on a bool tensor is not supported (as in torch)")
    return input


def subtract(input, other, *, alpha=1):
    return _t(input, "input", "subtract").sub(other, alpha=alpha)


def multiply(input, other):
    return _t(input, "input", "multiply").mul(other)


def divide(input, other, *, rounding_mode=None):
    return _t(input, "input", "divide").div(other, rounding_mode=rounding_mode)


def true_divide(input, other):
    return _t(input, "input", "true_divide").div(other)


FUNCTIONS = {n: _op1(n) for n in _UNARY}
FUNCTIONS.update({alias: _op1(name, alias) for alias, name in _ARC.items()})
FUNCTIONS.update({f.__name__: f for f in (logit, float_power, ldexp, negative, absolute, positive, subtract, multiply,
                                          divide, true_divide)})


# ---- Tensor methods ---------------------------------------------------------------------------------------
_method, _inplace_method = method, inplace_method


def _float_power_(self, exponent):
    # torch: the result is float64, so only a float64 tensor can hold it
    if self.dtype != dtypes.float64:
        raise RuntimeError(f"float_power_(): the base given to float_power_ has dtype {self.dtype} but the "
                           "operation's result requires dtype float64")
    return _inplace_method(float_power, "float_power")(self, exponent)


# in-place variants torch has for functions forgegrad had without them (relu_, neg_, clamp_, clip_, erf_ and erfc_
# were there: _tensor_methods.py, _torch_math.py)
_EXISTING_INPLACE = ("abs", "cos", "exp", "log", "sigmoid", "sin", "sqrt", "tanh")


def _existing(name):
    def fn(input, *args, **kwargs):
        return getattr(input, name)(*args, **kwargs)
    fn.__name__ = name
    return fn


def _methods() -> dict:
    skip = ("positive",)  # torch has Tensor.positive but no positive_
    methods = {n: _method(f) for n, f in FUNCTIONS.items()}
    methods.update({n + "_": _inplace_method(f, n) for n, f in FUNCTIONS.items() if n not in skip})
    methods["float_power_"] = _float_power_
    methods.update({n + "_": _inplace_method(_existing(n), n) for n in _EXISTING_INPLACE})
    return methods


def install(package_namespace: dict) -> None:
    """Put the functions on the package and the methods on Tensor (never replacing a name already there)."""
    from ._tensor_methods import TensorMethods
    for name, fn in FUNCTIONS.items():
        package_namespace.setdefault(name, fn)
    for name, m in _methods().items():
        if not hasattr(TensorMethods, name):
            setattr(TensorMethods, name, m)


__all__ = sorted(FUNCTIONS) + ["install"]
