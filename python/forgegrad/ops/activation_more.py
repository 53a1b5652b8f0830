"""The activations mish, logsigmoid, selu, celu (``alpha``), softsign, tanhshrink, glu (``dim``) and softmin
(``dim``), torch's formulas: forward, gradient, double-backward rule, ONNX mapping and samples of each (their
modules are in nn/activation_extra.py, their functions here, served by nn.functional).

float32 runs the C++ kernels of forgegrad.kernels.activation_more (mish, logsigmoid, selu, celu, softsign,
tanhshrink: the same formulas), softmin the C++ softmax row kernel on -x; other dtypes numpy in the input's dtype
(float64 runs the same Function), glu numpy for every dtype. Gradients at the kinks as torch's: selu and celu
take the x <= 0 side at 0 (selu: scale * alpha, celu: 1), and, as elu's, their second derivative is 0 there
(torch's mask is strict). softsign and tanhshrink are composites in torch: their gradients here are torch's
composite formulas term by term, so that float64 agrees to the last bits.
"""
from __future__ import annotations

import warnings

import numpy as np

from ..autograd import Function
from .._validate import check_float
from ..kernels import activation_more as _KM
from ..kernels import activation_param as _KP
from . import _meta as M
from . import _samples as S
from .activation import _RowwiseFunction, _softmax_reference
from .activation_hard import at_kinks
from .registry import BadInput, Sample, register_op

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _float(x):
    return x if x.dtype.kind == "f" else x.astype(np.float32)


def _f32(*arrays):
    return all(a.dtype == np.float32 for a in arrays)


def _unary_samples(low=-5.0, high=5.0, kinks=(0.0,), extra=()):
    def samples():
        return [Sample((at_kinks(S.rand(3, 7, low=low, high=high), *kinks),), {}, "kinks"),
                Sample((S.rand(2, 5, 9, seed=1, low=low, high=high),)), Sample((S.rand(1, seed=2),)),
                Sample((S.rand(*S.LARGE, seed=3, low=low, high=high),), {}, "large"), *extra]

    return samples


def _t(input):
    from ..nn.functional_conv import _t
    return _t(input, "input")


def _inplace(input, inplace, name, compute):
    from ..nn.functional import _maybe_inplace
    return _maybe_inplace(input, inplace, name, compute)


# ---- mish -------------------------------------------------------------------------------------------------------
def _mish_parts(x):
    xd = x.astype(np.float64)
    with np.errstate(over="ignore"):  # exp(x) = inf for a large x: log1p(inf) = inf, tanh(inf) = 1, as torch's
        t = np.tanh(np.log1p(np.exp(xd)))
    return xd, t


def _mish_onnx(ctx, op):
    x = op.input("x", np.float32)
    if ctx.opset >= 18:
        return [ctx.node("Mish", [x])]
    return [ctx.node("Mul", [x, ctx.node("Tanh", [ctx.node("Softplus", [x])])])]  # Mish's definition


def _mish_rule(ctx, args, kwargs, g):
    from .registry import _OPS
    x = args[0]
    t = _OPS["softplus"](x).tanh()
    return g * (t + x * x.sigmoid() * (1 - t * t))


@register_op("mish", meta=M.same, flops=M.per_output_element(8),
             samples=_unary_samples(-30.0, 30.0, kinks=(0.0, 90.0, -90.0, 20.0, -20.0)),
             torch=lambda torch, x: torch.nn.functional.mish(x), onnx=_mish_onnx,
             differentiable_backward=_mish_rule)
