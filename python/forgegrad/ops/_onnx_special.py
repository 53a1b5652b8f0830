"""ONNX mappings of special functions ONNX has no operator for, computed in double inside the graph and cast to the
op's dtype (so float32 results are float32-exact up to the last bit or two, float64 ones within ~1e-13):

- lgamma: Stirling's series after shifting the argument by 8 (lgamma(x) = lgamma(x + 8) - sum log(x + k)), the
  reflection log(pi / |sin(pi x)|) - lgamma(1 - x) below 0.5; +inf at 0 and the negative integers;
- digamma: the asymptotic series after the same shift (psi(x) = psi(x + 8) - sum 1 / (x + k)), the reflection
  psi(1 - x) - pi / tan(pi x) below 0.5; -inf at +0, +inf at -0, NaN at the negative integers (torch's);
- erfinv: Giles' single-precision approximation, then Newton steps on an erf computed in double (Taylor
  series, and erfc's continued fraction past 2: ONNX's Erf runs in float in onnxruntime); special.ndtri through it,
  1 - |2p - 1| passed exactly (2 min(p, 1 - p)) for the tails.
"""
from __future__ import annotations

import math

import numpy as np

F64 = np.dtype(np.float64)
_SERIES_LIMIT = 30.0
_SHIFT = 8


def _c(ctx, v):
    return ctx.const(np.asarray(v, F64), F64)


