"""The ``cuda`` Functions of the pointwise math, predicate and activation ops whose CPU Functions live in
pointwise_math.py, pointwise_more.py, minmax.py, predicates.py and activation_{smooth,more,hard,param}.py.

Each is one or a few launches of the broadcasting kernel of cuda/binary.cu (``CN.pw``: the formulas are that
file's ``Pointwise`` cases), float32 only: an integer or bool DeviceArray raises the binding's TypeError (the
predicates also take int64, through the comparison kernel). They compute what the CPU Functions compute --
values at the edges (NaN, inf, 0, kinks) and torch's subgradient choices included -- save what their backward
reads, and sum broadcast gradients back to each input's shape. Registered by ops.load_all after every op module
(the ops are looked up by name, so no CPU module imports this one).

Checked on the CPU only so far: tests/test_cuda_sim_math.py runs each formula of the kernel through the SIMT
simulator, tests/test_cuda_nn_contract.py every registry sample through these Functions on a numpy stand-in of
_C.cuda_nn; tests/test_device_ops.py covers them on a GPU.
"""
from __future__ import annotations

import math

import numpy as np

from .._validate import check_float, check_int
from ..autograd import Function
from . import _cuda_nn as CN
from .elementwise import cuda_binary_function
from .registry import get

_INF = math.inf


def _pw(op, *inputs, alpha=1.0, shape=None):
    return CN.pw(op, *inputs, alpha=alpha, shape=shape)


def _zeros_like(g):
    return _pw("copy", 0.0, shape=g.shape)


def _cls(name, base, **attrs):
    title = "".join(part.title() for part in name.split("_"))
    return type(f"{title}CudaFunction", (base,), {"__module__": __name__, "__doc__": f"{name} on cuda.", **attrs})


# ---- one input: y = op(x); the gradient from (g, x, y) ----------------------------------------------------------
def _grad_of(kernel, reads="a"):
    """g -> kernel(g, x) (reads "a") or kernel(g, y) (reads "y")."""
    if reads == "a":
        return lambda g, a, y: _pw(kernel, g, a)
    return lambda g, a, y: _pw(kernel, g, y)


def _zero_grad(g, a, y):
    return _zeros_like(g)


# name -> (forward kernel, gradient(g, x, y), what the gradient reads: "a" the input, "y" the output, "" neither)
UNARY = {
    "log1p": ("log1p", _grad_of("log1p_grad"), "a"),
    "expm1": ("expm1", _grad_of("expm1_grad", "y"), "y"),
    "exp2": ("exp2", _grad_of("exp2_grad", "y"), "y"),
    "log2": ("log2", _grad_of("log2_grad"), "a"),
    "log10": ("log10", _grad_of("log10_grad"), "a"),
    "square": ("square", lambda g, a, y: _pw("mul_scaled", g, a, alpha=2.0), "a"),
    "reciprocal": ("reciprocal", _grad_of("reciprocal_grad", "y"), "y"),
    "rsqrt": ("rsqrt", _grad_of("rsqrt_grad", "y"), "y"),
    "tan": ("tan", _grad_of("tan_grad", "y"), "y"),
    "sinh": ("sinh", _grad_of("sinh_grad"), "a"),
    "cosh": ("cosh", _grad_of("cosh_grad"), "a"),
    "asin": ("asin", _grad_of("asin_grad"), "a"),
    "acos": ("acos", _grad_of("acos_grad"), "a"),
    "atan": ("atan", _grad_of("atan_grad"), "a"),
    "asinh": ("asinh", _grad_of("asinh_grad"), "a"),
    "acosh": ("acosh", _grad_of("acosh_grad"), "a"),
    "atanh": ("atanh", _grad_of("atanh_grad"), "a"),
    "erf": ("erf", _grad_of("erf_grad"), "a"),
    "erfc": ("erfc", _grad_of("erfc_grad"), "a"),
    "erfinv": ("erfinv", _grad_of("erfinv_grad", "y"), "y"),
    "sinc": ("sinc", _grad_of("sinc_grad"), "a"),
    "floor": ("floor", _zero_grad, ""),
    "ceil": ("ceil", _zero_grad, ""),
    "trunc": ("trunc", _zero_grad, ""),
    "sign": ("sign", _zero_grad, ""),
    "sgn": ("sign", _zero_grad, ""),
    "frac": ("frac", lambda g, a, y: g, ""),
    "deg2rad": ("deg2rad", lambda g, a, y: _pw("mul", g, math.pi / 180), ""),
    "rad2deg": ("rad2deg", lambda g, a, y: _pw("mul", g, 180 / math.pi), ""),
    # activations without arguments
    "hardsigmoid": ("hardsigmoid", _grad_of("hardsigmoid_grad"), "a"),
    "hardswish": ("hardswish", _grad_of("hardswish_grad"), "a"),
    "mish": ("mish", _grad_of("mish_grad"), "a"),
    "logsigmoid": ("logsigmoid", _grad_of("logsigmoid_grad"), "a"),
    "softsign": ("softsign", _grad_of("softsign_grad"), "a"),
}


