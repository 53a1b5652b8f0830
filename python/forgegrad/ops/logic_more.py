"""torch's gcd, lcm (integers), isin(elements, test_elements, assume_unique, invert), heaviside(input, values) and
the histograms histc(input, bins, min, max) and histogram(input, bins, range, weight, density).

gcd/lcm/isin give integer or bool outputs (no gradient). heaviside, histc and histogram give float outputs but torch
has no derivative for them: their backward raises, as torch's."""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from ..kernels.int_math import gcd as _kernel_gcd
from .._validate import check_bool
from . import _meta as M
from ._logic_common import cast, dtype_name, is_arr, operand, promote
from ._onnx_int import gcd_onnx, lcm_onnx
from .logic import NO_GRAD, _NoGrad, _ints
from .registry import BadInput, Sample, register_op

_NO_DERIVATIVE = "torch has no derivative for it (backward raises, as torch's)"


class _NoDerivative(Function):
    """Float outputs, but no derivative (torch: 'the derivative for ... is not implemented')."""

    exact_dtype = True

    @classmethod
    def backward(cls, ctx, *grads):
        raise RuntimeError(f"the derivative for '{cls.op.name}' is not implemented (as in torch)")


# ---- gcd / lcm ---------------------------------------------------------------------------------------------
_KERNEL_GCD = (np.dtype(np.int64), np.dtype(np.int32))


def _gcd_loop(a, b):
    """torch's Euclid loop on |a|, |b| with C's truncating remainder."""
    a, b = np.abs(a), np.abs(b)
    a, b = (np.array(x, copy=True) for x in np.broadcast_arrays(a, b))
    live = a != 0
    while live.any():
        c = a[live]
        a[live] = np.fmod(b[live], c)  # fmod: C's remainder (sign of the dividend); numpy handles MIN % -1
        b[live] = c
        live = a != 0
    return b


def _gcd(a, b):
    """torch's gcd: numpy's (the same Euclid on |a|, |b|) except where an operand is a signed type's MIN, whose |MIN|
    wraps to MIN in torch (torch's gcd(int8 -128, 127) is -1, numpy's 1): those elements take torch's loop.
    int32 / int64 run on the C++ binary GCD (forgegrad.kernels.int_math), which keeps those rules."""
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    if a_arr.dtype == b_arr.dtype and a_arr.dtype in _KERNEL_GCD:
        return _kernel_gcd(a_arr, b_arr)
    out = np.asarray(np.gcd(a, b))
    if out.dtype.kind == "i":
        low = np.iinfo(out.dtype).min
        wraps = np.asarray((a == low) | (b == low))
        if wraps.any():
            wraps = np.broadcast_to(wraps, out.shape)
            a_b, b_b = np.broadcast_arrays(a, b)
            out = np.array(out, copy=True)
            out[wraps] = _gcd_loop(a_b[wraps], b_b[wraps])
    return out