def _horner(ctx, y, coeffs):
    """coeffs[0] + coeffs[1] y + ... by Horner's rule, in double."""
    acc = _c(ctx, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        acc = ctx.node("Add", [ctx.node("Mul", [acc, y]), _c(ctx, c)])
    return acc


def _unary(build):
    """Mapping: the input cast to double, ``build(ctx, x64)``, the result cast to the output dtype."""
    def mapping(ctx, op):
        dt = np.dtype(op.out_dtype())
        x = ctx.cast(op.input("input"), F64)
        out = build(ctx, x)
        return [ctx.cast(out, dt) if dt != F64 else out]
    return mapping


# Stirling: lgamma(z) ~ (z - 1/2) log z - z + log(2 pi) / 2 + sum B_2n / (2n (2n - 1) z^(2n - 1))
_STIRLING = [1 / 12, -1 / 360, 1 / 1260, -1 / 1680, 1 / 1188, -691 / 360360, 1 / 156, -3617 / 122400]
# digamma: psi(z) ~ log z - 1 / (2z) - sum B_2n / (2n z^2n)
_DIGAMMA = [-1 / 12, 1 / 120, -1 / 252, 1 / 240, -1 / 132, 691 / 32760, -1 / 12, 3617 / 8160]


def _shifted(ctx, w):
    """(w + 8, [w + k for k < 8])."""
    terms = [ctx.node("Add", [w, _c(ctx, float(k))]) for k in range(_SHIFT)]
    return ctx.node("Add", [w, _c(ctx, float(_SHIFT))]), terms


def _nonpositive_integer(ctx, x):
    return ctx.node("And", [ctx.node("LessOrEqual", [x, _c(ctx, 0.0)]),
                            ctx.node("Equal", [x, ctx.node("Floor", [x])])])


def _lgamma(ctx, x):
    reflect = ctx.node("Less", [x, _c(ctx, 0.5)])
    w = ctx.node("Where", [reflect, ctx.node("Sub", [_c(ctx, 1.0), x]), x])  # >= 0.5
    z, terms = _shifted(ctx, w)
    zi = ctx.node("Div", [_c(ctx, 1.0), z])
    corr = ctx.node("Mul", [zi, _horner(ctx, ctx.node("Mul", [zi, zi]), _STIRLING)])
    logz = ctx.node("Log", [z])
    big = ctx.node("Add", [ctx.node("Sub", [ctx.node("Mul", [ctx.node("Sub", [z, _c(ctx, 0.5)]), logz]), z]),
                           ctx.node("Add", [_c(ctx, 0.5 * math.log(2 * math.pi)), corr])])
    logs = ctx.node("Log", [terms[0]])
    for t in terms[1:]:
        logs = ctx.node("Add", [logs, ctx.node("Log", [t])])
    pos = ctx.node("Sub", [big, logs])
    sin = ctx.node("Abs", [ctx.node("Sin", [ctx.node("Mul", [x, _c(ctx, math.pi)])])])
    refl = ctx.node("Sub", [ctx.node("Log", [ctx.node("Div", [_c(ctx, math.pi), sin])]), pos])
    out = ctx.node("Where", [reflect, refl, pos])
    return ctx.node("Where", [_nonpositive_integer(ctx, x), _c(ctx, math.inf), out])


def _digamma(ctx, x):
    reflect = ctx.node("Less", [x, _c(ctx, 0.5)])
    w = ctx.node("Where", [reflect, ctx.node("Sub", [_c(ctx, 1.0), x]), x])
    z, terms = _shifted(ctx, w)
    zi = ctx.node("Div", [_c(ctx, 1.0), z])
    zi2 = ctx.node("Mul", [zi, zi])
    big = ctx.node("Add", [ctx.node("Sub", [ctx.node("Log", [z]), ctx.node("Mul", [zi, _c(ctx, 0.5)])]),
                           ctx.node("Mul", [zi2, _horner(ctx, zi2, _DIGAMMA)])])
    recips = ctx.node("Div", [_c(ctx, 1.0), terms[0]])
    for t in terms[1:]:
        recips = ctx.node("Add", [recips, ctx.node("Div", [_c(ctx, 1.0), t])])
    pos = ctx.node("Sub", [big, recips])
    px = ctx.node("Mul", [x, _c(ctx, math.pi)])  # pi / tan(pi x) as pi cos / sin: Tan has no double kernel
    refl = ctx.node("Sub", [pos, ctx.node("Div", [ctx.node("Mul", [_c(ctx, math.pi), ctx.node("Cos", [px])]),
                                                  ctx.node("Sin", [px])])])
    out = ctx.node("Where", [reflect, refl, pos])
    out = ctx.node("Where", [_nonpositive_integer(ctx, x), _c(ctx, math.nan), out])
    # a zero: -inf for +0.0, +inf for -0.0 (1 / x keeps the sign)
    zero_pole = ctx.node("Neg", [ctx.node("Div", [_c(ctx, 1.0), x])])
    return ctx.node("Where", [ctx.node("Equal", [x, _c(ctx, 0.0)]), zero_pole, out])


lgamma_onnx = _unary(_lgamma)
digamma_onnx = _unary(_digamma)

_GILES_CENTRAL = [1.50140941, 0.246640727, -0.00417768164, -0.00125372503, 0.00021858087, -4.39150654e-06,
                  -3.5233877e-06, 3.43273939e-07, 2.81022636e-08]
_GILES_TAIL = [2.83297682, 1.00167406, 0.00943887047, -0.0076224613, 0.00573950773, -0.00367342844,
               0.00134934322, 0.000100950558, -0.000200214257]


def _erf_parts(ctx, ax):
    """(erf by its Taylor series (41 terms) at min(ax, 2), erfc by the continued fraction
    erfc(x) = exp(-x^2) / (sqrt(pi) f), f = x + (1/2) / (x + 1 / (x + (3/2) / ...)) (50 levels) at max(ax, 2),
    f), in double, for ax >= 0: each within a few ulp of double on its side of 2."""
    small = ctx.node("Min", [ax, _c(ctx, 2.0)])
    y, one = ctx.node("Mul", [small, small]), _c(ctx, 1.0)
    # nested, no tiny coefficients (onnxruntime's optimized graph lost digits on them):
    acc = one  # term n / term n-1 = -y (2n - 1) / (n (2n + 1))
    for n in range(40, 0, -1):
        acc = ctx.node("Add", [one, ctx.node("Mul", [acc, ctx.node("Mul", [
            y, _c(ctx, -(2 * n - 1) / (n * (2 * n + 1)))])])])
    series = ctx.node("Mul", [small, ctx.node("Mul", [acc, _c(ctx, 2 / math.sqrt(math.pi))])])
    big = ctx.node("Max", [ax, _c(ctx, 2.0)])
    f = big
    for k in range(49, -1, -1):
        f = ctx.node("Add", [big, ctx.node("Div", [_c(ctx, (k + 1) / 2), f])])
    erfc = ctx.node("Div", [ctx.node("Exp", [ctx.node("Neg", [ctx.node("Mul", [big, big])])]),
                            ctx.node("Mul", [f, _c(ctx, math.sqrt(math.pi))])])
    return series, erfc, f


def _erf(ctx, x):
    """erf in double: the series up to |x| = 2, 1 - erfc past it (ONNX's Erf runs in float in onnxruntime)."""
    ax = ctx.node("Abs", [x])
    series, erfc, _ = _erf_parts(ctx, ax)
    mag = ctx.node("Where", [ctx.node("LessOrEqual", [ax, _c(ctx, 2.0)]), series,
                             ctx.node("Sub", [_c(ctx, 1.0), erfc])])
    return ctx.node("Where", [ctx.node("Less", [x, _c(ctx, 0.0)]), ctx.node("Neg", [mag]), mag])


def erfinv_onnx(ctx, op):
    """Giles' approximation (~1e-7; a few percent past |y| = 1 - 1e-7), then Newton steps in double on
    erf(t) = |y| up to t = 2, on log erfc(t) = log(1 - |y|) past it: 1 - |y| is exact there, where erf(t) - |y|
    computed as (1 - erfc(t)) - |y| cancels (every digit of the answer at |y| = 1 - 1e-15), and log erfc is nearly
    quadratic, so the steps converge from Giles' guess (erfc's own Newton steps move t by under 1 / 2t)."""
    dt = np.dtype(op.out_dtype())
    y = ctx.cast(op.input("input"), F64)
    out = _erfinv_graph(ctx, y, ctx.node("Sub", [_c(ctx, 1.0), ctx.node("Abs", [y])]))
    return [ctx.cast(out, dt) if dt != F64 else out]


def ndtri_onnx(ctx, op):
    """ndtri(p) = sqrt(2) erfinv(2p - 1), with 1 - |2p - 1| given exactly as 2 min(p, 1 - p): 2p - 1 rounds to -1
    for a tiny p (every digit lost at p = 1e-300), but only the far Newton steps read 1 - |y| there."""
    dt = np.dtype(op.out_dtype())
    p = ctx.cast(op.input("input"), F64)
    y = ctx.node("Sub", [ctx.node("Mul", [p, _c(ctx, 2.0)]), _c(ctx, 1.0)])
    rest = ctx.node("Mul", [ctx.node("Min", [p, ctx.node("Sub", [_c(ctx, 1.0), p])]), _c(ctx, 2.0)])
    out = ctx.node("Mul", [_erfinv_graph(ctx, y, rest), _c(ctx, math.sqrt(2.0))])
    return [ctx.cast(out, dt) if dt != F64 else out]


def _erfinv_graph(ctx, y, rest):
    """erfinv(y) in double (see erfinv_onnx), ``rest`` = 1 - |y| computed as exactly as the caller can."""
    w = ctx.node("Neg", [ctx.node("Log", [ctx.node("Mul", [rest, ctx.node("Sub", [_c(ctx, 2.0), rest])])])])
    central = _horner(ctx, ctx.node("Sub", [w, _c(ctx, 2.5)]), _GILES_CENTRAL)
    tail = _horner(ctx, ctx.node("Sub", [ctx.node("Sqrt", [w]), _c(ctx, 3.0)]), _GILES_TAIL)
    # past 1 - |y| ~ 1e-10 Giles' tail drifts (a factor 500 off at 1e-60): erfc's asymptotic inverse,
    # t^2 ~ L - log(pi L) / 2 with L = -log(1 - |y|) (6e-4 relative at 1e-10, better further out)
    big = ctx.node("Neg", [ctx.node("Log", [rest])])
    asym = ctx.node("Sqrt", [ctx.node("Sub", [big, ctx.node("Mul", [
        ctx.node("Log", [ctx.node("Mul", [big, _c(ctx, math.pi)])]), _c(ctx, 0.5)])])])
    tail = ctx.node("Where", [ctx.node("Less", [w, _c(ctx, 23.0)]), tail, asym])
    x0 = ctx.node("Mul", [ctx.node("Where", [ctx.node("Less", [w, _c(ctx, 5.0)]), central, tail]), y])
    inside = ctx.node("Greater", [rest, _c(ctx, 0.0)])  # past +-1: NaN (from the log)
    a = ctx.node("Abs", [y])
    log_rest = ctx.node("Log", [rest])
    t = ctx.node("Abs", [ctx.node("Where", [inside, x0, _c(ctx, 0.0)])])
    for _ in range(3):
        series, _, f = _erf_parts(ctx, t)
        # t - (erf(t) - |y|) / erf'(t)
        near = ctx.node("Sub", [t, ctx.node("Mul", [ctx.node("Sub", [series, a]), ctx.node("Mul", [
            _c(ctx, math.sqrt(math.pi) / 2), ctx.node("Exp", [ctx.node("Mul", [t, t])])])])])
        # t - (log erfc(t) - log(1 - |y|)) / (log erfc)'(t), log erfc(t) = -t^2 - log(sqrt(pi) f),
        # (log erfc)'(t) = -2 exp(-t^2) / (sqrt(pi) erfc(t)) = -2 f
        log_erfc = ctx.node("Sub", [ctx.node("Neg", [ctx.node("Mul", [t, t])]),
                                    ctx.node("Log", [ctx.node("Mul", [f, _c(ctx, math.sqrt(math.pi))])])])
        far = ctx.node("Add", [t, ctx.node("Div", [ctx.node("Sub", [log_erfc, log_rest]),
                                                   ctx.node("Mul", [f, _c(ctx, 2.0)])])])
        t = ctx.node("Where", [ctx.node("LessOrEqual", [t, _c(ctx, 2.0)]), near, far])
    x = ctx.node("Where", [ctx.node("Less", [y, _c(ctx, 0.0)]), ctx.node("Neg", [t]), t])
    out = ctx.node("Where", [inside, x, x0])
    # +-1: +-inf (the tail polynomial's leading term would give -inf at both)
    return ctx.node("Where", [ctx.node("Equal", [rest, _c(ctx, 0.0)]), ctx.node("Mul", [y, _c(ctx, math.inf)]), out])
