"""Observers: record the range of the values a tensor takes and turn it into a scale and zero point,
with torch.ao.quantization's classes, arguments and formulas.

    obs = MinMaxObserver(dtype="quint8")            # per tensor, affine
    obs(x); obs(x2)                                  # record (returns x unchanged)
    scale, zero_point = obs.calculate_qparams()      # numpy arrays of shape (1,)

Per channel (``ch_axis``): PerChannelMinMaxObserver, MovingAveragePerChannelMinMaxObserver, whose
qparams have one entry per channel. MovingAverage* follow ``min += c * (batch_min - min)``.
PercentileObserver (not in torch) clips outliers: it averages each batch's ``percentile`` /
``100 - percentile`` percentiles, then uses the min-max formula. Calibration data must be float32
(float64 arrays are rejected rather than silently rounded).

The qparams formula is torch's ``_ObserverBase._calculate_qparams`` in float32: with
min_neg = min(min_val, 0) and max_pos = max(max_val, 0),
affine: scale = max((max_pos - min_neg) / (qmax - qmin), eps), zero_point = clamp(qmin - round(min_neg / scale));
symmetric: scale = max(max(-min_neg, max_pos) / ((qmax - qmin) / 2), eps), zero_point = 0 (128 for quint8).
"""
from __future__ import annotations

import numbers

import numpy as np

from ..nn.module import Module
from ..tensor import Tensor

__all__ = ["ObserverBase", "MinMaxObserver", "MovingAverageMinMaxObserver", "PerChannelMinMaxObserver",
           "MovingAveragePerChannelMinMaxObserver", "PercentileObserver", "qrange"]

F32 = np.float32
_EPS = float(np.finfo(np.float32).eps)
_QSCHEMES = ("per_tensor_affine", "per_tensor_symmetric", "per_channel_affine", "per_channel_symmetric")


def _dtype_name(dtype) -> str:
    """"qint8" / "quint8" from a name, forgegrad.quantization's dtypes or torch's (matched by name)."""
    text = str(getattr(dtype, "name", dtype)).rsplit(".", 1)[-1]
    if text not in ("qint8", "quint8"):
        raise TypeError(f"dtype must be qint8 or quint8 (a name, forgegrad.quantization's or torch's), got {dtype!r}")
    return text


def _qscheme_name(qscheme) -> str:
    text = str(qscheme).rsplit(".", 1)[-1]
    if text not in _QSCHEMES:
        raise ValueError(f"qscheme must be one of {', '.join(_QSCHEMES)}, got {qscheme!r}")
    return text


