"""Quantize / dequantize on numpy arrays (or forgegrad Tensors) and the int8 path in use.

Activations are quantized with torch's (fbgemm's) ChooseQuantizationParams: the range [min, max] is
widened to include 0, the scale is (max - min) / (qmax - qmin) and the zero point is rounded from
the end that errs less. ``reduce_range=True`` uses 7 bits (qmax 127) as torch's x86/fbgemm dynamic
Linear does (there, to keep ``vpmaddubsw`` from saturating); forgegrad's kernels are exact for the
full 8 bits, so reduce_range only matters for matching torch.
"""
from __future__ import annotations

import numpy as np

from .. import _C
from ..tensor import Tensor
from .dtypes import as_qdtype, quint8

__all__ = ["choose_qparams", "quantize_per_tensor", "dequantize", "quantize_weight_per_channel",
           "int8_path", "int8_paths", "set_int8_path"]


def _array(x, name: str) -> np.ndarray:
    arr = x._data if isinstance(x, Tensor) else x
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray or forgegrad.Tensor of float32, got {type(x).__name__}")
    if arr.dtype != np.float32:
        raise TypeError(f"{name} must have dtype float32, got {arr.dtype}")
    return np.ascontiguousarray(arr)


def int8_path() -> str:
    """The int8 GEMM path that runs now: 'amx', 'avx512_vnni', 'avx_vnni' (vpdpbusd on 256-bit
    registers: VEX-encoded where the CPU has AVX-VNNI, EVEX-encoded on AVX-512 VNNI CPUs), 'avx2' or
    'scalar' (lowered by forgegrad.set_simd and FORGEGRAD_SIMD; forced with set_int8_path or
    FORGEGRAD_INT8)."""
    return _C.quant.path()


def int8_paths() -> list:
    """The int8 paths this machine can run, best first."""
    return list(_C.quant.paths())


def set_int8_path(name) -> None:
    """Force an int8 path (for tests and benchmarks); None restores the best one. Raises ValueError
    when the CPU or OS lacks it (the message says why, e.g. for AMX)."""
    _C.quant.set_path(name)


def choose_qparams(x, reduce_range: bool = False):
    """(scale, zero_point) for quantizing ``x`` to quint8 over its whole range (per tensor).

    Raises ValueError if x holds NaN or infinity."""
    return _C.quant.choose_qparams(_array(x, "x"), bool(reduce_range))


def quantize_per_tensor(x, scale: float, zero_point: int, dtype=quint8) -> np.ndarray:
    """``clamp(round(x / scale) + zero_point)`` as uint8 (quint8) or int8 (qint8) (rounding half to
    even, x multiplied by 1/scale as fbgemm does)."""
    arr = _array(x, "x")
    qd = as_qdtype(dtype)
    if qd is quint8:
        return _C.quant.quantize_u8(arr, float(scale), int(zero_point), 0, 255)
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite number > 0, got {scale}")
    if not -128 <= int(zero_point) <= 127:
        raise ValueError(f"zero_point must be in [-128, 127] for qint8, got {zero_point}")
    q = np.rint(arr * np.float32(1.0 / scale)) + np.float32(zero_point)
    return np.clip(q, -128, 127).astype(np.int8)


def dequantize(q, scale, zero_point=0, axis: int = 0) -> np.ndarray:
    """``(q - zero_point) * scale`` as float32; scale (and zero_point) may be per channel along ``axis``."""
    q = np.asarray(q)
    if q.dtype not in (np.int8, np.uint8):
        raise TypeError(f"q must have dtype int8 or uint8, got {q.dtype}")
    scale = np.asarray(scale, dtype=np.float32)
    zp = np.asarray(zero_point, dtype=np.float32)
    if scale.ndim == 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
        zp = zp.reshape(shape) if zp.ndim == 1 else zp
    return ((q.astype(np.float32) - zp) * scale).astype(np.float32)


def quantize_weight_per_channel(w: np.ndarray):
    """Per-output-channel symmetric int8 weights as torch's ``per_channel_dynamic_qconfig``
    (PerChannelMinMaxObserver, qint8, per_channel_symmetric): scale = max|w_row| / 127.5 (at least
    float32 eps), q = clamp(round(w * (1 / scale)), -128, 127) (torch's
    quantize_val multiplies by the float32 inverse), zero point 0. Returns (q int8, scale float32)."""
    w = np.asarray(w, dtype=np.float32)
    amax = np.maximum(-np.minimum(w.min(axis=1), 0), np.maximum(w.max(axis=1), 0))
    scale = np.maximum(amax / np.float32(127.5), np.finfo(np.float32).eps).astype(np.float32)
    q = np.clip(np.rint(w * (np.float32(1) / scale)[:, None]), -128, 127).astype(np.int8)
    return q, scale
