"""ONNX graphs of the Bessel functions (i0, i1, i0e, i1e, torch.special's bessel_j0/j1/y0/y1, modified_bessel_i0/i1/
k0/k1, the scaled K, airy_ai): the expansions of ops/_special_bessel.py with torch's coefficients written as nodes
(Clenshaw's recurrence for the Chebyshev series, Horner for the rational ones), their branches joined by Where. ONNX
has no Bessel operator; these are standard ops (opset 13+) only."""
from __future__ import annotations

import numpy as np

from ._special_tables import TABLES


def _c(ctx, dt, v):
    return ctx.const(np.asarray(v, dt), dtype=dt)


def _chbevl(ctx, dt, y, coeffs):
    b0, b1 = _c(ctx, dt, coeffs[0]), _c(ctx, dt, 0.0)
    b2 = b1
    for co in coeffs[1:]:
        b2, b1 = b1, b0
        b0 = ctx.node("Add", [ctx.node("Sub", [ctx.node("Mul", [y, b1]), b2]), _c(ctx, dt, co)])
    return ctx.node("Mul", [ctx.node("Sub", [b0, b2]), _c(ctx, dt, 0.5)])


def scaled_i(ctx, dt, x, order):
    """exp(-|x|) I_order(x): torch's i0e / i1e."""
    ax = ctx.node("Abs", [x])
    tab = f"I{order}"
    near = _chbevl(ctx, dt, ctx.node("Sub", [ctx.node("Div", [ax, _c(ctx, dt, 2.0)]), _c(ctx, dt, 2.0)]),
                   TABLES[f"{tab}_A"])
    if order == 1:
        near = ctx.node("Mul", [near, ax])
    far = _chbevl(ctx, dt, ctx.node("Sub", [ctx.node("Div", [_c(ctx, dt, 32.0), ax]), _c(ctx, dt, 2.0)]),
                  TABLES[f"{tab}_B"])
    far = ctx.node("Div", [far, ctx.node("Sqrt", [ax])])
    v = ctx.node("Where", [ctx.node("LessOrEqual", [ax, _c(ctx, dt, 8.0)]), near, far])
    if order == 1:
        v = ctx.node("Where", [ctx.node("Less", [x, _c(ctx, dt, 0.0)]), ctx.node("Neg", [v]), v])
    return v


def bessel_i(ctx, dt, x, order):
    """I_order(x) = exp(|x|) i{order}e(x), as torch's i0 / i1."""
    return ctx.node("Mul", [ctx.node("Exp", [ctx.node("Abs", [x])]), scaled_i(ctx, dt, x, order)])


def mapping(fn, order):
    def onnx(ctx, op):
        dt = op.out_dtype()
        return [fn(ctx, dt, op.input("input", dt), order)]
    return onnx


# ---- J, Y (Cephes' rational expansions) and K (Chebyshev) -------------------------------------------------------
def _horner(ctx, dt, z, coeffs):
    r = _c(ctx, dt, coeffs[0])
    for co in coeffs[1:]:
        r = ctx.node("Add", [ctx.node("Mul", [r, z]), _c(ctx, dt, co)])
    return r


def _ratio(ctx, dt, z, num, den):
    return ctx.node("Div", [_horner(ctx, dt, z, TABLES[num]), _horner(ctx, dt, z, TABLES[den])])


def _op(ctx, kind, *args):
    return ctx.node(kind, list(args))


def _asymptotic(ctx, dt, ax, tab, order, kind):
    """x > 5: the PP/PQ/QP/QQ expansion with its cos/sin phase (ops/_special_bessel.py's _asymptotic)."""
    five = _c(ctx, dt, 5.0)
    z = _op(ctx, "Div", _c(ctx, dt, 25.0), _op(ctx, "Mul", ax, ax)) if order == 0 else _op(
        ctx, "Mul", _op(ctx, "Div", five, ax), _op(ctx, "Div", five, ax))
    p = _ratio(ctx, dt, z, f"{tab}_PP", f"{tab}_PQ")
    q = _op(ctx, "Mul", _op(ctx, "Div", five, ax), _ratio(ctx, dt, z, f"{tab}_QP", f"{tab}_QQ"))
    phase = _op(ctx, "Sub", ax, _c(ctx, dt, 0.785398163397448309615660845819875721 if order == 0 else
                                    2.356194490192344928846982537459627163))
    cos, sin = _op(ctx, "Cos", phase), _op(ctx, "Sin", phase)
    s = (_op(ctx, "Sub", _op(ctx, "Mul", p, cos), _op(ctx, "Mul", q, sin)) if kind == "j" else
         _op(ctx, "Add", _op(ctx, "Mul", p, sin), _op(ctx, "Mul", q, cos)))
    return _op(ctx, "Div", _op(ctx, "Mul", s, _c(ctx, dt, 0.797884560802865355879892119868763737)),
               _op(ctx, "Sqrt", ax))


