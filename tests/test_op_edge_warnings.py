"""Edge values through every op: no numpy RuntimeWarning escapes, and the results are torch's.

torch computes log(-1) = nan, 1 / 0 = inf, exp(1000) = inf, inf - inf = nan and 0 * inf = nan silently;
numpy warns ("RuntimeWarning: invalid value encountered in ..."), which fails a user's run under
``-W error`` or pytest's ``filterwarnings = error``. Every registry op runs here, forward and backward, on
its own samples with the float inputs replaced by edge values (NaN, +-inf, +-0, 1e30, 3e38, 1e-45,
negatives), shapes and integer / bool arguments kept, under ``simplefilter("error", RuntimeWarning)``.
A sample the op refuses on such input by design (ValueError, RuntimeError such as LinAlgError) is
skipped. Where the op has a torch reference, forward values and gradients must equal torch's, NaN and
inf positions included, for the true edge values (NaN / inf / 0); the finite extremes (1e30, 1e-45,
negatives) are checked for warnings only, since there torch and forgegrad may round differently (sums
that overflow in one order and not another, ill-conditioned factorizations).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import forgegrad as fg

torch = pytest.importorskip("torch")

NAN, INF = np.nan, np.inf
VARIANTS = {
    "special": [NAN, INF, -INF, 0.0, -0.0, 1.0, -1.0],
    "inf": [INF, -INF, 0.5, -2.0],
    "zero": [0.0, -0.0],
    "large": [1e30, -1e30, 3e38, -3e38, 1.5],
    "tiny": [1e-45, -1e-45, 0.0],
    "neg": [-1.0, -0.5, -3.0, -1e30],
}
COMPARED = ("special", "inf", "zero")  # the variants whose results are compared with torch's
MAX_ELEMENTS = 4096  # larger samples add time, not edge cases
MAX_SAMPLES = 4

# torch itself fails on these edge inputs, so there is nothing to compare with
TORCH_FAILS = {
    "grid_sample": "torch's CPU grid_sample crashes (segfault) on a NaN grid",
}
# Ops whose results at NaN / inf / 0 inputs still differ from torch's, each with the reason it is left so (torch's
# own position- or order-dependent artefacts, or a kernel design a per-element check would slow). "result k" counts
# the outputs, then the gradients of the float inputs. Their warnings are still checked; the finite-extreme variants
# are not compared for any op.
_NAN_BY_POSITION = ("torch's backward at NaN depends on the element's position (NaN or 0 on its vectorized loop, g on "
                    "its scalar tail)")
_POLY_AT_NAN = "torch's value at x = NaN is not NaN but a number depending on n and the neighbours (1.0, -4.0, 3.0)"
_POLE = ("gradient at a pole (x = -1, -2): torch's trigamma from a float32 sin(pi x) gives ~1e15, forgegrad's float64 "
         "one ~1e32 (the limit is inf)")
_TIES = ("gradient among equal values (ties at the quantile's rank): torch's unstable sort picks which element gets "
         "it, forgegrad's stable sort the first")
# Inherent in the kernels (a bounds check per tap would slow every convolution): zero padding is multiplied
# by the weights, so an inf weight meets a padded 0 (NaN) where torch's oneDNN / col2im skip out-of-range taps.
_CONV_PADDING = "zero-padding taps: padded 0 * inf weight = NaN in forgegrad, skipped by torch (inf)"
DIFFERS = {
    "celu": _NAN_BY_POSITION,
    "conv1d": _CONV_PADDING,
    "conv2d": _CONV_PADDING,
    "conv3d": _CONV_PADDING,
    "conv_transpose1d": _CONV_PADDING + " (its forward is conv's input gradient)",
    "conv_transpose2d": _CONV_PADDING + " (its forward is conv's input gradient)",
    "conv_transpose3d": _CONV_PADDING + " (its forward is conv's input gradient)",
    "digamma": _POLE,
    "elu": _NAN_BY_POSITION,
    "gelu": "+inf: torch's vectorized float32 kernel gives NaN, its float64 and one-element paths inf (forgegrad inf)",
    "hardshrink": _NAN_BY_POSITION,
    "hardswish": _NAN_BY_POSITION,
    "hardtanh": _NAN_BY_POSITION,
    "linalg_qr": "inf input: numpy's LAPACK (geqrf) gives R[0, 0] = -inf, torch's NaN; both meaningless",
    "linalg_solve": "inf in A: numpy's LAPACK LU makes A^-T zeros (gradient 0), torch's lu_solve NaN; both meaningless",
    "logit": "gradient at -0.0: torch's vectorized loop gives g / (x (1 - x)) = -g inf, its scalar tail g inf "
             "(forgegrad the former)",
    "mode": "rows holding NaN: torch's mode sorts with a comparison NaN leaves unordered, so its result depends on "
             "where the NaNs sit",
    "nanmedian_dim": "an all-NaN row's index: whichever NaN torch's nth_element leaves at the median, forgegrad 0",
    "nanquantile": _TIES,
    "polygamma": _POLE,
    "quantile": _TIES,
    "scaled_dot_product_attention": "all -inf scores: torch's gradient NaN, ours 0; torch's flash: NaN scores -> 0",
    "selu": _NAN_BY_POSITION,
    "softshrink": _NAN_BY_POSITION,
    "special_chebyshev_polynomial_u": _POLY_AT_NAN,
    "special_chebyshev_polynomial_w": _POLY_AT_NAN,
    "special_laguerre_polynomial_l": _POLY_AT_NAN,
    "special_legendre_polynomial_p": _POLY_AT_NAN,
    "special_shifted_chebyshev_polynomial_t": _POLY_AT_NAN,
    "special_shifted_chebyshev_polynomial_u": _POLY_AT_NAN,
    "special_shifted_chebyshev_polynomial_w": _POLY_AT_NAN,
}

OPS = fg.ops.all_ops()


def _edge(a, values, shift):
    v = np.roll(np.array(values, np.float64), shift)
    return np.resize(v, a.size).reshape(a.shape).astype(a.dtype)


def _edge_sample(op, sample, values, float64=False, first_only=False):
    """The sample with its float arrays (only the first one: ``first_only``) made of edge values; ``float64``:
    its float32 arrays as float64 (but where the op takes float32 only, as the registry's float64 check)."""
    args = []
    floats = [i for i, a in enumerate(sample.args) if isinstance(a, np.ndarray) and a.dtype.kind == "f"]
    for i, a in enumerate(sample.args):
        if i in floats[:1 if first_only else None]:
            a = _edge(a, values, i)
        if float64 and i in floats and a.dtype == np.float32 and i not in op.float32_args:
            a = a.astype(np.float64)
        args.append(a)
    return fg.ops.Sample(tuple(args), sample.kwargs, sample.name, sample.grad_positions(), sample.onnx)


def _run(lib, op, sample):
    """(outputs, gradients of the float inputs) as numpy arrays, from forgegrad (lib=fg) or torch."""
    pos = sample.grad_positions()
    if lib is fg:
        args = [fg.tensor(a.copy(), requires_grad=i in pos) if isinstance(a, np.ndarray) else a
                for i, a in enumerate(sample.args)]
        outs = op(*args, **sample.kwargs)
    else:
        args = [torch.from_numpy(a.copy()).requires_grad_(i in pos) if isinstance(a, np.ndarray) else a
                for i, a in enumerate(sample.args)]
        outs = op.torch(torch, *args, **sample.kwargs)
    outs = tuple(outs) if isinstance(outs, (tuple, list)) else (outs,)
    values = [(o.numpy() if lib is fg else o.detach().numpy()).copy() for o in outs]
    rng = np.random.default_rng(7)
    total = None
    for o, v in zip(outs, values):
        if v.dtype.kind == "f" and o.requires_grad:
            c = rng.uniform(-1, 1, size=v.shape).astype(v.dtype)
            term = (o * (fg.tensor(c) if lib is fg else torch.from_numpy(c))).sum()
            total = term if total is None else total + term
    if total is not None:
        total.backward()
    grads = [None if args[p].grad is None else args[p].grad.numpy().copy() for p in pos]
    return values, grads


def _assert_same(got, want, rtol, atol, what):
    for k, (g, w) in enumerate(zip(got, want)):
        if g is None or w is None:
            continue
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape, f"{what} {k}: shape {g.shape}, torch {w.shape}"
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True, err_msg=f"{what} {k}")
        else:
            np.testing.assert_array_equal(g, w.astype(g.dtype), err_msg=f"{what} {k}")


