"""HistogramObserver: torch.ao.quantization's default activation observer for x86 static quantization.

It keeps a histogram of every value observed (``bins`` bins over the running [min, max]; when the range
grows, the old histogram is spread over the new bins, each old bin split into ``upsample_rate`` parts),
and ``calculate_qparams`` searches for the [min, max] that minimises the L2 quantization error of that
distribution (caffe2's NormMinimization::NonlinearQuantizationParamsSearch): bins are dropped from the
end holding less of the mass, 1e-5 of it per step, for as long as the error keeps falling (it stops at
the first step that does not help, so a lone far outlier can survive, as in torch). The arithmetic
follows torch's (float32 tensors, Python floats where torch uses ``.item()``, its linspace and histc),
so the histogram and the qparams are torch's for the same batches, bit for bit (tested).
"""
from __future__ import annotations

import numbers
import warnings

import numpy as np

from ..tensor import Tensor
from .observers import _EPS, F32, ObserverBase

__all__ = ["HistogramObserver"]


def _histc(a: np.ndarray, bins: int, lo, hi) -> np.ndarray:
    """torch.histc in float32: bin int((x - lo) * bins / (hi - lo)), hi in the last bin, values outside
    [lo, hi] dropped; a zero-width range is widened by 1 on each side."""
    lo, hi = F32(lo), F32(hi)
    if lo == hi:
        lo, hi = lo - F32(1), hi + F32(1)
    a = a[(a >= lo) & (a <= hi)]
    pos = (((a - lo) * F32(bins)) / (hi - lo)).astype(np.int64)
    pos[pos == bins] = bins - 1
    return np.bincount(pos, minlength=bins).astype(F32)


