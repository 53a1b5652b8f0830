"""Quantized layers (forgegrad.quantization) -> ONNX integer ops that onnxruntime runs on int8 kernels.

- WeightOnlyInt8Linear -> com.microsoft MatMulNBits (bits=8): onnxruntime keeps the weights in 8 bits
  and widens them as it multiplies (a DequantizeLinear + MatMul pair would be constant-folded into a
  float32 weight at load time, four times the bytes per token). Each row's per-channel scale repeats
  over its K blocks; the int8 weight w is stored as uint8 w + 128 with the default zero point 128.
- WeightOnlyBF16Linear -> a BFLOAT16 initializer (the transposed weight), Cast to float, MatMul, Add the
  bias: the file holds half the bytes; onnxruntime widens the weight once at load time. BF16Embedding ->
  Gather from a BFLOAT16 table, Cast to float.
- DynamicQuantizedLinear -> forgegrad's own per-call activation quantization written out op by op
  (fbgemm's ChooseQuantizationParams in double, as the kernel computes it; Mul by the float32
  inverse scale, Round half to even, Add the zero point, Clip, Cast), MatMulInteger on uint8
  activations and uint8 ``w + 128`` weights (exact on every CPU: onnxruntime's u8 x s8 kernels
  saturate on CPUs without VNNI), then the kernel's epilogue (Mul by activation scale x channel
  scale, Add bias, Relu). The integers are forgegrad's bit for bit, so the export follows the model
  whether it quantizes to 7 bits (reduce_range, torch's default) or 8; onnxruntime's
  DynamicQuantizeLinear would quantize differently (8 bits, x / scale, another zero point rule).
  ``forgegrad.quantization.export_onnx`` writes onnxruntime's own DynamicQuantizeLinear form instead
  (fused by onnxruntime, within one output quantization step of forgegrad).
- QuantizedLinear / QuantizedConv2d (static and QAT-converted) -> the input quantized with its calibrated
  scale and zero point (the same Mul/Round/Add/Clip), MatMulInteger / ConvInteger, the epilogue, the output
  requantized and dequantized (Mul, Round, Add, Clip, Sub, Mul: forgegrad's float32 arithmetic, where
  ONNX's QuantizeLinear would divide by the scale).
- DynamicQuantizedLSTM / GRU -> per layer and direction, the input product as above over all steps,
  then an ONNX Loop over the steps whose body quantizes h, runs the recurrent MatMulInteger and the
  gate arithmetic in torch's gate order, as forgegrad's rnn_dynamic_layer kernel does.
"""
from __future__ import annotations

import numpy as np

from ...quantization._traced import BF16EmbeddingCall, DynamicQuantizedRNNCall, QuantizedLayerCall
from ...quantization.onnx_export import unsigned_weight
from . import register
from ._loop import loop_body

F32, F64 = np.float32, np.float64
_TO_F32, _TO_F64, _TO_U8 = 1, 11, 2  # onnx.TensorProto FLOAT, DOUBLE, UINT8
_SMALL_SCALE = F32(6.1e-5)  # fbgemm's SMALL_SCALE_THRESHOLD, as choose_qparams_u8 in qgemm_dispatch.cpp


def _block_size(k: int) -> int:
    """MatMulNBits' block along K: a power of two from 16 to 128 (per-channel scales repeat per block)."""
    b = 16
    while b < 128 and b < k:
        b *= 2
    return b


