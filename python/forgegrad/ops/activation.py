"""Activations, softmax and dropout.

float32 arrays go through the C++ SIMD kernels (forgegrad.kernels.activation / .softmax); other
dtypes keep the numpy formulas below.
"""
from __future__ import annotations

import math

import numpy as np

from .. import _C
from ..autograd import Function
from ..kernels import activation as _K
from ..kernels import float64 as _K64
from ..kernels import softmax as _KS
from . import _cuda_nn as _CN
from . import _cuda_pointwise as _CP
from . import _meta as M
from . import _samples as S
from ._util import dropout_keep, float_of_bool, single_axis
from .registry import BadInput, Sample, register_op

_ACT = _C.activation
_F32 = np.dtype(np.float32)


def _f32(x) -> bool:
    return x.dtype == np.float32


def _activation_kernel(function, code, alpha_of=None):
    """Give an activation op its kernel code, once: the record's ``epilogue`` (``(code, alpha)`` from
    the op's keyword arguments, for Linear layers that apply it in place) and its no-graph forward
    (the C++ kernel straight on a float32 array; other dtypes take the Function's numpy formula)."""

    def epilogue(*args, **kwargs):
        return (code(*args, **kwargs) if callable(code) else code,
                0.0 if alpha_of is None else alpha_of(*args, **kwargs))

    if not callable(code) and alpha_of is None:  # no arguments: one constant (on the batch-1 hot path)
        constant = (code, 0.0)

        def epilogue(*args, **kwargs):
            return constant

    def run(x, *args, **kwargs):
        if type(x) is np.ndarray and x.dtype is _F32:
            op_code, alpha = epilogue(*args, **kwargs)
            return _K._forward(op_code, x, None, alpha)
        # other dtypes: the Function's own forward on a throwaway ctx of its class (forwards that
        # look up their kernel or reference on type(ctx) need the class)
        ctx = function.__new__(function)
        ctx.needs_input_grad = (False,) * (1 + len(args))
        return function.forward(ctx, x, *args, **kwargs)

    if not callable(code) and alpha_of is None:
        general = run
        act_forward = _ACT.act_forward

        def run(x, *args, **kwargs):  # (no arguments: a contiguous float32 array straight to the kernel)
            if type(x) is np.ndarray and x.dtype is _F32 and not args and not kwargs:
                flags = x.flags
                if flags.c_contiguous and flags.aligned:
                    out = np.empty(x.shape, _F32)
                    act_forward(code, x, out, 0.0)
                    return out
            return general(x, *args, **kwargs)

    function.op.epilogue = epilogue
    function.op.set_inference("cpu", run)


def _torch_F():
    import torch.nn.functional as F
    return F


_UNARY_FLOPS = M.per_output_element(1)
_TRANSCENDENTAL_FLOPS = M.per_output_element(4)


class _KernelActivationFunction(Function):
    """An activation without arguments: its C++ kernel on float32 input, numpy's ``reference`` for
    other dtypes; backward from the saved forward output y (relu, sigmoid, tanh) or input x (silu)."""

    saves_output = True
    kernel64 = kernel64_backward = None  # float64 C++ kernels, where the op has them (relu)

    @staticmethod
    def forward(ctx, x):
        cls = type(ctx)
        if _f32(x):
            y = cls.kernel(x)
        elif cls.kernel64 is not None and _f64(x):
            y = cls.kernel64(x)
        else:
            y = cls.reference(x)
        ctx.save_for_backward(y if cls.saves_output else x)
        return y

    @staticmethod
    def backward(ctx, g):
        cls = type(ctx)
        (saved,) = ctx.saved_tensors
        if _f32(g) and _f32(saved):
            return cls.kernel_backward(g, saved)
        if cls.kernel64_backward is not None and _f64(g) and _f64(saved):
            return cls.kernel64_backward(g, saved)
        return cls.reference_backward(g, saved)


def _f64(a):
    return type(a) is np.ndarray and a.dtype == np.float64


