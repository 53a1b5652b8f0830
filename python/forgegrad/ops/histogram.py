"""torch.histc(input, bins=100, min=0, max=0) and torch.histogram(input, bins, *, range=None, weight=None,
density=False), float tensors only, with torch's binning: bin edges from torch's linspace in the input's dtype, an
element at an edge goes to the bin on its right (the last bin includes its right edge), NaN and elements outside the
range are left out; with no range (histc: min == max) the data's min and max, widened by 1 (histc) or 0.5 (histogram)
when they are equal.

Both outputs are float but torch has no derivative for them: backward raises, as torch's. ONNX: comparisons and a
one-hot ReduceSum over the bins (ops/_onnx_hist.py)."""
from __future__ import annotations

import numpy as np

from .._validate import check_bool, check_float
from . import _meta as M
from ._logic_common import dtype_name, is_arr
from ._onnx_hist import histc_onnx, histogram_onnx
from .logic_more import _NO_DERIVATIVE, _NoDerivative
from .registry import BadInput, Sample, register_op



def _float_input(x, who):
    if not is_arr(x):
        raise TypeError(f"{who}(): argument 'input' must be a forgegrad.Tensor, got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise TypeError(f"{who}(): expected a floating-point input, got {dtype_name(x.dtype)} (torch's {who} takes "
                        f"float tensors only; convert with .float())")
    return x


def _bins_count(bins, who):
    if isinstance(bins, (bool, np.bool_)) or not isinstance(bins, (int, np.integer)):
        raise TypeError(f"{who}(): argument 'bins' must be an int (or a 1-D tensor of bin edges), got "
                        f"{type(bins).__name__}")
    if bins <= 0:
        raise ValueError(f"{who}(): bins must be > 0, got {bins}")
    return int(bins)


def _linspace(lo, hi, steps, dt):
    """torch's CPU linspace: start + i*step for the first half, end - (steps-1-i)*step for the rest, in ``dt``, each a
    fused multiply-add (torch's kernel is compiled with FMA contraction): the product and sum are rounded once, which
    the wider type (float64 for float32, x87 long double for float64) reproduces except where its own rounding lands
    next to a midpoint of ``dt`` (about 1 float64 edge in 4000): those few are recomputed exactly."""
    lo, hi = dt.type(lo), dt.type(hi)
    step = (hi - lo) / dt.type(max(steps - 1, 1))
    wide = np.float64 if dt.itemsize < 8 else np.longdouble
    i = np.arange(steps)
    half = steps // 2
    w_step = wide(step)
    with np.errstate(all="ignore"):  # an infinite range: torch's inf / NaN edges
        r = np.where(i < half, wide(lo) + w_step * i.astype(wide), wide(hi) - w_step * (steps - 1 - i).astype(wide))
        out = r.astype(dt)
        if dt.itemsize == 8 and np.finfo(wide).nmant > np.finfo(dt).nmant:
            # the exact value is within a few units of ``wide`` of r: where r is that close to the midpoint between
            # ``out`` and its neighbour towards r, the once-rounded result may be the neighbour
            other = np.nextafter(out, np.where(r > out, np.inf, -np.inf).astype(dt))
            mid = (out.astype(wide) + other.astype(wide)) / 2
            near = np.isfinite(mid) & (np.abs(r - mid) <= np.abs(r) * (4 * np.finfo(wide).eps))
            if near.any():
                from fractions import Fraction
                f_lo, f_hi, f_step = Fraction(float(lo)), Fraction(float(hi)), Fraction(float(step))
                for k in np.flatnonzero(near):  # Fraction -> float is correctly rounded
                    out[k] = float(f_lo + f_step * int(k) if k < half else f_hi - f_step * int(steps - 1 - k))
    return out


def _outer_edges(x, lo, hi, widen, who, dtype=None):
    """The range: (lo, hi) given, else the data's min and max (lo == hi widened by ``widen``); finite, ordered and
    within ``dtype`` (x's when x is given; the ONNX mapping passes only a given range and the dtype)."""
    if lo is None or (widen == 1 and lo == hi):
        lo, hi = (float(np.min(x)), float(np.max(x))) if x.size else (0.0, 1.0)  # no data: torch's [0, 1]
    if lo == hi:
        lo, hi = lo - widen, hi + widen
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"{who}(): range of [{lo}, {hi}] is not finite")
    if lo > hi:
        raise ValueError(f"{who}(): max must be larger than min, got min={lo} and max={hi}")
    big = float(np.finfo(x.dtype if x is not None else dtype).max)
    if abs(lo) > big or abs(hi) > big:  # torch: "value cannot be converted to type float without overflow"
        raise ValueError(f"{who}(): range of [{lo}, {hi}] overflows the input's dtype {dtype_name(x.dtype)}")
    return lo, hi


