"""torch's boolean reductions, logical and bitwise ops: all, any (dim None / int / tuple, keepdim), logical_and / or /
xor / not (bool outputs; a NaN is true), bitwise_and / or / xor / not and bitwise_left_shift / right_shift (integer and
bool tensors only, torch's promotion: ``uint8 & int8`` is int16; a shift by the width or more gives 0, or -1 for a
negative value shifted right, as torch's).

None of them has a gradient: their outputs are bool or integer. ONNX: all/any are a ReduceSum over a Cast (exact for
empty reductions, where ReduceMin/ReduceMax give the dtype's extremes), the logical ops And/Or/Xor/Not, the bitwise
ops BitwiseAnd/Or/Xor/Not (opset 18; And/Or/Xor/Not for bool at any opset), the shifts BitShift on uint64 between
Casts (signed ones through the complement, ops/_onnx_int.py: any integer dtype, any opset)."""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from . import _meta as M
from ._logic_common import cast, dtype_name, operand, promote
from ._onnx_int import shift_onnx
from ._util import normalize_axis
from .registry import BadInput, Sample, register_op

NO_GRAD = "its output is bool or integer: there is no gradient to check"
OPSET18 = ("the generated check exports at opset 17; BitwiseAnd/Or/Xor/Not need opset 18 "
           "(tests/test_torch_logic.py exports this sample at 18)")


def _ints(*shape, seed=0, low=-40, high=40, dtype=np.int64):
    return np.random.default_rng(seed).integers(low, high, size=shape).astype(dtype)


def _bools(*shape, seed=0):
    return np.random.default_rng(seed).random(shape) < 0.5


class _NoGrad(Function):
    """An op whose outputs are bool / integer (no gradient: Function.apply links only float outputs)."""

    exact_dtype = True
    non_differentiable_outputs = (0,)

    @staticmethod
    def backward(ctx, *grads):  # pragma: no cover - the bool / integer output never reaches backward
        return None


# ---- all / any ---------------------------------------------------------------------------------------
def _reduce_axes(x, dim):
    """The axes all/any reduce: every axis for None, none for () (torch's all(x, dim=()) is elementwise)."""
    if x.ndim == 0:
        normalize_axis(dim, 0)  # dim 0 / -1 is allowed on a 0-d tensor, anything else raises
        return ()
    return normalize_axis(dim, x.ndim)


def _bool_reduction_dtype(x):
    return np.dtype(np.uint8) if x.dtype == np.uint8 else np.dtype(np.bool_)  # torch keeps uint8 (a legacy rule)


