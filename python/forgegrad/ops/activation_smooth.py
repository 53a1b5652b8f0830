"""The smooth activations elu (``alpha``) and softplus (``beta``, ``threshold``), torch's formulas: forward,
gradient, double-backward rule, ONNX mapping and samples of each, in one place (nn.ELU and nn.Softplus are their
modules, F.elu and F.softplus their functions).

- elu:      ``x`` where x > 0, else ``alpha * (exp(x) - 1)``; for alpha >= 0 its gradient is read from the output
  (y + alpha where y <= 0, else 1; a NaN gets 1, as torch's), so that ``elu(x, inplace=True)`` saves no copy; a
  negative alpha makes y positive for x < 0, so there it is read from the input (alpha * exp(x) where x <= 0);
- softplus: ``log(1 + exp(beta * x)) / beta``, or ``x`` where beta * x > threshold (torch's linear tail); its
  gradient is sigmoid(beta * x) (1 on the tail).

float32 runs the C++ kernels of forgegrad.kernels.activation_more (the same formulas); other dtypes numpy.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from .._validate import check_float
from ..kernels import activation_more as _KM
from . import _meta as M
from . import _samples as S
from .registry import BadInput, Sample, register_op


def _float(x):
    return x if x.dtype.kind == "f" else x.astype(np.float32)


def _f32(*arrays):
    return all(a.dtype == np.float32 for a in arrays)


def _elu_samples():
    return [Sample((S.rand(3, 7),)), Sample((S.rand(2, 5, 9, seed=1),), {"alpha": 0.5}, "alpha=0.5"),
            Sample((S.rand(1, seed=2),), {"alpha": 2.0}, "alpha=2"),
            Sample((S.rand(3, 4, seed=5),), {"alpha": -0.5}, "alpha=-0.5"),
            Sample((S.rand(*S.LARGE, seed=3),), {}, "large")]


def _elu_onnx(ctx, op):
    return [ctx.node("Elu", [op.input("x", np.float32)], alpha=float(op.attr("alpha", 1.0)))]


def _output_or(ctx, recompute):
    """The node's output as the double-backward pass met it in the graph, else recomputed."""
    t = ctx.__dict__.get("graph_outputs", {}).get(0)
    return t if t is not None else recompute()


def _elu_rule(ctx, args, kwargs, g):
    from ._double_backward import _arg, _where
    from .registry import _OPS
    x = args[0]
    alpha = _arg(args, kwargs, 1, "alpha", 1.0)
    if alpha < 0:  # y + alpha is not the slope where y > 0 for x < 0: read from x
        slope = _where(x._data <= 0, x, 0.0).exp() * alpha  # no inf * 0 or NaN where x takes the other branch
        v = x._data
    else:
        slope = _output_or(ctx, lambda: _OPS["elu"](x, alpha=alpha)) + alpha
        v = slope._data - alpha
    # torch's second derivative is 0 at exactly 0 (its mask is strict: v < 0), the slope there a constant; NaN: 1
    return g * _where(v <= 0, _where(v < 0, slope, alpha), 1.0)


@register_op("elu", meta=M.same, flops=M.per_output_element(4), samples=_elu_samples,
             torch=lambda torch, x, alpha=1.0: torch.nn.functional.elu(x, alpha),
             bad_inputs=lambda: [BadInput((S.rand(2, 3),), {"alpha": "1"}, TypeError, "alpha")],
             onnx=_elu_onnx, differentiable_backward=_elu_rule)
class EluFunction(Function):
    """elu(x, alpha) = x where x > 0, else alpha * expm1(x); the gradient read from the output."""

    @staticmethod
    def forward(ctx, x, alpha=1.0):
        alpha = check_float(alpha, "alpha")
        x = _float(x)
        if _f32(x):
            y = _KM.pointwise("elu", x, 1.0, alpha, 1.0)
        else:
            y = np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))).astype(x.dtype, copy=False)
        ctx.save_for_backward(y if alpha >= 0 else x)  # see the module's docstring
        ctx.alpha = alpha
        return y

    @staticmethod
    def backward(ctx, g):
        (v,) = ctx.saved_tensors
        alpha = ctx.alpha
        if _f32(g, v):
            if alpha >= 0:
                return _KM.pointwise_backward("elu_from_output", g, v, alpha)
            return _KM.pointwise_backward("elu", g, v, 1.0, alpha, 1.0)
        slope = v + alpha if alpha >= 0 else alpha * np.exp(np.minimum(v, 0))
        return (g * np.where(v <= 0, slope, 1.0)).astype(g.dtype, copy=False)


