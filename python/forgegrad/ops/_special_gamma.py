"""Gamma- and error-function family of torch.special on numpy arrays: ndtr, ndtri, log_ndtr, erfcx, digamma, trigamma,
polygamma, zeta, gammainc (igamma) and gammaincc (igammac).

torch 2.13's algorithms (aten/src/ATen/native/Math.h: Cephes, SciPy's incomplete gamma with Boost's Lanczos sum, the
Faddeeva package's erfcx), in float64 with the same coefficients (ops/_special_tables.py) and order of operations, so
that float64 results agree with torch's to a few ulps; iterative ones run vectorised, each element stopping where
torch's loop stops. Only numpy (and the stdlib's erf/erfc/lgamma per element) is used.
"""
from __future__ import annotations

import math

import numpy as np

from ._special_bessel import f64, horner, piecewise
from ._special_tables import ERFCX_Y100, IGAM_D, TABLES

_MACHEP = 1.11022302462515654042E-16
_ERFCX = np.asarray(ERFCX_Y100)
_IGAM_D = np.asarray(IGAM_D)
_vec_erf, _vec_erfc = np.frompyfunc(math.erf, 1, 1), np.frompyfunc(math.erfc, 1, 1)


_vec_lgamma = np.frompyfunc(math.lgamma, 1, 1)


def _loop(state, step, max_iter):
    """Run ``step(state) -> finished mask`` over the elements still running: state is a dict of equal-length 1-d
    arrays, each step's update applies to every running element, and an element leaves (its final values kept) at
    the step that finishes it, as torch's per-element loops break. Compacting keeps the work to the live elements."""
    out = {k: np.array(v, np.float64) for k, v in state.items()}
    idx = np.arange(len(next(iter(out.values()))))
    cur = {k: v.copy() for k, v in out.items()}
    for _ in range(max_iter):
        if idx.size == 0:
            break
        done = step(cur)
        if np.any(done):
            for k, v in cur.items():
                out[k][idx[done]] = v[done]
            keep = ~done
            idx = idx[keep]
            cur = {k: v[keep] for k, v in cur.items()}
    for k, v in cur.items():
        out[k][idx] = v
    return out


_LIBM_CHUNK = 1 << 16


def _per_element_libm(fn, x):
    """fn (the C library's, through a ufunc of Python floats) over x in chunks: the object array a whole huge input
    would need is ~5x its float64 size (each element a Python float)."""
    x = f64(x)
    out = np.empty(x.shape, np.float64)
    flat_in, flat_out = x.reshape(-1), out.reshape(-1)
    for start in range(0, flat_in.size, _LIBM_CHUNK):
        flat_out[start:start + _LIBM_CHUNK] = fn(flat_in[start:start + _LIBM_CHUNK])
    return out


def erf(x):
    return _per_element_libm(_vec_erf, x)


def erfc(x):
    return _per_element_libm(_vec_erfc, x)


def lgamma(x):
    """std::lgamma per element (the stdlib's): +inf at the poles 0, -1, -2, ..."""
    x = f64(x)
    pole = (x <= 0) & (x == np.floor(x))
    return np.where(pole, np.inf, np.asarray(_vec_lgamma(np.where(pole, 1.0, x)), np.float64))


# ---- normal distribution and erfcx -----------------------------------------------------------------------
def ndtr(x):
    """torch's composite: (1 + erf(x / sqrt(2))) / 2."""
    return (1.0 + erf(f64(x) * math.sqrt(0.5))) * 0.5


def _erfcx_y100(y100):
    k = np.floor(y100)
    inside = k < 100  # y100 >= 100 only for |x| < 4 eps, where erfcx is 1 (Math.h's default)
    rows = _ERFCX[np.where(inside, k, 0).astype(np.intp)]
    t = 2 * y100 - (2 * np.where(inside, k, 0) + 1)
    r = rows[:, 6] * t
    for j in range(5, 0, -1):
        r = (rows[:, j] + r) * t
    return np.where(inside, rows[:, 0] + r, 1.0)