def qrange(dtype, reduce_range: bool = False, quant_min=None, quant_max=None):
    """(quant_min, quant_max) as torch's observers pick them (reduce_range halves the range)."""
    name = _dtype_name(dtype)
    if quant_min is None and quant_max is None:
        if name == "quint8":
            return (0, 127) if reduce_range else (0, 255)
        return (-64, 63) if reduce_range else (-128, 127)
    for what, v in (("quant_min", quant_min), ("quant_max", quant_max)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{what} must be an int when a custom range is given, got {v!r}")
    if not quant_min <= 0 <= quant_max:
        raise ValueError(f"the custom range [{quant_min}, {quant_max}] must include 0")
    lo, hi = (0, 255) if name == "quint8" else (-128, 127)
    if quant_max - quant_min > 255 or quant_min < lo or quant_max > hi:
        raise ValueError(f"the custom range [{quant_min}, {quant_max}] does not fit in {name} [{lo}, {hi}]")
    if reduce_range:
        return quant_min // 2, quant_max // 2
    return int(quant_min), int(quant_max)


def _values(x, who: str) -> np.ndarray:
    if isinstance(x, Tensor):
        a = x._data
    elif isinstance(x, np.ndarray):
        a = x
    else:
        raise TypeError(f"{who}: expected a forgegrad Tensor or a numpy float32 array, got {type(x).__name__}")
    if a.dtype != np.float32:
        raise TypeError(f"{who}: calibration data must be float32, got {a.dtype} (cast it with .astype(np.float32): "
                        "observing float64 would record a range the float32 model never sees)")
    if a.size == 0:
        raise ValueError(f"{who}: got an empty tensor {a.shape}")
    return a


class ObserverBase(Module):
    """Records ranges in ``forward`` (which returns its input) and computes qparams from them."""

    def __init__(self, dtype="quint8", qscheme="per_tensor_affine", reduce_range=False, quant_min=None,
                 quant_max=None, eps=_EPS):
        super().__init__()
        self.dtype = _dtype_name(dtype)
        self.qscheme = _qscheme_name(qscheme)
        self.reduce_range = bool(reduce_range)
        self.quant_min, self.quant_max = qrange(self.dtype, self.reduce_range, quant_min, quant_max)
        self.has_customized_qrange = quant_min is not None or quant_max is not None
        self.eps = F32(eps)

    @property
    def symmetric(self) -> bool:
        return self.qscheme.endswith("symmetric")

    @property
    def calibrated(self) -> bool:
        mn = self.min_val._data
        return mn.size > 0 and bool(np.all(np.isfinite(mn)))

    def forward(self, x):
        self._observe(_values(x, type(self).__name__))
        return x

    def _qparams(self, min_val: np.ndarray, max_val: np.ndarray):
        qmin, qmax = self.quant_min, self.quant_max
        min_neg = np.minimum(min_val.astype(F32), F32(0))
        max_pos = np.maximum(max_val.astype(F32), F32(0))
        if self.symmetric:
            max_pos = np.maximum(-min_neg, max_pos)
            scale = np.maximum((max_pos / F32((qmax - qmin) / 2)).astype(F32), self.eps)
            zp = (qmin + qmax) // 2 if self.has_customized_qrange else 128
            zero_point = np.full(scale.shape, zp if self.dtype == "quint8" else 0, np.int64)
        else:
            scale = np.maximum(((max_pos - min_neg) / F32(qmax - qmin)).astype(F32), self.eps)
            zero_point = qmin - np.rint((min_neg / scale).astype(F32)).astype(np.int64)
            zero_point = np.clip(zero_point, qmin, qmax).astype(np.int64)
        return scale.reshape(-1).astype(F32), zero_point.reshape(-1)

    def calculate_qparams(self):
        """(scale float32 array, zero_point int64 array): shape (1,) per tensor, (C,) per channel."""
        if not self.calibrated:
            raise RuntimeError(f"{type(self).__name__}: no data observed yet; run calibration data through the "
                               "prepared model before convert (or before reading qparams)")
        return self._qparams(self.min_val._data, self.max_val._data)

    def extra_repr(self) -> str:
        return (f"dtype={self.dtype}, qscheme={self.qscheme}, reduce_range={self.reduce_range}, "
                f"quant_min={self.quant_min}, quant_max={self.quant_max}")


class MinMaxObserver(ObserverBase):
    """Running min and max of everything observed (per tensor)."""

    def __init__(self, dtype="quint8", qscheme="per_tensor_affine", reduce_range=False, quant_min=None,
                 quant_max=None, eps=_EPS):
        if _qscheme_name(qscheme).startswith("per_channel"):
            raise ValueError(f"{type(self).__name__} is per tensor; use PerChannelMinMaxObserver for {qscheme}")
        super().__init__(dtype, qscheme, reduce_range, quant_min, quant_max, eps)
        if self.qscheme == "per_tensor_symmetric" and self.reduce_range and self.dtype == "quint8":
            raise ValueError("reduce_range is not supported for symmetric quint8 quantization (as in torch)")
        self.register_buffer("min_val", Tensor._stored(np.array(np.inf, F32)))
        self.register_buffer("max_val", Tensor._stored(np.array(-np.inf, F32)))

    def _update(self, cur_min, cur_max):
        self.min_val._data = np.minimum(self.min_val._data, cur_min).astype(F32)
        self.max_val._data = np.maximum(self.max_val._data, cur_max).astype(F32)

    def _observe(self, a):
        self._update(a.min(), a.max())


class MovingAverageMinMaxObserver(MinMaxObserver):
    """min += averaging_constant * (batch min - min) (the first batch sets it), likewise max."""

    def __init__(self, averaging_constant=0.01, dtype="quint8", qscheme="per_tensor_affine", reduce_range=False,
                 quant_min=None, quant_max=None, eps=_EPS):
        super().__init__(dtype, qscheme, reduce_range, quant_min, quant_max, eps)
        self.averaging_constant = F32(averaging_constant)

    def _update(self, cur_min, cur_max):
        if not self.calibrated:
            self.min_val._data, self.max_val._data = np.asarray(cur_min, F32), np.asarray(cur_max, F32)
            return
        c = self.averaging_constant
        self.min_val._data = (self.min_val._data + c * (cur_min - self.min_val._data)).astype(F32)
        self.max_val._data = (self.max_val._data + c * (cur_max - self.max_val._data)).astype(F32)


class PerChannelMinMaxObserver(ObserverBase):
    """Running min and max per channel along ``ch_axis`` (weights: axis 0, output channels)."""

    def __init__(self, ch_axis=0, dtype="quint8", qscheme="per_channel_affine", reduce_range=False, quant_min=None,
                 quant_max=None, eps=_EPS):
        if not _qscheme_name(qscheme).startswith("per_channel"):
            raise ValueError(f"{type(self).__name__} is per channel; use MinMaxObserver for {qscheme}")
        super().__init__(dtype, qscheme, reduce_range, quant_min, quant_max, eps)
        if isinstance(ch_axis, bool) or not isinstance(ch_axis, numbers.Integral):
            raise TypeError(f"ch_axis must be an int, got {ch_axis!r}")
        self.ch_axis = int(ch_axis)
        self.register_buffer("min_val", Tensor._stored(np.zeros(0, F32)))
        self.register_buffer("max_val", Tensor._stored(np.zeros(0, F32)))

    def _minmax(self, a):
        if not -a.ndim <= self.ch_axis < a.ndim:
            raise ValueError(f"{type(self).__name__}: ch_axis {self.ch_axis} is out of range for shape {a.shape}")
        axes = tuple(d for d in range(a.ndim) if d != self.ch_axis % a.ndim)
        cur_min, cur_max = a.min(axis=axes), a.max(axis=axes)
        if self.min_val._data.size and self.min_val._data.shape != cur_min.shape:
            raise ValueError(f"{type(self).__name__}: {cur_min.shape[0]} channels, but earlier data had "
                             f"{self.min_val._data.shape[0]}")
        return cur_min, cur_max

    def _observe(self, a):
        cur_min, cur_max = self._minmax(a)
        if not self.min_val._data.size:
            self.min_val._data, self.max_val._data = cur_min.astype(F32), cur_max.astype(F32)
        else:
            self.min_val._data = np.minimum(self.min_val._data, cur_min).astype(F32)
            self.max_val._data = np.maximum(self.max_val._data, cur_max).astype(F32)

    def extra_repr(self) -> str:
        return f"ch_axis={self.ch_axis}, " + super().extra_repr()


class MovingAveragePerChannelMinMaxObserver(PerChannelMinMaxObserver):
    def __init__(self, averaging_constant=0.01, ch_axis=0, dtype="quint8", qscheme="per_channel_affine",
                 reduce_range=False, quant_min=None, quant_max=None, eps=_EPS):
        super().__init__(ch_axis, dtype, qscheme, reduce_range, quant_min, quant_max, eps)
        self.averaging_constant = F32(averaging_constant)

    def _observe(self, a):
        cur_min, cur_max = self._minmax(a)
        if not self.min_val._data.size:
            self.min_val._data, self.max_val._data = cur_min.astype(F32), cur_max.astype(F32)
            return
        c = self.averaging_constant
        self.min_val._data = (self.min_val._data + c * (cur_min - self.min_val._data)).astype(F32)
        self.max_val._data = (self.max_val._data + c * (cur_max - self.max_val._data)).astype(F32)


class PercentileObserver(MinMaxObserver):
    """Per tensor; the range is the mean over batches of each batch's (100 - percentile)-th and
    percentile-th percentiles, so a few outliers do not stretch the scale (default 99.99)."""

    def __init__(self, percentile=99.99, dtype="quint8", qscheme="per_tensor_affine", reduce_range=False,
                 quant_min=None, quant_max=None, eps=_EPS):
        super().__init__(dtype, qscheme, reduce_range, quant_min, quant_max, eps)
        if isinstance(percentile, bool) or not isinstance(percentile, numbers.Real) or not 50 < percentile <= 100:
            raise ValueError(f"PercentileObserver: percentile must be in (50, 100], got {percentile!r}")
        self.percentile = float(percentile)
        self.register_buffer("num_batches", Tensor._stored(np.array(0, np.int64)))

    def _observe(self, a):
        lo, hi = np.percentile(a.astype(np.float64), [100.0 - self.percentile, self.percentile])
        n = int(self.num_batches._data)
        if n == 0:
            self.min_val._data, self.max_val._data = np.asarray(lo, F32), np.asarray(hi, F32)
        else:  # running mean of the batch percentiles
            self.min_val._data = np.asarray((float(self.min_val._data) * n + lo) / (n + 1), F32)
            self.max_val._data = np.asarray((float(self.max_val._data) * n + hi) / (n + 1), F32)
        self.num_batches._data = np.array(n + 1, np.int64)
