"""The robust regression losses: smooth_l1_loss (``beta``) and huber_loss (``delta``), torch's formulas.

With d = input - target:

- smooth_l1: ``0.5 * d**2 / beta`` where ``|d| < beta``, else ``|d| - 0.5 * beta`` (beta = 0 is l1_loss);
- huber:     ``0.5 * d**2`` where ``|d| < delta``, else ``delta * (|d| - 0.5 * delta)`` (= beta * smooth_l1).

Each op's forward, gradient, double-backward decomposition, ONNX mapping and samples sit here; the module
forms are nn.SmoothL1Loss and nn.HuberLoss.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from .._validate import check_float
from . import _meta as M
from ._samples import rand
from .loss import _check_reduction, _check_same_shape, _dt, _reduce, _reduce_grad
from .registry import BadInput, Sample, register_op


def _check_width(value, name, op, allow_zero):
    value = check_float(value, name)
    if value < 0 or (value == 0 and not allow_zero) or not np.isfinite(value):
        raise ValueError(f"{op}: {name} must be {'>= 0' if allow_zero else '> 0'} and finite, got {value!r}")
    return float(value)


def _parts(name, inp, target, reduction, width):
    """Checks the arguments; returns (d, the width as huber's delta, the scale that makes it smooth_l1)."""
    _check_reduction(reduction)
    _check_same_shape(inp, target, name)
    if name == "smooth_l1_loss":  # torch promotes here (float32 input, float64 target: float64), not in huber_loss
        beta = _check_width(width, "beta", name, allow_zero=True)
        return (inp - target).astype(np.promote_types(_dt(inp), _dt(target))), beta, (1.0 / beta if beta > 0 else 1.0)
    return (inp - target).astype(_dt(inp)), _check_width(width, "delta", name, allow_zero=False), 1.0


def _huber(d, delta):
    """delta-huber of d (delta = 0: |d|, the limit smooth_l1 takes at beta = 0)."""
    a = np.abs(d)
    return np.where(a < delta, 0.5 * d * d, delta * (a - 0.5 * delta)) if delta > 0 else a


def _huber_grad(d, delta):
    return np.clip(d, -delta, delta) if delta > 0 else np.sign(d)


class _RobustLossFunction(Function):
    """loss(input, target, reduction, width) = scale * huber(d, width); backward reads d only."""

    @staticmethod
    def _forward(ctx, inp, target, reduction, width):
        d, delta, scale = _parts(type(ctx).op.name, inp, target, reduction, width)
        ctx.save_for_backward(d)
        ctx.delta_scale_reduction = (delta, scale, reduction)
        return _reduce((_huber(d, delta) * scale).astype(d.dtype), reduction)

    @staticmethod
    def backward(ctx, g):
        (d,) = ctx.saved_tensors
        delta, scale, reduction = ctx.delta_scale_reduction
        gi = (_huber_grad(d, delta) * scale * _reduce_grad(g, d.shape, reduction)).astype(d.dtype)
        return gi, (-gi if ctx.needs_input_grad[1] else None)


class SmoothL1LossFunction(_RobustLossFunction):
    """torch.nn.functional.smooth_l1_loss(input, target, reduction, beta)."""

    @staticmethod
    def forward(ctx, inp, target, reduction="mean", beta=1.0):
        return _RobustLossFunction._forward(ctx, inp, target, reduction, beta)


class HuberLossFunction(_RobustLossFunction):
    """torch.nn.functional.huber_loss(input, target, reduction, delta)."""

    @staticmethod
    def forward(ctx, inp, target, reduction="mean", delta=1.0):
        return _RobustLossFunction._forward(ctx, inp, target, reduction, delta)


def _rule(name, width_name):
    def fn(inp, target, reduction="mean", width=None, **kw):  # the width positional or by its own name
        from .registry import _OPS
        width = kw.get(width_name, 1.0) if width is None else width
        d = inp - target
        _, delta, scale = _parts(name, d._data, d._data, reduction, width)
        a = d.abs()
        loss = _OPS["where"](a._data < delta, d * d * 0.5, (a - 0.5 * delta) * delta) if delta > 0 else a
        loss = loss * scale if scale != 1.0 else loss
        return loss if reduction == "none" else loss.sum() if reduction == "sum" else loss.mean()

    def rule(ctx, args, kwargs, *grads):
        from ._double_backward import decomposition
        return decomposition(fn)(ctx, args, kwargs, *grads)

    return rule


def _onnx(ctx, op, name, width_name):
    """Where(|d| < delta, 0.5 d^2, delta (|d| - delta / 2)) * scale, reduced (delta = 0: |d|)."""
    from ..onnx.mappings.loss import _c, _reduce as _onnx_reduce
    f32 = np.float32
    width = op.attr(width_name, 1.0)
    _, delta, scale = _parts(name, np.zeros(0, f32), np.zeros(0, f32), op.attr("reduction", "mean"), width)
    d = ctx.node("Sub", [op.input("inp", f32), op.input("target", f32)])
    a = ctx.node("Abs", [d])
    loss = a
    if delta > 0:
        quad = ctx.node("Mul", [ctx.node("Mul", [d, d]), _c(ctx, 0.5)])
        lin = ctx.node("Mul", [ctx.node("Sub", [a, _c(ctx, 0.5 * delta)]), _c(ctx, delta)])
        loss = ctx.node("Where", [ctx.node("Less", [a, _c(ctx, delta)]), quad, lin])
    if scale != 1.0:
        loss = ctx.node("Mul", [loss, _c(ctx, scale)])
    return [_onnx_reduce(ctx, loss, op.args["inp"].ndim, op.attr("reduction", "mean"))]


def _samples(width_name):
    def samples():
        # values spread over [-3, 3]: both sides of every width below
        big = {"low": -3.0, "high": 3.0}
        return [Sample((rand(3, 7, **big), rand(3, 7, seed=1, **big)), name="mean"),
                Sample((rand(2, 5, 9, **big), rand(2, 5, 9, seed=1, **big)), {"reduction": "sum", width_name: 0.5},
                       f"sum {width_name}=0.5"),
                Sample((rand(4, **big), rand(4, seed=1, **big)), {"reduction": "none", width_name: 2.0},
                       f"none {width_name}=2"),
                Sample((rand(5, 1, 3, **big), rand(5, 1, 3, seed=2, **big)), {"reduction": "none"}, "none 3-D")]

    return samples


def _bad_inputs(width_name):
    def bad():
        return [BadInput((rand(3, 7), rand(3, 6)), {}, ValueError, "target"),
                BadInput((rand(3, 7), rand(3, 7)), {"reduction": "avg"}, ValueError, "reduction"),
                BadInput((rand(3, 7), rand(3, 7)), {width_name: -1.0}, ValueError, width_name)]

    return bad


def _register(cls, name, width_name, extra_samples=()):
    def torch_ref(torch, inp, target, reduction="mean", **width):
        import torch.nn.functional as TF
        return getattr(TF, name)(inp, target, reduction=reduction, **width)

    def samples():
        return _samples(width_name)() + [s() for s in extra_samples]

    def meta(inp, target, reduction="mean", **width):
        _check_reduction(reduction)
        _check_same_shape(inp, target, name)
        return M.loss(inp, target, reduction=reduction)

    def onnx(ctx, op):
        return _onnx(ctx, op, name, width_name)

    cls = register_op(name, meta=meta, flops=M.per_input_element(5), samples=samples, torch=torch_ref,
                      bad_inputs=_bad_inputs(width_name), onnx=onnx,
                      differentiable_backward=_rule(name, width_name))(cls)
    cls.op.float64 = cls  # numpy in the inputs' dtype
    return cls


_register(SmoothL1LossFunction, "smooth_l1_loss", "beta",
          [lambda: Sample((rand(3, 4, low=-3, high=3), rand(3, 4, seed=5, low=-3, high=3)), {"beta": 0.0}, "beta=0")])
_register(HuberLossFunction, "huber_loss", "delta")


def smooth_l1_loss(input, target, reduction: str = "mean", beta: float = 1.0):
    """``torch.nn.functional.smooth_l1_loss``: 0.5 d**2 / beta where |d| < beta, else |d| - beta / 2, reduced
    ("mean", "sum" or "none"); beta >= 0 (0 is l1_loss)."""
    from ..nn.functional_conv import _t
    return SmoothL1LossFunction.op(_t(input, "input"), _t(target, "target"), reduction=reduction, beta=beta)


def huber_loss(input, target, reduction: str = "mean", delta: float = 1.0):
    """``torch.nn.functional.huber_loss``: 0.5 d**2 where |d| < delta, else delta (|d| - delta / 2), reduced;
    delta > 0."""
    from ..nn.functional_conv import _t
    return HuberLossFunction.op(_t(input, "input"), _t(target, "target"), reduction=reduction, delta=delta)


SmoothL1LossFunction.op.functional = smooth_l1_loss
HuberLossFunction.op.functional = huber_loss