def erfcx(x):
    x = f64(x)
    with np.errstate(all="ignore"):
        out = x.copy()  # NaN stays NaN
        ispi = 0.56418958354775628694807945156

        def cont_fraction(v):
            v2 = v * v
            return np.where(v > 5e7, ispi / v, ispi * (v2 * (v2 + 4.5) + 2) / (v * (v2 * (v2 + 5) + 3.75)))
        return piecewise(x, out, [
            ((x >= 0) & (x <= 50), lambda v: _erfcx_y100(400 / (4 + v))),
            (x > 50, cont_fraction),
            (x < -26.7, lambda v: np.full_like(v, np.inf)),
            ((x >= -26.7) & (x < -6.1), lambda v: 2 * np.exp(v * v)),
            ((x >= -6.1) & (x < 0), lambda v: 2 * np.exp(v * v) - _erfcx_y100(400 / (4 - v)))])


def log_ndtr(x):
    x = f64(x)

    def below(v):
        t = v * math.sqrt(0.5)
        return np.log(erfcx(-t) / 2) - t * t
    with np.errstate(all="ignore"):
        return piecewise(x, np.empty_like(x), [
            (x < -1.0, below), (~(x < -1.0), lambda v: np.log1p(-erfc(v * math.sqrt(0.5)) / 2))])


def ndtri(y0):
    y0 = f64(y0)
    with np.errstate(all="ignore"):
        out = np.where(y0 == 0, -np.inf, np.where(y0 == 1, np.inf, np.nan))
        inner = (y0 > 0) & (y0 < 1)
        code = y0 <= 1 - 0.13533528323661269189  # torch flips y > 1 - exp(-2) to 1 - y and negates
        y = np.where(code, y0, 1.0 - y0)

        def central(v):
            v = v - 0.5
            v2 = v * v
            return (v + v * (v2 * horner(v2, TABLES["NDTRI_P0"]) / horner(v2, TABLES["NDTRI_Q0"]))) * (
                2.50662827463100050242E0)

        def tail(v):
            s = np.sqrt(-2.0 * np.log(v))
            x0 = s - np.log(s) / s
            z = 1.0 / s
            x1 = np.where(s < 8.0, z * horner(z, TABLES["NDTRI_P1"]) / horner(z, TABLES["NDTRI_Q1"]),
                          z * horner(z, TABLES["NDTRI_P2"]) / horner(z, TABLES["NDTRI_Q2"]))
            return x0 - x1
        mid = inner & (y > 0.13533528323661269189)
        piecewise(y, out, [(mid, central), (inner & ~mid, tail)])
        # the central branch computed from the flipped y already has its sign (y - 0.5 changes sign)
        return np.where(inner & ~mid & code, -out, out)


# ---- digamma, trigamma, polygamma, zeta ------------------------------------------------------------------
_PSI_A = (8.33333333333333333333E-2, -2.10927960927960927961E-2, 7.57575757575757575758E-3,
          -4.16666666666666666667E-3, 3.96825396825396825397E-3, -8.33333333333333333333E-3,
          8.33333333333333333333E-2)


def _digamma_pos(x):
    result = np.zeros_like(x)
    while True:
        low = x < 10
        if not np.any(low):
            break
        result = np.where(low, result - 1 / x, result)
        x = np.where(low, x + 1, x)
    z = 1.0 / (x * x)
    y = np.where(x < 1.0e17, z * horner(z, _PSI_A), 0.0)
    return np.where(x == 10, result + 2.25175258906672110764, result + np.log(x) - (0.5 / x) - y)


def digamma(x):
    x = f64(x)
    with np.errstate(all="ignore"):
        out = np.where(x == 0, np.copysign(np.inf, -x), np.nan)  # +-0: -+inf, negative integers NaN
        neg = (x < 0) & (x != np.trunc(x))
        piecewise(x, out, [(x > 0, _digamma_pos),
                           (neg, lambda v: _digamma_pos(1 - v) - math.pi / np.tan(math.pi * np.fmod(v, 1.0)))])
        return np.where(np.isposinf(x), np.inf, out)


