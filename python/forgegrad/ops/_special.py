"""Special functions for the pointwise ops (erf, erfc, erfinv, lgamma, digamma, trigamma) on numpy arrays.

forgegrad's only runtime dependency is numpy, which has none of these: scipy.special runs them where it is installed
(fast, vectorised); without it the functions below compute them in float64 (the stdlib's erf/erfc/lgamma per element,
digamma and trigamma by recurrence to x >= 10 and their asymptotic series, erfinv by Newton steps on erf), within a
few ulps of scipy (tests/test_special_fallbacks.py)."""
from __future__ import annotations

import math

import numpy as np

try:
    import scipy.special as _sp
except ImportError:  # pragma: no cover - exercised by tests through the fallbacks directly
    _sp = None


def _per_element(fn):
    vec = np.frompyfunc(fn, 1, 1)
    return lambda x: vec(np.asarray(x, np.float64)).astype(np.float64)


def _lgamma_scalar(v: float) -> float:
    try:
        return math.lgamma(v)
    except ValueError:  # a pole (0 or a negative integer): +inf, as scipy's gammaln and torch's lgamma
        return math.inf


fallback_erf = _per_element(math.erf)
fallback_erfc = _per_element(math.erfc)
fallback_gammaln = _per_element(_lgamma_scalar)


def fallback_erfinv(x):
    x = np.asarray(x, np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # Winitzki's approximation, then Newton steps on erf(y) = x
        a = 0.147
        ln = np.log1p(-x * x)
        t = 2 / (np.pi * a) + ln / 2
        y = np.sign(x) * np.sqrt(np.sqrt(t * t - ln / a) - t)
        finite = np.abs(x) < 1
        y = np.where(finite, y, 0.0)
        for _ in range(4):
            y = y - (fallback_erf(y) - np.where(finite, x, 0.0)) / (2 / math.sqrt(math.pi) * np.exp(-y * y))
        y = np.where(finite, y, np.where(np.abs(x) == 1, np.sign(x) * np.inf, np.nan))
    return y


def _shifted(x, terms_fn, step_fn):
    """Shift x up to >= 10 by the recurrence (step_fn's term for each step), then the asymptotic series."""
    acc = np.zeros_like(x)
    for _ in range(10):
        small = x < 10
        acc = acc + np.where(small, step_fn(np.where(small, x, 1.0)), 0.0)
        x = np.where(small, x + 1, x)
    return acc + terms_fn(x)


def fallback_digamma(x):
    x = np.asarray(x, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        reflect = x < 0.5
        xr = np.where(reflect, 1.0 - x, x)

        def series(z):
            inv2 = 1.0 / (z * z)
            tail = inv2 * (1 / 12 - inv2 * (1 / 120 - inv2 * (1 / 252 - inv2 * (1 / 240 - inv2 * (1 / 132)))))
            return np.log(z) - 0.5 / z - tail

        out = _shifted(xr, series, lambda z: -1.0 / z)
        out = np.where(reflect, out - np.pi / np.tan(np.pi * x), out)
        pole = (x <= 0) & (x == np.floor(x))
        return np.where(pole, np.nan, out)


def fallback_trigamma(x):
    x = np.asarray(x, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        reflect = x < 0.5
        xr = np.where(reflect, 1.0 - x, x)

        def series(z):
            inv = 1.0 / z
            inv2 = inv * inv
            return inv + inv2 / 2 + inv * inv2 * (1 / 6 - inv2 * (1 / 30 - inv2 * (1 / 42 - inv2 * (1 / 30))))

        out = _shifted(xr, series, lambda z: 1.0 / (z * z))
        out = np.where(reflect, np.pi ** 2 / np.sin(np.pi * x) ** 2 - out, out)
        pole = (x <= 0) & (x == np.floor(x))
        return np.where(pole, np.inf, out)


if _sp is not None:
    erf, erfc, erfinv, digamma = _sp.erf, _sp.erfc, _sp.erfinv, _sp.digamma

    def gammaln(x):
        out = _sp.gammaln(x)
        return np.where(np.isneginf(x), np.inf, out).astype(out.dtype, copy=False)  # scipy: -inf; torch: inf

    def trigamma(x):
        return _sp.polygamma(1, x)
else:
    def _in_dtype(fn):
        def run(x):
            x = np.asarray(x)
            dtype = x.dtype if x.dtype.kind == "f" else np.float64
            return fn(x).astype(dtype, copy=False)
        return run

    erf, erfc, erfinv = _in_dtype(fallback_erf), _in_dtype(fallback_erfc), _in_dtype(fallback_erfinv)
    gammaln, digamma, trigamma = (_in_dtype(fallback_gammaln), _in_dtype(fallback_digamma),
                                  _in_dtype(fallback_trigamma))