def _bool_reduction(name, fn):
    def forward(ctx, input, dim=None, keepdim=False):
        x = operand(input, name, "input", numbers=False)
        if not isinstance(keepdim, (bool, np.bool_)):
            raise TypeError(f"{name}(): argument 'keepdim' must be a bool, got {type(keepdim).__name__}")
        axes = _reduce_axes(x, dim)
        truth = x if x.dtype == np.bool_ else x != 0  # NaN != 0: NaN is true, as torch's
        out = fn(truth, axis=axes, keepdims=bool(keepdim)) if axes else truth
        return np.asarray(out).astype(_bool_reduction_dtype(x), copy=False)

    def meta(input, dim=None, keepdim=False):
        axes = _reduce_axes(input, dim)
        return M.MetaArray(M._reduced_shape(input.shape, axes, keepdim), _bool_reduction_dtype(input))

    def onnx(ctx, op):
        x_t = op.args["input"]
        axes = _reduce_axes(x_t._data, op.attr("dim"))
        truth = ctx.node("Cast", [op.input("input")], to=9)  # 9: BOOL; a NaN casts to true
        if not axes:
            out = truth
        else:
            if name == "all":
                truth = ctx.node("Not", [truth])
            count = ctx.reduce("ReduceSum", ctx.node("Cast", [truth], to=7), axes, bool(op.attr("keepdim")))
            zero = ctx.const(np.zeros((), np.int64))
            out = ctx.node("Equal" if name == "all" else "Greater", [count, zero])
        return [ctx.node("Cast", [out], to=2) if x_t.dtype == np.uint8 else out]  # 2: UINT8

    def samples():
        f = np.random.default_rng(3).choice([0.0, 1.5, -2.0, np.nan], size=(3, 5, 7), p=[.1, .5, .3, .1])
        ones = np.ones((4, 9), np.float32)
        ones[2, 3] = 0
        return [Sample((f.astype(np.float32),), {}, "float nan"), Sample((ones,), {"dim": 1}, "int dim"),
                Sample((_bools(2, 5, 3) | (name == "all"),), {"dim": (0, -1), "keepdim": True}, "bool tuple keepdim"),
                Sample((_ints(3, 0, 4, low=0, high=2),), {"dim": 1}, "int64 empty dim"),
                Sample((_ints(5, 6, low=0, high=3),), {"dim": -1}, "int64")]

    cls = type(f"{name.title()}Function", (_NoGrad,), {
        "__module__": __name__, "__doc__": f"torch.{name}(input, dim=None, keepdim=False).",
        "forward": staticmethod(forward)})
    cls = register_op(name, meta=meta, flops=M.no_flops, onnx=onnx, samples=samples, gaps={"backward": NO_GRAD},
                      # dim=None with keepdim=True keeps every axis as size 1 in torch too (torch.all(x) did not)
                      torch=lambda torch, x, dim=None, keepdim=False: getattr(torch, name)(x, dim=dim, keepdim=keepdim),
                      bad_inputs=lambda: [BadInput((_ints(2, 3),), {"dim": 2}, IndexError, "dim"),
                                          BadInput((_ints(2, 3),), {"dim": 1.0}, TypeError, "dim"),
                                          BadInput((_ints(2, 3),), {"keepdim": 1}, TypeError, "keepdim")])(cls)
    cls.op.float64 = cls
    return cls


AllFunction = _bool_reduction("all", np.all)
AnyFunction = _bool_reduction("any", np.any)


# ---- logical ops ---------------------------------------------------------------------------------------------
def _truth(a):
    return a.astype(np.bool_, copy=False) if isinstance(a, np.ndarray) else np.asarray(bool(a))


def _binary_meta(out_dtype):
    def meta(input, other):
        return M.MetaArray(M.broadcast(input, other).shape, out_dtype(input, other))
    return meta


def _logical_samples():
    a = np.random.default_rng(0).choice([0.0, 1.0, -0.5, np.nan], size=(3, 7)).astype(np.float32)
    return [Sample((a, _ints(3, 7, low=-1, high=2)), {}, "float nan with int64"),
            Sample((_bools(2, 1, 9), _bools(5, 1, seed=1)), {}, "bool broadcast"),
            Sample((_ints(4, 5, low=0, high=2), _ints(5, seed=2, low=-1, high=2).astype(np.float64)), {},
                   "int64 float64")]


def _logical(name, fn, onnx_op):
    def forward(ctx, input, other):
        return fn(_truth(operand(input, name, "input")), _truth(operand(other, name, "other")))

    def onnx(ctx, op):
        return [ctx.node(onnx_op, [ctx.node("Cast", [op.input(k)], to=9) for k in ("input", "other")])]

    cls = type(f"{name.title().replace('_', '')}Function", (_NoGrad,), {
        "__module__": __name__, "__doc__": f"torch.{name}(input, other): bool, broadcast.",
        "forward": staticmethod(forward)})
    cls = register_op(name, meta=_binary_meta(lambda a, b: np.bool_), flops=M.no_flops, onnx=onnx,
                      samples=_logical_samples, torch=lambda torch, a, b: getattr(torch, name)(a, b),
                      gaps={"backward": NO_GRAD},
                      bad_inputs=lambda: [BadInput((_ints(2, 3), _ints(4, 3)), {}, ValueError, "broadcast")])(cls)
    cls.op.float64 = cls
    return cls


LogicalAndFunction = _logical("logical_and", np.logical_and, "And")
LogicalOrFunction = _logical("logical_or", np.logical_or, "Or")
LogicalXorFunction = _logical("logical_xor", np.logical_xor, "Xor")