def _linspace(start, end, steps: int) -> np.ndarray:
    """torch.linspace in float32: from start for the first half, from end for the second, each value
    one fused multiply-add (as its vectorized kernel; exact in float64, then rounded once)."""
    start, end = F32(start), F32(end)
    step = np.float64((end - start) / F32(steps - 1))
    i = np.arange(steps)
    out = np.where(i < steps // 2, np.float64(start) + step * i, np.float64(end) - step * (steps - 1 - i))
    return out.astype(F32)


class HistogramObserver(ObserverBase):
    """Per-tensor observer that chooses the range minimising the L2 quantization error of the observed
    values' histogram (torch's ``HistogramObserver``; see the module docstring)."""

    def __init__(self, bins=2048, dtype="quint8", qscheme="per_tensor_affine", reduce_range=False, quant_min=None,
                 quant_max=None, eps=_EPS, upsample_rate=16):
        super().__init__(dtype, qscheme, reduce_range, quant_min, quant_max, eps)
        if self.qscheme.startswith("per_channel"):
            raise ValueError("HistogramObserver is per tensor: qscheme must be per_tensor_affine or "
                             f"per_tensor_symmetric, got {self.qscheme}")
        for name, v in (("bins", bins), ("upsample_rate", upsample_rate)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"HistogramObserver: {name} must be a positive int, got {v!r}")
        self.bins, self.upsample_rate = int(bins), int(upsample_rate)
        self.dst_nbins = 256  # 2 ** bits of the 8-bit quantized type
        self.register_buffer("histogram", Tensor._stored(np.zeros(self.bins, F32)))
        self.register_buffer("min_val", Tensor._stored(np.array(np.inf, F32)))
        self.register_buffer("max_val", Tensor._stored(np.array(-np.inf, F32)))

    def _observe(self, a):
        if np.isnan(a).any():
            raise ValueError("HistogramObserver: calibration data holds NaN")
        if np.isinf(a).any():
            warnings.warn("HistogramObserver: infinity in the input, ignored (as torch does)", stacklevel=3)
            a = a[np.isfinite(a)]
            if a.size == 0:
                return
        x_min, x_max = F32(a.min()), F32(a.max())
        cur_min, cur_max = F32(self.min_val._data), F32(self.max_val._data)
        if not (np.isfinite(cur_min) and np.isfinite(cur_max)):
            self.min_val._data, self.max_val._data = np.array(x_min, F32), np.array(x_max, F32)
            self.histogram._data = _histc(a, self.bins, x_min, x_max)
            return
        new_min, new_max = min(cur_min, x_min), max(cur_max, x_max)
        update = _histc(a, self.bins, new_min, new_max)
        if new_min == cur_min and new_max == cur_max:
            self.histogram._data = (self.histogram._data + update).astype(F32)
            return
        self.histogram._data = self._combine(self.histogram._data, cur_min, cur_max, update, new_min, new_max)
        self.min_val._data, self.max_val._data = np.array(new_min, F32), np.array(new_max, F32)

    def _combine(self, hist, orig_min, orig_max, update, new_min, new_max) -> np.ndarray:
        if orig_min == orig_max:  # every earlier value was this one number
            spread = _histc(np.array([orig_min], F32), self.bins, new_min, new_max) * F32(hist.sum())
            return (spread + update).astype(F32)
        # each old bin split into upsample_rate parts, each part's mass moved to the new bin of its midpoint
        r = self.upsample_rate
        parts = (np.repeat(hist, r) / F32(r)).astype(F32)
        size = (F32(orig_max) - F32(orig_min)) / F32(self.bins * r)
        mids = (_linspace(orig_min, orig_max, self.bins * r + 1)[:-1] + F32(0.5) * size).astype(F32)
        edges = _linspace(new_min, new_max, self.bins + 1)
        where = np.clip(np.searchsorted(edges, mids, side="right") - 1, 0, self.bins - 1)
        moved = np.zeros(self.bins, F32)
        np.add.at(moved, where, parts)  # in order, in float32, as torch.bincount accumulates
        return (update + moved).astype(F32)

    def _quantization_error(self, start: int, end: int) -> float:
        """L2 error of quantizing the histogram with bins start..end as the range (torch's
        _compute_quantization_error: each source bin's mass spread uniformly over it)."""
        bin_width = (float(self.max_val._data) - float(self.min_val._data)) / self.bins
        dst_width = bin_width * (end - start + 1) / self.dst_nbins
        if dst_width == 0.0:
            return 0.0
        src = np.arange(self.bins)
        begin = (src - start).astype(F32) * F32(bin_width)  # float32, as torch multiplies by the scalar
        end_ = (begin + F32(bin_width)).astype(F32)
        top = F32(self.dst_nbins - 1)
        dst_begin = np.clip(np.floor(begin / F32(dst_width)), F32(0), top).astype(F32)
        dst_begin_center = ((dst_begin + F32(0.5)) * F32(dst_width)).astype(F32)
        dst_end = np.clip(np.floor(end_ / F32(dst_width)), F32(0), top).astype(F32)
        density = (self.histogram._data / F32(bin_width)).astype(F32)
        half = F32(dst_width / 2)

        def norm(b, e):
            return density * ((e * e * e - b * b * b) / F32(3))

        total = np.zeros(self.bins, F32)
        total = total + norm(begin - dst_begin_center, np.full(self.bins, half, F32))
        total = total + (dst_end - dst_begin - F32(1)) * norm(F32(-half), half)
        dst_end_center = (dst_end * F32(dst_width) + half).astype(F32)
        total = total + norm(F32(-half), end_ - dst_end_center)
        return float(np.sum(total.astype(F32), dtype=F32))

    def _search(self):
        """The [min, max] whose quantization error is lowest (torch's _non_linear_param_search)."""
        hist = self.histogram._data
        mn, mx = F32(self.min_val._data), F32(self.max_val._data)
        bin_width = (mx - mn) / F32(self.bins)
        total = float(np.sum(hist, dtype=F32))
        csum = np.cumsum(hist, dtype=F32)
        stepsize, alpha, beta = 1e-5, 0.0, 1.0
        start, end = 0, self.bins - 1
        norm_min = float("inf")
        while alpha < beta:
            next_alpha, next_beta = alpha + stepsize, beta - stepsize
            lo_goal, hi_goal = F32(next_alpha * total), F32(next_beta * total)
            left, right = start, end
            while left < end and csum[left] < lo_goal:
                left += 1
            while right > start and csum[right] > hi_goal:
                right -= 1
            next_start, next_end = start, end
            if (left - start) > (end - right):
                next_start, alpha = left, next_alpha
            else:
                next_end, beta = right, next_beta
            if next_start == start and next_end == end:
                continue
            norm = self._quantization_error(next_start, next_end)
            if norm > norm_min:
                break
            norm_min, start, end = norm, next_start, next_end
        return mn + bin_width * F32(start), mn + bin_width * F32(end + 1)

    def calculate_qparams(self):
        if not self.calibrated:
            raise RuntimeError("HistogramObserver: no data observed yet; run calibration data through the prepared "
                               "model before convert (or before reading qparams)")
        lo, hi = self._search()
        return self._qparams(np.asarray(lo, F32), np.asarray(hi, F32))

    def extra_repr(self) -> str:
        return f"bins={self.bins}, " + super().extra_repr()