def _guess(v, edges, n):
    """torch's equal-width guess int((v - edges[0]) * n / (edges[n] - edges[0])) in v's dtype (torch's input_t
    arithmetic) for v within [edges[0], edges[n]], and where it is a number (None: everywhere). All edges equal
    (0 / 0) or an overflow gives NaN / inf, which torch's static_cast<int64_t> turns into INT64_MIN."""
    t = v.dtype.type
    with np.errstate(all="ignore"):
        span = edges[-1] - edges[0]
        guess = (v - edges[0]) * t(n) / span
        if np.isfinite(span * t(n)) and span > 0:  # then every factor is finite and v - edges[0] <= span
            return np.minimum(guess.astype(np.intp), n), None
    ok = np.isfinite(guess)
    return np.minimum(np.where(ok, guess, 0).astype(np.intp), n), ok


def _bin_window(v, p, ok, edges, n):
    """torch's std::upper_bound over edges[max(p-1, 0) : min(p+2, n+1)] (2 or 3 edges: its binary search written
    out), minus 1, the last bin closed. A guess that is not a number (``ok`` False) is INT64_MIN in torch: the
    window's bounds wrap to edges[-1 : 2] and the element goes to bin 1 (bin 0 when n == 1)."""
    lo = np.maximum(p - 1, 0)
    three = np.minimum(p + 2, n + 1) - lo == 3
    # middle edge first; below it the first edge decides, above it the third when there are three
    first = np.where(v < edges[lo + 1], lo + ~(v < edges[lo]), lo + 2 + (three & ~(v < edges[np.minimum(lo + 2, n)])))
    if ok is not None and not ok.all():
        first[~ok] = 1 + ~(v[~ok] < edges[1])
    pos = first - 1
    pos[pos == n] = n - 1  # the last bin includes its right edge
    return pos


def _bin_local(v, edges, n):
    """The bin of each ``v`` (within [edges[0], edges[n]]) as torch's histogram with int bins picks it
    (LINEAR_INTERPOLATION_WITH_LOCAL_SEARCH): the guess, then a search of the edges next to it only. Not a global
    search: where float32 edges repeat (a range narrow for its magnitude) torch's bin is the one near the guess,
    which searchsorted would not give. Where edges[b] <= v < edges[b + 1] for b = min(guess, n - 1) (the last bin
    closed) torch's window search gives b, whatever the edges' order: only the rest take the window search."""
    p, ok = _guess(v, edges, n)
    b = np.minimum(p, n - 1)
    upper = edges[1:].copy()
    upper[-1] = np.inf
    hit = (v >= edges[:-1][b]) & (v < upper[b])
    if ok is not None:
        hit &= ok
    miss = np.flatnonzero(~hit)
    if miss.size:
        b[miss] = _bin_window(v[miss], p[miss], None if ok is None else ok[miss], edges, n)
    return b


def _count(x, edges, weight, linear=False, uniform=False, nan_bin=0):
    """torch's binning of ``x`` into the bins between consecutive ``edges``: for histogram with int bins
    (``uniform``) torch's guess and local search, with a tensor of edges a search over them, and for histc
    (``linear``) the guess alone (torch's division in the input's dtype, which near an edge may pick the neighbouring
    bin, as torch's histc does; ``nan_bin``: torch's bin where the guess is not a number, all edges equal)."""
    flat = x.reshape(-1)
    keep = (flat >= edges[0]) & (flat <= edges[-1])  # NaN is neither
    n = len(edges) - 1
    if linear:
        pos, ok = _guess(flat[keep], edges, n)
        pos[pos == n] = n - 1  # the last bin includes its right edge
        if ok is not None:
            pos[~ok] = nan_bin
    elif uniform:
        pos = _bin_local(flat[keep], edges, n)
    else:
        pos = np.minimum(np.searchsorted(edges, flat[keep], side="right") - 1, n - 1)
    w = None if weight is None else weight.reshape(-1)[keep]
    return np.bincount(pos, weights=w, minlength=len(edges) - 1).astype(x.dtype)


def _histc_samples():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 7, 5)).astype(np.float32)
    x[0, 0, :2] = np.nan
    return [Sample((x,), {"bins": 7, "min": -1.5, "max": 1.0}, "range, nan left out", grad=()),
            Sample((rng.uniform(-2, 3, size=(41,)).astype(np.float32),), {"bins": 10}, "data range", grad=()),
            Sample((np.array([[1.0, 1.0, 1.0]], np.float32),), {"bins": 4}, "constant data", grad=())]


@register_op("histc", meta=lambda input, bins=100, *_, **__: M.MetaArray((_bins_count(bins, "histc"),), input.dtype),
             flops=M.no_flops, samples=_histc_samples, torch=lambda torch, x, **kw: torch.histc(x, **kw),
             gaps={"backward": _NO_DERIVATIVE}, onnx=histc_onnx,
             bad_inputs=lambda: [BadInput((np.ones(3, np.int64),), {}, TypeError, "histc.*int64"),
                                 BadInput((np.ones(3, np.float32),), {"bins": 0}, ValueError, "bins"),
                                 BadInput((np.ones(3, np.float32),), {"min": 2, "max": 1}, ValueError, "max"),
                                 BadInput((np.array([1, np.nan], np.float32),), {}, ValueError, "not finite")])