def bessel_j(ctx, dt, x, order):
    ax = _op(ctx, "Abs", x)
    z = _op(ctx, "Mul", ax, ax)
    rat = _ratio(ctx, dt, z, f"J{order}_RP", f"J{order}_RQ")
    if order == 0:
        small = _op(ctx, "Mul", _op(ctx, "Mul", _op(ctx, "Sub", z, _c(ctx, dt, 5.78318596294678452118e+00)),
                                    _op(ctx, "Sub", z, _c(ctx, dt, 3.04712623436620863991e+01))), rat)
        tiny = _op(ctx, "Sub", _c(ctx, dt, 1.0), _op(ctx, "Div", z, _c(ctx, dt, 4.0)))
        small = _op(ctx, "Where", _op(ctx, "Less", ax, _c(ctx, dt, 0.00001)), tiny, small)
    else:
        small = _op(ctx, "Mul", _op(ctx, "Mul", _op(ctx, "Mul", rat, ax), _op(
            ctx, "Sub", z, _c(ctx, dt, 1.46819706421238932572e+01))), _op(
            ctx, "Sub", z, _c(ctx, dt, 4.92184563216946036703e+01)))
    v = _op(ctx, "Where", _op(ctx, "LessOrEqual", ax, _c(ctx, dt, 5.0)), small,
            _asymptotic(ctx, dt, ax, f"J{order}", order, "j"))
    return v if order == 0 else _op(ctx, "Where", _op(ctx, "Less", x, _c(ctx, dt, 0.0)), _op(ctx, "Neg", v), v)


def _domain(ctx, dt, x, at_zero, inside):
    """torch's values outside x > 0: at_zero at 0, NaN below."""
    zero = _c(ctx, dt, 0.0)
    v = _op(ctx, "Where", _op(ctx, "Less", x, zero), _c(ctx, dt, np.nan), inside)
    return _op(ctx, "Where", _op(ctx, "Equal", x, zero), _c(ctx, dt, at_zero), v)


def bessel_y(ctx, dt, x, order):
    z = _op(ctx, "Mul", x, x)
    rat = _ratio(ctx, dt, z, f"Y{order}_YP", f"Y{order}_YQ")
    two_over_pi = _c(ctx, dt, 0.636619772367581343075535053490057448)
    if order == 0:
        small = _op(ctx, "Add", rat, _op(ctx, "Mul", _op(ctx, "Mul", two_over_pi, _op(ctx, "Log", x)),
                                        bessel_j(ctx, dt, x, 0)))
    else:
        small = _op(ctx, "Add", _op(ctx, "Mul", x, rat), _op(ctx, "Mul", two_over_pi, _op(
            ctx, "Sub", _op(ctx, "Mul", bessel_j(ctx, dt, x, 1), _op(ctx, "Log", x)),
            _op(ctx, "Div", _c(ctx, dt, 1.0), x))))
    v = _op(ctx, "Where", _op(ctx, "LessOrEqual", x, _c(ctx, dt, 5.0)), small,
            _asymptotic(ctx, dt, x, f"Y{order}", order, "y"))
    return _domain(ctx, dt, x, -np.inf, v)


def bessel_k(ctx, dt, x, order, scaled=False):
    a = _chbevl(ctx, dt, _op(ctx, "Sub", _op(ctx, "Mul", x, x), _c(ctx, dt, 2.0)), TABLES[f"K{order}_A"])
    log_half = _op(ctx, "Log", _op(ctx, "Mul", _c(ctx, dt, 0.5), x))
    if order == 0:
        small = _op(ctx, "Sub", a, _op(ctx, "Mul", log_half, bessel_i(ctx, dt, x, 0)))
    else:
        small = _op(ctx, "Add", _op(ctx, "Mul", log_half, bessel_i(ctx, dt, x, 1)), _op(ctx, "Div", a, x))
    b = _chbevl(ctx, dt, _op(ctx, "Sub", _op(ctx, "Div", _c(ctx, dt, 8.0), x), _c(ctx, dt, 2.0)),
                TABLES[f"K{order}_B"])
    if scaled:
        small = _op(ctx, "Mul", small, _op(ctx, "Exp", x))
    else:
        b = _op(ctx, "Mul", _op(ctx, "Exp", _op(ctx, "Neg", x)), b)
    large = _op(ctx, "Div", b, _op(ctx, "Sqrt", x))
    v = _op(ctx, "Where", _op(ctx, "LessOrEqual", x, _c(ctx, dt, 2.0)), small, large)
    return _domain(ctx, dt, x, np.inf, v)