def _kernel_activation(name, kernel, kernel_backward, reference, reference_backward, flops, saves_output=True,
                       **fields):
    title = name.title()
    cls = type(f"{title}Function", (_KernelActivationFunction,), {
        "__module__": __name__, "__qualname__": f"{title}Function", "__doc__": f"{name}(x) elementwise.",
        "kernel": staticmethod(kernel), "kernel_backward": staticmethod(kernel_backward),
        "reference": staticmethod(reference), "reference_backward": staticmethod(reference_backward),
        "saves_output": saves_output})
    return register_op(name, meta=M.same, flops=flops, samples=S.unary(),
                       torch=lambda torch, x: getattr(_torch_F(), name)(x), **fields)(cls)


def _sigmoid_reference(x):
    e = np.exp(-np.abs(x))  # exp of a non-positive number only: no overflow for large |x|
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32, copy=False)


def _silu_reference_backward(g, x):
    s = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    return (g * s * (1.0 + x * (1.0 - s))).astype(_float_of(x))


def _float_of(x):
    """The result dtype of a numpy formula on x: float64 stays float64, anything else is float32."""
    return x.dtype if x.dtype == np.float64 else _F32


def _onnx_silu(ctx, op):
    x = op.input("x")
    return [ctx.node("Mul", [x, ctx.node("Sigmoid", [x])])]  # ONNX has no SiLU operator before opset 24


def silu(input, inplace: bool = False):
    """``torch.nn.functional.silu``: input * sigmoid(input) (``inplace=True``: written into ``input``)."""
    if inplace:
        from ..nn.functional import _maybe_inplace
        return _maybe_inplace(input, inplace, "silu", lambda t: SiluFunction.op(t))
    return SiluFunction.op(input)


def _relu_reference(x):
    if x.dtype == np.bool_:
        raise TypeError("relu: bool input is not supported (as torch); convert it first, e.g. x.float()")
    return np.maximum(x, 0, dtype=x.dtype)


# name, kernel, its backward, numpy forward and backward (other dtypes), FLOPs
ReluFunction = _kernel_activation("relu", _K.relu, _K.relu_backward, _relu_reference,
                                  lambda g, y: g * ~(y <= 0),  # threshold_backward's y <= 0: g at NaN
                                  _UNARY_FLOPS)
ReluFunction.kernel64, ReluFunction.kernel64_backward = staticmethod(_K64.relu), staticmethod(_K64.relu_backward)
SigmoidFunction = _kernel_activation("sigmoid", _K.sigmoid, _K.sigmoid_backward, float_of_bool(_sigmoid_reference),
                                     lambda g, y: g * y * (1 - y), _TRANSCENDENTAL_FLOPS)
TanhFunction = _kernel_activation("tanh", _K.tanh, _K.tanh_backward, float_of_bool(np.tanh),
                                  lambda g, y: g * (1 - y * y), _TRANSCENDENTAL_FLOPS)
SiluFunction = _kernel_activation("silu", _K.silu, _K.silu_backward,
                                  lambda x: (x / (1.0 + np.exp(-x.astype(np.float64)))).astype(_float_of(x)),
                                  _silu_reference_backward, _TRANSCENDENTAL_FLOPS, saves_output=False,
                                  onnx=_onnx_silu, functional=silu)


@register_op("leaky_relu", meta=M.same, flops=_UNARY_FLOPS,
             samples=lambda: S.unary()() + [Sample((S.rand(3, 7),), {"negative_slope": 0.2}, "slope 0.2")],
             torch=lambda torch, x, negative_slope=0.01: _torch_F().leaky_relu(x, negative_slope),
             bad_inputs=lambda: [BadInput((S.rand(2, 3),), {"negative_slope": "a"}, TypeError, "negative_slope")])
