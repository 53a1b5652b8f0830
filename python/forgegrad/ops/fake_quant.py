"""Fake quantization (quantization-aware training): round to the int grid and back, in float.

    y = (clamp(round(x * (1/scale)) + zero_point, quant_min, quant_max) - zero_point) * scale

with torch's arithmetic (float32 inverse scale, round half to even, the zero point added before the
clamp) so the values are torch's bit for bit. The gradient is the straight-through estimator: the
incoming gradient where the rounded value fell inside [quant_min, quant_max], zero where clamped.
Per tensor (a float scale, an int zero point) and per channel (scale and zero point vectors along
``axis``). In ONNX: Mul, Round, Add, Clip, Sub, Mul (exact; QuantizeLinear only allows the full
uint8/int8 ranges).
"""
from __future__ import annotations

import numbers

import numpy as np

from ..autograd import Function
from . import _meta as M
from . import _samples as S
from .registry import BadInput, Sample, register_op

F32 = np.float32


def _check_range(quant_min, quant_max, who):
    for name, v in (("quant_min", quant_min), ("quant_max", quant_max)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{who}: {name} must be an int, got {v!r}")
    if not quant_min <= quant_max:
        raise ValueError(f"{who}: quant_min ({quant_min}) must be <= quant_max ({quant_max})")


def _fake_quant(x, scale, zero_point, quant_min, quant_max, float32_product=False, per_channel=False):
    """(output, mask) on arrays; scale/zero_point broadcast against x. ``float32_product``: the
    dequantising product rounded to float32 before a float64 result (torch's per-tensor kernel does
    that for double input; its per-channel kernel multiplies in double). Non-finite values as torch's:
    its per-tensor kernel clamps with fmax / fmin (NaN gives quant_min, +-inf a bound), its per-channel
    kernel casts to int64 first (NaN, +-inf and anything past int64's range give quant_min)."""
    inv = (F32(1.0) / np.asarray(scale, F32)).astype(F32)
    with np.errstate(over="ignore"):  # x * inv past float's range is +-inf: it saturates at a bound below
        q = np.rint(x * inv) + np.asarray(zero_point, F32)
    mask = (q >= quant_min) & (q <= quant_max)
    if per_channel:
        cast_fails = ~(np.abs(q) < 2.0 ** 63)
        if cast_fails.any():
            q = np.where(cast_fails, quant_min, q)
    y = (np.fmin(np.fmax(q, quant_min), quant_max) - np.asarray(zero_point, F32)) * np.asarray(scale, F32)
    if float32_product:
        y = y.astype(F32)
    y = y.astype(_out(x))
    return y, mask


def _out(x):
    """The result dtype: float64 input stays float64 (torch's double kernel: float32 scale and inverse
    scale, the arithmetic in double); anything else float32."""
    return np.float64 if x.dtype == np.float64 else F32


def _onnx_fake_quant(ctx, x, scale, zero_point, quant_min, quant_max, float32_product=False):
    """Mul by the float32 inverse scale, Round (half to even, as nearbyint), Add the zero point,
    Clip, Sub, Mul: torch's formula op for op, so the exported values are the same bits (for float64
    input: the float32 scale and inverse scale in double, the per-tensor product rounded to float32)."""
    f = ctx.float_dtype

    def c(v):  # the float32 value, held in the op's dtype (not re-read as a decimal)
        return ctx.const(np.asarray(v, F32).astype(f), exact=True)

    scale = np.asarray(scale, F32)
    q = ctx.node("Round", [ctx.node("Mul", [x, c((F32(1.0) / scale).astype(F32))])])
    q = ctx.node("Add", [q, c(zero_point)])
    q = ctx.node("Clip", [q, c(quant_min), c(quant_max)])
    y = ctx.node("Mul", [ctx.node("Sub", [q, c(zero_point)]), c(scale)])
    if float32_product and f == np.float64:
        y = ctx.node("Cast", [ctx.node("Cast", [y], to=1, _exact=True)], to=11)  # FLOAT, then DOUBLE
    return y


def _onnx_per_tensor(ctx, op):
    return [_onnx_fake_quant(ctx, op.input("input", F32), op.attr("scale"), op.attr("zero_point"),
                             op.attr("quant_min"), op.attr("quant_max"), float32_product=True)]


def _onnx_per_channel(ctx, op):
    x = op.args["input"]
    axis = int(op.attr("axis")) % x.ndim
    shape = tuple(-1 if d == axis else 1 for d in range(x.ndim))
    scale = np.asarray(op.attr("scale"), F32).reshape(shape)
    zp = np.asarray(op.attr("zero_point")).reshape(shape)
    return [_onnx_fake_quant(ctx, op.input("input", F32), scale, zp, op.attr("quant_min"), op.attr("quant_max"))]


@register_op("fake_quantize_per_tensor_affine", meta=M.same, flops=M.per_input_element(5), onnx=_onnx_per_tensor,
             samples=lambda: [Sample((S.rand(3, 7), 0.05, 3, 0, 255), name="quint8"),
                              Sample((S.rand(4, 5, 6), 0.02, 0, -128, 127), name="qint8 clamped"),
                              Sample((S.rand(*S.LARGE), 0.1, -2, -7, 8), name="4-bit large"),
                              Sample((np.array([-0.25, 0.25, 0.75, 1.25], F32), 0.5, 0, -2, 2), name="ties")],
             torch=lambda torch, x, s, z, lo, hi: torch.fake_quantize_per_tensor_affine(x, s, z, lo, hi),
             bad_inputs=lambda: [
                 BadInput((S.rand(2, 3), 0.0, 0, 0, 255), {}, ValueError, "scale"),
                 BadInput((S.rand(2, 3), 0.1, 300, 0, 255), {}, ValueError, "zero_point"),
                 BadInput((S.rand(2, 3), 0.1, 0, 255, 0), {}, ValueError, "quant_min"),
                 BadInput((S.rand(2, 3), 0.1, 0.5, 0, 255), {}, TypeError, "zero_point")])
class FakeQuantizePerTensorAffineFunction(Function):
    @staticmethod
    def forward(ctx, input, scale, zero_point, quant_min, quant_max):
        who = "fake_quantize_per_tensor_affine"
        _check_range(quant_min, quant_max, who)
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not scale > 0:
            raise ValueError(f"{who}: scale must be a positive number, got {scale!r}")
        if isinstance(zero_point, bool) or not isinstance(zero_point, numbers.Integral):
            raise TypeError(f"{who}: zero_point must be an int, got {zero_point!r}")
        if not quant_min <= zero_point <= quant_max:
            raise ValueError(f"{who}: zero_point ({zero_point}) must be between quant_min ({quant_min}) and "
                             f"quant_max ({quant_max})")
        y, mask = _fake_quant(input, scale, zero_point, quant_min, quant_max, float32_product=True)
        ctx.save_for_backward(mask)
        return y

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return np.where(mask, g, 0).astype(_out(g)), None, None, None, None


def _channel_shape(x, axis):
    return tuple(-1 if d == axis else 1 for d in range(x.ndim))


def _per_channel_torch(torch, x, s, z, axis, lo, hi):
    return torch.fake_quantize_per_channel_affine(x, s, z.to(torch.int32), axis, lo, hi)


def _pc_samples():
    rng = np.random.default_rng(3)
    return [Sample((S.rand(4, 6), rng.uniform(0.01, 0.1, 4).astype(F32), rng.integers(0, 10, 4), 0, 0, 255),
                   name="rows quint8", grad=(0,)),
            Sample((S.rand(2, 5, 3, 3), rng.uniform(0.005, 0.03, 5).astype(F32), np.zeros(5, np.int64), 1,
                    -128, 127), name="conv channels qint8", grad=(0,)),
            Sample((S.rand(3, 4, 7), rng.uniform(0.1, 0.5, 7).astype(F32), rng.integers(-3, 3, 7), 2, -8, 7),
                   name="last axis 4-bit", grad=(0,))]


def _pc_bad():
    x = S.rand(4, 6)
    s, z = np.full(4, 0.1, F32), np.zeros(4, np.int64)
    return [BadInput((x, np.full(3, 0.1, F32), z, 0, 0, 255), {}, ValueError, "scale"),
            BadInput((x, s, np.zeros(4, np.int64), 2, 0, 255), {}, IndexError, "axis"),
            BadInput((x, -s, z, 0, 0, 255), {}, ValueError, "scale"),
            BadInput((x, s, np.full(4, 999, np.int64), 0, 0, 255), {}, ValueError, "zero_point")]


@register_op("fake_quantize_per_channel_affine", meta=M.same, flops=M.per_input_element(5), onnx=_onnx_per_channel,
             float32_args=(1,), samples=_pc_samples, torch=_per_channel_torch, bad_inputs=_pc_bad)
class FakeQuantizePerChannelAffineFunction(Function):
    @staticmethod
    def forward(ctx, input, scale, zero_point, axis, quant_min, quant_max):
        who = "fake_quantize_per_channel_affine"
        _check_range(quant_min, quant_max, who)
        if isinstance(axis, bool) or not isinstance(axis, numbers.Integral) or not -input.ndim <= axis < input.ndim:
            raise IndexError(f"{who}: axis {axis!r} is out of range for a {input.ndim}-d input")
        axis = int(axis) % input.ndim
        c = input.shape[axis]
        scale = np.asarray(scale)
        zero_point = np.asarray(zero_point)
        if scale.shape != (c,) or zero_point.shape != (c,):
            raise ValueError(f"{who}: scale {scale.shape} and zero_point {zero_point.shape} must both be ({c},), "
                             f"the input's size along axis {axis}")
        if zero_point.dtype.kind not in "iu":
            raise TypeError(f"{who}: zero_point must hold ints, got {zero_point.dtype}")
        if not np.all(scale > 0):
            raise ValueError(f"{who}: every scale must be positive")
        if np.any(zero_point < quant_min) or np.any(zero_point > quant_max):
            raise ValueError(f"{who}: zero_point values must be between quant_min ({quant_min}) and "
                             f"quant_max ({quant_max})")
        shape = _channel_shape(input, axis)
        y, mask = _fake_quant(input, scale.astype(F32).reshape(shape), zero_point.reshape(shape), quant_min,
                              quant_max, per_channel=True)
        ctx.save_for_backward(mask)
        return y

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return np.where(mask, g, 0).astype(_out(g)), None, None, None, None, None


def fake_quantize_per_tensor_affine(input, scale, zero_point, quant_min, quant_max):
    """torch.fake_quantize_per_tensor_affine: see the module docstring."""
    from .registry import get
    return get("fake_quantize_per_tensor_affine")(input, float(scale) if isinstance(scale, np.floating) else scale,
                                                  int(zero_point) if isinstance(zero_point, np.integer) else zero_point,
                                                  quant_min, quant_max)


def fake_quantize_per_channel_affine(input, scale, zero_point, axis, quant_min, quant_max):
    """torch.fake_quantize_per_channel_affine: see the module docstring."""
    from .registry import get
    return get("fake_quantize_per_channel_affine")(input, scale, zero_point, axis, quant_min, quant_max)