def _small_samples(op):
    samples = [s for s in (op.samples() if op.samples else [])
               if not any(isinstance(a, np.ndarray) and a.size > MAX_ELEMENTS for a in s.args)]
    return samples[:MAX_SAMPLES]


@pytest.mark.parametrize("op", OPS, ids=[op.name for op in OPS])
def test_edge_values_raise_no_warning_and_match_torch(op):
    compare = op.torch is not None and op.name not in TORCH_FAILS and op.name not in DIFFERS
    ran = 0
    for si, s in enumerate(_small_samples(op)):
        for variant, values in VARIANTS.items():
            for float64, first_only in [(f, o) for f in ((False, True) if op.float64 is not None and
                                                          variant in COMPARED else (False,)) for o in (False, True)]:
                # every float input made of edge values; if the op refuses that (a scale, a probability, a
                # variance must be positive), only the first one (the data)
                e = _edge_sample(op, s, values, float64, first_only)
                what = (f"{op.name}: sample {si} ({s.name!r}), {variant} values{' in float64' if float64 else ''}"
                        f"{' in the first input' if first_only else ''}")
                fg.manual_seed(0)
                with warnings.catch_warnings():
                    warnings.simplefilter("error", RuntimeWarning)
                    try:
                        got = _run(fg, op, e)
                    except RuntimeWarning as w:
                        raise AssertionError(f"{what}: numpy's RuntimeWarning escaped: {w}") from None
                    except (ValueError, RuntimeError, IndexError):
                        continue  # refused by design (torch refuses most of these too)
                ran += 1
                if not compare or variant not in COMPARED:
                    continue
                torch.manual_seed(0)
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        want = _run(torch, op, e)
                except (ValueError, RuntimeError, IndexError):
                    continue  # torch refuses it where forgegrad computes something
                rtol, atol = op.tol
                _assert_same(got[0], want[0], max(rtol, 1e-4), atol, f"{what}: output")
                _assert_same(got[1], want[1], max(rtol, 1e-4), atol, f"{what}: gradient")
    if op.samples and _small_samples(op):
        assert ran, f"{op.name}: every edge sample was refused"


