"""torch package names training scripts call that forgegrad lacked: set_float32_matmul_precision /
get_float32_matmul_precision, is_inference, detach, fill, Size, and the top-level in-place functions
(``torch.abs_(x)``, ``torch.clamp_(x, min=0)``, ...), each calling the Tensor method of its name.
``install()`` puts them on the package."""
from __future__ import annotations

import builtins
import operator
import warnings

import numpy as np

from .tensor import Tensor

__all__ = ["set_float32_matmul_precision", "get_float32_matmul_precision", "is_inference", "detach", "fill", "Size",
           "INPLACE_NAMES", "FUNCTIONS", "install"]

# ---- float32 matmul precision --------------------------------------------------------------------------------------
# forgegrad's float32 matmul always accumulates float32 products in float32 (no TF32 or bfloat16 passes exist on the
# CPU), which is torch's "highest". The setting is stored and returned so scripts that set it run unchanged.
_PRECISIONS = ("highest", "high", "medium")
_matmul_precision = "highest"


def set_float32_matmul_precision(precision) -> None:
    """torch.set_float32_matmul_precision: "highest", "high" or "medium". Stored only: forgegrad's float32 matmul is
    always full float32 precision whatever the setting (torch's "highest"). Another string warns and has no
    effect, as in torch."""
    global _matmul_precision
    if not isinstance(precision, str):
        raise RuntimeError(f"set_float32_matmul_precision expects a str, but got {type(precision).__name__}")
    if precision not in _PRECISIONS:
        warnings.warn(f"{precision} is not one of 'highest', 'high', or 'medium'; the current "
                      "set_float32_matmul_precision call has no effect.", UserWarning, stacklevel=2)
        return
    _matmul_precision = precision


def get_float32_matmul_precision() -> str:
    """The value set_float32_matmul_precision last stored ("highest" by default)."""
    return _matmul_precision


# ---- small tensor functions ----------------------------------------------------------------------------------------
def _tensor_arg(x, who: str, name: str = "input") -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{who}(): argument {name!r} (position 1) must be Tensor, not {type(x).__name__}")
    return x


def is_inference(input) -> bool:
    """torch.is_inference(input): input.is_inference(), True for a tensor made inside inference_mode() or a view
    of one."""
    return _tensor_arg(input, "is_inference").is_inference()


def detach(input) -> Tensor:
    """torch.detach(input): input.detach() (shares storage, no graph)."""
    return _tensor_arg(input, "detach").detach()


def fill(input, value) -> Tensor:
    """torch.fill(input, value): a new tensor of input's shape and dtype holding ``value`` (a number or a 0-d tensor);
    the gradient to input is zero, to a 0-d tensor value the sum of the output's gradient, as torch."""
    from .factories import full, where, zeros
    _tensor_arg(input, "fill")
    if isinstance(value, Tensor):
        if value.ndim != 0:
            raise RuntimeError(f"fill only supports 0-dimension value tensor but got tensor with {value.ndim} "
                               "dimensions (argument 'value')")
        filled = value.to(input.dtype).expand(*input.shape)
    elif isinstance(value, (builtins.bool, builtins.int, builtins.float, builtins.complex, np.number, np.bool_)):
        filled = full(tuple(input.shape), value, dtype=input.dtype, device=input.device)
    else:
        raise TypeError(f"fill(): argument 'value' must be a Number or a 0-d Tensor, not {type(value).__name__}")
    if input.requires_grad or filled.requires_grad:
        # where(False, input, value): the value, with input still in the graph (its gradient is zeros, not None)
        return where(zeros(tuple(input.shape), dtype=bool, device=input.device), input, filled)
    return filled.clone() if isinstance(value, Tensor) else filled


# ---- Size ----------------------------------------------------------------------------------------------------------
class Size(tuple):
    """torch.Size: a tuple of ints with numel(); slices and concatenations stay Size.

    ``Tensor.shape`` and ``Tensor.size()`` return plain tuples in forgegrad (they compare equal to a Size)."""

    def __new__(cls, sizes=()):
        items = []
        for i, s in enumerate(sizes):
            if isinstance(s, (builtins.float, np.floating)):
                raise TypeError(f"forgegrad.Size() takes an iterable of 'int' (item {i} is '{type(s).__name__}')")
            try:
                items.append(operator.index(s))
            except TypeError:
                raise TypeError(f"forgegrad.Size() takes an iterable of 'int' (item {i} is "
                                f"'{type(s).__name__}')") from None
        return super().__new__(cls, items)

    def numel(self) -> int:
        """The number of elements a tensor of this shape holds (1 for ``Size([])``)."""
        n = 1
        for s in self:
            n *= s
        return n

    def __getitem__(self, key):
        out = tuple.__getitem__(self, key)
        return Size(out) if isinstance(key, slice) else out

    def __add__(self, other):
        if not isinstance(other, tuple):
            return NotImplemented
        return Size(tuple.__add__(self, other))

    def __radd__(self, other):
        if not isinstance(other, tuple):
            return NotImplemented
        return Size(tuple.__add__(other, self))

    def __repr__(self) -> str:
        return f"forgegrad.Size({list(self)})"

    __str__ = __repr__

    def __reduce__(self):
        return (Size, (tuple(self),))


# ---- top-level in-place functions ----------------------------------------------------------------------------------
# every torch.NAME_ whose Tensor method forgegrad has (dir(torch) of torch 2.13); the ones forgegrad defines elsewhere
# (relu_, selu_, dropout_, ...) keep theirs (install uses setdefault)
INPLACE_NAMES = (
    "abs_", "acos_", "acosh_", "addmv_", "arccos_", "arccosh_", "arcsin_", "arcsinh_", "arctan_", "arctanh_", "asin_",
    "asinh_", "atan_", "atanh_", "ceil_", "clamp_", "clamp_max_", "clamp_min_", "clip_", "cos_", "cosh_", "deg2rad_",
    "detach_", "erf_", "erfc_", "exp2_", "exp_", "expm1_", "fill_", "fix_", "floor_", "frac_", "gcd_", "i0_", "lcm_",
    "ldexp_", "log10_", "log1p_", "log2_", "log_", "logit_", "nan_to_num_", "neg_", "negative_", "rad2deg_",
    "reciprocal_", "relu_", "round_", "rsqrt_", "sigmoid_", "sin_", "sinc_", "sinh_", "sqrt_", "square_", "tan_",
    "tanh_", "trunc_", "xlogy_", "zero_")


def _inplace_function(name: str):
    def fn(input, *args, **kwargs):
        return _tensor_arg(input, name).__getattribute__(name)(*args, **kwargs)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"torch.{name}(input, ...): ``input.{name}(...)`` (in place, returns input)."
    return fn


FUNCTIONS = {f.__name__: f for f in (set_float32_matmul_precision, get_float32_matmul_precision, is_inference,
                                     detach, fill)}
FUNCTIONS["Size"] = Size
FUNCTIONS.update({n: _inplace_function(n) for n in INPLACE_NAMES})


def install(package_namespace: dict) -> None:
    for name, fn in FUNCTIONS.items():
        if name.endswith("_") and not hasattr(Tensor, name):
            continue  # a Tensor method another module did not install: no alias to a missing method
        package_namespace.setdefault(name, fn)