def trigamma(x):
    x = f64(x)
    with np.errstate(all="ignore"):
        reflect = x < 0.5
        s = np.sin(math.pi * x)
        result = np.where(reflect, -(math.pi * math.pi) / (s * s), 0.0)
        sign = np.where(reflect, -1.0, 1.0)
        x = np.where(reflect, 1 - x, x)
        for _ in range(6):
            result = result + 1 / (x * x)
            x = x + 1
        ixx = 1 / (x * x)
        result = result + (1 + 1 / (2 * x) + ixx * (1. / 6 - ixx * (1. / 30 - ixx * (1. / 42)))) / x
        return sign * result


def zeta(x, q):
    """Hurwitz zeta(x, q) = sum_k (k + q)^-x, as Math.h's zeta (Euler-Maclaurin after >= 9 direct terms)."""
    x, q = np.broadcast_arrays(f64(x), f64(q))
    shape = x.shape
    x, q = x.ravel(), q.ravel()
    with np.errstate(all="ignore"):
        out = np.full(x.shape, np.nan)
        out[x == 1] = np.inf
        pole = ~(x < 1) & (q <= 0) & (q == np.floor(q))  # Math.h tests x < 1 only: a NaN x reaches the pole too
        out[pole] = np.inf
        run = (x > 1) & ~pole & ~((q <= 0) & (x != np.floor(x)))  # q <= 0 needs an integer x (NaN otherwise)
        idx = np.nonzero(run)[0]
        xs = x[idx]
        def direct(st):  # the direct sum: at least 9 terms and up to a > 9, or until a term is negligible
            st["i"] += 1
            st["a"] = st["a"] + 1
            st["b"] = st["a"] ** -st["x"]
            st["s"] = st["s"] + st["b"]
            st["done"] = ((-_MACHEP * st["s"] < st["b"]) & (st["b"] < _MACHEP * st["s"])).astype(np.float64)
            return (st["done"] > 0) | ~((st["i"] < 9) | (st["a"] <= 9.0))
        a0 = q[idx]
        st = _loop({"x": xs, "a": a0, "s": a0 ** -xs, "b": np.zeros_like(a0), "i": np.zeros_like(a0),
                    "done": np.zeros_like(a0)}, direct, 1 << 62)
        a, s, b, done = st["a"], st["s"], st["b"], st["done"] > 0
        w = a
        tail = ~done
        s = np.where(tail, s + b * w / (xs - 1) - 0.5 * b, s)
        an, k = np.ones_like(s), 0.0
        for coef in TABLES["ZETA_A"]:
            an = an * (xs + k)
            b = b / w
            t = an * b / coef
            s = np.where(tail, s + t, s)
            tail = tail & ~(np.abs(t / s) < _MACHEP)
            k += 1.0
            an = an * (xs + k)
            b = b / w
            k += 1.0
        out[idx] = s
    return out.reshape(shape)


def polygamma(n, x):
    if n == 0:
        return digamma(x)
    if n == 1:
        return trigamma(x)
    x = f64(x)
    with np.errstate(all="ignore"):
        log_fact = math.lgamma(n + 1.0)  # n! overflows from n = 171: inf there as C's exp (math.exp raised)
        fact = math.exp(log_fact) if log_fact < 709.0 else math.inf
        return (1.0 if n % 2 else -1.0) * fact * zeta(float(n + 1), x)


# ---- regularized incomplete gamma --------------------------------------------------------------------------
def _ratevl(x):
    num, den = TABLES["LANCZOS_NUM"], TABLES["LANCZOS_DENOM"]
    big = np.abs(x) > 1
    y = np.where(big, 1 / x, x)
    return np.where(big, horner(y, num[::-1]) / horner(y, den[::-1]), horner(y, num) / horner(y, den))