@register_op("logical_not", meta=lambda input: M.MetaArray(input.shape, np.bool_), flops=M.no_flops,
             onnx=lambda ctx, op: [ctx.node("Not", [ctx.node("Cast", [op.input("input")], to=9)])],
             samples=lambda: [Sample(s.args[:1], {}, s.name) for s in _logical_samples()],
             torch=lambda torch, a: torch.logical_not(a), gaps={"backward": NO_GRAD})
class LogicalNotFunction(_NoGrad):
    """torch.logical_not(input): bool (a NaN is true, so its negation is false)."""

    @staticmethod
    def forward(ctx, input):
        return np.logical_not(_truth(operand(input, "logical_not", "input", numbers=False)))


LogicalNotFunction.op.float64 = LogicalNotFunction


# ---- bitwise ops ---------------------------------------------------------------------------------------------
def _integer_dtype(name, *args):
    dt = promote(*args)
    if dt.kind not in "biu":
        raise TypeError(f"{name}(): expected integer or bool tensors, got {dtype_name(dt)} (the promoted dtype of "
                        f"{', '.join(dtype_name(a.dtype) if hasattr(a, 'dtype') else type(a).__name__ for a in args)})"
                        f"; bitwise ops are defined for integers and bools only, as torch's")
    return dt


def _shift(a, s, left):
    """a << s or a >> s in a's dtype (a and s broadcast). numpy (C) shifts by the width or more (or by a negative
    amount) are undefined; torch gives 0, or the sign (-1 / 0) for a signed right shift. The range is checked on s's
    own shape (a number: one element) and the shift runs unmasked where every amount is in range."""
    bits = a.dtype.itemsize * 8
    # as unsigned, a negative amount is >= 2**(width - 1) >= bits: one max finds both kinds out of range
    if not s.size or s.view(np.dtype(f"u{s.dtype.itemsize}")).max() < bits:
        if left and s.size == 1:  # a * 2**s wraps as a << s does; numpy's 8-bit multiply is vectorized, its shift not
            return np.multiply(a, np.full(s.shape, cast(1 << int(s.reshape(-1)[0]), a.dtype), a.dtype))
        return (np.left_shift if left else np.right_shift)(a, s)
    ok = (s >= 0) & (s < bits)
    if not left and a.dtype.kind == "i":  # an arithmetic shift by width - 1 is the sign fill
        return np.right_shift(a, np.where(ok, s, bits - 1).astype(a.dtype, copy=False))
    shifted = (np.left_shift if left else np.right_shift)(a, np.where(ok, s, 0).astype(a.dtype, copy=False))
    return np.where(ok, shifted, np.zeros((), a.dtype))


# The generated checks make their tensors with fg.tensor, which stores numpy integer arrays as int64: the samples are
# int64 and bool (tests/test_torch_logic.py covers uint8, int8, int16 and int32, and exports them to ONNX).
def _bitwise_samples(shift=False):
    def samples():
        hi = 8 if shift else 1 << 30
        why = "" if shift else " (" + OPSET18 + ")"  # the shifts export at any opset
        out = [Sample((_ints(3, 7, low=-1 << 30, high=1 << 30), _ints(3, 7, seed=1, low=0, high=hi)), {},
                      "int64" + why, onnx=shift),
               Sample((_ints(2, 1, 9, low=-1 << 40, high=1 << 40), _ints(5, 1, seed=1, low=0, high=hi)), {},
                      "broadcast" + why, onnx=shift),
               Sample((_ints(4, 5, low=-100, high=100), 3), {}, "with a number" + why, onnx=shift)]
        if shift:
            out.append(Sample((_ints(3, 4, low=-60, high=60), _ints(3, 4, low=-2, high=70)), {},
                              "by amounts out of range"))
        else:
            out.append(Sample((_bools(3, 7), _bools(3, 7, seed=1)), {}, "bool"))
        return out
    return samples