def _lcm(a, b):
    """torch's |a / gcd * b|, in C's arithmetic: int8/int16/uint8 widen to int (32 bits) and wrap back on the store;
    int32/int64 wrap in their width (where torch's int64 division MIN / -1 traps, this gives MIN)."""
    g = _gcd(a, b)
    wide = np.int32 if a.dtype.itemsize < 4 else a.dtype
    a_w, b_w, g_w = (x.astype(wide) for x in (a, b, g))
    with np.errstate(all="ignore"):
        out = np.abs((a_w // np.where(g_w == 0, 1, g_w)) * b_w)
    return np.where(g == 0, 0, out).astype(a.dtype)


def _int_binary(name, fn):
    def forward(ctx, input, other):
        a, b = operand(input, name, "input"), operand(other, name, "other")
        dt = promote(a, b)
        if dt.kind not in "iu":
            raise TypeError(f"{name}(): expected integer tensors, got {dtype_name(dt)} (torch's {name} takes "
                            f"integers only)")
        with np.errstate(all="ignore"):
            return np.asarray(fn(cast(a, dt), cast(b, dt))).astype(dt, copy=False)

    def meta(input, other):
        return M.MetaArray(M.broadcast(input, other).shape, promote(input, other))

    def samples():
        a, b = _ints(3, 7, low=-60, high=60), _ints(3, 7, seed=1, low=-60, high=60)
        a[0, :3], b[0, 1:4] = 0, 0
        return [Sample((a, b), {}, "int64 with zeros"), Sample((_ints(2, 1, 9, low=-30, high=30),
                                                                _ints(5, 1, seed=2, low=1, high=30)), {}, "broadcast"),
                Sample((_ints(4, 5, low=-100, high=100), 12), {}, "with a number")]

    cls = type(f"{name.title()}Function", (_NoGrad,), {
        "__module__": __name__, "__doc__": f"torch.{name}(input, other): integers, broadcast; always >= 0.",
        "forward": staticmethod(forward)})
    cls = register_op(name, meta=meta, flops=M.per_output_element(1), samples=samples,
                      torch=lambda torch, a, b: getattr(torch, name)(a, torch.tensor(b) if isinstance(b, int) else b),
                      gaps={"backward": NO_GRAD}, onnx=gcd_onnx if name == "gcd" else lcm_onnx,
                      bad_inputs=lambda: [BadInput((np.ones((2, 3), np.float32), _ints(2, 3)), {}, TypeError,
                                                   f"{name}.*float32")])(cls)
    cls.op.float64 = cls
    return cls


GcdFunction = _int_binary("gcd", _gcd)
LcmFunction = _int_binary("lcm", _lcm)


# ---- isin ----------------------------------------------------------------------------------------------------
def _isin_samples():
    x = _ints(3, 7, low=-6, high=6)
    f = np.round(np.random.default_rng(1).uniform(-3, 3, size=(2, 5, 3)) * 2).astype(np.float32) / 2
    f[0, 0, 0] = np.nan
    return [Sample((x, _ints(5, seed=1, low=-6, high=6)), {}, "int64"),
            Sample((x, _ints(2, 2, seed=2, low=-6, high=6)), {"invert": True}, "invert, 2-D test_elements"),
            Sample((f, np.array([0.5, np.nan, -1.0, 2.0], np.float32)), {"assume_unique": True}, "float, nan never in"),
            Sample((x, 3), {}, "a number as test_elements")]


def _isin_onnx(ctx, op):
    el_t = op.args["elements"]
    dt = np.dtype(promote(el_t._data if hasattr(el_t, "_data") else el_t, op.args["test_elements"]._data
                          if hasattr(op.args["test_elements"], "_data") else op.args["test_elements"]))
    if dt == np.float64:
        dt = np.dtype(np.float32)
    el = ctx.unsqueeze(op.input("elements", dt), [-1])
    test = ctx.node("Reshape", [op.input("test_elements", dt), ctx.ints([-1])])
    hits = ctx.reduce("ReduceSum", ctx.node("Cast", [ctx.node("Equal", [el, test])], to=7), [-1], False)
    return [ctx.node("Equal" if op.attr("invert") else "Greater", [hits, ctx.const(np.zeros((), np.int64))])]


@register_op("isin", meta=lambda elements, test_elements, *a, **kw: M.MetaArray(np.shape(elements), np.bool_),
             flops=M.no_flops, samples=_isin_samples, onnx=_isin_onnx,
             torch=lambda torch, e, t, **kw: torch.isin(e, t, **kw), gaps={"backward": NO_GRAD},
             bad_inputs=lambda: [BadInput((3, 4), {}, TypeError, "elements"),
                                 BadInput((_ints(2, 3), _ints(2)), {"invert": 1}, TypeError, "invert"),
                                 BadInput((np.array([True, False]), _ints(2)), {}, TypeError, "elements.*bool")])
class IsinFunction(_NoGrad):
    """torch.isin(elements, test_elements, *, assume_unique=False, invert=False): whether each element is in
    test_elements (compared in the promoted dtype; a NaN is in nothing). One of the two may be a number."""

    @staticmethod
    def forward(ctx, elements, test_elements, assume_unique=False, invert=False):
        el = operand(elements, "isin", "elements")
        test = operand(test_elements, "isin", "test_elements")
        if not is_arr(el) and not is_arr(test):
            raise TypeError("isin(): argument 'elements' or 'test_elements' must be a forgegrad.Tensor, got two "
                            "numbers")
        for name, v in (("elements", el), ("test_elements", test)):
            if isinstance(v, (bool, np.bool_)) or (is_arr(v) and v.dtype == np.bool_):
                raise TypeError(f"isin(): argument '{name}' is bool, which torch's isin does not take (convert it "
                                f"with .int())")
        check_bool(assume_unique, "isin(): assume_unique")
        invert = check_bool(invert, "isin(): invert")
        dt = promote(el, test)
        el, test = cast(el, dt), cast(test, dt)
        test = test.reshape(-1)
        if test.size <= 8:  # a few equality passes: numpy's table / sort methods make several passes with gathers
            out = np.zeros(np.shape(el), np.bool_)
            for t in test:
                np.logical_or(out, el == t, out=out)  # a NaN equals nothing
            return np.logical_not(out, out=out) if invert else out
        return np.asarray(np.isin(el, test, invert=bool(invert)))


IsinFunction.op.float64 = IsinFunction


# ---- heaviside -----------------------------------------------------------------------------------------------
def _heaviside_samples():
    x = np.random.default_rng(0).choice([-1.5, 0.0, 2.0, np.nan, -0.0], size=(3, 7)).astype(np.float32)
    return [Sample((x, np.float32(0.5) * np.ones((3, 7), np.float32)), {}, "values per element", grad=()),
            Sample((x, np.array([0.25], np.float32)), {}, "broadcast values, nan", grad=()),
            Sample((_ints(2, 5, 3, low=-2, high=3), _ints(5, 1, low=-3, high=3)), {}, "int64", grad=())]


def _heaviside_onnx(ctx, op):
    from ..onnx._context import onnx_dtype  # imports onnx: only when exporting
    x, v = op.input("input"), op.input("values")
    dt = op.out_dtype()
    zero = ctx.const(np.zeros((), dt))
    step = ctx.node("Cast", [ctx.node("Greater", [x, zero])], to=onnx_dtype(dt))
    return [ctx.node("Where", [ctx.node("Equal", [x, zero]), v, step])]


@register_op("heaviside", meta=lambda input, values: M.MetaArray(M.broadcast(input, values).shape, input.dtype),
             flops=M.per_output_element(1), samples=_heaviside_samples, onnx=_heaviside_onnx,
             torch=lambda torch, x, v: torch.heaviside(x, v), gaps={"backward": _NO_DERIVATIVE},
             bad_inputs=lambda: [BadInput((np.ones((2, 3), np.float32), _ints(2, 3)), {}, TypeError, "dtype"),
                                 BadInput((np.ones((2, 3), np.float32), 1.0), {}, TypeError, "values")])
class HeavisideFunction(_NoDerivative):
    """torch.heaviside(input, values): 0 where input < 0, values where input == 0, 1 where input > 0 (NaN: 0);
    input and values must have the same dtype, as torch's."""

    @staticmethod
    def forward(ctx, input, values):
        x = operand(input, "heaviside", "input", numbers=False)
        v = operand(values, "heaviside", "values", numbers=False)
        if x.dtype != v.dtype:
            raise TypeError(f"heaviside(): input and values must have the same dtype, got {dtype_name(x.dtype)} and "
                            f"{dtype_name(v.dtype)} (torch refuses it too)")
        with np.errstate(invalid="ignore"):
            return np.where(x == 0, v, (x > 0).astype(x.dtype))


HeavisideFunction.op.float64 = HeavisideFunction