class LeakyReluFunction(Function):
    @staticmethod
    def forward(ctx, x, negative_slope=0.01):
        ctx.save_for_backward(x)
        # a local, not ctx.slope: the no-graph path's ctx is thrown away
        ctx.slope = slope = np.float32(negative_slope)
        ctx.slope_value = negative_slope
        if _f32(x):
            return _K.leaky_relu(x, float(negative_slope))
        if x.dtype == np.float64:  # the slope in double, as torch's double kernel
            return np.where(x > 0, x, x * float(negative_slope))
        return np.where(x > 0, x, x * slope).astype(np.float32, copy=False)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        if _f32(g) and _f32(x):
            return _K.leaky_relu_backward(g, x, float(ctx.slope))
        if x.dtype == np.float64:
            return np.where(x > 0, g, g * float(ctx.slope_value))
        return np.where(x > 0, g, g * ctx.slope).astype(np.float32, copy=False)


def _erf(x: np.ndarray) -> np.ndarray:
    """erf in float64 via numpy-only math (max abs error ~1.2e-7, W. J. Cody's rational form would be
    tighter; this is Numerical Recipes' erfc Chebyshev fit, accurate to 1.2e-7 everywhere)."""
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    r = t * np.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
    return np.where(x >= 0, 1.0 - r, r - 1.0)


_erf_exact = np.frompyfunc(math.erf, 1, 1)


def _erf_for(x):
    """erf for x's dtype: float64 needs math.erf's full precision (elementwise in Python: correct,
    not fast); the fit above is exact to float32 rounding."""
    if x.dtype == np.float64:
        return lambda v: _erf_exact(v).astype(np.float64)
    return _erf


@register_op("gelu", meta=M.same, flops=_TRANSCENDENTAL_FLOPS,
             samples=lambda: S.unary()() + [Sample((S.rand(3, 7),), {"approximate": "tanh"}, "tanh")],
             torch=lambda torch, x, approximate="none": _torch_F().gelu(x, approximate=approximate),
             bad_inputs=lambda: [BadInput((S.rand(2, 3),), {"approximate": "erf"}, ValueError, "approximate")])
class GeluFunction(Function):
    """GELU, exact form x * Phi(x) (torch's default approximate='none'), or 'tanh'."""

    @staticmethod
    def forward(ctx, x, approximate="none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
        ctx.save_for_backward(x)
        ctx.approximate = approximate
        if _f32(x):
            return _K.gelu(x, approximate)
        xd = x.astype(np.float64)
        if approximate == "tanh":
            y = 0.5 * xd * (1.0 + np.tanh(0.7978845608028654 * (xd + 0.044715 * xd ** 3)))
        else:
            y = 0.5 * xd * (1.0 + _erf_for(x)(xd * 0.7071067811865476))
        return y.astype(_float_of(x))

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        if _f32(g) and _f32(x):
            return _K.gelu_backward(g, x, ctx.approximate)
        xd = x.astype(np.float64)
        if ctx.approximate == "tanh":
            k = 0.7978845608028654
            u = k * (xd + 0.044715 * xd ** 3)
            t = np.tanh(u)
            d = 0.5 * (1 + t) + 0.5 * xd * (1 - t * t) * k * (1 + 3 * 0.044715 * xd * xd)
        else:
            cdf = 0.5 * (1.0 + _erf_for(x)(xd * 0.7071067811865476))
            pdf = np.exp(-0.5 * xd * xd) * 0.3989422804014327
            d = cdf + xd * pdf
        return (g * d).astype(_float_of(x))


def _onnx_silu(ctx, op):
    x = op.input("x")
    return [ctx.node("Mul", [x, ctx.node("Sigmoid", [x])])]  # ONNX has no SiLU operator before opset 24


def silu(input):
    """``torch.nn.functional.silu``: input * sigmoid(input)."""
    return SiluFunction.op(input)


def _rows_last(x, axis):
    """x with `axis` moved last, C-contiguous (rows of the kernels)."""
    if axis == x.ndim - 1:
        return x
    return np.ascontiguousarray(np.moveaxis(x, axis, -1))


def _from_last(y, axis, ndim):
    return y if axis == ndim - 1 else np.moveaxis(y, -1, axis)


def _softmax_reference(x, axis):
    z = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=axis, keepdims=True)


def _log_softmax_reference(x, axis):
    z = x - np.max(x, axis=axis, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))