def _matmul_nbits(ctx, x, module, where):
    N, K = module.weight.shape
    bs = _block_size(K)
    nb = -(-K // bs)
    blocks = np.full((N, nb * bs), 128, np.uint8)  # padding: 128 is zero after the zero point
    blocks[:, :K] = unsigned_weight(module.weight._data)
    scales = np.repeat(np.asarray(module.weight_scale._data, F32), nb)
    return ctx.node("MatMulNBits", [x, ctx.const(blocks.reshape(N, nb, bs), hint=f"{where}.weight_uint8_blocks"),
                                    ctx.const(scales, hint=f"{where}.weight_block_scale")],
                    domain="com.microsoft", K=int(K), N=int(N), bits=8, block_size=bs)


def _weight_only_linear(ctx, op, m, where):
    y = _matmul_nbits(ctx, op.input("input"), m, where)
    return y if m.bias is None else ctx.node("Add", [y, ctx.const(m.bias._data, hint=f"{where}.bias")])


def _bf16_linear(ctx, op, m, where):
    wt = ctx.node("Cast", [ctx.const_bfloat16(m.weight._data.T, hint=f"{where}.weight_bf16_t")], to=_TO_F32)
    y = ctx.node("MatMul", [op.input("input"), wt])
    return y if m.bias is None else ctx.node("Add", [y, ctx.const(m.bias._data, hint=f"{where}.bias")])


def _round_clip(ctx, x, inv_scale, zero_point, qmax):
    """clamp(round(x * inv_scale) + zero_point, 0, qmax) in float32: the kernels' quantization (they
    multiply by the float32 inverse scale where ONNX's QuantizeLinear divides), before the Cast to uint8."""
    q = ctx.node("Add", [ctx.node("Round", [ctx.node("Mul", [x, inv_scale])]), zero_point])
    return ctx.node("Clip", [q, ctx.const(F32(0)), ctx.const(F32(qmax))])


def quantize_activation(ctx, x, reduce_range: bool):
    """(q uint8, scale float32 scalar, zero point uint8 scalar) of float32 ``x`` over its whole range,
    the integers of forgegrad's choose_qparams_u8 + qquantize_u8 (qgemm_dispatch.cpp, qquantize.cpp).

    fbgemm's rule picks the zero point from whichever end of [min, max] errs less; that is the min end
    whenever max > 0 and gives the same rounded value when max == 0, so only the min end is computed.
    Below the small-scale threshold the scale is the threshold and the zero point comes from the
    range widened by float32(threshold / scale), as in the kernel. A range under 1e-30 is clamped
    before that division: such inputs quantize to the zero point whatever it is, so the output is
    unchanged and no NaN or infinity reaches the casts."""
    key = ("int8_activation", x, bool(reduce_range))
    if key in ctx.memo:  # layers reading one tensor (Llama's q/k/v, gate/up) share its quantization
        return ctx.memo[key]
    qmax = 127 if reduce_range else 255  # qmin is 0 either way
    zero = ctx.const(F32(0))
    # without axes a Reduce* op reduces every axis, at every opset
    mn = ctx.node("Min", [ctx.node("ReduceMin", [x], keepdims=0), zero])
    mx = ctx.node("Max", [ctx.node("ReduceMax", [x], keepdims=0), zero])
    mnd = ctx.node("Cast", [mn], to=_TO_F64)
    org = ctx.node("Div", [ctx.node("Sub", [ctx.node("Cast", [mx], to=_TO_F64), mnd]), ctx.const(qmax, F64)])
    small = ctx.node("Less", [org, ctx.const(_SMALL_SCALE, F64)])
    amp = ctx.node("Div", [ctx.const(_SMALL_SCALE, F64), ctx.node("Max", [org, ctx.const(1e-30, F64)])])
    widened = ctx.node("Cast", [ctx.node("Mul", [mn, ctx.node("Cast", [amp], to=_TO_F32)])], to=_TO_F64)
    scale = ctx.node("Where", [small, ctx.const(_SMALL_SCALE, F64), org])
    lo = ctx.node("Div", [ctx.node("Where", [small, widened, mnd]), scale])
    zp = ctx.node("Round", [ctx.node("Clip", [ctx.node("Neg", [lo]), ctx.const(0, F64), ctx.const(qmax, F64)])])
    scale_f = ctx.node("Cast", [scale], to=_TO_F32)
    inv = ctx.node("Div", [ctx.const(F32(1)), scale_f])
    q = ctx.node("Cast", [_round_clip(ctx, x, inv, ctx.node("Cast", [zp], to=_TO_F32), qmax)], to=_TO_U8)
    ctx.memo[key] = q, scale_f, ctx.node("Cast", [zp], to=_TO_U8)
    return ctx.memo[key]


def int8_linear(ctx, q, x_scale, x_zp, module, where):
    """MatMulInteger of quantized activations with a DynamicQuantizedLinear's weights and its epilogue
    (no ReLU)."""
    wt = ctx.memo.get(("int8_wt", id(module)))
    if wt is None:
        wt = ctx.memo[("int8_wt", id(module))] = ctx.const(
            np.ascontiguousarray(unsigned_weight(module.weight._data).T), hint=f"{where}.weight_uint8_T")
    acc = ctx.node("MatMulInteger", [q, wt, x_zp, ctx.const(np.uint8(128))])
    scale = ctx.node("Mul", [x_scale, ctx.const(module.weight_scale._data, hint=f"{where}.weight_scale")])
    y = ctx.node("Mul", [ctx.node("Cast", [acc], to=_TO_F32), scale])
    return y if module.bias is None else ctx.node("Add", [y, ctx.const(module.bias._data, hint=f"{where}.bias")])


def _dynamic_linear(ctx, op, m, where):
    rank = len(op.in_dims("input"))
    if rank < 2:
        raise op.unsupported("a DynamicQuantizedLinear exports for inputs of 2 or more dimensions")
    q, scale, zp = quantize_activation(ctx, op.input("input"), m.reduce_range)
    y = int8_linear(ctx, q, scale, zp, m, where)
    return ctx.node("Relu", [y]) if m.relu else y


def _static_layer(ctx, op, m, where):
    """QuantizedLinear / QuantizedConv2d: the input quantized with the calibrated qparams, the integer
    product, the epilogue, the output requantized and dequantized (ReLU and a max-pool fused by convert
    act on the requantized values, which the increasing dequantize carries over)."""
    conv = m.weight._data.ndim == 4
    rank = len(op.in_dims("input"))
    if not conv and rank < 2:
        raise op.unsupported("a QuantizedLinear exports for inputs of 2 or more dimensions")
    (sx, zx), (so, zo) = m.qparams("input"), m.qparams("output")
    x = op.input("input")
    # the inverse scales as the kernels take them: float32(1.0 / scale), divided in double
    q = ctx.node("Cast", [_round_clip(ctx, x, ctx.const(F32(1.0 / sx)), ctx.const(F32(zx)), 255)], to=_TO_U8)
    zx_c, zw_c = ctx.const(np.uint8(zx)), ctx.const(np.uint8(128))
    wu = unsigned_weight(m.weight._data)
    shape = (1, -1, 1, 1) if conv else (-1,)
    if conv:
        from ...quantization._int_ops import _pads
        (pt, pb), (pl, pr) = _pads(m.padding, m.kernel_size, m.dilation)
        acc = ctx.node("ConvInteger", [q, ctx.const(wu, hint=f"{where}.weight_uint8"), zx_c, zw_c],
                       kernel_shape=list(m.kernel_size), strides=list(m.stride), dilations=list(m.dilation),
                       pads=[pt, pl, pb, pr])
    else:
        acc = ctx.node("MatMulInteger", [q, ctx.const(np.ascontiguousarray(wu.T), hint=f"{where}.weight_uint8_T"),
                                         zx_c, zw_c])
    mult = (F32(sx) * m.weight_scale._data.astype(F32)).astype(F32).reshape(shape)
    y = ctx.node("Mul", [ctx.node("Cast", [acc], to=_TO_F32), ctx.const(mult, hint=f"{where}.scale")])
    if m.bias is not None:
        y = ctx.node("Add", [y, ctx.const(m.bias._data.astype(F32).reshape(shape), hint=f"{where}.bias")])
    if conv and getattr(m, "fused_relu", False):
        y = ctx.node("Relu", [y])
    y = _round_clip(ctx, y, ctx.const(F32(1.0 / so)), ctx.const(F32(zo)), 255)
    y = ctx.node("Mul", [ctx.node("Sub", [y, ctx.const(F32(zo))]), ctx.const(F32(so))])
    pool = getattr(m, "fused_pool", None) if conv else None
    if pool:
        y = ctx.node("MaxPool", [y], kernel_shape=list(pool), strides=list(pool))
    return y


@register(BF16EmbeddingCall)
def map_bf16_embedding(ctx, op):
    m = op.attr("module")
    table = ctx.const_bfloat16(m.weight._data, hint=f"{ctx.scope or 'BF16Embedding'}.weight_bf16")
    rows = ctx.node("Gather", [table, op.input("indices", np.int64)], axis=0)
    return [ctx.node("Cast", [rows], to=_TO_F32)]


@register(QuantizedLayerCall)
def map_quantized_layer(ctx, op):
    from ...quantization.bf16 import WeightOnlyBF16Linear
    from ...quantization.modules import DynamicQuantizedLinear, WeightOnlyInt8Linear
    from ...quantization.static import QuantizedConv2d, QuantizedLinear

    m = op.attr("module")
    where = ctx.scope or type(m).__name__
    if isinstance(m, WeightOnlyInt8Linear):  # before its base class, DynamicQuantizedLinear
        return [_weight_only_linear(ctx, op, m, where)]
    if isinstance(m, WeightOnlyBF16Linear):
        return [_bf16_linear(ctx, op, m, where)]
    if isinstance(m, DynamicQuantizedLinear):
        return [_dynamic_linear(ctx, op, m, where)]
    if isinstance(m, (QuantizedLinear, QuantizedConv2d)):
        return [_static_layer(ctx, op, m, where)]
    raise op.unsupported(f"no ONNX mapping for the quantized layer {type(m).__name__}")


def _cols(ctx, x, start, stop, axis=1):
    return ctx.node("Slice", [x, ctx.ints([start]), ctx.ints([stop]), ctx.ints([axis])])


def _direction(ctx, m, x, h0, c0, layer, sfx, reverse):
    """One layer and direction: x (T, B, I) -> (y (T, B, H), h_n, c_n or None)."""
    lstm = m._MODE == "lstm"
    H = m.hidden_size
    ih, hh = getattr(m, f"ih_l{layer}{sfx}"), getattr(m, f"hh_l{layer}{sfx}")
    where = f"{ctx.scope or 'rnn'}.l{layer}{sfx}"
    q, s, z = quantize_activation(ctx, x, ih.reduce_range)  # the input product over every step at once
    gi = int8_linear(ctx, q, s, z, ih, f"{where}.ih")
    steps = ctx.node("Gather", [ctx.node("Shape", [gi]), ctx.const(np.int64(0))], axis=0)

    def step(it, state):
        t = ctx.node("Sub", [ctx.node("Sub", [steps, ctx.const(np.int64(1))]), it]) if reverse else it
        a = ctx.node("Gather", [gi, t], axis=0)  # (B, G*H)
        h = state[0]
        hq, hs, hz = quantize_activation(ctx, h, hh.reduce_range)
        r = int8_linear(ctx, hq, hs, hz, hh, f"{where}.hh")
        if lstm:  # gates i, f, g, o; c = f * c + i * g; h = o * tanh(c)
            g = ctx.node("Add", [a, r])
            i, f, o = (ctx.node("Sigmoid", [_cols(ctx, g, k * H, (k + 1) * H)]) for k in (0, 1, 3))
            gg = ctx.node("Tanh", [_cols(ctx, g, 2 * H, 3 * H)])
            c = ctx.node("Add", [ctx.node("Mul", [f, state[1]]), ctx.node("Mul", [i, gg])])
            h_new = ctx.node("Mul", [o, ctx.node("Tanh", [c])])
            return [h_new, c], [ctx.node("Identity", [h_new])]
        # gates r, z, n; n = tanh(a_n + r * (W_hn h + b_hn)); h = (1 - z) * n + z * h
        rz = ctx.node("Sigmoid", [ctx.node("Add", [_cols(ctx, a, 0, 2 * H), _cols(ctx, r, 0, 2 * H)])])
        rg, zg = _cols(ctx, rz, 0, H), _cols(ctx, rz, H, 2 * H)
        n = ctx.node("Tanh", [ctx.node("Add", [_cols(ctx, a, 2 * H, 3 * H),
                                               ctx.node("Mul", [rg, _cols(ctx, r, 2 * H, 3 * H)])])])
        h_new = ctx.node("Add", [ctx.node("Mul", [ctx.node("Sub", [ctx.const(F32(1)), zg]), n]),
                                 ctx.node("Mul", [zg, h])])
        return [h_new], [ctx.node("Identity", [h_new])]

    names = ["h", "c"] if lstm else ["h"]
    body = loop_body(ctx, ctx.fresh(f"{where}_step").replace("/", "_"), names, step)
    outs = ctx.node("Loop", [steps, "", h0] + ([c0] if lstm else []), outputs=len(names) + 1, body=body)
    y = outs[-1]
    if reverse:  # the steps ran from the last: put the outputs back in time order
        y = ctx.node("Slice", [y, ctx.ints([-1]), ctx.ints([-(2 ** 63)]), ctx.ints([0]), ctx.ints([-1])])
    return y, outs[0], (outs[1] if lstm else None)


@register(DynamicQuantizedRNNCall)
def map_dynamic_rnn(ctx, op):
    m = op.attr("module")
    if len(op.in_dims("input")) != 3:
        raise op.unsupported(f"a {type(m).__name__} exports for batched (3-D) input")
    lstm = m._MODE == "lstm"
    x = op.input("input")
    if m.batch_first:
        x = ctx.node("Transpose", [x], perm=[1, 0, 2])
    D = 2 if m.bidirectional else 1
    given = op.attr("h0") is not None
    if not given:  # zeros (B, H), B read from the input
        batch = _cols(ctx, ctx.node("Shape", [x]), 1, 2, axis=0)
        shape = ctx.node("Concat", [batch, ctx.ints([m.hidden_size])], axis=0)
        zeros = ctx.node("ConstantOfShape", [shape], value=_zero_tensor())
    hn, cn = [], []
    for layer in range(m.num_layers):
        outs = []
        for d, sfx in enumerate(("", "_reverse")[:D]):
            k = ctx.const(np.int64(layer * D + d))
            h0 = ctx.node("Gather", [op.input("h0"), k], axis=0) if given else zeros
            c0 = (ctx.node("Gather", [op.input("c0"), k], axis=0) if given else zeros) if lstm else None
            y, h, c = _direction(ctx, m, x, h0, c0, layer, sfx, reverse=d == 1)
            outs.append(y)
            hn.append(ctx.unsqueeze(h, [0]))
            cn.append(ctx.unsqueeze(c, [0]) if lstm else None)
        x = outs[0] if D == 1 else ctx.node("Concat", outs, axis=2)
    out = ctx.node("Transpose", [x], perm=[1, 0, 2]) if m.batch_first else x
    states = [hn, cn] if lstm else [hn]
    return [out] + [parts[0] if len(parts) == 1 else ctx.node("Concat", parts, axis=0) for parts in states]


def _zero_tensor():
    from onnx import numpy_helper
    return numpy_helper.from_array(np.zeros(1, F32))