class _UnaryCuda(Function):
    """op(input) on cuda from the UNARY table; saves only what the gradient reads."""

    @staticmethod
    def forward(ctx, input):
        kernel, _, reads = UNARY[type(ctx).op.name]
        y = _pw(kernel, input)
        ctx.save_for_backward(input if reads == "a" else None, y if reads == "y" else None)
        return y

    @staticmethod
    def backward(ctx, g):
        a, y = ctx.saved_tensors
        return UNARY[type(ctx).op.name][1](g, a, y)


class RoundCudaFunction(Function):
    """round(input, decimals) on cuda: half to even; decimals != 0 scales by 10^|decimals| around it, as the CPU's."""

    @staticmethod
    def forward(ctx, input, decimals=0):
        decimals = check_int(decimals, "decimals")
        if decimals == 0:
            return _pw("round", input)
        ten = float(np.float32(10.0 ** abs(decimals)))
        if decimals > 0:
            return _pw("div", _pw("round", _pw("mul", input, ten)), ten)
        return _pw("mul", _pw("round", _pw("div", input, ten)), ten)

    @staticmethod
    def backward(ctx, g):
        return _zeros_like(g)


class LogitCudaFunction(Function):
    """logit(input, eps) on cuda: p clamped to [eps, 1 - eps] when eps >= 0 is given."""

    @staticmethod
    def forward(ctx, input, eps=None):
        eps = None if eps is None else check_float(eps, "eps")
        ctx.eps = math.nan if eps is None or eps < 0 else eps  # a negative eps is no clamp (torch)
        ctx.save_for_backward(input)
        return _pw("logit", input, ctx.eps)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return _pw("logit_grad", g, x, ctx.eps)


class TanhshrinkCudaFunction(Function):
    """tanhshrink(x) = x - tanh(x) on cuda; saves tanh(x), as the CPU's."""

    @staticmethod
    def forward(ctx, x):
        t = _pw("tanh", x)
        ctx.save_for_backward(t)
        return _pw("sub", x, t)

    @staticmethod
    def backward(ctx, g):
        (t,) = ctx.saved_tensors
        return _pw("tanhshrink_grad", g, t)


# ---- two or three inputs, with broadcasting ---------------------------------------------------------------------
def _swap(kernel):
    """b's gradient from a kernel written for a's: (g, b, a)."""
    return lambda g, a, b, y: _pw(kernel, g, b, a)


def _rest(kernel):
    """b's gradient where a's is a 0/1 share of g: g minus a's."""
    return lambda g, a, b, y: _pw("sub", g, _pw(kernel, g, a, b))


