"""The orthogonal polynomials of torch.special on numpy arrays: chebyshev_polynomial_t/u/v/w, their shifted forms,
hermite_polynomial_h/he, laguerre_polynomial_l, legendre_polynomial_p.

torch 2.13's algorithms (aten/src/ATen/native/Math.h): the degree n is truncated to an integer per element (non-finite
degrees count as negative: 0), the three-term recurrence runs to each element's own n (stopping early on a NaN, as
torch), and the Chebyshev forms switch to their trigonometric closed forms for |x| < 1 and large n as torch does.
Computed in float64. The recurrence runs in C++ (``_C.special_poly``, cpp/kernels/special_poly.cpp: the same float64
expressions in the same order, so the same bits) when the extension is built: its cost is the degree, and a numpy
step per degree took minutes at degrees torch answers in milliseconds.
"""
from __future__ import annotations

import numpy as np

from ._special_bessel import f64


def _degrees(x, n):
    x, n = np.broadcast_arrays(f64(x), f64(n))
    with np.errstate(invalid="ignore"):
        # torch casts n to int64: a non-finite or out-of-range degree becomes INT64_MIN (x86), a negative one: 0
        k = np.where(np.isfinite(n) & (np.abs(n) < 2.0 ** 63), np.trunc(n), -1.0)
    return x.astype(np.float64, copy=True), k


# _C.special_poly's kinds (forgegrad/special_poly.h)
CHEBYSHEV, HERMITE_H, HERMITE_HE, LAGUERRE, LEGENDRE = range(5)


def _recurrence(n, q0, q1, step, start, stop_nan=True, kind=None, coef=None):
    """q_{k} = step(k, q_{k-1}, q_{k-2}) for k = start .. n per element (from q_{start-2} = q0, q_{start-1} = q1);
    returns q_n where n >= start - 1. With the extension, ``kind`` and ``coef`` (the step's per-element value)
    run the same steps in C++."""
    native = _native()
    if native is not None and kind is not None:
        n, q0, q1, coef = np.broadcast_arrays(n, q0, q1, coef)
        flat = [np.ascontiguousarray(a, dtype=np.float64).reshape(-1) for a in (coef, n, q0, q1)]
        return native.recurrence(kind, *flat, start, stop_nan).reshape(n.shape)
    p, q = q0.copy(), q1.copy()
    top = int(np.max(n, initial=0))
    for k in range(start, top + 1):
        live = k <= n
        if stop_nan:
            live = live & ~np.isnan(q)
        if not np.any(live):
            break
        r = step(k, q, p)
        p, q = np.where(live, q, p), np.where(live, r, q)
    return q


def _native():
    try:
        from .. import _C
    except ImportError:  # a source tree without the built extension: the numpy loop
        return None
    return getattr(_C, "special_poly", None)


def _finish(out, n):
    return np.where(n < 0, 0.0, out)


def _chebyshev(x, n, kind, shifted):
    x, n = _degrees(x, n)
    with np.errstate(all="ignore"):
        y = x + x - 1.0 if shifted else x
        two_y = y + y
        first = {"t": y, "u": two_y, "v": two_y - 1.0, "w": two_y + 1.0}[kind]
        # the closed forms for |y| < 1 and large n (and the end points) need no recurrence
        limit = (4 if kind == "w" else 6) if shifted else (6 if kind == "t" else 8)
        recurse = np.where(((n > limit) & (np.abs(y) < 1.0)) | _edge_mask(x, shifted), -1.0, n)
        rec = _recurrence(recurse, np.ones_like(y), first, lambda k, q, p: two_y * q - p, 2, kind=CHEBYSHEV,
                          coef=two_y)
        out = np.where(n == 0, 1.0, rec)
        theta = np.arccos(y)
        if kind == "t":
            closed = np.cos(n * theta)
        elif kind == "u":
            s = np.sin(theta)
            closed = np.where(s != 0, np.sin((n + 1) * theta) / s, (n + 1) * np.cos((n + 1) * theta) / y)
        elif kind == "v":
            alt = np.where(n % 2 == 0, n + n + 1, -(n + n + 1))
            closed = np.where(np.sin(theta / 2.0) != 1.0, np.cos((n + 0.5) * theta) / np.cos(theta / 2.0), alt)
        else:
            edge = np.where(n % 2 == 0, 1.0, -1.0) if shifted else np.where(
                x > 0, n + n + 1, np.where(n % 2 == 0, 1.0, -1.0))
            closed = np.where(np.cos(theta / 2.0) != 1.0, np.sin((n + 0.5) * theta) / np.sin(theta / 2.0), edge)
        out = np.where((n > limit) & (np.abs(y) < 1.0), closed, out)
        out = np.where(_edge_mask(x, shifted), _edge_value(x, n, kind, shifted), out)
        return _finish(out, n)


