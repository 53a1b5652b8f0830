"""The piecewise-linear activations hardtanh (``min_val``, ``max_val``; relu6 is hardtanh(0, 6), as torch's),
hardsigmoid, hardswish, softshrink and hardshrink (``lambd``) and threshold (``threshold``, ``value``): forward,
gradient, double-backward rule, ONNX mapping and samples of each, in one place (their modules are in
nn/activation_extra.py, their functions here, served by nn.functional).

float32 runs the C++ kernels of forgegrad.kernels.activation_more (the same formulas); other dtypes numpy in the
input's dtype (float64 runs the same Function). All have torch's formulas and its
gradient at the kinks, where the derivative is one-sided and torch picks a side:

- hardtanh:    clip(x, min_val, max_val); gradient 1 only strictly inside (0 at x == min_val or max_val);
- hardsigmoid: clip(x + 3, 0, 6) / 6; gradient 1/6 strictly inside (-3, 3);
- hardswish:   x * clip(x + 3, 0, 6) / 6; gradient 0 for x <= -3, x / 3 + 1/2 for -3 < x < 3, 1 for x >= 3;
- softshrink:  x - lambd above lambd, x + lambd below -lambd, else 0; hardshrink: x outside [-lambd, lambd], else 0;
  both have gradient 0 on the closed interval [-lambd, lambd];
- threshold:   value where x <= threshold, else x; gradient 0 where x <= threshold.

Their second derivatives are 0 but for hardswish (1/3 strictly inside (-3, 3)); torch has no double backward for
hardsigmoid, which gets its (zero) rule here all the same.
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


def at_kinks(x: np.ndarray, *values) -> np.ndarray:
    """x with its first elements set to ``values`` (the points where an activation's pieces meet)."""
    x = x.copy()
    flat = x.reshape(-1)
    flat[:len(values)] = values
    return x


def _flat_rule(mask):
    """A double-backward rule g * mask(x values, args, kwargs): a locally constant slope (its derivative is 0)."""

    def rule(ctx, args, kwargs, g):
        from ._double_backward import _flat
        return g * _flat(args[0], lambda a: mask(a, args, kwargs))

    return rule


def _samples(kinks, *kwarg_sets):
    """Odd shapes with the kink values in the first sample (and in each extra keyword set's), a 1-element input
    and a large one."""

    def samples():
        out = [Sample((at_kinks(S.rand(3, 7, low=-5, high=5), *kinks()),), {}, "kinks"),
               Sample((S.rand(2, 5, 9, seed=1, low=-5, high=5),)), Sample((S.rand(1, seed=2),)),
               Sample((S.rand(*S.LARGE, seed=3, low=-5, high=5),), {}, "large")]
        for k, kwargs in enumerate(kwarg_sets):
            out.append(Sample((at_kinks(S.rand(4, 3, 5, seed=4 + k, low=-8, high=8), *kinks(**kwargs)),), kwargs,
                              "kinks " + ", ".join(f"{a}={v}" for a, v in kwargs.items())))
        return out

    return samples


def _value(x, v):
    return x.dtype.type(v)  # the scalar in the input's dtype, as torch's kernels convert it


# ---- hardtanh / relu6 -------------------------------------------------------------------------------------------
def _hardtanh_bounds(min_val, max_val):
    lo, hi = check_float(min_val, "min_val"), check_float(max_val, "max_val")
    if lo != lo or hi != hi:  # (the kernel's max(x, NaN) kept x, torch's clamp gives NaN everywhere)
        raise ValueError(f"hardtanh: min_val and max_val must be numbers, not NaN, got min_val={lo}, max_val={hi}")
    if lo > hi:
        raise ValueError(f"hardtanh: min_val cannot be greater than max_val, got min_val={lo} > max_val={hi}")
    return lo, hi


def _hardtanh_int(x, lo, hi):
    """hardtanh of integers as torch's: the bounds cast to integers (toward zero), the input's dtype kept."""
    if x.dtype.kind == "u" and (lo < 0 or hi < 0):
        raise RuntimeError(f"hardtanh: cannot clamp an unsigned ({x.dtype}) input to negative limits, got "
                           f"min_val={lo}, max_val={hi}")
    info, out = np.iinfo(x.dtype), x
    for v, name, clip in ((lo, "min_val", np.maximum), (hi, "max_val", np.minimum)):
        if not (abs(v) < 2.0 ** 63 and info.min <= int(v) <= info.max):
            raise RuntimeError(f"hardtanh: {name}={v} cannot be converted to the input's {x.dtype} without overflow")
        out = clip(out, x.dtype.type(int(v)))
    return out


def _hardtanh_onnx(ctx, op):
    f32 = np.float32
    lo, hi = float(op.attr("min_val", -1.0)), float(op.attr("max_val", 1.0))
    return [ctx.node("Clip", [op.input("x", f32), ctx.const(np.asarray(lo, f32)), ctx.const(np.asarray(hi, f32))])]


@register_op("hardtanh", meta=M.same, flops=M.per_output_element(2),
             samples=_samples(lambda min_val=-1.0, max_val=1.0: (min_val, max_val, 0.0),
                              {"min_val": 0.0, "max_val": 6.0}, {"min_val": -2.5, "max_val": 0.1},
                              {"min_val": 0.5, "max_val": 0.5}),
             torch=lambda torch, x, min_val=-1.0, max_val=1.0: torch.nn.functional.hardtanh(x, min_val, max_val),
             bad_inputs=lambda: [BadInput((S.rand(2, 3),), {"min_val": "0"}, TypeError, "min_val"),
                                 BadInput((S.rand(2, 3),), {"max_val": None}, TypeError, "max_val"),
                                 BadInput((S.rand(2, 3),), {"min_val": 2.0, "max_val": 1.0}, ValueError, "min_val")],
             onnx=_hardtanh_onnx,
             differentiable_backward=_flat_rule(lambda a, args, kw: (a > _value(a, kw.get("min_val", -1.0)))
                                                & (a < _value(a, kw.get("max_val", 1.0)))))
class HardtanhFunction(Function):
    """hardtanh(x, min_val, max_val) = clip(x, min_val, max_val); gradient 1 strictly between the bounds."""

    @staticmethod
    def forward(ctx, x, min_val=-1.0, max_val=1.0):
        lo, hi = _hardtanh_bounds(min_val, max_val)
        if x.dtype.kind in "iu":  # torch keeps the integer dtype (an int64 tensor's relu6 is int64)
            return _hardtanh_int(x, lo, hi)
        x = _float(x)
        ctx.save_for_backward(x)
        ctx.bounds = lo, hi
        if x.dtype == np.float32:
            return _KM.pointwise("hardtanh", x, lo, hi)
        return np.minimum(np.maximum(x, _value(x, lo)), _value(x, hi))  # NaN stays NaN, as torch's

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        lo, hi = ctx.bounds
        if x.dtype == g.dtype == np.float32:
            return _KM.pointwise_backward("hardtanh", g, x, lo, hi)
        return np.where((x > _value(x, lo)) & (x < _value(x, hi)), g, 0).astype(g.dtype, copy=False)


# ---- hardsigmoid / hardswish ------------------------------------------------------------------------------------
_THREE_KINKS = lambda: (-3.0, 3.0, 0.0)  # noqa: E731
_ONE_SIXTH = float(np.float32(1.0 / 6.0))  # torch's hardsigmoid gradient: 1.0f / 6.0f, in every dtype


def _hardsigmoid_onnx(ctx, op):
    return [ctx.node("HardSigmoid", [op.input("x", np.float32)], alpha=1.0 / 6.0, beta=0.5)]


@register_op("hardsigmoid", meta=M.same, flops=M.per_output_element(3), samples=_samples(_THREE_KINKS),
             torch=lambda torch, x: torch.nn.functional.hardsigmoid(x), onnx=_hardsigmoid_onnx,
             differentiable_backward=_flat_rule(lambda a, args, kw: ((a > -3) & (a < 3)) * _value(a, _ONE_SIXTH)))
class HardsigmoidFunction(Function):
    """hardsigmoid(x) = clip(x + 3, 0, 6) / 6; gradient 1/6 strictly inside (-3, 3)."""

    @staticmethod
    def forward(ctx, x):
        x = _float(x)
        ctx.save_for_backward(x)
        if x.dtype == np.float32:
            return _KM.pointwise("hardsigmoid", x)
        return np.minimum(np.maximum(x + _value(x, 3), _value(x, 0)), _value(x, 6)) / _value(x, 6)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        if x.dtype == g.dtype == np.float32:
            return _KM.pointwise_backward("hardsigmoid", g, x)
        return np.where((x > -3) & (x < 3), g * _value(g, _ONE_SIXTH), 0).astype(g.dtype, copy=False)


def _hardswish_onnx(ctx, op):
    x = op.input("x", np.float32)
    if ctx.opset >= 14:
        return [ctx.node("HardSwish", [x])]
    return [ctx.node("Mul", [x, ctx.node("HardSigmoid", [x], alpha=1.0 / 6.0, beta=0.5)])]  # HardSwish's definition


def _hardswish_rule(ctx, args, kwargs, g):
    from ._double_backward import _where
    x = args[0]
    a = x._data
    return g * _where(a <= -3, 0.0, _where(a < 3, x / 3 + 0.5, 1.0))


@register_op("hardswish", meta=M.same, flops=M.per_output_element(4), samples=_samples(_THREE_KINKS),
             torch=lambda torch, x: torch.nn.functional.hardswish(x), onnx=_hardswish_onnx,
             differentiable_backward=_hardswish_rule)
class HardswishFunction(Function):
    """hardswish(x) = x * clip(x + 3, 0, 6) / 6."""

    @staticmethod
    def forward(ctx, x):
        x = _float(x)
        ctx.save_for_backward(x)
        if x.dtype == np.float32:
            return _KM.pointwise("hardswish", x)
        return x * np.minimum(np.maximum(x + _value(x, 3), _value(x, 0)), _value(x, 6)) / _value(x, 6)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        if x.dtype == g.dtype == np.float32:
            return _KM.pointwise_backward("hardswish", g, x)
        slope = np.where(x <= -3, 0, np.where(x < 3, x / _value(x, 3) + _value(x, 0.5), 1))
        return (g * slope).astype(g.dtype, copy=False)


# ---- softshrink / hardshrink ------------------------------------------------------------------------------------
def _lambd(lambd, name):
    lambd = check_float(lambd, "lambd")
    if name == "softshrink" and not lambd >= 0:
        raise RuntimeError(f"softshrink: lambd must be >= 0, got {lambd}")  # torch's error type
    return lambd


def _shrink_onnx(soft):
    def mapping(ctx, op):
        lambd = float(op.attr("lambd", 0.5))
        x = op.input("x", np.float32)
        shrunk = ctx.node("Shrink", [x], lambd=lambd, bias=lambd if soft else 0.0)
        return [ctx.node("Where", [ctx.node("IsNaN", [x]), x, shrunk])]  # Shrink makes NaN 0; torch keeps it

    return mapping


_SHRINK_KINKS = lambda lambd=0.5: (-lambd, lambd, 0.0)  # noqa: E731
_shrink_mask = _flat_rule(lambda a, args, kw: (a < -_value(a, kw.get("lambd", 0.5)))
                          | (a > _value(a, kw.get("lambd", 0.5))))


@register_op("softshrink", meta=M.same, flops=M.per_output_element(3),
             samples=_samples(_SHRINK_KINKS, {"lambd": 1.5}, {"lambd": 0.0}),
             torch=lambda torch, x, lambd=0.5: torch.nn.functional.softshrink(x, lambd),
             bad_inputs=lambda: [BadInput((S.rand(2, 3),), {"lambd": "0.5"}, TypeError, "lambd"),
                                 BadInput((S.rand(2, 3),), {"lambd": -0.5}, RuntimeError, "lambd")],
             onnx=_shrink_onnx(True), differentiable_backward=_shrink_mask)
class SoftshrinkFunction(Function):
    """softshrink(x, lambd): x - lambd above lambd, x + lambd below -lambd, 0 between (gradient 0 there, ends
    included)."""

    @staticmethod
    def forward(ctx, x, lambd=0.5):
        lambd = _lambd(lambd, "softshrink")
        x = _float(x)
        ctx.save_for_backward(x)
        ctx.lambd = lambd
        if x.dtype == np.float32:
            return _KM.pointwise("softshrink", x, lambd)
        lam = _value(x, lambd)
        # NaN stays NaN, as torch's (both comparisons are false for it)
        out = np.where(x > lam, x - lam, np.where(x < -lam, x + lam, _value(x, 0)))
        return np.where(np.isnan(x), x, out).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        if x.dtype == g.dtype == np.float32:
            return _KM.pointwise_backward("hardshrink", g, x, ctx.lambd)  # the shrinks share their gradient
        lam = _value(x, ctx.lambd)
        return np.where((x < -lam) | (x > lam), g, 0).astype(g.dtype, copy=False)


@register_op("hardshrink", meta=M.same, flops=M.per_output_element(2),
             samples=_samples(_SHRINK_KINKS, {"lambd": 1.5}, {"lambd": -0.5}),
             torch=lambda torch, x, lambd=0.5: torch.nn.functional.hardshrink(x, lambd),
             bad_inputs=lambda: [BadInput((S.rand(2, 3),), {"lambd": None}, TypeError, "lambd")],
             onnx=_shrink_onnx(False), differentiable_backward=_shrink_mask)
class HardshrinkFunction(Function):
    """hardshrink(x, lambd): x outside [-lambd, lambd], 0 inside (gradient 0 there, ends included)."""

    @staticmethod
    def forward(ctx, x, lambd=0.5):
        lambd = _lambd(lambd, "hardshrink")
        x = _float(x)
        ctx.save_for_backward(x)
        ctx.lambd = lambd
        if x.dtype == np.float32:
            return _KM.pointwise("hardshrink", x, lambd)
        lam = _value(x, lambd)
        return np.where((x >= -lam) & (x <= lam), _value(x, 0), x).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        if x.dtype == g.dtype == np.float32:
            return _KM.pointwise_backward("hardshrink", g, x, ctx.lambd)  # the shrinks share their gradient
        lam = _value(x, ctx.lambd)
        return np.where((x < -lam) | (x > lam), g, 0).astype(g.dtype, copy=False)


# ---- threshold --------------------------------------------------------------------------------------------------
def _threshold_onnx(ctx, op):
    f32 = np.float32
    x = op.input("x", f32)
    th, value = float(op.attr("threshold")), float(op.attr("value"))
    # LessOrEqual, not Greater: a NaN stays NaN as in torch (x <= threshold is false for it)
    replace = ctx.node("LessOrEqual", [x, ctx.const(np.asarray(th, f32))])
    return [ctx.node("Where", [replace, ctx.const(np.asarray(value, f32)), x])]


@register_op("threshold", meta=M.same, flops=M.per_output_element(1),
             samples=lambda: [Sample((at_kinks(S.rand(3, 7), 0.5, 0.0),), {"threshold": 0.5, "value": -3.0}, "kinks"),
                              Sample((S.rand(2, 5, 9, seed=1),), {"threshold": 0.0, "value": 0.0}, "relu"),
                              Sample((S.rand(1, seed=2),), {"threshold": -1.0, "value": 20.0}),
                              Sample((S.rand(*S.LARGE, seed=3),), {"threshold": 1.0, "value": 2.0}, "large")],
             torch=lambda torch, x, threshold, value: torch.nn.functional.threshold(x, threshold, value),
             bad_inputs=lambda: [BadInput((S.rand(2, 3),), {"threshold": "1", "value": 0.0}, TypeError, "threshold"),
                                 BadInput((S.rand(2, 3),), {"threshold": 1.0, "value": [0]}, TypeError, "value")],
             onnx=_threshold_onnx,
             differentiable_backward=_flat_rule(lambda a, args, kw: a > _value(a, kw["threshold"])))
class ThresholdFunction(Function):
    """threshold(x, threshold, value) = value where x <= threshold, else x; gradient 0 where x <= threshold."""

    @staticmethod
    def forward(ctx, x, threshold, value):
        threshold, value = check_float(threshold, "threshold"), check_float(value, "value")
        x = _float(x)
        ctx.save_for_backward(x)
        ctx.threshold = threshold
        if x.dtype == np.float32:
            return _KM.pointwise("threshold", x, threshold, value)
        return np.where(x <= _value(x, threshold), _value(x, value), x).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        if x.dtype == g.dtype == np.float32:
            return _KM.pointwise_backward("threshold", g, x, ctx.threshold)
        return np.where(x <= _value(x, ctx.threshold), 0, g).astype(g.dtype, copy=False)


for _fn in (HardtanhFunction, HardsigmoidFunction, HardswishFunction, SoftshrinkFunction, HardshrinkFunction,
            ThresholdFunction):
    _fn.op.float64 = _fn  # numpy in the input's dtype: float64 runs the same Function


# ---- torch.nn.functional entry points ---------------------------------------------------------------------------
def _inplace(input, inplace, name, compute):
    from ..nn.functional import _maybe_inplace
    return _maybe_inplace(input, inplace, name, compute)


def hardtanh(input, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False):
    """``torch.nn.functional.hardtanh``: input clipped to [min_val, max_val] (``inplace=True``: written into
    ``input``)."""
    lo, hi = _hardtanh_bounds(min_val, max_val)
    return _inplace(input, inplace, "hardtanh", lambda t: HardtanhFunction.op(t, min_val=lo, max_val=hi))


def hardtanh_(input, min_val: float = -1.0, max_val: float = 1.0):
    """``torch.nn.functional.hardtanh_``: hardtanh written into ``input``."""
    return hardtanh(input, min_val, max_val, inplace=True)


def relu6(input, inplace: bool = False):
    """``torch.nn.functional.relu6``: min(max(input, 0), 6), which is hardtanh(input, 0, 6) (torch's too)."""
    return _inplace(input, inplace, "relu6", lambda t: HardtanhFunction.op(t, min_val=0.0, max_val=6.0))


def hardsigmoid(input, inplace: bool = False):
    """``torch.nn.functional.hardsigmoid``: clip(input + 3, 0, 6) / 6."""
    return _inplace(input, inplace, "hardsigmoid", lambda t: HardsigmoidFunction.op(t))


def hardswish(input, inplace: bool = False):
    """``torch.nn.functional.hardswish``: input * clip(input + 3, 0, 6) / 6."""
    return _inplace(input, inplace, "hardswish", lambda t: HardswishFunction.op(t))


def softshrink(input, lambd: float = 0.5):
    """``torch.nn.functional.softshrink``: input -/+ lambd outside [-lambd, lambd], 0 inside (lambd >= 0)."""
    from ..nn.functional_conv import _t
    return SoftshrinkFunction.op(_t(input, "input"), lambd=_lambd(lambd, "softshrink"))


def hardshrink(input, lambd: float = 0.5):
    """``torch.nn.functional.hardshrink``: input outside [-lambd, lambd], 0 inside."""
    from ..nn.functional_conv import _t
    return HardshrinkFunction.op(_t(input, "input"), lambd=_lambd(lambd, "hardshrink"))


def threshold(input, threshold: float, value: float, inplace: bool = False):
    """``torch.nn.functional.threshold``: value where input <= threshold, else input."""
    th, v = check_float(threshold, "threshold"), check_float(value, "value")
    return _inplace(input, inplace, "threshold", lambda t: ThresholdFunction.op(t, threshold=th, value=v))


_threshold = threshold  # threshold_'s argument of that name hides the function


def threshold_(input, threshold: float, value: float):
    """``torch.nn.functional.threshold_``: threshold written into ``input``."""
    return _threshold(input, threshold, value, inplace=True)


HardtanhFunction.op.functional = hardtanh
HardsigmoidFunction.op.functional = hardsigmoid
HardswishFunction.op.functional = hardswish
SoftshrinkFunction.op.functional = softshrink
HardshrinkFunction.op.functional = hardshrink
ThresholdFunction.op.functional = threshold