# name -> (forward kernel, grad_a(g, a, b, y), grad_b(g, a, b, y) or None (no gradient), keeps the output)
BINARY = {
    "maximum": ("maximum", lambda g, a, b, y: _pw("maximum_grad", g, a, b), _swap("maximum_grad"), False),
    "minimum": ("minimum", lambda g, a, b, y: _pw("minimum_grad", g, a, b), _swap("minimum_grad"), False),
    "fmax": ("fmax", lambda g, a, b, y: _pw("fmax_grad", g, a, b), _rest("fmax_grad"), False),
    "fmin": ("fmin", lambda g, a, b, y: _pw("fmin_grad", g, a, b), _rest("fmin_grad"), False),
    "atan2": ("atan2", lambda g, a, b, y: _pw("atan2_grad", g, b, a),
              lambda g, a, b, y: _pw("atan2_grad", g, a, b, alpha=-1.0), False),
    "hypot": ("hypot", lambda g, a, b, y: _pw("mul_div", g, a, y), lambda g, a, b, y: _pw("mul_div", g, b, y), True),
    "copysign": ("copysign", lambda g, a, b, y: _pw("copysign_grad", g, a, y), None, True),
    "remainder": ("remainder", lambda g, a, b, y: g, lambda g, a, b, y: _pw("remainder_grad_b", g, a, b), False),
    "fmod": ("fmod", lambda g, a, b, y: g, lambda g, a, b, y: _pw("fmod_grad_b", g, a, b), False),
    "logaddexp": ("logaddexp", lambda g, a, b, y: _pw("logaddexp_grad", g, a, b), _swap("logaddexp_grad"), False),
    "logaddexp2": ("logaddexp2", lambda g, a, b, y: _pw("logaddexp2_grad", g, a, b), _swap("logaddexp2_grad"),
                   False),
    "xlogy": ("xlogy", lambda g, a, b, y: _pw("xlogy_grad_a", g, a, b), lambda g, a, b, y: _pw("mul_div", g, a, b),
              False),
}


class LerpCudaFunction(Function):
    """lerp(input, end, weight) on cuda; weight a number or a DeviceArray, all three broadcast."""

    @staticmethod
    def forward(ctx, input, end, weight):
        ctx.shapes = tuple(CN.shape_of(v) for v in (input, end, weight))
        ctx.arrays = tuple(CN.is_array(v) for v in (input, end, weight))
        ctx.save_for_backward(*(v if CN.is_array(v) else None for v in (input, end, weight)))
        ctx.scalars = tuple(None if CN.is_array(v) else v for v in (input, end, weight))
        return _pw("lerp", input, end, weight)

    @staticmethod
    def backward(ctx, g):
        x, e, w = (s if v is None else v for v, s in zip(ctx.saved_tensors, ctx.scalars))
        needs, arrays, shapes = ctx.needs_input_grad, ctx.arrays, ctx.shapes
        one_minus_w = _pw("sub", 1.0, w) if CN.is_array(w) else float(np.float32(1) - np.float32(w))
        return (CN.sum_to(_pw("mul", g, one_minus_w), shapes[0]) if needs[0] and arrays[0] else None,
                CN.sum_to(_pw("mul", g, w), shapes[1]) if needs[1] and arrays[1] else None,
                CN.sum_to(_pw("mul", g, _pw("sub", e, x)), shapes[2]) if needs[2] and arrays[2] else None)


# ---- predicates: bool outputs through the comparison kernel (float32 or int64 inputs) ----------------------------
def _is_int(x):
    return np.dtype(x.dtype).kind in "iu"


def _cmp(op, a, b):
    return CN.kernels().compare(op, a, b)


PREDICATES = {  # name -> (float32 input, int64 input)
    "isnan": (lambda x: _cmp("ne", x, x), lambda x: _cmp("ne", x, x)),
    "isinf": (lambda x: _cmp("eq", _pw("abs", x), _INF), lambda x: _cmp("ne", x, x)),
    "isposinf": (lambda x: _cmp("eq", x, _INF), lambda x: _cmp("ne", x, x)),
    "isneginf": (lambda x: _cmp("eq", x, -_INF), lambda x: _cmp("ne", x, x)),
    "isfinite": (lambda x: _cmp("lt", _pw("abs", x), _INF), lambda x: _cmp("eq", x, x)),  # NaN < inf is false
    "signbit": (lambda x: _cmp("ne", _pw("signbit", x), 0.0), lambda x: _cmp("lt", x, 0)),  # -0.0 and -NaN too
}