_LANCZOS_G = 6.024680040776729583740234375


def _fac(a, x):
    """x^a e^-x / Gamma(a), Math.h's _igam_helper_fac."""
    far = np.abs(a - x) > 0.4 * np.abs(a)
    ax = np.zeros_like(a)
    ax[far] = a[far] * np.log(x[far]) - x[far] - lgamma(a[far])
    out = np.where(ax < -7.09782712893383996843E2, 0.0, np.exp(ax))
    fac = a + _LANCZOS_G - 0.5
    res = np.sqrt(fac / 2.718281828459045) / _ratevl(a)
    moderate = (a < 200) & (x < 200)
    num = x - a - _LANCZOS_G + 0.5
    numfac = num / fac
    res = res * np.where(moderate, np.exp(a - x) * (x / fac) ** a,
                         np.exp(a * (np.log1p(numfac) - numfac) + x * (0.5 - _LANCZOS_G) / fac))
    return np.where(far, out, res)


def _igam_series(a, x):
    ax = _fac(a, x)
    out = np.zeros_like(a)
    live = ax != 0

    def step(st):
        st["r"] = st["r"] + 1
        st["c"] = st["c"] * st["x"] / st["r"]
        st["ans"] = st["ans"] + st["c"]
        return st["c"] <= _MACHEP * st["ans"]
    al = a[live]
    st = _loop({"x": x[live], "r": al, "c": np.ones_like(al), "ans": np.ones_like(al)}, step, 2000)
    out[live] = st["ans"] * ax[live] / al
    return out


def _igamc_series(a, x):
    n = [0]

    def step(st):
        n[0] += 1
        st["fac"] = st["fac"] * (-st["x"] / n[0])
        term = st["fac"] / (st["a"] + n[0])
        st["total"] = st["total"] + term
        return np.abs(term) <= _MACHEP * np.abs(st["total"])
    total = _loop({"a": a, "x": x, "fac": np.ones_like(a), "total": np.zeros_like(a)}, step, 1999)["total"]
    logx = np.log(x)
    return -np.expm1(a * logx - lgamma(1 + a)) - np.exp(a * logx - lgamma(a)) * total


def _igam_asymptotic(a, x, igam):
    lam, sigma = x / a, (x - a) / a
    root = np.sqrt(-2 * (np.log1p(sigma) - sigma))
    eta = np.where(lam > 1, root, np.where(lam < 1, -root, 0.0))
    sgn = -1.0 if igam else 1.0
    res = 0.5 * erfc(sgn * eta * np.sqrt(a / 2))
    etapow = [np.ones_like(a)]
    for _ in range(24):
        etapow.append(etapow[-1] * eta)
    total, afac = np.zeros_like(a), np.ones_like(a)
    absold = np.full_like(a, np.inf)
    active = np.ones(a.shape, bool)
    for k in range(25):
        ck = np.full_like(a, _IGAM_D[k, 0])
        inner = np.ones(a.shape, bool)
        for n in range(1, 25):
            ckterm = _IGAM_D[k, n] * etapow[n]
            ck = np.where(inner, ck + ckterm, ck)
            inner &= ~(np.abs(ckterm) < _MACHEP * np.abs(ck))
        term = ck * afac
        absterm = np.abs(term)
        active &= ~(absterm > absold)
        total = np.where(active, total + term, total)
        active &= ~(absterm < _MACHEP * np.abs(total))
        absold, afac = absterm, afac / a
        if not np.any(active):
            break
    return res + sgn * np.exp(-0.5 * a * eta * eta) * total / np.sqrt(2 * float(np.float32(math.pi)) * a)


