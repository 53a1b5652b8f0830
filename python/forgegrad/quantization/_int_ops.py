"""The integer arithmetic of the static quantized layers (QuantizedLinear, QuantizedConv2d).

The layers run on forgegrad's int8 GEMM (``forgegrad._C.quant.linear_u8``: u8 x s8 -> s32 on
AMX / AVX-512 VNNI / AVX2 / portable code, every path the same integers) with its fused epilogue
``v = float(acc - a_zp * colsum[n]) * (a_scale * w_scale[n]) + bias[n]`` re-quantized to uint8 as
``clamp(nearbyint(v * (1 / out_scale)) + out_zp, 0, 255)``. A convolution is an im2col (padding
with the input zero point, i.e. a real 0) followed by that GEMM: ``conv2d_f32`` runs the whole layer
in C++ (``forgegrad._C.quant.conv2d_f32``: quantize, im2col, GEMM, dequantize to NCHW); ``im2col`` and
``conv2d`` are the same steps in numpy around the GEMM.

``reference_linear`` / ``reference_conv2d`` are the same computation in plain numpy (exact int32
sums); the tests check the kernels against them.
"""
from __future__ import annotations

import numpy as np

from .. import _C

F32 = np.float32


def _inv(scale: float) -> F32:
    return F32(1.0 / float(scale))  # as the kernels: the inverse in double, rounded to float32