class _RowwiseFunction(Function):
    """softmax and log_softmax along ``dim``: float32 input runs the C++ row kernel on ``dim`` moved
    last, other dtypes numpy's ``reference(x, axis)``. y is saved for backward, in the moved layout
    when the kernel made it; the gradient is the C++ row kernel when forward used it and g is
    float32, else ``reference_backward(g, y, axis)`` on y in g's layout."""

    @staticmethod
    def forward(ctx, x, dim=-1):
        cls = type(ctx)
        axis = single_axis(dim, x.ndim)
        ctx.axis = axis
        ctx.kernel = bool(_f32(x) and x.ndim > 0)
        if ctx.kernel:
            y = cls.kernel(_rows_last(x, axis))  # y in the moved layout
            ctx.save_for_backward(y)
            return _from_last(y, axis, x.ndim)
        y = cls.reference(x, axis)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        cls = type(ctx)
        (y,) = ctx.saved_tensors
        if ctx.kernel and _f32(g):
            return _from_last(cls.kernel_backward(_rows_last(g, ctx.axis), y), ctx.axis, g.ndim)
        if ctx.kernel:
            y = _from_last(y, ctx.axis, g.ndim)
        return cls.reference_backward(g, y, ctx.axis)


def _rowwise(name, kernel, kernel_backward, reference, reference_backward, bad_dim):
    title = "".join(part.title() for part in name.split("_"))
    cls = type(f"{title}Function", (_RowwiseFunction,), {
        "__module__": __name__, "__qualname__": f"{title}Function", "__doc__": f"{name}(x, dim) along dim.",
        "kernel": staticmethod(kernel), "kernel_backward": staticmethod(kernel_backward),
        "reference": staticmethod(reference), "reference_backward": staticmethod(reference_backward)})
    return register_op(
        name, meta=M.same, flops=M.per_output_element(5),
        samples=lambda: S.unary()() + [Sample((S.rand(4, 6, 5),), {"dim": 1}, "dim 1"),
                                       Sample((S.rand(4, 6, 5),), {"dim": 0}, "dim 0")],
        torch=lambda torch, x, dim=-1: getattr(torch, name)(x, dim),
        bad_inputs=lambda: [BadInput((S.rand(2, 3),), {"dim": bad_dim}, IndexError, "dim")])(cls)


def _rowwise_inference(function, log):
    """softmax / log_softmax without a graph: a C-contiguous float32 array along its last dim goes straight to the
    row kernel (what forward does there, without its context); anything else runs forward on a throwaway one."""
    kernel = _C.softmax.softmax_forward

    def run(x, *args, **kwargs):
        if args:
            dim = args[0] if len(args) == 1 and not kwargs else None
        else:
            dim = kwargs.get("dim", -1) if not kwargs or len(kwargs) == 1 and "dim" in kwargs else None
        if type(x) is np.ndarray and x.dtype is _F32 and type(dim) is int and x.ndim and (
                dim == -1 or dim == x.ndim - 1):
            flags = x.flags
            if flags.c_contiguous and flags.aligned:
                out = np.empty(x.shape, _F32)
                kernel(x, out, log)
                return out
        ctx = function.__new__(function)
        ctx.needs_input_grad = (False,) * (1 + len(args))
        return function.forward(ctx, x, *args, **kwargs)

    function.op.set_inference("cpu", run)


SoftmaxFunction = _rowwise("softmax", _KS.softmax, _KS.softmax_backward, _softmax_reference,
                           lambda g, y, axis: y * (g - np.sum(g * y, axis=axis, keepdims=True)), bad_dim=2)
LogSoftmaxFunction = _rowwise("log_softmax", _KS.log_softmax, _KS.log_softmax_backward, _log_softmax_reference,
                              lambda g, y, axis: g - np.exp(y) * np.sum(g, axis=axis, keepdims=True), bad_dim=-3)
_rowwise_inference(SoftmaxFunction, False)
_rowwise_inference(LogSoftmaxFunction, True)