# ---- the commonly used functions and Tensor methods outside the registry ------------------------------------
EDGE = np.array([NAN, INF, -INF, 0.0, -0.0, 1e30, -1e30, 3e38, -3e38, 1e-45, -1e-45, -1.0, -0.5, 0.5, 1.0, 2.0],
                np.float32)
EDGE_B = np.roll(EDGE, 5)  # a second operand: every edge value meets several others
LOGITS = np.array([[INF, 0.0, 1.0], [-INF, -INF, -INF], [INF, INF, 0.0], [NAN, 0.0, 1.0], [3e38, -3e38, 0.0],
                   [-INF, 0.0, 1.0]], np.float32)


def _both(fn, arrays, grad=True):
    """fn(lib, *tensors) on forgegrad (under RuntimeWarning = error) and on torch: (forgegrad's, torch's)
    outputs and gradients; forgegrad's error, or torch's, when either refuses."""
    def run(lib):
        ts = [(fg.tensor(a.copy(), requires_grad=grad and a.dtype.kind == "f") if lib is fg else
               torch.from_numpy(a.copy()).requires_grad_(grad and a.dtype.kind == "f")) for a in arrays]
        out = fn(lib, *ts)
        outs = tuple(out) if isinstance(out, (tuple, list)) else (out,)
        vals = [(o.numpy() if lib is fg else o.detach().numpy()).copy() for o in outs]
        fl = [o for o in outs if o.requires_grad]
        if fl:
            rng = np.random.default_rng(3)
            total = sum((o * (fg.tensor if lib is fg else torch.tensor)(
                rng.uniform(-1, 1, size=tuple(o.shape)).astype(np.float32))).sum() for o in fl)
            total.backward()
        return vals, [None if t.grad is None else t.grad.numpy().copy() for t in ts if t.requires_grad]

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        try:
            got = run(fg)
        except RuntimeWarning:
            raise
        except (ValueError, RuntimeError, IndexError) as e:
            got = e
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = run(torch)
    except (ValueError, RuntimeError, IndexError) as e:
        want = e
    return got, want