def _edge_mask(x, shifted):
    return (x == 1.0) | (x == 0.0) if shifted else np.abs(x) == 1.0


def _edge_value(x, n, kind, shifted):
    """torch's exact values at the ends of the interval (x = +-1; shifted: x = 1 and 0)."""
    even = n % 2 == 0
    if shifted:
        top = {"t": 1.0, "u": n + 1, "v": 1.0, "w": n + n + 1}[kind]
        bottom = {"t": np.where(even, 1.0, -1.0), "u": np.where(even, n + 1, -(n + 1)),
                  "v": np.where(even, n + n + 1, -(n + n + 1)), "w": np.where(even, 1.0, -1.0)}[kind]
        return np.where(x == 1.0, top, bottom)
    pos = x > 0
    return {"t": np.where(pos | even, 1.0, -1.0), "u": np.where(pos | even, n + 1, -(n + 1)),
            "v": np.where(pos, 1.0, np.where(even, n + n + 1, -(n + n + 1))),
            "w": np.where(pos, n + n + 1, np.where(even, 1.0, -1.0))}[kind]


def chebyshev_polynomial(x, n, kind, shifted=False):
    return _chebyshev(x, n, kind, shifted)


def hermite_polynomial_h(x, n, limit=512):
    x, n = _degrees(x, n)
    with np.errstate(all="ignore"):
        # torch's loop: k = 2, 4, .., 2n - 2 gives H_2 .. H_n (H_{j+1} = 2x H_j - 2j H_{j-1}); no NaN stop
        # degrees past torch's limit are NaN without running the recurrence (it would take their degree's time)
        rec = _recurrence(np.where(n > limit, -1.0, n), np.ones_like(x), x + x,
                          lambda j, q, p: (x + x) * q - (2 * (j - 1)) * p, 2, stop_nan=False, kind=HERMITE_H, coef=x)
        out = np.where(n == 0, 1.0, np.where(n == 1, x + x, rec))
        return _finish(np.where(n > limit, np.nan, out), n)


def hermite_polynomial_he(x, n, limit=512):
    x, n = _degrees(x, n)
    with np.errstate(all="ignore"):
        rec = _recurrence(np.where(n > limit, -1.0, n), np.ones_like(x), x.copy(), lambda j, q, p: x * q - (j - 1) * p,
                          2, stop_nan=False, kind=HERMITE_HE, coef=x)
        out = np.where(n == 0, 1.0, np.where(n == 1, x, rec))
        return _finish(np.where(n > limit, np.nan, out), n)


def laguerre_polynomial_l(x, n):
    x, n = _degrees(x, n)
    with np.errstate(all="ignore"):
        rec = _recurrence(n, np.ones_like(x), 1.0 - x,
                          lambda j, q, p: (((j - 1) + (j - 1) + (1.0 - x)) * q - (j - 1) * p) / j, 2, kind=LAGUERRE,
                          coef=x)
        out = np.where(n == 0, 1.0, rec)
        return _finish(np.where(np.abs(x) == 0.0, 1.0, out), n)


def legendre_polynomial_p(x, n):
    x, n = _degrees(x, n)
    with np.errstate(all="ignore"):
        rec = _recurrence(n, np.ones_like(x), x.copy(), lambda j, q, p: ((2 * (j - 1) + 1) * x * q - (j - 1) * p) / j,
                          2, kind=LEGENDRE, coef=x)
        out = np.where(n == 0, 1.0, rec)
        even = n % 2 == 0
        return _finish(np.where(np.abs(x) == 1.0, np.where((x > 0) | even, 1.0, -1.0), out), n)