class _PredicateCuda(Function):
    """A bool DeviceArray with no gradient."""

    non_differentiable_outputs = (0,)

    @staticmethod
    def forward(ctx, input):
        on_float, on_int = PREDICATES[type(ctx).op.name]
        return (on_int if _is_int(input) else on_float)(input)

    @staticmethod
    def backward(ctx, g):  # pragma: no cover - the bool output never reaches backward
        return None


# ---- activations with arguments ---------------------------------------------------------------------------------
class EluCudaFunction(Function):
    """elu(x, alpha) on cuda; the gradient read from the output for alpha >= 0 (as the CPU's), else the input."""

    @staticmethod
    def forward(ctx, x, alpha=1.0):
        alpha = check_float(alpha, "alpha")
        y = _pw("elu_family", x, 1.0, alpha, 1.0)
        ctx.alpha = alpha
        ctx.save_for_backward(y if alpha >= 0 else x)
        return y

    @staticmethod
    def backward(ctx, g):
        (v,) = ctx.saved_tensors
        if ctx.alpha >= 0:
            return _pw("elu_grad_out", g, v, alpha=ctx.alpha)
        return _pw("elu_family_grad", g, v, 1.0, ctx.alpha, alpha=1.0)


class _EluFamilyCuda(Function):
    """selu / celu on cuda, from the CPU Function's coefficients (scale, negcoef, input_scale)."""

    cpu = None  # the CPU Function class (its _coefs and _backward_input_scale)

    @staticmethod
    def forward(ctx, x, *args):
        cpu = type(ctx).cpu
        scale, negcoef, input_scale = cpu._coefs(*args)
        ctx.coefs = scale, negcoef, cpu._backward_input_scale(input_scale, negcoef)
        ctx.save_for_backward(x)
        return _pw("elu_family", x, scale, negcoef * scale, input_scale)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        scale, negcoef, input_scale = ctx.coefs
        return _pw("elu_family_grad", g, x, scale, input_scale * negcoef * scale, alpha=input_scale)


class SoftplusCudaFunction(Function):
    """softplus(x, beta, threshold) on cuda (x where beta x > threshold)."""

    @staticmethod
    def forward(ctx, x, beta=1.0, threshold=20.0):
        ctx.params = check_float(beta, "beta"), check_float(threshold, "threshold")
        ctx.save_for_backward(x)
        return _pw("softplus", x, *ctx.params)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return _pw("softplus_grad", g, x, *ctx.params)


class HardtanhCudaFunction(Function):
    """hardtanh(x, min_val, max_val) on cuda: NaN stays NaN; the gradient passes strictly between the bounds."""

    @staticmethod
    def forward(ctx, x, min_val=-1.0, max_val=1.0):
        from .activation_hard import _hardtanh_bounds
        ctx.bounds = _hardtanh_bounds(min_val, max_val)
        ctx.save_for_backward(x)
        return _pw("clamp", x, *ctx.bounds, shape=x.shape)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return _pw("hardtanh_grad", g, x, *ctx.bounds)


def _shrink(name):
    class ShrinkCuda(Function):
        @staticmethod
        def forward(ctx, x, lambd=0.5):
            from .activation_hard import _lambd
            ctx.lambd = _lambd(lambd, name)
            ctx.save_for_backward(x)
            return _pw(name, x, ctx.lambd)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return _pw("shrink_grad", g, x, ctx.lambd)

    return _cls(name, ShrinkCuda, __doc__=f"{name}(x, lambd) on cuda: NaN stays NaN; no gradient in [-lambd, lambd].")


class ThresholdCudaFunction(Function):
    """threshold(x, threshold, value) on cuda."""

    @staticmethod
    def forward(ctx, x, threshold, value):
        ctx.threshold, value = check_float(threshold, "threshold"), check_float(value, "value")
        ctx.save_for_backward(x)
        return _pw("threshold", x, ctx.threshold, value)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return _pw("threshold_grad", g, x, ctx.threshold)