def _softplus_samples():
    return [Sample((S.rand(3, 7),)), Sample((S.rand(2, 5, 9, seed=1),), {"beta": 2.0}, "beta=2"),
            Sample((S.rand(4, 6, seed=2, low=-8, high=8),), {"beta": 1.5, "threshold": 3.0}, "linear tail"),
            Sample((S.rand(1, seed=4),), {"beta": 0.5}, "beta=0.5"),
            Sample((S.rand(*S.LARGE, seed=3),), {}, "large")]


def _softplus_parts(x, beta, threshold):
    beta, threshold = check_float(beta, "beta"), check_float(threshold, "threshold")
    return _float(x), beta, threshold


def _softplus_onnx(ctx, op):
    """Where(beta x > threshold, x, Softplus(beta x) / beta) (ONNX's Softplus has no beta or threshold)."""
    f32 = np.float32
    beta, threshold = float(op.attr("beta", 1.0)), float(op.attr("threshold", 20.0))
    x = op.input("x", f32)
    bx = ctx.node("Mul", [x, ctx.const(np.asarray(beta, f32))])
    soft = ctx.node("Div", [ctx.node("Softplus", [bx]), ctx.const(np.asarray(beta, f32))])
    return [ctx.node("Where", [ctx.node("Greater", [bx, ctx.const(np.asarray(threshold, f32))]), x, soft])]


def _softplus_rule(ctx, args, kwargs, g):
    from ._double_backward import _arg, _flat, _where
    x = args[0]
    beta, threshold = _arg(args, kwargs, 1, "beta", 1.0), _arg(args, kwargs, 2, "threshold", 20.0)
    bx = x * beta
    # at beta x == threshold exactly the slope is sigmoid (the forward's switch is strict) but torch's second
    # derivative is 0 (its mask is strict too: beta x < threshold): a constant there
    sig = _where(bx._data < threshold, bx.sigmoid(), _flat(bx, lambda v: 0.5 * (1.0 + np.tanh(0.5 * v))))
    return g * _where(bx._data > threshold, 1.0, sig)


@register_op("softplus", meta=M.same, flops=M.per_output_element(6), samples=_softplus_samples,
             torch=lambda torch, x, beta=1.0, threshold=20.0: torch.nn.functional.softplus(x, beta, threshold),
             bad_inputs=lambda: [BadInput((S.rand(2, 3),), {"beta": None}, TypeError, "beta"),
                                 BadInput((S.rand(2, 3),), {"threshold": "20"}, TypeError, "threshold")],
             onnx=_softplus_onnx, differentiable_backward=_softplus_rule, tol=(2e-5, 1e-5))
class SoftplusFunction(Function):
    """softplus(x, beta, threshold) = log1p(exp(beta x)) / beta, x where beta x > threshold."""

    @staticmethod
    def forward(ctx, x, beta=1.0, threshold=20.0):
        x, beta, threshold = _softplus_parts(x, beta, threshold)
        ctx.save_for_backward(x)
        ctx.beta_threshold = (beta, threshold)
        if _f32(x):
            return _KM.pointwise("softplus", x, beta, threshold)
        bx = x * x.dtype.type(beta)
        # log1p(exp(z)) = max(z, 0) + log1p(exp(-|z|)): no overflow for a large z
        soft = (np.maximum(bx, 0) + np.log1p(np.exp(-np.abs(bx)))) / x.dtype.type(beta)
        return np.where(bx > threshold, x, soft).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        beta, threshold = ctx.beta_threshold
        if _f32(g, x):
            return _KM.pointwise_backward("softplus", g, x, beta, threshold)
        bx = x * x.dtype.type(beta)
        sig = 0.5 * (1.0 + np.tanh(0.5 * bx))  # sigmoid(bx) without overflow
        return (g * np.where(bx > threshold, 1.0, sig)).astype(g.dtype, copy=False)


for _fn in (EluFunction, SoftplusFunction):
    _fn.op.float64 = _fn  # numpy in the input's dtype: float64 runs the same Function


def elu(input, alpha: float = 1.0, inplace: bool = False):
    """``torch.nn.functional.elu``: input where > 0, else alpha * (exp(input) - 1) (``inplace=True``: written into
    ``input``)."""
    from ..nn.functional import _maybe_inplace
    alpha = check_float(alpha, "alpha")
    return _maybe_inplace(input, inplace, "elu", lambda t: EluFunction.op(t, alpha=alpha))


def softplus(input, beta: float = 1.0, threshold: float = 20.0):
    """``torch.nn.functional.softplus``: log(1 + exp(beta * input)) / beta, linear where beta * input > threshold."""
    from ..nn.functional_conv import _t
    return SoftplusFunction.op(_t(input, "input"), beta=check_float(beta, "beta"),
                               threshold=check_float(threshold, "threshold"))


EluFunction.op.functional = elu
SoftplusFunction.op.functional = softplus
