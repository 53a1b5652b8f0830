"""The integer arithmetic of the static quantized layers (QuantizedLinear, QuantizedConv2d).

This is the exact numpy reference (the slow path): uint8 activations minus their zero point times
int8 weights, accumulated in int32 (numpy integer matmul, exact), then scaled to float32 per output
channel and biased. It defines the results; forgegrad's int8 kernels (forgegrad._C.quant), where a
layer can use them, compute the same integers.
"""
from __future__ import annotations

import numpy as np

F32 = np.float32


def quantize_u8(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """clamp(round_half_even(x * (1/scale)) + zero_point, 0, 255) as uint8 (torch's quantize_val)."""
    q = np.rint(x * (F32(1.0) / F32(scale))) + F32(zero_point)
    return np.clip(q, 0, 255).astype(np.uint8)


def fake_quant_u8(y: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """The float values of ``y`` quantized to quint8 with (scale, zero_point)."""
    q = quantize_u8(y, scale, zero_point)
    return ((q.astype(F32) - F32(zero_point)) * F32(scale)).astype(F32)


def _epilogue(acc: np.ndarray, x_scale: float, w_scale: np.ndarray, bias, channel_axis: int) -> np.ndarray:
    shape = [1] * acc.ndim
    shape[channel_axis] = -1
    mult = (F32(x_scale) * w_scale.astype(F32)).astype(F32).reshape(shape)
    y = acc.astype(F32) * mult
    if bias is not None:
        y = y + bias.astype(F32).reshape(shape)
    return y.astype(F32)


def linear(xq: np.ndarray, x_zero_point: int, x_scale: float, wq: np.ndarray, w_scale: np.ndarray, bias):
    """(M, K) uint8 x (N, K) int8 -> (M, N) float32: ((xq - zp) @ wq^T) * x_scale * w_scale[n] + bias[n]."""
    a = xq.astype(np.int32) - np.int32(x_zero_point)
    acc = a @ wq.astype(np.int32).T  # int32 accumulation: |acc| <= 255 * 128 * K, exact for K < 65793
    return _epilogue(acc, x_scale, w_scale, bias, 1)


def _pads(padding, kernel, dilation):
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        total = [d * (k - 1) for k, d in zip(kernel, dilation)]  # "same" (stride 1), torch's split
        return tuple((t // 2, t - t // 2) for t in total)
    return tuple((p, p) for p in padding)


def conv2d(xq: np.ndarray, x_zero_point: int, x_scale: float, wq: np.ndarray, w_scale: np.ndarray, bias,
           stride, padding, dilation) -> np.ndarray:
    """(N, C, H, W) uint8 conv (OC, C, kh, kw) int8 -> (N, OC, OH, OW) float32, exact int32 sums
    (im2col in numpy). Zero padding is padding with the zero point, i.e. a real 0."""
    kh, kw = wq.shape[2:]
    (pt, pb), (pl, pr) = _pads(padding, (kh, kw), dilation)
    a = np.pad(xq.astype(np.int32) - np.int32(x_zero_point), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    dh, dw = dilation
    sh, sw = stride
    win = np.lib.stride_tricks.sliding_window_view(a, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    win = win[:, :, ::sh, ::sw, ::dh, ::dw]  # (N, C, OH, OW, kh, kw)
    n, c, oh, ow = win.shape[:4]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)
    acc = cols @ wq.astype(np.int32).reshape(wq.shape[0], -1).T  # (N*OH*OW, OC)
    acc = acc.reshape(n, oh, ow, -1).transpose(0, 3, 1, 2)
    return _epilogue(acc, x_scale, w_scale, bias, 1)