def _igamc_cf(a, x):
    ax = _fac(a, x)
    out = np.zeros_like(a)
    live = ax != 0
    a, x = a[live], x[live]

    def step(st):
        st["c"], st["y"], st["z"] = st["c"] + 1.0, st["y"] + 1.0, st["z"] + 2.0
        yc = st["y"] * st["c"]
        pk = st["pkm1"] * st["z"] - st["pkm2"] * yc
        qk = st["qkm1"] * st["z"] - st["qkm2"] * yc
        nz = qk != 0
        r = pk / np.where(nz, qk, 1.0)
        t = np.where(nz, np.abs((st["ans"] - r) / r), 1.0)
        st["ans"] = np.where(nz, r, st["ans"])
        scale = np.where(np.abs(pk) > 4.503599627370496e15, 2.22044604925031308085e-16, 1.0)
        st["pkm2"], st["pkm1"] = st["pkm1"] * scale, pk * scale
        st["qkm2"], st["qkm1"] = st["qkm1"] * scale, qk * scale
        return t <= _MACHEP
    z = x + (1.0 - a) + 1.0
    st = _loop({"c": np.zeros_like(a), "y": 1.0 - a, "z": z, "pkm2": np.ones_like(a), "qkm2": x.copy(),
                "pkm1": x + 1.0, "qkm1": z * x, "ans": (x + 1.0) / (z * x)}, step, 2000)
    out[live] = st["ans"] * ax[live]
    return out


def _asym_mask(a, x):
    r = np.abs(x - a) / a
    return ((a > 20.0) & (a < 200.0) & (r < 0.3)) | ((a > 200.0) & (r < 4.5 / np.sqrt(a)))


def _boundaries(a, x, lower):
    """Math.h's boundary values, in its order and with its NaN comparisons (a NaN a with x = 0 or inf, or
    an infinite a with a NaN x, still meets a boundary); NaN marks the elements the expansions compute."""
    zero_a, one_x = (1.0, 0.0) if lower else (0.0, 1.0)
    out = np.full(a.shape, np.nan)
    ok = ~((x < 0) | (a < 0))
    out = np.where(ok & (a == 0) & (x > 0), zero_a, out)
    rest = ok & (a != 0)
    out = np.where(rest & (x == 0), one_x, out)
    rest &= x != 0
    out = np.where(rest & np.isinf(a) & ~np.isinf(x), one_x, out)
    rest &= ~np.isinf(a)
    out = np.where(rest & np.isinf(x), 1.0 if lower else 0.0, out)
    rest &= ~(np.isinf(x) | np.isnan(a) | np.isnan(x))
    return out, rest


def _run(a, x, lower):
    a, x = np.broadcast_arrays(f64(a), f64(x))
    shape = a.shape
    a, x = a.ravel(), x.ravel()
    with np.errstate(all="ignore"):
        out, rest = _boundaries(a, x, lower)
        asym = rest & _asym_mask(a, x)
        out[asym] = _igam_asymptotic(a[asym], x[asym], lower)
        rest &= ~asym
        if lower:
            upper = rest & (x > 1.0) & (x > a)
            out[upper] = 1.0 - _igammac_core(a[upper], x[upper])
            low = rest & ~upper
            out[low] = _igam_series(a[low], x[low])
        else:
            out[rest] = _igammac_core(a[rest], x[rest])
    return out.reshape(shape)


def _igammac_core(a, x):
    """calc_igammac past its boundary and asymptotic cases."""
    out = np.empty_like(a)
    with np.errstate(all="ignore"):
        one_minus = np.where(x > 1.1, x < a, np.where(x <= 0.5, -0.4 / np.log(x) < a, x * 1.1 < a))
        cf = (x > 1.1) & ~one_minus
        ser = ~(x > 1.1) & ~one_minus
        out[one_minus] = 1.0 - _igam_series(a[one_minus], x[one_minus])
        out[cf] = _igamc_cf(a[cf], x[cf])
        out[ser] = _igamc_series(a[ser], x[ser])
    return out


def gammainc(a, x):
    return _run(a, x, True)


def gammaincc(a, x):
    return _run(a, x, False)