def scaled_bessel_k(ctx, dt, x, order):
    return bessel_k(ctx, dt, x, order, scaled=True)


# ---- Airy Ai ------------------------------------------------------------------------------------------------
_AIRY_TERMS = 16  # torch's series stops below float64 epsilon within 14 terms for |x| < 2.09: unrolled here


def airy_ai(ctx, dt, x):
    one, two, three = _c(ctx, dt, 1.0), _c(ctx, dt, 2.0), _c(ctx, dt, 3.0)
    # x < -2.09: the oscillating expansion in zeta = 2/3 (-x)^(3/2)
    s = _op(ctx, "Sqrt", _op(ctx, "Neg", x))
    zeta = _op(ctx, "Div", _op(ctx, "Mul", _op(ctx, "Mul", _c(ctx, dt, -2.0), x), s), three)
    z = _op(ctx, "Div", one, zeta)
    z2 = _op(ctx, "Mul", z, z)
    f = _op(ctx, "Add", one, _op(ctx, "Mul", z2, _ratio(ctx, dt, z2, "AIRY_AFN", "AIRY_AFD")))
    g = _op(ctx, "Mul", z, _ratio(ctx, dt, z2, "AIRY_AGN", "AIRY_AGD"))
    t = _op(ctx, "Add", zeta, _c(ctx, dt, 0.25 * np.pi))
    neg = _op(ctx, "Mul", _op(ctx, "Div", _c(ctx, dt, 5.64189583547756286948e-01), _op(ctx, "Sqrt", s)),
              _op(ctx, "Sub", _op(ctx, "Mul", _op(ctx, "Sin", t), f), _op(ctx, "Mul", _op(ctx, "Cos", t), g)))
    # x >= 2.09: the decaying expansion in 1 / zeta
    sp = _op(ctx, "Sqrt", x)
    zp = _op(ctx, "Div", _op(ctx, "Mul", _op(ctx, "Mul", two, x), sp), three)
    iz = _op(ctx, "Div", one, zp)
    pos = _op(ctx, "Div", _op(ctx, "Mul", _c(ctx, dt, 5.64189583547756286948e-01),
                              _ratio(ctx, dt, iz, "AIRY_AN", "AIRY_AD")),
              _op(ctx, "Mul", _op(ctx, "Mul", two, _op(ctx, "Sqrt", sp)), _op(ctx, "Exp", zp)))
    # |x| < 2.09: the Maclaurin series c1 f - c2 g
    cube = _op(ctx, "Mul", _op(ctx, "Mul", x, x), x)
    fs, gs, m, n, k = one, x, one, x, 1.0
    for _ in range(_AIRY_TERMS):
        m = _op(ctx, "Div", _op(ctx, "Mul", m, cube), _c(ctx, dt, k + 1))
        n = _op(ctx, "Div", _op(ctx, "Mul", n, cube), _c(ctx, dt, k + 2))
        m = _op(ctx, "Div", m, _c(ctx, dt, k + 2))
        fs = _op(ctx, "Add", fs, m)
        n = _op(ctx, "Div", n, _c(ctx, dt, k + 3))
        gs = _op(ctx, "Add", gs, n)
        k += 3
    series = _op(ctx, "Sub", _op(ctx, "Mul", _c(ctx, dt, 0.355028053887817239260), fs),
                 _op(ctx, "Mul", _c(ctx, dt, 0.258819403792806798405), gs))
    v = _op(ctx, "Where", _op(ctx, "Less", x, _c(ctx, dt, -2.09)), neg, _op(
        ctx, "Where", _op(ctx, "Less", x, _c(ctx, dt, 2.09)), series, pos))
    v = _op(ctx, "Where", _op(ctx, "Greater", x, _c(ctx, dt, 103.892)), _c(ctx, dt, 0.0), v)
    return _op(ctx, "Where", _op(ctx, "IsInf", x), _c(ctx, dt, np.nan), v)


