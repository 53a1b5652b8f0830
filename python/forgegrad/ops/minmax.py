"""Elementwise maximum / minimum of two tensors with broadcasting (torch.maximum, torch.minimum, torch.fmax,
torch.fmin): forward, gradient, double-backward rule and ONNX mapping of each, in one place.

The gradient follows torch's rules. maximum / minimum: where the inputs tie, each gets half of the output's
gradient (the subgradient torch picks, so that ``maximum(x, x)`` has the gradient of ``x``); a NaN input
propagates and both inputs get the gradient there. fmax / fmin ignore a NaN (the other input wins) and give a tie
wholly to the first input.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from . import _meta as M
from . import _samples as S
from ._onnx_pointwise import fminmax_onnx
from ._util import unbroadcast
from .registry import BadInput, Sample, register_op


def _shape(x):
    return x.shape if isinstance(x, np.ndarray) else np.shape(x)


# name -> (forward, share_a(a, b), share_b(a, b)): the fraction of the output's gradient each input gets
def _tie_split(lose_a):
    """maximum / minimum: half at a tie, none where ``a`` loses (``lose_a(a, b)``), else all (NaN included)."""

    def share_a(a, b):
        return np.where(np.equal(a, b), 0.5, np.where(lose_a(a, b), 0.0, 1.0))

    def share_b(a, b):
        return np.where(np.equal(a, b), 0.5, np.where(lose_a(b, a), 0.0, 1.0))

    return share_a, share_b


def _first_wins(keep_a):
    """fmax / fmin: ``a`` gets all where it wins or ties (``keep_a``) or ``b`` is NaN, ``b`` the rest."""

    def share_a(a, b):
        return (keep_a(a, b) | np.isnan(b)).astype(np.float32)

    def share_b(a, b):
        return 1.0 - share_a(a, b)

    return share_a, share_b


RULES = {
    "maximum": (np.maximum, *_tie_split(np.less)),
    "minimum": (np.minimum, *_tie_split(np.greater)),
    "fmax": (np.fmax, *_first_wins(np.greater_equal)),
    "fmin": (np.fmin, *_first_wins(np.less_equal)),
}


def _samples():
    """Odd shapes, broadcasting both ways, exact ties (integer-valued floats) and a large one."""
    rng = np.random.default_rng(11)
    ties_a = rng.integers(-2, 3, size=(4, 6)).astype(np.float32)
    ties_b = rng.integers(-2, 3, size=(4, 6)).astype(np.float32)
    return [Sample((S.rand(3, 7), S.rand(3, 7, seed=1))),
            Sample((S.rand(2, 1, 9), S.rand(5, 1, seed=1)), name="broadcast both"),
            Sample((S.rand(4, 5), S.rand(5, seed=2)), name="broadcast b"),
            Sample((ties_a, ties_b), name="ties"),
            Sample((ties_a[:, :1], ties_b), name="ties broadcast"),
            Sample((S.rand(*S.LARGE, seed=3), S.rand(*S.LARGE, seed=4)), name="large")]


def _bad_inputs():
    return [BadInput((S.rand(3, 4), S.rand(5, 4)), {}, ValueError, "broadcast")]


class _MinMaxFunction(Function):
    """fn(a, b) with broadcasting; backward gives each input its share of g (see RULES), summed back to its
    shape. Both inputs are saved: either gradient reads both."""

    @staticmethod
    def forward(ctx, a, b):
        fn = RULES[type(ctx).op.name][0]
        ctx.shapes = (_shape(a), _shape(b))
        ctx.save_for_backward(a, b)
        return fn(a, b)

    @staticmethod
    def backward(ctx, g):
        _, share_a, share_b = RULES[type(ctx).op.name]
        a, b = ctx.saved_tensors
        sa, sb = ctx.shapes
        needs = ctx.needs_input_grad
        return (unbroadcast((g * share_a(a, b)).astype(g.dtype), sa) if needs[0] else None,
                unbroadcast((g * share_b(a, b)).astype(g.dtype), sb) if needs[1] else None)


def _differentiable_backward(ctx, args, kwargs, g):
    """The shares are locally constant in a and b: g times a mask whose own derivative is zero."""
    from ._double_backward import _flat, _for, _is_t
    _, share_a, share_b = RULES[type(ctx).op.name]
    a, b = args
    av, bv = (x._data if _is_t(x) else x for x in (a, b))
    ga = _for(a, g * _flat(a, lambda x: share_a(x, bv).astype(x.dtype))) if _is_t(a) else None
    gb = _for(b, g * _flat(b, lambda x: share_b(av, x).astype(x.dtype))) if _is_t(b) else None
    return ga, gb


def _onnx(onnx_op):
    def mapping(ctx, op):
        dt = op.out_dtype()
        return [ctx.node(onnx_op, [op.input("a", dt), op.input("b", dt)])]

    mapping.__name__ = f"map_{onnx_op.lower()}"
    return mapping


def _register(name, onnx_op=None, gap=None):
    title = name.title()
    cls = type(f"{title}Function", (_MinMaxFunction,), {
        "__module__": __name__, "__qualname__": f"{title}Function",
        "__doc__": f"torch.{name}(a, b) with broadcasting."})
    cls = register_op(name, meta=M.broadcast, flops=M.per_output_element(1), samples=_samples,
                      torch=lambda torch, a, b: getattr(torch, name)(a, b), bad_inputs=_bad_inputs,
                      onnx=(fminmax_onnx(onnx_op) if name.startswith("f") else _onnx(onnx_op)) if onnx_op else None,
                      gaps={"onnx": gap} if gap else {},
                      differentiable_backward=_differentiable_backward)(cls)
    cls.op.float64 = cls  # numpy in the inputs' dtype: float64 runs the same Function
    return cls


MaximumFunction = _register("maximum", "Max")
MinimumFunction = _register("minimum", "Min")
FmaxFunction = _register("fmax", "Max")
FminFunction = _register("fmin", "Min")