class MishFunction(Function):
    """mish(x) = x * tanh(softplus(x))."""

    @staticmethod
    def forward(ctx, x):
        x = _float(x)
        ctx.save_for_backward(x)
        if _f32(x):
            return _KM.pointwise("mish", x)
        xd, t = _mish_parts(x)
        return (xd * t).astype(x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        if _f32(g, x):
            return _KM.pointwise_backward("mish", g, x)
        xd, t = _mish_parts(x)
        sig = 0.5 * (1.0 + np.tanh(0.5 * xd))  # sigmoid without overflow
        return (g * (t + xd * sig * (1.0 - t * t))).astype(g.dtype)


# ---- logsigmoid -------------------------------------------------------------------------------------------------
def _logsigmoid_onnx(ctx, op):
    x = op.input("x", np.float32)
    return [ctx.node("Neg", [ctx.node("Softplus", [ctx.node("Neg", [x])])])]  # no underflow to log(0)


@register_op("logsigmoid", meta=M.same, flops=M.per_output_element(5),
             samples=_unary_samples(-30.0, 30.0, kinks=(0.0, -100.0, 100.0)),
             torch=lambda torch, x: torch.nn.functional.logsigmoid(x), onnx=_logsigmoid_onnx,
             differentiable_backward=lambda ctx, args, kwargs, g: g * (-args[0]).sigmoid())
class LogsigmoidFunction(Function):
    """logsigmoid(x) = log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|)); gradient sigmoid(-x)."""

    @staticmethod
    def forward(ctx, x):
        x = _float(x)
        ctx.save_for_backward(x)
        if _f32(x):
            return _KM.pointwise("logsigmoid", x)
        return (np.minimum(x, 0) - np.log1p(np.exp(-np.abs(x)))).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        if _f32(g, x):
            return _KM.pointwise_backward("logsigmoid", g, x)
        z = np.exp(-np.abs(x))
        # torch's form: (x < 0) - sign * z / (1 + z), sign = 1 where x < 0, else -1
        neg = x < 0
        return (g * (neg - np.where(neg, 1, -1) * (z / (1 + z)))).astype(g.dtype, copy=False)


# ---- selu / celu (elu's family: x where x > 0, else negcoef * expm1(x * input_scale), all times scale) -------------
def _elu_family_rule(coefs):
    def rule(ctx, args, kwargs, g):
        from ._double_backward import _where
        x = args[0]
        scale, negcoef, input_scale = coefs(args, kwargs)
        v = x._data
        # exp only where x <= 0 (no inf * 0 where x takes the other branch)
        slope = (_where(v <= 0, x, 0.0) * input_scale).exp() * (negcoef * input_scale * scale)
        # at 0 the slope is taken from the x <= 0 side, but torch's second derivative there is 0: a constant
        return g * _where(v <= 0, _where(v < 0, slope, negcoef * input_scale * scale), scale)

    return rule


class _EluFamilyFunction(Function):
    @staticmethod
    def _coefs(*args):  # (scale, negcoef, input_scale) from the forward's arguments
        raise NotImplementedError

    # the input scale torch's gradient formula uses (celu's differs from its forward's, see _celu_backward_scale)
    _backward_input_scale = staticmethod(lambda input_scale, negcoef: input_scale)

    @staticmethod
    def forward(ctx, x, *args):
        scale, negcoef, input_scale = type(ctx)._coefs(*args)
        x = _float(x)
        ctx.save_for_backward(x)
        ctx.coefs = scale, negcoef, input_scale
        dt = x.dtype.type
        if _f32(x):
            return _KM.pointwise("elu", x, dt(scale), dt(negcoef * scale), dt(input_scale))
        neg = np.expm1(np.minimum(x, 0) * dt(input_scale)) * dt(negcoef * scale)
        return np.where(x > 0, x * dt(scale), neg).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        scale, negcoef, input_scale = ctx.coefs
        input_scale = type(ctx)._backward_input_scale(input_scale, negcoef)
        dt = x.dtype.type
        if _f32(g, x):
            return _KM.pointwise_backward("elu", g, x, dt(scale), dt(input_scale * negcoef * scale), dt(input_scale))
        neg = np.exp(np.minimum(x, 0) * dt(input_scale)) * dt(input_scale * negcoef * scale)
        return (g * np.where(x <= 0, neg, dt(scale))).astype(g.dtype, copy=False)


def _selu_coefs(*args):
    return SELU_SCALE, SELU_ALPHA, 1.0


@register_op("selu", meta=M.same, flops=M.per_output_element(4), samples=_unary_samples(),
             torch=lambda torch, x: torch.nn.functional.selu(x),
             onnx=lambda ctx, op: [ctx.node("Selu", [op.input("x", np.float32)], alpha=SELU_ALPHA, gamma=SELU_SCALE)],
             differentiable_backward=_elu_family_rule(lambda args, kwargs: (SELU_SCALE, SELU_ALPHA, 1.0)))
class SeluFunction(_EluFamilyFunction):
    """selu(x) = scale * (x where x > 0, else alpha * (exp(x) - 1)), torch's alpha and scale."""

    _coefs = staticmethod(_selu_coefs)

    @staticmethod
    def forward(ctx, x):
        return _EluFamilyFunction.forward(ctx, x)


def _celu_alpha(alpha):
    # NaN or inf: torch's float32 and float64 kernels disagree at x = 0 (NaN * 0 on one path only), so neither
    # result means anything: refused, naming alpha
    alpha = check_float(alpha, "alpha", finite=True)
    if alpha == 0:
        raise RuntimeError("celu: alpha cannot be 0 (it divides the input)")  # torch's error type
    return alpha


def _celu_coefs(alpha=1.0):
    alpha = _celu_alpha(alpha)
    return 1.0, alpha, 1.0 / alpha


def _celu_backward_scale(input_scale, alpha):
    """torch's celu gradient (derivatives.yaml) scales the input by 1.0 / alpha.toFloat(): alpha rounded to float32
    first, unlike its forward's 1 / alpha in double."""
    return 1.0 / float(np.float32(alpha))


def _celu_rule_coefs(args, kwargs):
    from ._double_backward import _arg
    scale, alpha, _ = _celu_coefs(_arg(args, kwargs, 1, "alpha", 1.0))
    return scale, alpha, _celu_backward_scale(None, alpha)


@register_op("celu", meta=M.same, flops=M.per_output_element(5),
             samples=_unary_samples(extra=(
                 Sample((at_kinks(S.rand(4, 3, 5, seed=4, low=-5, high=5), 0.0),), {"alpha": 2.0}, "alpha=2"),
                 Sample((S.rand(5, 3, seed=5, low=-3, high=3),), {"alpha": 0.3}, "alpha=0.3"))),
             torch=lambda torch, x, alpha=1.0: torch.nn.functional.celu(x, alpha),
             bad_inputs=lambda: [BadInput((S.rand(2, 3),), {"alpha": "1"}, TypeError, "alpha"),
                                 BadInput((S.rand(2, 3),), {"alpha": 0.0}, RuntimeError, "alpha")],
             onnx=lambda ctx, op: [ctx.node("Celu", [op.input("x", np.float32)], alpha=float(op.attr("alpha", 1.0)))],
             differentiable_backward=_elu_family_rule(_celu_rule_coefs))
class CeluFunction(_EluFamilyFunction):
    """celu(x, alpha) = x where x > 0, else alpha * (exp(x / alpha) - 1)."""

    _coefs = staticmethod(_celu_coefs)
    _backward_input_scale = staticmethod(_celu_backward_scale)

    @staticmethod
    def forward(ctx, x, alpha=1.0):
        return _EluFamilyFunction.forward(ctx, x, alpha)


# ---- softsign / tanhshrink (torch's composites) ------------------------------------------------------------------
def _softsign_rule(ctx, args, kwargs, g):
    from ._double_backward import _flat
    from .registry import _OPS
    x = args[0]
    u = _OPS["abs"](x) + 1
    return g / u - g * x / (u * u) * _flat(x, np.sign)  # abs's derivative: sign, with sign(0) = 0


@register_op("softsign", meta=M.same, flops=M.per_output_element(3), samples=_unary_samples(),
             torch=lambda torch, x: torch.nn.functional.softsign(x),
             onnx=lambda ctx, op: [ctx.node("Softsign", [op.input("x", np.float32)])],
             differentiable_backward=_softsign_rule)
class SoftsignFunction(Function):
    """softsign(x) = x / (1 + |x|)."""

    @staticmethod
    def forward(ctx, x):
        x = _float(x)
        ctx.save_for_backward(x)
        if _f32(x):
            return _KM.pointwise("softsign", x)
        return x / (np.abs(x) + x.dtype.type(1))

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        if _f32(g, x):
            return _KM.pointwise_backward("softsign", g, x)
        u = np.abs(x) + x.dtype.type(1)
        # torch's composite x / (|x| + 1): the numerator's term, then the denominator's through abs (sign(0) = 0)
        return (g / u - g * x / (u * u) * np.sign(x)).astype(g.dtype, copy=False)


@register_op("tanhshrink", meta=M.same, flops=M.per_output_element(5), samples=_unary_samples(),
             torch=lambda torch, x: torch.nn.functional.tanhshrink(x),
             onnx=lambda ctx, op: [ctx.node("Sub", [op.input("x", np.float32),
                                                    ctx.node("Tanh", [op.input("x", np.float32)])])],
             differentiable_backward=lambda ctx, args, kwargs, g: g - g * (1 - args[0].tanh() * args[0].tanh()))
class TanhshrinkFunction(Function):
    """tanhshrink(x) = x - tanh(x)."""

    @staticmethod
    def forward(ctx, x):
        x = _float(x)
        if _f32(x):  # the kernel's backward recomputes tanh from x
            ctx.save_for_backward(x)
            return _KM.pointwise("tanhshrink", x)
        t = np.tanh(x)
        ctx.save_for_backward(t)
        return x - t

    @staticmethod
    def backward(ctx, g):
        (saved,) = ctx.saved_tensors
        if _f32(saved):  # saved is x (see forward)
            return _KM.pointwise_backward("tanhshrink", g.astype(np.float32, copy=False), saved)
        t = saved
        return (g - g * (1 - t * t)).astype(g.dtype, copy=False)  # torch's composite x - tanh(x), term by term


# ---- glu --------------------------------------------------------------------------------------------------------
def _glu_axis(x_ndim, shape, dim):
    from ._util import single_axis
    if x_ndim == 0:
        raise RuntimeError("glu: dim: a 0-d input has no dimension to halve")
    axis = single_axis(dim, x_ndim)
    if shape[axis] % 2:
        raise RuntimeError(f"glu: dim: halving dimension must be even, but dimension {dim} is size {shape[axis]}")
    return axis


def _glu_meta(x, dim=-1):
    from ..devices import MetaArray
    axis = _glu_axis(x.ndim, x.shape, dim)
    return MetaArray(tuple(s // 2 if i == axis else s for i, s in enumerate(x.shape)), x.dtype)


def _glu_onnx(ctx, op):
    from ._util import single_axis
    axis = single_axis(op.attr("dim", -1), op.outputs[0].ndim)
    x = op.input("x", np.float32)
    a, b = ctx.node("Split", [x], outputs=2, axis=axis, num_outputs=2 if ctx.opset >= 18 else None)
    return [ctx.node("Mul", [a, ctx.node("Sigmoid", [b])])]


def _glu_rule(ctx, args, kwargs, g):
    from ._double_backward import _arg
    from .registry import _OPS
    x = args[0]
    axis = _glu_axis(x.ndim, x.shape, _arg(args, kwargs, 1, "dim", -1))
    h = x.shape[axis] // 2
    idx_a = tuple(slice(None) if i != axis else slice(0, h) for i in range(x.ndim))
    idx_b = tuple(slice(None) if i != axis else slice(h, None) for i in range(x.ndim))
    a, b = x[idx_a], x[idx_b]
    s = b.sigmoid()
    return _OPS["cat"](g * s, (1 - s) * s * a * g, dim=axis)


@register_op("glu", meta=_glu_meta, flops=M.per_output_element(5),
             samples=lambda: [Sample((S.rand(3, 8),)), Sample((S.rand(4, 5, 3, seed=1),), {"dim": 0}, "dim 0"),
                              Sample((S.rand(2, 6, 5, seed=2),), {"dim": 1}, "dim 1"),
                              Sample((S.rand(2,),), {}, "1-d"), Sample((S.rand(300, 258, seed=3),), {}, "large")],
             torch=lambda torch, x, dim=-1: torch.nn.functional.glu(x, dim),
             bad_inputs=lambda: [BadInput((S.rand(2, 5),), {"dim": 1}, RuntimeError, "dim"),
                                 BadInput((S.rand(2, 4),), {"dim": 2}, IndexError, "dim"),
                                 BadInput((S.rand(2, 4),), {"dim": 1.0}, TypeError, "dim")],
             onnx=_glu_onnx, differentiable_backward=_glu_rule)
class GluFunction(Function):
    """glu(x, dim) = a * sigmoid(b), a and b the halves of x along dim."""

    @staticmethod
    def forward(ctx, x, dim=-1):
        x = _float(x)
        axis = _glu_axis(x.ndim, x.shape, dim)
        ctx.axis = axis
        if x.dtype == np.float32:  # the C++ kernel; its backward recomputes sigmoid(b) from x
            ctx.save_for_backward(x)
            return _KP.glu(x, axis)
        a, b = np.split(x, 2, axis=axis)
        s = (0.5 * (1.0 + np.tanh(0.5 * b))).astype(x.dtype, copy=False)  # sigmoid without overflow
        ctx.save_for_backward(a, s)
        return a * s

    @staticmethod
    def backward(ctx, g):
        saved = ctx.saved_tensors
        if len(saved) == 1:
            return _KP.glu_backward(g.astype(np.float32, copy=False), saved[0], ctx.axis)
        a, s = saved
        return np.concatenate([s * g, (1 - s) * s * a * g], axis=ctx.axis).astype(g.dtype, copy=False)


# ---- softmin ----------------------------------------------------------------------------------------------------
def _softmin_rule(ctx, args, kwargs, g):
    from ._double_backward import _arg
    from .registry import _OPS
    dim = _arg(args, kwargs, 1, "dim", -1)
    y = ctx.__dict__.get("graph_outputs", {}).get(0)
    if y is None:
        y = _OPS["softmin"](args[0], dim=dim)
    return -(y * (g - (g * y).sum(dim=dim, keepdim=True)))


def _softmin_kernel(x):
    from ..kernels import softmax as _KS
    return _KS.softmax(np.negative(x))


def _softmin_kernel_backward(g, y):
    from ..kernels import softmax as _KS
    return np.negative(_KS.softmax_backward(g, y))


@register_op("softmin", meta=M.same, flops=M.per_output_element(6),
             samples=lambda: S.unary()() + [Sample((S.rand(4, 6, 5),), {"dim": 1}, "dim 1"),
                                            Sample((S.rand(4, 6, 5),), {"dim": 0}, "dim 0")],
             torch=lambda torch, x, dim=-1: torch.nn.functional.softmin(x, dim),
             bad_inputs=lambda: [BadInput((S.rand(2, 3),), {"dim": 2}, IndexError, "dim")],
             onnx=lambda ctx, op: [ctx.node("Softmax", [ctx.node("Neg", [op.input("x", np.float32)])],
                                            axis=int(op.attr("dim", -1)) % max(op.outputs[0].ndim, 1))],
             differentiable_backward=_softmin_rule)
class SoftminFunction(_RowwiseFunction):
    """softmin(x, dim) = softmax(-x, dim)."""

    kernel = staticmethod(_softmin_kernel)
    kernel_backward = staticmethod(_softmin_kernel_backward)
    reference = staticmethod(lambda x, axis: _softmax_reference(-x, axis))
    reference_backward = staticmethod(lambda g, y, axis: -(y * (g - np.sum(g * y, axis=axis, keepdims=True))))


for _fn in (MishFunction, LogsigmoidFunction, SeluFunction, CeluFunction, SoftsignFunction, TanhshrinkFunction,
            GluFunction, SoftminFunction):
    _fn.op.float64 = _fn  # numpy in the input's dtype: float64 runs the same Function


# ---- torch.nn.functional entry points ---------------------------------------------------------------------------
def mish(input, inplace: bool = False):
    """``torch.nn.functional.mish``: input * tanh(softplus(input))."""
    return _inplace(input, inplace, "mish", lambda t: MishFunction.op(t))


def logsigmoid(input):
    """``torch.nn.functional.logsigmoid``: log(sigmoid(input)), without underflow."""
    return LogsigmoidFunction.op(_t(input))


def selu(input, inplace: bool = False):
    """``torch.nn.functional.selu``: scale * elu(input, alpha), torch's constants."""
    return _inplace(input, inplace, "selu", lambda t: SeluFunction.op(t))


def celu(input, alpha: float = 1.0, inplace: bool = False):
    """``torch.nn.functional.celu``: input where > 0, else alpha * (exp(input / alpha) - 1)."""
    alpha = _celu_alpha(alpha)
    return _inplace(input, inplace, "celu", lambda t: CeluFunction.op(t, alpha=alpha))


def softsign(input):
    """``torch.nn.functional.softsign``: input / (1 + |input|)."""
    return SoftsignFunction.op(_t(input))


def tanhshrink(input):
    """``torch.nn.functional.tanhshrink``: input - tanh(input)."""
    return TanhshrinkFunction.op(_t(input))


def glu(input, dim: int = -1):
    """``torch.nn.functional.glu``: a * sigmoid(b), a and b the halves of input along dim (of even size)."""
    return GluFunction.op(_t(input), dim=dim)


def softmax_dim(ndim: int, name: str) -> int:
    """torch's implicit dim of softmax-like ops called without one (deprecated there too: warns)."""
    warnings.warn(f"Implicit dimension choice for {name} has been deprecated. Change the call to include dim=X "
                  "as an argument.", UserWarning, stacklevel=3)
    return 0 if ndim in (0, 1, 3) else 1


def softmin(input, dim=None, _stacklevel: int = 3, dtype=None):
    """``torch.nn.functional.softmin``: softmax(-input, dim); dim=None picks torch's implicit dim (warning)."""
    input = _t(input)
    if dim is None:
        dim = softmax_dim(input.ndim, "softmin")
    if dtype is not None:
        input = input.to(dtype)
    return SoftminFunction.op(input, dim=dim)


MishFunction.op.functional = mish
LogsigmoidFunction.op.functional = logsigmoid
SeluFunction.op.functional = selu
CeluFunction.op.functional = celu
SoftsignFunction.op.functional = softsign
TanhshrinkFunction.op.functional = tanhshrink
GluFunction.op.functional = glu
SoftminFunction.op.functional = softmin