def _check(fn, *arrays, grad=True, rtol=1e-5, atol=1e-6, elementwise=False, compare=True):
    """No warning from fn on forgegrad; its outputs and gradients equal torch's (elementwise: only where no
    input is a finite extreme, 1e30 / 3e38 / 1e-45, where float32 rounding legitimately differs)."""
    got, want = _both(fn, arrays, grad)
    if isinstance(want, Exception) or not compare:
        return  # torch refuses it: forgegrad may refuse it too, or compute it, without a warning
    assert not isinstance(got, Exception), f"forgegrad raised {got!r} where torch computes {want[0]}"
    if elementwise:
        keep = np.ones(arrays[0].shape, bool)
        for a in arrays:
            keep &= ~(np.isfinite(a) & ((np.abs(a) > 1e20) | ((a != 0) & (np.abs(a) < 1e-30))))
        got = ([g[keep] for g in got[0]], [None if g is None else g[keep] for g in got[1]])
        want = ([w[keep] for w in want[0]], [None if w is None else w[keep] for w in want[1]])
    _assert_same(got[0], want[0], rtol, atol, "output")
    _assert_same(got[1], want[1], rtol, atol, "gradient")


# Where forgegrad's result at a NaN / inf / 0 input differs from torch's (warnings are still checked there).
_TORCH_POLY_NAN = "torch gives a finite value (varying between runs) at x = NaN; forgegrad gives NaN"
KNOWN = {
    "digamma": "trigamma (the gradient) at 2.0 after 1e30 / 3e38 neighbours: forgegrad's series differs from torch's",
    "logit": "gradient at -0.0: forgegrad +inf, torch -inf (the sign of 1 / (x (1 - x)) at -0)",
    **{f"special.{n}": _TORCH_POLY_NAN for n in (
        "chebyshev_polynomial_u", "chebyshev_polynomial_w", "laguerre_polynomial_l", "legendre_polynomial_p",
        "shifted_chebyshev_polynomial_u", "shifted_chebyshev_polynomial_w")},
}

BINARY = {
    "add": lambda lib, a, b: a + b, "sub": lambda lib, a, b: a - b, "mul": lambda lib, a, b: a * b,
    "div": lambda lib, a, b: a / b, "pow": lambda lib, a, b: a ** b, "rsub": lambda lib, a, b: 1.0 - a,
    "rdiv": lambda lib, a, b: 1.0 / a, "div_zero": lambda lib, a, b: a / 0.0, "square": lambda lib, a, b: a ** 2,
    "root": lambda lib, a, b: a ** 0.5, "rpow": lambda lib, a, b: 2.0 ** a,
    "maximum": lambda lib, a, b: lib.maximum(a, b),
    "atan2": lambda lib, a, b: lib.atan2(a, b), "hypot": lambda lib, a, b: lib.hypot(a, b),
    "fmod": lambda lib, a, b: lib.fmod(a, b), "remainder": lambda lib, a, b: lib.remainder(a, b),
    "xlogy": lambda lib, a, b: lib.xlogy(a, b), "logaddexp": lambda lib, a, b: lib.logaddexp(a, b),
    "floor_divide": lambda lib, a, b: lib.floor_divide(a, b),
}
UNARY = ["log", "log2", "log10", "log1p", "exp", "exp2", "expm1", "sqrt", "rsqrt", "reciprocal", "sigmoid", "tanh",
         "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "erf", "erfc",
         "erfinv", "lgamma", "digamma", "abs", "sign", "sgn", "neg", "floor", "ceil", "round", "trunc", "frac",
         "logit", "sinc", "deg2rad", "rad2deg", "i0", "square", "nan_to_num", "signbit", "isfinite"]


@pytest.mark.parametrize("name", sorted(BINARY))
def test_operators_at_edge_values(name):
    _check(BINARY[name], EDGE, EDGE_B, rtol=1e-5, atol=0, elementwise=True, compare=name not in KNOWN)


@pytest.mark.parametrize("name", UNARY)
def test_unary_functions_at_edge_values(name):
    _check(lambda lib, a: getattr(lib, name)(a), EDGE, rtol=2e-5, atol=0, elementwise=True, compare=name not in KNOWN)


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "softmin", "cross_entropy", "logsumexp"])
def test_softmax_family_with_infinite_logits(name):
    F = {"softmax": lambda lib, x: lib.nn.functional.softmax(x, dim=1),
         "log_softmax": lambda lib, x: lib.nn.functional.log_softmax(x, dim=1),
         "softmin": lambda lib, x: lib.nn.functional.softmin(x, dim=1),
         "cross_entropy": lambda lib, x: lib.nn.functional.cross_entropy(
             x, (fg if lib is fg else torch).tensor([0, 1, 2, 0, 1, 2]), reduction="none"),
         "logsumexp": lambda lib, x: lib.logsumexp(x, dim=1)}[name]
    _check(F, LOGITS)