def _bitwise_onnx(name, onnx_op, bool_op):
    def onnx(ctx, op):
        dt = op.out_dtype()
        keys = ("input",) if name == "bitwise_not" else ("input", "other")
        if dt == np.bool_:
            return [ctx.node(bool_op, [op.input(k, np.bool_) for k in keys])]
        if onnx_op == "BitShift":
            return shift_onnx("left" in name)(ctx, op)
        if ctx.opset < 18:
            raise op.unsupported(f"{name}: {onnx_op} on integers needs opset 18 or later (exporting at {ctx.opset})")
        return [ctx.node(onnx_op, [op.input(k, dt) for k in keys])]
    return onnx


def _bitwise(name, fn, onnx_op, bool_op):
    shift = "shift" in name

    def forward(ctx, input, other):
        a, b = operand(input, name, "input"), operand(other, name, "other")
        dt = _integer_dtype(name, a, b)
        if shift and dt == np.bool_:
            raise TypeError(f"{name}(): expected integer tensors, got bool (shifts are not defined for bools, "
                            f"as torch's)")
        a, b = cast(a, dt), cast(b, dt)
        if shift:
            return np.asarray(_shift(a, b, left="left" in name))
        return np.asarray(fn(a, b))

    def meta(input, other):
        return M.MetaArray(M.broadcast(input, other).shape, _integer_dtype(name, input, other))

    cls = type(f"{name.title().replace('_', '')}Function", (_NoGrad,), {
        "__module__": __name__, "__doc__": f"torch.{name}(input, other): integer and bool tensors, broadcast.",
        "forward": staticmethod(forward)})
    gaps = {"backward": NO_GRAD}
    cls = register_op(name, meta=meta, flops=M.no_flops, onnx=_bitwise_onnx(name, onnx_op, bool_op),
                      samples=_bitwise_samples(shift), torch=lambda torch, a, b: getattr(torch, name)(a, b),
                      gaps=gaps,
                      bad_inputs=lambda: [BadInput((np.ones((2, 3), np.float32), _ints(2, 3)), {}, TypeError,
                                                   f"{name}.*float32"),
                                          BadInput((_ints(2, 3), 1.5), {}, TypeError, f"{name}.*float32")])(cls)
    cls.op.float64 = cls
    return cls


BitwiseAndFunction = _bitwise("bitwise_and", np.bitwise_and, "BitwiseAnd", "And")
BitwiseOrFunction = _bitwise("bitwise_or", np.bitwise_or, "BitwiseOr", "Or")
BitwiseXorFunction = _bitwise("bitwise_xor", np.bitwise_xor, "BitwiseXor", "Xor")
BitwiseLeftShiftFunction = _bitwise("bitwise_left_shift", None, "BitShift", None)
BitwiseRightShiftFunction = _bitwise("bitwise_right_shift", None, "BitShift", None)


@register_op("bitwise_not", meta=lambda input: M.MetaArray(input.shape, _integer_dtype("bitwise_not", input)),
             flops=M.no_flops, onnx=_bitwise_onnx("bitwise_not", "BitwiseNot", "Not"),
             samples=lambda: [Sample((_ints(3, 7, low=-1 << 40, high=1 << 40),), {}, "int64 (" + OPSET18 + ")",
                                     onnx=False),
                              Sample((_ints(2, 5, 3, low=-3, high=3),), {}, "small int64 (" + OPSET18 + ")",
                                     onnx=False),
                              Sample((_bools(4, 9),), {}, "bool")],
             torch=lambda torch, a: torch.bitwise_not(a), gaps={"backward": NO_GRAD},
             bad_inputs=lambda: [BadInput((np.ones((2, 3), np.float32),), {}, TypeError, "bitwise_not.*float32")])
class BitwiseNotFunction(_NoGrad):
    """torch.bitwise_not(input): ~x of integers, logical not of bools."""

    @staticmethod
    def forward(ctx, input):
        x = operand(input, "bitwise_not", "input", numbers=False)
        _integer_dtype("bitwise_not", x)
        return np.invert(x)


BitwiseNotFunction.op.float64 = BitwiseNotFunction