class PreluCudaFunction(Function):
    """prelu(x, weight) on cuda: weight (one value, or one per channel of dim 1) broadcast against x."""

    @staticmethod
    def forward(ctx, x, weight):
        from .activation_param import _prelu_shape
        shape = _prelu_shape(tuple(x.shape), tuple(weight.shape))
        w = CN.reshape(weight, shape)
        ctx.save_for_backward(x, w)
        ctx.weight_shape = tuple(weight.shape)
        return _pw("prelu", x, w)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        needs = ctx.needs_input_grad
        gx = _pw("prelu_grad_x", g, x, w) if needs[0] else None
        gw = CN.reshape(CN.sum_to(_pw("prelu_grad_w", g, x), w.shape), ctx.weight_shape) if needs[1] else None
        return gx, gw


def _cuda():
    """forgegrad._C.cuda: the strided copy and concatenation kernels (a function, so tests can stand in for it)."""
    from .. import _C
    return _C.cuda


class GluCudaFunction(Function):
    """glu(x, dim) = a * sigmoid(b) on cuda, a and b the halves of x along dim (two strided copies); sigmoid as
    (1 + tanh(b / 2)) / 2, the CPU's form. The gradient is the two halves' concatenated."""

    @staticmethod
    def forward(ctx, x, dim=-1):
        from .activation_more import _glu_axis
        shape = tuple(x.shape)
        axis = _glu_axis(len(shape), shape, dim)
        strides = [CN.numel(shape[k + 1:]) for k in range(len(shape))]
        half = list(shape)
        half[axis] //= 2
        a = _cuda().strided_copy(x, half, strides, 0)
        b = _cuda().strided_copy(x, half, strides, half[axis] * strides[axis])
        s = _pw("mul", _pw("add", _pw("tanh", _pw("mul", b, 0.5)), 1.0), 0.5)
        ctx.save_for_backward(a, s)
        ctx.axis = axis
        return _pw("mul", a, s)

    @staticmethod
    def backward(ctx, g):
        a, s = ctx.saved_tensors
        gb = _pw("mul", _pw("mul", _pw("mul", _pw("sub", 1.0, s), s), a), g)
        return _cuda().cat([_pw("mul", s, g), gb], ctx.axis)


# ---- registration -----------------------------------------------------------------------------------------------
def _register():
    from .activation_more import CeluFunction, SeluFunction
    for name in UNARY:
        get(name).add_device("cuda", _cls(name, _UnaryCuda))
    for name, (kernel, grad_a, grad_b, keeps_y) in BINARY.items():
        # the gradients read a and b (and y where the table says so): all are kept
        cuda_binary_function(get(name), kernel, (grad_a, grad_b), ("aby" if keeps_y else "ab",) * 2)
    for name in PREDICATES:
        get(name).add_device("cuda", _cls(name, _PredicateCuda))
    for name, fn in {"round": RoundCudaFunction, "logit": LogitCudaFunction, "tanhshrink": TanhshrinkCudaFunction,
                     "lerp": LerpCudaFunction, "elu": EluCudaFunction, "softplus": SoftplusCudaFunction,
                     "hardtanh": HardtanhCudaFunction, "threshold": ThresholdCudaFunction,
                     "softshrink": _shrink("softshrink"), "hardshrink": _shrink("hardshrink"),
                     "prelu": PreluCudaFunction, "glu": GluCudaFunction}.items():
        get(name).add_device("cuda", fn)
    get("selu").add_device("cuda", _cls("selu", _EluFamilyCuda, cpu=SeluFunction,
                                        forward=staticmethod(lambda ctx, x: _EluFamilyCuda.forward(ctx, x))))
    get("celu").add_device("cuda", _cls("celu", _EluFamilyCuda, cpu=CeluFunction, forward=staticmethod(
        lambda ctx, x, alpha=1.0: _EluFamilyCuda.forward(ctx, x, alpha))))


# every name registered here: the ops tests/test_cuda_nn.py lists
OPS = sorted([*UNARY, *BINARY, *PREDICATES, "round", "logit", "tanhshrink", "lerp", "elu", "selu", "celu", "softplus",
              "hardtanh", "threshold", "softshrink", "hardshrink", "prelu", "glu"])
_register()