REDUCTIONS = {
    "mean": lambda lib, x: x.mean(), "sum": lambda lib, x: x.sum(), "prod": lambda lib, x: x.prod(),
    "var": lambda lib, x: x.var(), "std": lambda lib, x: x.std(), "var_dim": lambda lib, x: x.var(dim=0),
    "std_dim": lambda lib, x: x.std(dim=0), "mean_dim": lambda lib, x: x.mean(dim=0),
    "norm": lambda lib, x: x.norm(), "amax": lambda lib, x: x.amax(dim=0),
    "nanmean": lambda lib, x: x.nanmean(), "logsumexp": lambda lib, x: lib.logsumexp(x, dim=0),
    "cumsum": lambda lib, x: x.cumsum(0), "cumprod": lambda lib, x: x.cumprod(0),
}


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@pytest.mark.parametrize("case", ["empty", "one", "inf", "nan", "huge"])
def test_reductions_at_edge_values(name, case):
    x = {"empty": np.zeros((0, 3), np.float32), "one": np.array([[2.0]], np.float32),
         "inf": np.array([[INF, 1.0], [-INF, INF], [INF, 2.0]], np.float32),
         "nan": np.array([[NAN, 1.0], [2.0, 3.0]], np.float32),
         "huge": np.array([[3e38, 3e38], [3e38, -3e38], [1e30, 1e-45]], np.float32)}[case]
    # "huge": warnings only (forgegrad's var / std of values near 3e38 is finite, computed in double as torch's
    # float64; torch's float32 overflows to inf)
    _check(REDUCTIONS[name], x, rtol=1e-5, atol=1e-6, compare=case != "huge" and (name, case) not in KNOWN)


SPECIAL = sorted(n for n in dir(fg.special) if not n.startswith("_") and hasattr(torch.special, n) and n not in (
    "Tensor", "softmax", "log_softmax", "logsumexp", "polygamma", "multigammaln", "round"))
SPECIAL_BINARY = {"xlog1py", "xlogy", "zeta", "gammainc", "gammaincc"}
SPECIAL_POLY = {n for n in SPECIAL if "polynomial" in n}


@pytest.mark.parametrize("name", SPECIAL)
def test_special_functions_at_edge_values(name):
    if name in SPECIAL_POLY:  # (x, n): the degree an integer tensor
        fn = lambda lib, x: getattr(lib.special, name)(x, (fg if lib is fg else torch).tensor(3))  # noqa: E731
    elif name in SPECIAL_BINARY:
        fn = lambda lib, x, y: getattr(lib.special, name)(x, y)  # noqa: E731
    else:
        fn = lambda lib, x: getattr(lib.special, name)(x)  # noqa: E731
    arrays = (EDGE, EDGE_B) if name in SPECIAL_BINARY else (EDGE,)
    _check(fn, *arrays, grad=False, rtol=1e-4, atol=1e-6, elementwise=True, compare=f"special.{name}" not in KNOWN)