def airy_mapping(ctx, op):
    dt = op.out_dtype()
    return [airy_ai(ctx, dt, op.input("input", dt))]


# ---- orthogonal polynomials of a constant (Python number) degree --------------------------------------------
_MAX_UNROLLED_DEGREE = 256


def _fill(ctx, dt, x, v):
    return _op(ctx, "Expand", _c(ctx, dt, v), _op(ctx, "Shape", x))


def _recur(ctx, dt, n, p, q, step):
    for j in range(2, n + 1):
        p, q = q, step(j, q, p)
    return q


def _chebyshev(ctx, dt, x, n, kind, shifted):
    y = _op(ctx, "Sub", _op(ctx, "Add", x, x), _c(ctx, dt, 1.0)) if shifted else x
    two_y = _op(ctx, "Add", y, y)
    first = {"t": y, "u": two_y, "v": _op(ctx, "Sub", two_y, _c(ctx, dt, 1.0)),
             "w": _op(ctx, "Add", two_y, _c(ctx, dt, 1.0))}[kind]
    limit = (4 if kind == "w" else 6) if shifted else (6 if kind == "t" else 8)
    if n == 0:
        out = _fill(ctx, dt, x, 1.0)
    elif n > limit and np.dtype(dt) != np.float64:  # |y| < 1: torch's closed form; else the recurrence
        # (float64 takes the recurrence everywhere: onnxruntime has no double Acos, and the recurrence in double
        # stays within ~n^2 ulp of torch's closed form, where a float32 Acos would cost 1e-5)
        theta = _op(ctx, "Acos", y)
        half = _op(ctx, "Div", theta, _c(ctx, dt, 2.0))
        even = n % 2 == 0
        if kind == "t":
            closed = _op(ctx, "Cos", _op(ctx, "Mul", _c(ctx, dt, float(n)), theta))
        elif kind == "u":
            s = _op(ctx, "Sin", theta)
            arg = _op(ctx, "Mul", _c(ctx, dt, float(n + 1)), theta)
            closed = _op(ctx, "Where", _op(ctx, "Equal", s, _c(ctx, dt, 0.0)), _op(
                ctx, "Div", _op(ctx, "Mul", _c(ctx, dt, float(n + 1)), _op(ctx, "Cos", arg)), y),
                _op(ctx, "Div", _op(ctx, "Sin", arg), s))
        elif kind == "v":
            arg = _op(ctx, "Mul", _c(ctx, dt, n + 0.5), theta)
            closed = _op(ctx, "Where", _op(ctx, "Equal", _op(ctx, "Sin", half), _c(ctx, dt, 1.0)),
                         _c(ctx, dt, float(2 * n + 1 if even else -(2 * n + 1))),
                         _op(ctx, "Div", _op(ctx, "Cos", arg), _op(ctx, "Cos", half)))
        else:
            arg = _op(ctx, "Mul", _c(ctx, dt, n + 0.5), theta)
            edge = _c(ctx, dt, 1.0 if even else -1.0)
            if not shifted:
                edge = _op(ctx, "Where", _op(ctx, "Greater", x, _c(ctx, dt, 0.0)), _c(ctx, dt, float(2 * n + 1)), edge)
            closed = _op(ctx, "Where", _op(ctx, "Equal", _op(ctx, "Cos", half), _c(ctx, dt, 1.0)), edge,
                         _op(ctx, "Div", _op(ctx, "Sin", arg), _op(ctx, "Sin", half)))
        rec = _recur(ctx, dt, n, _c(ctx, dt, 1.0), first, lambda j, q, p: _op(ctx, "Sub", _op(ctx, "Mul", two_y, q), p))
        out = _op(ctx, "Where", _op(ctx, "Less", _op(ctx, "Abs", y), _c(ctx, dt, 1.0)), closed, rec)
    else:
        out = _recur(ctx, dt, n, _c(ctx, dt, 1.0), first, lambda j, q, p: _op(ctx, "Sub", _op(ctx, "Mul", two_y, q), p))
    even = n % 2 == 0
    top = {"t": 1.0, "u": n + 1.0, "v": 1.0, "w": 2.0 * n + 1}[kind]
    bottom = {"t": 1.0, "u": n + 1.0, "v": 2.0 * n + 1, "w": 1.0}[kind] * (1 if even else -1)
    one = _c(ctx, dt, 1.0)
    if shifted:
        out = _op(ctx, "Where", _op(ctx, "Equal", x, _c(ctx, dt, 0.0)), _c(ctx, dt, bottom), out)
        return _op(ctx, "Where", _op(ctx, "Equal", x, one), _c(ctx, dt, top), out)
    ends = _op(ctx, "Where", _op(ctx, "Greater", x, _c(ctx, dt, 0.0)), _c(ctx, dt, top), _c(ctx, dt, bottom))
    return _op(ctx, "Where", _op(ctx, "Equal", _op(ctx, "Abs", x), one), ends, out)