def quantize_u8(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """clamp(nearbyint(x * (1/scale)) + zero_point, 0, 255) as uint8."""
    return _C.quant.quantize_u8(np.ascontiguousarray(x, dtype=F32), float(scale), int(zero_point), 0, 255)


def dequantize_u8(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return ((q.astype(F32) - F32(zero_point)) * F32(scale)).astype(F32)


def linear(xq, x_scale, x_zero_point, packed, w_scale, bias, out_scale, out_zero_point) -> np.ndarray:
    """uint8 (M, K) x packed int8 weights -> uint8 (M, N) in the output qparams (the int8 GEMM kernel)."""
    pw, colsum = packed
    return _C.quant.linear_u8(np.ascontiguousarray(xq), float(x_scale), int(x_zero_point), pw, colsum,
                              np.ascontiguousarray(w_scale, dtype=F32),
                              None if bias is None else np.ascontiguousarray(bias, dtype=F32), False,
                              float(out_scale), int(out_zero_point))


def _pads(padding, kernel, dilation):
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        total = [d * (k - 1) for k, d in zip(kernel, dilation)]  # "same" (stride 1), torch's split
        return tuple((t // 2, t - t // 2) for t in total)
    return tuple((p, p) for p in padding)


def im2col(xq: np.ndarray, pad_value: int, kernel, stride, padding, dilation):
    """(N, C, H, W) -> ((N * OH * OW, C * kh * kw) contiguous, (N, OH, OW)); pads with ``pad_value``.
    One strided copy per kernel tap (kh * kw copies of N * OH * OW * C bytes, channels innermost),
    so the columns are ordered (i, j, c): multiply with ``conv_weight_matrix(w)``."""
    kh, kw = kernel
    (pt, pb), (pl, pr) = _pads(padding, kernel, dilation)
    a = np.pad(xq, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=pad_value) if pt or pb or pl or pr else xq
    n, c, hp, wp = a.shape
    dh, dw = dilation
    sh, sw = stride
    oh = (hp - (kh - 1) * dh - 1) // sh + 1
    ow = (wp - (kw - 1) * dw - 1) // sw + 1
    nhwc = np.ascontiguousarray(a.transpose(0, 2, 3, 1))  # channels last: each tap is one strided copy
    cols = np.empty((n, oh, ow, kh, kw, c), a.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j, :] = nhwc[:, i * dh:i * dh + (oh - 1) * sh + 1:sh, j * dw:j * dw + (ow - 1) * sw + 1:sw]
    return cols.reshape(n * oh * ow, c * kh * kw), (n, oh, ow)


def conv_weight_matrix(wq: np.ndarray) -> np.ndarray:
    """(OC, C, kh, kw) -> (OC, kh * kw * C), the column order of ``im2col``."""
    return np.ascontiguousarray(wq.transpose(0, 2, 3, 1).reshape(wq.shape[0], -1))


def conv2d(xq, x_scale, x_zero_point, packed, kernel, w_scale, bias, stride, padding, dilation, out_scale,
           out_zero_point) -> np.ndarray:
    """uint8 (N, C, H, W) conv int8 weights -> uint8 (N, OC, OH, OW) in the output qparams."""
    cols, (n, oh, ow) = im2col(xq, int(x_zero_point), kernel, stride, padding, dilation)
    yq = linear(cols, x_scale, x_zero_point, packed, w_scale, bias, out_scale, out_zero_point)
    return np.ascontiguousarray(yq.reshape(n, oh, ow, -1).transpose(0, 3, 1, 2))


def conv2d_f32(x, x_scale, x_zero_point, packed, weight_shape, w_scale, bias, stride, padding, dilation, out_scale,
               out_zero_point, relu=False, pool=(1, 1)) -> np.ndarray:
    """float32 (N, C, H, W) -> float32 (N, OC, OH, OW): the float values of the uint8 output of the int8
    convolution, all in one C++ call (bits equal ``dequantize_u8(conv2d(quantize_u8(x), ...))``). With
    ``relu`` and ``pool`` (a max-pool whose window is its stride, no padding) the same bits as float ReLU
    and max-pool applied to that (both commute with the increasing dequantize, so they run on the bytes)."""
    pw, colsum = packed
    (pt, pb), (pl, pr) = _pads(padding, weight_shape[2:], dilation)
    return _C.quant.conv2d_f32(np.ascontiguousarray(x, dtype=F32), float(x_scale), int(x_zero_point), pw, colsum,
                               np.ascontiguousarray(w_scale, dtype=F32),
                               None if bias is None else np.ascontiguousarray(bias, dtype=F32),
                               [int(v) for v in weight_shape], [int(v) for v in stride], [pt, pb, pl, pr],
                               [int(v) for v in dilation], float(out_scale), int(out_zero_point), bool(relu),
                               [int(v) for v in pool])


# ---- numpy references (exact int32 sums; the same float epilogue) --------------------------------------
def _requant(acc, x_scale, x_zero_point, w_scale, bias, out_scale, out_zero_point, axis):
    shape = [1] * acc.ndim
    shape[axis] = -1
    v = acc.astype(F32) * (F32(x_scale) * w_scale.astype(F32)).reshape(shape)
    if bias is not None:
        v = v + bias.astype(F32).reshape(shape)
    q = np.rint(v * _inv(out_scale)) + F32(out_zero_point)
    return np.clip(q, 0, 255).astype(np.uint8)


def reference_linear(xq, x_scale, x_zero_point, wq, w_scale, bias, out_scale, out_zero_point):
    acc = (xq.astype(np.int64) - int(x_zero_point)) @ wq.astype(np.int64).T
    return _requant(acc, x_scale, x_zero_point, w_scale, bias, out_scale, out_zero_point, 1)


def reference_conv2d(xq, x_scale, x_zero_point, wq, w_scale, bias, stride, padding, dilation, out_scale,
                     out_zero_point):
    cols, (n, oh, ow) = im2col(xq, int(x_zero_point), wq.shape[2:], stride, padding, dilation)
    acc = (cols.astype(np.int64) - int(x_zero_point)) @ conv_weight_matrix(wq).astype(np.int64).T
    acc = acc.reshape(n, oh, ow, -1).transpose(0, 3, 1, 2)
    return _requant(acc, x_scale, x_zero_point, w_scale, bias, out_scale, out_zero_point, 1)