def _dropout_forward(ctx, x, p, training, zeros_like, keep_on_device, multiply):
    """Inverted dropout on any device: the keep mask drawn on the host (dropout_keep), so a seeded run
    drops the same elements everywhere; ``keep_on_device(keep, x)`` moves it next to x. Saves the mask
    (None when nothing is dropped) as ctx.mask."""
    from .._validate import check_bool, check_float
    p, training = check_float(p, "dropout: p"), check_bool(training, "dropout: training")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        ctx.mask = None
        return x
    if p == 1.0:  # zeros, NaN and inf inputs included
        ctx.mask = zeros_like(x)
        return zeros_like(x)
    ctx.mask = keep_on_device(dropout_keep(x.shape, p), x)
    return multiply(x, ctx.mask)


@register_op("dropout", meta=M.same, flops=M.per_output_element(1),
             samples=lambda: [Sample((S.rand(3, 7),), {"p": 0.3, "training": False}, "eval"),
                              Sample((S.rand(*S.LARGE),), {"p": 0.0, "training": True}, "p=0")],
             torch=lambda torch, x, p=0.5, training=True: _torch_F().dropout(x, p, training),
             bad_inputs=lambda: [BadInput((S.rand(2, 3),), {"p": 1.5}, ValueError, "probability")],
             gaps={"onnx": "exported only in eval mode, where it is the identity (no node)"})
class DropoutFunction(Function):
    """Inverted dropout: zero each element with probability p, scale the rest by 1/(1-p)."""

    is_view = True  # in eval mode or at p=0 the output is the input itself, as torch's: a write into one is in both

    @staticmethod
    def forward(ctx, x, p=0.5, training=True):
        out = _dropout_forward(ctx, x, p, training, np.zeros_like, lambda keep, x: keep, np.multiply)
        # (the float32 mask would widen a float16 / bfloat16 input: its product rounded back, as torch's)
        return out if out.dtype == x.dtype else out.astype(x.dtype)

    @staticmethod
    def backward(ctx, g):
        return g if ctx.mask is None else g * ctx.mask


# The cuda device: kernels of forgegrad._C.cuda_pointwise on DeviceArrays (ops/_cuda_pointwise.py),
# whose per-element math is the shared host/device code the CPU kernels' portable build runs.
ReluCudaFunction = _CP.activation_function("relu", _ACT.RELU, saves_output=True)
ReluFunction.op.add_device("cuda", ReluCudaFunction)
SigmoidFunction.op.add_device("cuda", _CP.activation_function("sigmoid", _ACT.SIGMOID, saves_output=True))
TanhFunction.op.add_device("cuda", _CP.activation_function("tanh", _ACT.TANH, saves_output=True))
SiluFunction.op.add_device("cuda", _CP.activation_function("silu", _ACT.SILU, saves_output=False))
LeakyReluFunction.op.add_device("cuda", _CP.LeakyReluCudaFunction)
GeluFunction.op.add_device("cuda", _CP.GeluCudaFunction)


class DropoutCudaFunction(Function):
    """dropout on cuda: the CPU's keep mask (drawn on the host by forgegrad's generator, so a seeded
    run drops the same elements on both devices), copied to the GPU and multiplied in."""

    @staticmethod
    def forward(ctx, x, p=0.5, training=True):
        from .. import cuda
        return _dropout_forward(ctx, x, p, training, lambda a: cuda.zeros(a.shape, device=a.device),
                                lambda keep, a: cuda.to_device(keep, a.device), lambda a, b: _CN.pw("mul", a, b))

    @staticmethod
    def backward(ctx, g):
        return g if ctx.mask is None else _CN.pw("mul", g, ctx.mask)


DropoutFunction.op.add_device("cuda", DropoutCudaFunction)

# Kernel codes: the no-graph forward (Function.apply's inference shortcut) and the Linear epilogue.
_activation_kernel(ReluFunction, _ACT.RELU)
_activation_kernel(SigmoidFunction, _ACT.SIGMOID)
_activation_kernel(TanhFunction, _ACT.TANH)
_activation_kernel(SiluFunction, _ACT.SILU)
_activation_kernel(LeakyReluFunction, _ACT.LEAKY_RELU, lambda negative_slope=0.01: _K._slope(negative_slope))
_activation_kernel(GeluFunction, lambda approximate="none": _K._gelu_op(approximate))