def _hermite(ctx, dt, x, n, physicists):
    if n > (128 if np.dtype(dt) == np.float32 else 512):  # torch's limits: NaN above
        return _fill(ctx, dt, x, np.nan)
    first = _op(ctx, "Add", x, x) if physicists else x
    if n == 0:
        return _fill(ctx, dt, x, 1.0)
    if physicists:
        return _recur(ctx, dt, n, _c(ctx, dt, 1.0), first, lambda j, q, p: _op(
            ctx, "Sub", _op(ctx, "Mul", first, q), _op(ctx, "Mul", _c(ctx, dt, 2.0 * (j - 1)), p)))
    return _recur(ctx, dt, n, _c(ctx, dt, 1.0), first, lambda j, q, p: _op(
        ctx, "Sub", _op(ctx, "Mul", x, q), _op(ctx, "Mul", _c(ctx, dt, float(j - 1)), p)))


def _laguerre(ctx, dt, x, n):
    one_minus = _op(ctx, "Sub", _c(ctx, dt, 1.0), x)
    out = _fill(ctx, dt, x, 1.0) if n == 0 else _recur(ctx, dt, n, _c(ctx, dt, 1.0), one_minus, lambda j, q, p: _op(
        ctx, "Div", _op(ctx, "Sub", _op(ctx, "Mul", _op(ctx, "Add", _c(ctx, dt, 2.0 * (j - 1)), one_minus), q),
                        _op(ctx, "Mul", _c(ctx, dt, float(j - 1)), p)), _c(ctx, dt, float(j))))
    return _op(ctx, "Where", _op(ctx, "Equal", _op(ctx, "Abs", x), _c(ctx, dt, 0.0)), _c(ctx, dt, 1.0), out)


def _legendre(ctx, dt, x, n):
    out = _fill(ctx, dt, x, 1.0) if n == 0 else _recur(ctx, dt, n, _c(ctx, dt, 1.0), x, lambda j, q, p: _op(
        ctx, "Div", _op(ctx, "Sub", _op(ctx, "Mul", _op(ctx, "Mul", _c(ctx, dt, 2.0 * (j - 1) + 1), x), q),
                        _op(ctx, "Mul", _c(ctx, dt, float(j - 1)), p)), _c(ctx, dt, float(j))))
    ends = _op(ctx, "Where", _op(ctx, "Greater", x, _c(ctx, dt, 0.0)), _c(ctx, dt, 1.0),
               _c(ctx, dt, 1.0 if n % 2 == 0 else -1.0))
    return _op(ctx, "Where", _op(ctx, "Equal", _op(ctx, "Abs", x), _c(ctx, dt, 1.0)), ends, out)


def polynomial_mapping(name):
    """The ONNX mapping of torch.special.<name>(input, n) for a Python-number n: the recurrence unrolled."""
    def onnx(ctx, op):
        n = op.attr("n")
        if not isinstance(n, (int, float, np.integer, np.floating)) or isinstance(n, bool):
            raise op.unsupported(f"{name}: ONNX export needs the degree n as a Python number (a tensor of degrees "
                                 "would need an ONNX Loop over each element's degree)")
        n = int(np.trunc(n)) if np.isfinite(n) and abs(n) < 2.0 ** 63 else -1  # torch's int64 cast
        dt = op.out_dtype()
        x = op.input("input", dt)
        if n < 0:
            return [_fill(ctx, dt, x, 0.0)]
        if n > _MAX_UNROLLED_DEGREE and not name.startswith("hermite"):
            raise op.unsupported(f"{name}: ONNX export unrolls the recurrence; degree {n} is above "
                                 f"{_MAX_UNROLLED_DEGREE}")
        if "chebyshev" in name:
            return [_chebyshev(ctx, dt, x, n, name[-1], name.startswith("shifted"))]
        if name.startswith("hermite"):
            return [_hermite(ctx, dt, x, n, name.endswith("_h"))]
        return [(_laguerre if name.startswith("laguerre") else _legendre)(ctx, dt, x, n)]
    return onnx