class HistcFunction(_NoDerivative):
    """torch.histc(input, bins=100, min=0, max=0): counts in ``bins`` equal bins over [min, max] (the data's range
    when min == max), in the input's dtype."""

    @staticmethod
    def forward(ctx, input, bins=100, min=0, max=0):  # noqa: A002  (torch's names)
        x = _float_input(input, "histc")
        n = _bins_count(bins, "histc")
        # (checked numbers: float("0.1") had taken a str)
        min, max = check_float(min, "histc(): min"), check_float(max, "histc(): max")  # noqa: A001
        lo, hi = _outer_edges(x, min, max, 1, "histc")
        # every edge equal (lo and hi round to one value in x's dtype): torch 2.13 counts the elements in bin n // 2
        # when the range is the data's (constant data) and in bin 0 for a given range (measured; its guess is NaN)
        nan_bin = n // 2 if min == max else 0
        return _count(x, _linspace(lo, hi, n + 1, x.dtype), None, linear=True, nan_bin=nan_bin)


HistcFunction.op.float64 = HistcFunction


def _range(r):
    if r is None:
        return None, None
    try:
        lo, hi = r
        return check_float(lo, "histogram(): range's min"), check_float(hi, "histogram(): range's max")
    except (TypeError, ValueError):  # (a str had been read by float(): range=("0", "1"))
        raise TypeError(f"histogram(): range must be a pair of numbers (min, max), got {r!r}") from None


def _histogram_meta(input, bins, range=None, weight=None, density=False):  # noqa: A002
    n = bins.shape[0] - 1 if is_arr(bins) else _bins_count(bins, "histogram")
    return M.MetaArray((n,), input.dtype), M.MetaArray((n + 1,), input.dtype)


def _histogram_samples():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 9)).astype(np.float32)
    return [Sample((x, 6), {}, "int bins", grad=()),
            Sample((x, 5, (-1.0, 2.0), rng.uniform(0, 2, size=(4, 9)).astype(np.float32), True), {},
                   "range, weight, density", grad=()),
            Sample((x, np.array([-2.0, -0.5, 0.0, 0.25, 3.0], np.float32)), {}, "bin edges tensor", grad=())]


@register_op("histogram", meta=_histogram_meta, flops=M.no_flops, samples=_histogram_samples,
             torch=lambda torch, x, bins, range=None, weight=None, density=False: tuple(torch.histogram(
                 x, bins, **{k: v for k, v in (("range", range), ("weight", weight)) if v is not None},
                 density=density)),
             gaps={"backward": _NO_DERIVATIVE}, onnx=histogram_onnx,
             bad_inputs=lambda: [BadInput((np.ones(3, np.int64), 3), {}, TypeError, "histogram.*int64"),
                                 BadInput((np.ones(3, np.float32), 3), {"range": (2.0, 1.0)}, ValueError, "max"),
                                 BadInput((np.ones(3, np.float32), np.array([1.0, 0.0], np.float32)), {}, ValueError,
                                          "bins"),
                                 BadInput((np.ones(3, np.float32), 3), {"weight": np.ones(2, np.float32)}, ValueError,
                                          "weight")])
class HistogramFunction(_NoDerivative):
    """torch.histogram(input, bins, *, range=None, weight=None, density=False) -> (hist, bin_edges); ``bins`` an int
    (equal bins over range, or the data's) or a 1-D increasing tensor of edges."""

    @staticmethod
    def forward(ctx, input, bins, range=None, weight=None, density=False):  # noqa: A002  (torch's names)
        x = _float_input(input, "histogram")
        density = check_bool(density, "histogram(): density")
        if is_arr(bins):
            edges = np.asarray(bins)
            if edges.ndim != 1 or edges.shape[0] < 1 or edges.dtype != x.dtype:
                raise ValueError(f"histogram(): bins as a tensor must be 1-D with at least one edge, in the input's "
                                 f"dtype {dtype_name(x.dtype)}; got shape {edges.shape} {dtype_name(edges.dtype)}")
            if edges.shape[0] > 1 and np.any(np.diff(edges) < 0):
                raise ValueError("histogram(): bins must be increasing (a tensor of bin edges in increasing order)")
        else:
            n = _bins_count(bins, "histogram")
            lo, hi = _outer_edges(x, *_range(range), 0.5, "histogram")
            edges = _linspace(lo, hi, n + 1, x.dtype)
        if weight is not None:
            if not is_arr(weight) or weight.shape != x.shape or weight.dtype != x.dtype:
                raise ValueError(f"histogram(): weight must be a tensor of the input's shape {x.shape} and dtype "
                                 f"{dtype_name(x.dtype)}, got {getattr(weight, 'shape', type(weight).__name__)}")
        hist = _count(x, edges, weight, uniform=not is_arr(bins)) if edges.shape[0] > 1 else np.zeros(0, x.dtype)
        if density and hist.size:
            with np.errstate(all="ignore"):  # an empty histogram divides by 0: NaN, as torch's
                hist = (hist / hist.sum() / np.diff(edges)).astype(x.dtype)
        return hist, edges.copy()


HistogramFunction.op.float64 = HistogramFunction