SINGULAR = {"zeros": np.zeros((3, 3), np.float32), "ones": np.ones((3, 3), np.float32),
            "rank1": np.outer([1.0, 2.0, 3.0], [1.0, -1.0, 2.0]).astype(np.float32),
            "inf": np.array([[INF, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)}
LINALG = {
    "inv": lambda lib, a: lib.linalg.inv(a), "det": lambda lib, a: lib.linalg.det(a),
    "slogdet": lambda lib, a: lib.linalg.slogdet(a), "solve": lambda lib, a: lib.linalg.solve(a, a[:, :1] + 1),
    "pinv": lambda lib, a: lib.linalg.pinv(a), "svdvals": lambda lib, a: lib.linalg.svdvals(a),
    "matrix_rank": lambda lib, a: lib.linalg.matrix_rank(a), "eigvalsh": lambda lib, a: lib.linalg.eigvalsh(a),
    "cholesky": lambda lib, a: lib.linalg.cholesky(a), "matrix_norm": lambda lib, a: lib.linalg.matrix_norm(a),
    "cond": lambda lib, a: lib.linalg.cond(a),
}


@pytest.mark.parametrize("name", sorted(LINALG))
@pytest.mark.parametrize("matrix", sorted(SINGULAR))
def test_linalg_on_singular_and_infinite_matrices_raises_no_warning(name, matrix):
    # warnings only: torch's results on singular input depend on LAPACK's rounding (an inverse of a singular
    # matrix may be inf or 1e7), and forgegrad refuses an SVD of inf (LAPACK's never returns) where torch gives NaN
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        try:
            out = LINALG[name](fg, fg.tensor(SINGULAR[matrix].copy(), requires_grad=name != "matrix_rank"))
            outs = tuple(out) if isinstance(out, (tuple, list)) else (out,)
            fl = [o for o in outs if o.requires_grad]
            if fl:
                sum(o.sum() for o in fl).backward()
        except (ValueError, RuntimeError):  # a singular matrix refused (LinAlgError), as torch's
            return


def test_svd_of_an_infinite_matrix_is_refused_not_hung():
    # LAPACK's gesdd never returns on a matrix holding inf (numpy.linalg.svd hung): refused first, as torch
    # refuses NaN; det's gradient of a singular matrix holding inf (an SVD too) is NaN, as torch's
    a = np.array([[INF, 0.0], [0.0, 0.0]], np.float32)
    for fn in (fg.linalg.svd, fg.linalg.svdvals, fg.linalg.pinv, fg.linalg.matrix_rank):
        with pytest.raises(RuntimeError, match="non-finite"):
            fn(fg.tensor(a))
    x = fg.tensor(a, requires_grad=True)
    fg.linalg.det(x).backward()
    assert np.isnan(x.grad.numpy()).all()


def test_user_numpy_error_state_is_kept():
    # forgegrad's ops run quiet; the caller's own numpy calls keep the caller's settings
    with np.errstate(divide="raise"):
        assert fg.log(fg.tensor([0.0])).item() == -INF
        with pytest.raises(FloatingPointError):
            np.log(np.zeros(1, np.float32))


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta"])
def test_optimizer_steps_with_infinite_gradients_match_torch(name):
    # the updates are numpy: an inf / NaN gradient gives torch's NaN / inf parameters, without a warning
    grads = [np.roll(EDGE, k) for k in range(2)]
    results = []
    for lib in (fg, torch):
        p = (fg.nn.Parameter(fg.tensor(EDGE_B.copy())) if lib is fg else
             torch.nn.Parameter(torch.from_numpy(EDGE_B.copy())))
        kw = {"lr": 0.1, "momentum": 0.9} if name == "SGD" else {"lr": 0.1}
        opt = getattr(lib.optim, name)([p], **kw)
        with warnings.catch_warnings():
            warnings.simplefilter("error" if lib is fg else "ignore", RuntimeWarning)
            for g in grads:
                p.grad = (fg.tensor if lib is fg else torch.from_numpy)(g.copy())
                opt.step()
        results.append(p.detach().numpy().copy())
    # (atol: a subnormal gradient gives 1e-36 here, 0 in torch)
    np.testing.assert_allclose(results[0], results[1], rtol=1e-5, atol=1e-30, equal_nan=True)


def test_lbfgs_with_infinite_gradient_raises_no_warning():
    p = fg.nn.Parameter(fg.tensor(EDGE_B.copy()))
    opt = fg.optim.LBFGS([p], lr=0.1, max_iter=3)

    def closure():
        opt.zero_grad()
        loss = (p * fg.tensor(EDGE)).sum()
        loss.backward()
        return loss

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        opt.step(closure)
        opt.step(closure)


def test_factories_past_float32_range_raise_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        # torch: the same NaN / inf pattern for an infinite end; inf past the range (torch's casts)
        np.testing.assert_array_equal(fg.linspace(0, INF, 5).numpy(), torch.linspace(0, INF, 5).numpy())
        np.testing.assert_array_equal(fg.logspace(0, 1000, 3).numpy(), torch.logspace(0, 1000, 3).numpy())
        np.testing.assert_array_equal(fg.tensor([1e300]).numpy(), [INF])
        np.testing.assert_array_equal(fg.tensor(np.array([-1e300]), dtype=fg.float64).half().numpy(), [-INF])
        # torch refuses these (a fill / value that float32 cannot hold); forgegrad gives inf
        np.testing.assert_array_equal(fg.full((2,), 1e300).numpy(), [INF, INF])
        np.testing.assert_array_equal(fg.linspace(0, 1e300, 3).numpy(), [0, INF, INF])
