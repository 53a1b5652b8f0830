"""forgegrad.special against torch.special (torch 2.13): every public function, edge values (0, -0, negatives, poles,
inf, NaN, large arguments), float32 and float64, odd shapes, gradients and double backward where torch has them, the
non-differentiable ones, the package-level names and Tensor methods, and the numpy-only runtime (no scipy)."""
import subprocess
import sys

import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import autograd

TS = torch.special
INTERNAL = {"Tensor", "torch", "common_args", "multi_dim_common"}  # torch.special's module-level imports
RNG = np.random.default_rng(0)
EDGES = [0.0, -0.0, 1e-300, 1e-8, -1e-8, 0.5, 1.0, -1.0, 2.0, 2.09, -2.09, 5.0, -5.0, 8.0, -8.0, 10.0, 26.0, -26.8,
         50.0, 51.0, 100.0, 104.0, 700.0, 710.0, 1e10, -1e10, np.inf, -np.inf, np.nan]
X64 = np.concatenate([RNG.uniform(-30, 30, 400), RNG.uniform(-3, 3, 400), np.exp(RNG.uniform(-20, 6, 200)),
                      EDGES]).reshape(-1, 7)  # 147 x 7: an odd shape

UNARY = ["airy_ai", "bessel_j0", "bessel_j1", "bessel_y0", "bessel_y1", "modified_bessel_i0", "modified_bessel_i1",
         "modified_bessel_k0", "modified_bessel_k1", "scaled_modified_bessel_k0", "scaled_modified_bessel_k1",
         "spherical_bessel_j0", "entr", "erfcx", "i0e", "i1", "i1e", "log_ndtr", "ndtr", "digamma", "psi", "erf",
         "erfc", "exp2", "expit", "expm1", "gammaln", "i0", "log1p", "sinc"]
POLYS = ["chebyshev_polynomial_t", "chebyshev_polynomial_u", "chebyshev_polynomial_v", "chebyshev_polynomial_w",
         "shifted_chebyshev_polynomial_t", "shifted_chebyshev_polynomial_u", "shifted_chebyshev_polynomial_v",
         "shifted_chebyshev_polynomial_w", "hermite_polynomial_h", "hermite_polynomial_he", "laguerre_polynomial_l",
         "legendre_polynomial_p"]
NOT_DIFFERENTIABLE = UNARY[:12] + POLYS
# float64: rounding-level agreement (y0/y1/j1 near their zeros: libm's sin/cos/log differ by an ulp, amplified;
# lgamma near its zeros at 1 and 2: an ulp of the terms)
LOOSE64 = {"bessel_y0": (1e-12, 1e-300), "bessel_y1": (1e-12, 1e-300), "bessel_j1": (1e-12, 1e-300),
           "sinc": (1e-12, 1e-300), "gammaln": (1e-13, 1e-15)}


def _close(got, want, rtol, atol=0.0, what=""):
    got = got.detach().numpy() if hasattr(got, "detach") else np.asarray(got)
    want = want.detach().numpy()
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, torch {want.dtype}"
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True, err_msg=what)


def test_every_torch_special_function_is_there():
    names = {n for n in dir(TS) if not n.startswith("_")} - INTERNAL
    missing = sorted(n for n in names if not callable(getattr(fg.special, n, None)))
    assert not missing
    assert set(fg.special.__all__) == names


@pytest.mark.parametrize("name", UNARY)
def test_unary_float64_edges_match_torch(name):
    x = X64[np.abs(X64) < 700] if name in ("exp2", "expm1") else X64
    got = getattr(fg.special, name)(fg.tensor(x))
    _close(got, getattr(TS, name)(torch.from_numpy(x)), *LOOSE64.get(name, (1e-13, 1e-300)), name)


@pytest.mark.parametrize("name", UNARY)
def test_unary_float32_matches_torch(name):
    x = np.concatenate([RNG.uniform(-12, 12, 297), [0.0, -0.0, 1.0, np.inf, -np.inf, np.nan]]).astype(np.float32)
    x = x.reshape(3, 101)
    got = getattr(fg.special, name)(fg.tensor(x))
    want = getattr(TS, name)(torch.from_numpy(x))
    # torch computes float32 in float32, forgegrad in float64 then rounds: a few float32 ulps, more near a zero
    scale = np.abs(want.numpy()[np.isfinite(want.numpy())]).max()
    _close(got, want, 2e-5, 1e-6 * max(scale, 1.0) if "bessel_y" in name or "bessel_j" in name or name == "airy_ai"
           else 1e-7, name)


def test_ndtri_and_log_ndtr_tails():
    p = np.concatenate([RNG.uniform(0, 1, 300), np.exp(-RNG.uniform(0, 700, 100)), 1 - np.exp(-RNG.uniform(3, 36, 50)),
                        [0.0, 1.0, -0.1, 1.1, 0.5, np.nan, 0.1353352832366127, 0.8646647167633873]])
    _close(fg.special.ndtri(fg.tensor(p)), TS.ndtri(torch.from_numpy(p)), 1e-13, 0, "ndtri")
    x = np.concatenate([-np.exp(RNG.uniform(-3, 8, 200)), [-1.0, -1.0000001, -38.0, -40.0, -1e5]])
    _close(fg.special.log_ndtr(fg.tensor(x)), TS.log_ndtr(torch.from_numpy(x)), 1e-13, 0, "log_ndtr")


def _grid_pairs():
    a = np.concatenate([RNG.uniform(1, 20, 300), np.exp(RNG.uniform(-5, 6, 300)), [1.0, 1.0, 1.5, 2.0, 3.0, np.inf,
                                                                                    np.nan, 0.5, 3.0, 3.0, 2.0]])
    q = np.concatenate([RNG.uniform(-20, 20, 300), np.exp(RNG.uniform(-5, 6, 300)), [0.0, -1.0, -2.5, 0.5, -3.0, 1.0,
                                                                                       1.0, 2.0, np.inf, -np.inf, 0.0]])
    return a, q


def test_zeta_float64_matches_torch_including_poles_and_negative_q():
    a, q = _grid_pairs()
    _close(fg.special.zeta(fg.tensor(a), fg.tensor(q)), TS.zeta(torch.from_numpy(a), torch.from_numpy(q)), 1e-13, 0,
           "zeta")
    _close(fg.special.zeta(2.0, fg.tensor(q)), TS.zeta(2.0, torch.from_numpy(q)), 1e-13, 0, "zeta(scalar, q)")
    _close(fg.special.zeta(fg.tensor(a), 2.5), TS.zeta(torch.from_numpy(a), 2.5), 1e-13, 0, "zeta(x, scalar)")


def test_zeta_of_nan_at_a_pole_of_q_is_inf_as_torch():
    # Math.h tests only x == 1 and x < 1 before the pole at q = 0, -1, ...: zeta(nan, -1) is inf there, not NaN
    x = np.array([np.nan, np.nan, np.nan, np.nan, 2.0], np.float64)
    q = np.array([-1.0, 0.0, 1.0, -1.5, np.nan], np.float64)
    for dtype in (np.float32, np.float64):
        _close(fg.special.zeta(fg.tensor(x.astype(dtype)), fg.tensor(q.astype(dtype))),
               TS.zeta(torch.from_numpy(x.astype(dtype)), torch.from_numpy(q.astype(dtype))), 0, 0, "zeta(nan, q)")


@pytest.mark.parametrize("name", ["gammainc", "gammaincc"])
def test_incomplete_gamma_float64_matches_torch(name):
    a = np.concatenate([np.exp(RNG.uniform(-5, 7, 1500)), RNG.uniform(15, 400, 500),
                        [0, 0, 1, np.inf, np.inf, -1, 1, 2, np.nan, 0.5, 250]])
    x = np.concatenate([np.exp(RNG.uniform(-5, 7, 1500)), RNG.uniform(15, 400, 500),
                        [0, 1, 0, 1, np.inf, 1, -1, np.inf, 1, 0.4, 251]])
    x[1500:2000] = a[1500:2000] * RNG.uniform(0.8, 1.2, 500)  # the uniform asymptotic expansions' region
    got = getattr(fg.special, name)(fg.tensor(a), fg.tensor(x))
    # 1e-11: where the result is ~1e-150 torch's and forgegrad's lgamma differ by an ulp of a ~500 argument
    _close(got, getattr(TS, name)(torch.from_numpy(a), torch.from_numpy(x)), 1e-11, 1e-300, name)
    a32, x32 = a[:1500].astype(np.float32).reshape(30, 50), x[:1500].astype(np.float32).reshape(30, 50)
    got = getattr(fg.special, name)(fg.tensor(a32), fg.tensor(x32))
    _close(got, getattr(TS, name)(torch.from_numpy(a32), torch.from_numpy(x32)), 1e-4, 1e-6, name + " float32")


@pytest.mark.parametrize("n", [0, 1, 2, 3, 6])
def test_polygamma_float64_matches_torch(n):
    x = np.concatenate([RNG.uniform(-6, 8, 200), [0.0, -0.0, -1.0, -2.5, 1.0, 10.0, 1e10, np.inf, np.nan]])
    _close(fg.special.polygamma(n, fg.tensor(x)), TS.polygamma(n, torch.from_numpy(x)), 1e-12, 1e-300, f"n={n}")
    _close(fg.polygamma(n, fg.tensor(x)), torch.polygamma(n, torch.from_numpy(x)), 1e-12, 1e-300, f"fg n={n}")


@pytest.mark.parametrize("name", POLYS)
def test_polynomials_match_torch(name):
    xs = np.concatenate([RNG.uniform(-1.5, 1.5, 60), [-1.0, 1.0, 0.0, 0.5, 2.0, -2.0, 1e-3, np.inf, -np.inf]])
    ns = np.array([-2, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 30, 2.7, -0.5, np.inf])
    x, n = np.meshgrid(xs, ns)
    got = getattr(fg.special, name)(fg.tensor(x), fg.tensor(n))
    _close(got, getattr(TS, name)(torch.from_numpy(x), torch.from_numpy(n)), 1e-11, 1e-14, name)
    # integer degrees, broadcast, a Python degree, float32
    x32 = RNG.uniform(-1.1, 1.1, (5, 1, 1, 7)).astype(np.float32)
    n64 = np.arange(0, 12).reshape(4, 3, 1)
    _close(getattr(fg.special, name)(fg.tensor(x32), fg.tensor(n64)),
           getattr(TS, name)(torch.from_numpy(x32), torch.from_numpy(n64)), 1e-4, 1e-4, name + " float32")
    _close(getattr(fg.special, name)(fg.tensor(x32), 9), getattr(TS, name)(torch.from_numpy(x32), 9), 1e-4, 1e-4,
           name + " n=9")


def test_polynomials_of_nan_are_nan():
    # torch returns an uninitialised register for a NaN x (its loop variable is never set); forgegrad NaN
    for name in POLYS:
        out = getattr(fg.special, name)(fg.tensor([np.nan, np.nan]), fg.tensor([3.0, 12.0])).numpy()
        assert np.isnan(out).all(), name


def test_xlog1py_and_xlogy_match_torch_with_scalars_and_edges():
    x = np.array([[0.0, 0.0, 1.0, 0.0, 2.0, -1.5, np.nan, 0.0]])
    y = np.array([[-1.0, np.nan, -1.0, -2.0, 3.0, 0.5, 1.0, np.inf]])
    for name in ("xlog1py", "xlogy"):
        f, t = getattr(fg.special, name), getattr(TS, name)
        _close(f(fg.tensor(x), fg.tensor(y)), t(torch.from_numpy(x), torch.from_numpy(y)), 1e-15, 0, name)
        _close(f(2.0, fg.tensor(y)), t(2.0, torch.from_numpy(y)), 1e-15, 0, name + "(scalar, y)")
        _close(f(fg.tensor(x), 2.0), t(torch.from_numpy(x), 2.0), 1e-15, 0, name + "(x, scalar)")


def test_integer_inputs_compute_in_float32():
    i = np.array([[1, 2, 3]])
    for name in ("ndtr", "erfcx", "i0e", "bessel_j0", "entr", "modified_bessel_k1"):
        _close(getattr(fg.special, name)(fg.tensor(i)), getattr(TS, name)(torch.from_numpy(i)), 1e-6, 1e-7, name)
    _close(fg.special.chebyshev_polynomial_t(fg.tensor(i), fg.tensor(i)),
           TS.chebyshev_polynomial_t(torch.from_numpy(i), torch.from_numpy(i)), 1e-6, 0, "int polynomial")
    _close(fg.special.multigammaln(fg.tensor(i), 2), TS.multigammaln(torch.from_numpy(i), 2), 1e-6, 0, "mvlgamma")


def _grads(lib, fn, arrays, positions):
    wrap = (lambda a: fg.tensor(a, requires_grad=True)) if lib == "fg" else (
        lambda a: torch.from_numpy(a).requires_grad_(True))
    grad = autograd.grad if lib == "fg" else torch.autograd.grad
    args = [wrap(a) if i in positions else (fg.tensor(a) if lib == "fg" else torch.from_numpy(a))
            for i, a in enumerate(arrays)]
    out = fn(*args)
    w = np.linspace(-1, 1, out.numel()).reshape(tuple(out.shape))
    total = (out * (fg.tensor(w) if lib == "fg" else torch.from_numpy(w))).sum()
    xs = [args[i] for i in positions]
    gs = grad(total, xs, create_graph=True)
    proj = sum((g * (fg.tensor(w) if lib == "fg" else torch.from_numpy(w))).sum() for g in gs)
    ggs = grad(proj, xs, allow_unused=True)
    arr = (lambda t: t.detach().numpy()) if lib == "fg" else (lambda t: t.detach().numpy())
    return [arr(g) for g in gs] + [np.zeros(1) if g is None else arr(g) for g in ggs]


GRAD_CASES = {
    "ndtr": ((RNG.uniform(-6, 6, (4, 9)),), (0,)), "log_ndtr": ((RNG.uniform(-30, 6, (4, 9)),), (0,)),
    "ndtri": ((RNG.uniform(0.001, 0.999, (4, 9)),), (0,)), "erfcx": ((RNG.uniform(-5, 60, (4, 9)),), (0,)),
    "i0e": ((RNG.uniform(-12, 12, (4, 9)),), (0,)), "i1": ((RNG.uniform(-12, 12, (4, 9)),), (0,)),
    "i1e": ((np.concatenate([RNG.uniform(-12, 12, 35), [0.0]]).reshape(4, 9),), (0,)),
    "entr": ((RNG.uniform(0.01, 5, (4, 9)),), (0,)), "digamma": ((RNG.uniform(-3.5, 6, (4, 9)),), (0,)),
    "xlog1py": ((RNG.uniform(-2, 2, (4, 9)), RNG.uniform(-0.9, 4, (4, 9))), (0, 1)),
    "zeta": ((RNG.uniform(1.5, 6, (4, 9)), RNG.uniform(0.2, 5, (4, 9))), (1,)),
    "gammainc": ((RNG.uniform(0.2, 30, (4, 9)), RNG.uniform(0.2, 30, (4, 9))), (1,)),
    "gammaincc": ((RNG.uniform(0.2, 30, (4, 9)), RNG.uniform(0.2, 30, (4, 9))), (1,)),
}


@pytest.mark.parametrize("name", sorted(GRAD_CASES))
def test_gradient_and_double_backward_match_torch(name):
    arrays, pos = GRAD_CASES[name]
    got = _grads("fg", getattr(fg.special, name), arrays, pos)
    want = _grads("torch", getattr(TS, name), arrays, pos)
    for k, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=f"{name} order {1 + k // len(pos)}")


@pytest.mark.parametrize("n", [0, 1, 3])
def test_polygamma_and_multigammaln_gradients_match_torch(n):
    x = RNG.uniform(0.3, 5, (3, 5))
    for f, t in ((lambda v: fg.special.polygamma(n, v), lambda v: TS.polygamma(n, v)),
                 (lambda v: fg.special.multigammaln(v + 2.0, 3), lambda v: TS.multigammaln(v + 2.0, 3))):
        for a, b in zip(_grads("fg", f, (x,), (0,)), _grads("torch", t, (x,), (0,))):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_not_differentiable_functions_return_no_graph_as_torch():
    x = fg.tensor(RNG.uniform(0.2, 0.9, (2, 3)), requires_grad=True)
    xt = torch.from_numpy(x.numpy()).requires_grad_(True)
    for name in NOT_DIFFERENTIABLE:
        args = (x,) if name in UNARY else (x, 3)
        targs = (xt,) if name in UNARY else (xt, 3)
        assert not getattr(fg.special, name)(*args).requires_grad, name
        assert not getattr(TS, name)(*targs).requires_grad, name


@pytest.mark.parametrize("name", ["zeta", "gammainc", "gammaincc"])
def test_no_derivative_for_input_raises_as_torch(name):
    a, b = fg.tensor([[2.5, 3.0]], requires_grad=True), fg.tensor([[1.5, 2.0]])
    out = getattr(fg.special, name)(a, b)
    with pytest.raises(RuntimeError, match="not implemented"):
        out.sum().backward()
    at = torch.tensor([[2.5, 3.0]], requires_grad=True)
    with pytest.raises(RuntimeError, match="not implemented"):
        getattr(TS, name)(at, torch.tensor([[1.5, 2.0]])).sum().backward()


def test_package_names_and_tensor_methods_match_torch():
    x = RNG.uniform(1.2, 4, (3, 4))
    y = RNG.uniform(0.5, 4, (3, 4))
    a, b, at, bt = fg.tensor(x), fg.tensor(y), torch.from_numpy(x), torch.from_numpy(y)
    _close(fg.igamma(a, b), torch.igamma(at, bt), 1e-13, 0, "igamma")
    _close(fg.igammac(a, b), torch.igammac(at, bt), 1e-13, 0, "igammac")
    _close(fg.mvlgamma(a, 2), torch.mvlgamma(at, 2), 1e-13, 0, "mvlgamma")
    _close(a.igamma(b), at.igamma(bt), 1e-13, 0, "Tensor.igamma")
    _close(a.igammac(b), at.igammac(bt), 1e-13, 0, "Tensor.igammac")
    _close(a.polygamma(2), at.polygamma(2), 1e-13, 0, "Tensor.polygamma")
    _close(a.mvlgamma(3), at.mvlgamma(3), 1e-13, 0, "Tensor.mvlgamma")
    for name, args in (("polygamma_", (1,)), ("mvlgamma_", (2,)), ("igamma_", (b,)), ("igammac_", (b,))):
        c, ct = a.clone(), at.clone()
        getattr(c, name)(*args)
        getattr(ct, name)(*[bt if isinstance(v, fg.Tensor) else v for v in args])
        _close(c, ct, 1e-13, 0, name)
    _close(fg.special.softmax(a, 1), TS.softmax(at, 1), 1e-13, 0, "softmax")
    _close(fg.special.log_softmax(a, 0), TS.log_softmax(at, 0), 1e-13, 0, "log_softmax")
    _close(fg.special.softmax(fg.tensor(x.astype(np.float32)), 1, dtype=fg.float64),
           TS.softmax(torch.from_numpy(x.astype(np.float32)), 1, dtype=torch.float64), 1e-13, 0, "softmax dtype")
    _close(fg.special.logsumexp(a, 1, keepdim=True), TS.logsumexp(at, 1, keepdim=True), 1e-13, 0, "logsumexp")
    _close(fg.special.logit(a / 5, eps=0.1), TS.logit(at / 5, eps=0.1), 1e-13, 0, "logit")
    _close(fg.special.round(a * 3), TS.round(at * 3), 0, 0, "round")
    _close(fg.special.erfinv(a / 5), TS.erfinv(at / 5), 1e-13, 0, "erfinv")


def test_bad_inputs_raise_clear_errors():
    x = fg.tensor([1.0, 2.0])
    with pytest.raises(TypeError, match="input"):
        fg.special.ndtr(2.0)
    with pytest.raises(TypeError, match="other"):
        fg.special.gammainc(x, 2.0)
    with pytest.raises(TypeError, match="input.*n"):
        fg.special.chebyshev_polynomial_t(0.5, 3)
    with pytest.raises(ValueError, match="n must be non-negative"):
        fg.special.polygamma(-1, x)
    with pytest.raises(TypeError, match="n must be an int"):
        fg.special.polygamma(1.5, x)
    for p in (0, -2):
        with pytest.raises(RuntimeError, match="p has to be greater than or equal to 1"):
            torch.special.multigammaln(torch.tensor([1.0, 2.0]), p)
        # forgegrad's bad argument is a ValueError, with torch's words and the value
        bound = f"p has to be greater than or equal to 1, got {p}$"
        with pytest.raises(ValueError, match=r"^special\.multigammaln\(\): " + bound):
            fg.special.multigammaln(x, p)
        for call in (lambda: x.mvlgamma(p), lambda: fg.mvlgamma(x, p)):
            with pytest.raises(ValueError, match=r"^mvlgamma\(\): " + bound):
                call()
    with pytest.raises(TypeError, match="p must be an int"):
        fg.special.multigammaln(x, 1.5)
    with pytest.raises(ValueError, match="broadcast"):
        fg.special.zeta(fg.tensor([2.0, 3.0]), fg.tensor([1.0, 2.0, 3.0]))


def test_runs_without_scipy():
    """numpy is forgegrad's only runtime dependency: with scipy unimportable every torch.special function runs and
    gives the values it gives with scipy installed."""
    code = (
        "import sys; sys.modules['scipy'] = None; sys.modules['scipy.special'] = None\n"
        "import numpy as np, forgegrad as fg\n"
        "x = fg.tensor(np.linspace(0.1, 4, 13))\n"
        "names = [n for n in fg.special.__all__ if n not in ('softmax', 'log_softmax', 'logsumexp', 'polygamma',\n"
        "         'multigammaln', 'round')]\n"
        "two = {'xlog1py', 'xlogy', 'zeta', 'gammainc', 'gammaincc'} | {n for n in names if 'polynomial' in n}\n"
        "vals = [getattr(fg.special, n)(*((x, x) if n in two else (x,))).numpy() for n in names]\n"
        "vals.append(fg.special.polygamma(3, x).numpy())\n"
        "assert 'scipy' not in sys.modules or sys.modules['scipy'] is None\n"
        "np.save(sys.argv[1], np.stack(vals))\n")
    import os
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "v.npy")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        subprocess.run([sys.executable, "-c", code, path], check=True, env=env, timeout=120)
        got = np.load(path)
    x = torch.linspace(0.1, 4, 13, dtype=torch.float64).float()
    names = [n for n in fg.special.__all__ if n not in ("softmax", "log_softmax", "logsumexp", "polygamma",
                                                         "multigammaln", "round")]
    two = {"xlog1py", "xlogy", "zeta", "gammainc", "gammaincc"} | {n for n in names if "polynomial" in n}
    want = [getattr(TS, n)(*((x, x) if n in two else (x,))).numpy() for n in names] + [TS.polygamma(3, x).numpy()]
    np.testing.assert_allclose(got, np.stack(want), rtol=2e-5, atol=1e-5)


def test_zero_dim_and_empty_inputs():
    unary = [n for n in fg.special.__all__ if n in UNARY or n in ("ndtri", "log_ndtr")]
    for name in unary:
        got = getattr(fg.special, name)(fg.tensor(0.7, dtype=fg.float64))
        assert got.shape == () and getattr(fg.special, name)(fg.zeros(0, 3)).shape == (0, 3), name
        _close(got, getattr(TS, name)(torch.tensor(0.7, dtype=torch.float64)), 1e-13, 0, name)
    for name in POLYS + ["zeta", "gammainc", "gammaincc", "xlog1py"]:
        got = getattr(fg.special, name)(fg.tensor(0.6, dtype=fg.float64), fg.tensor(3.0, dtype=fg.float64))
        want = getattr(TS, name)(torch.tensor(0.6, dtype=torch.float64), torch.tensor(3.0, dtype=torch.float64))
        _close(got, want, 1e-13, 0, name)
        assert getattr(fg.special, name)(fg.zeros(2, 0), fg.zeros(0)).shape == (2, 0), name


def test_huge_degrees_take_torch_shortcuts():
    # out-of-range degrees are negative for torch's int64 cast (0); the closed forms need no recurrence
    x = np.array([0.5, 1.5, -0.25])
    n = np.array([1e300, 1e300, 1e7])
    for name in POLYS:
        if name.startswith("hermite"):
            continue
        got = getattr(fg.special, name)(fg.tensor(x[:2]), fg.tensor(n[:2]))
        _close(got, getattr(TS, name)(torch.from_numpy(x[:2]), torch.from_numpy(n[:2])), 0, 0, name)
    _close(fg.special.chebyshev_polynomial_t(fg.tensor(x), fg.tensor([3.0, 3.0, 1e7])),
           TS.chebyshev_polynomial_t(torch.from_numpy(x), torch.tensor([3.0, 3.0, 1e7], dtype=torch.float64)), 1e-8, 0,
           "T_1e7")


def test_recurrences_run_natively_with_the_numpy_loop_s_bits(monkeypatch):
    # _C.special_poly runs the same float64 steps as the numpy loop it replaced, in the same order
    from forgegrad.ops import _special_poly as S
    assert S._native() is not None
    x = np.concatenate([RNG.normal(0, 2, 150), RNG.uniform(-1.2, 1.2, 150),
                        [np.inf, -np.inf, np.nan, 0.0, 1.0, -1.0, 0.5, 1e30, -3e19]])
    n = RNG.integers(-3, 60, x.shape).astype(np.float64)
    n[:10], n[10:15] = 600.0, 2000.0
    calls = [lambda a, b, k=k, s=s: S.chebyshev_polynomial(a, b, k, s) for k in "tuvw" for s in (False, True)]
    calls += [S.hermite_polynomial_h, S.hermite_polynomial_he, S.laguerre_polynomial_l, S.legendre_polynomial_p]
    # one degree for all (the C++ runs 8 neighbours side by side: lanes turning NaN, inf, overflowing, stopping
    # early), and a degree per element (mostly one at a time)
    degrees = [n, np.full(x.shape, 37.0), np.full(x.shape, 600.0)]
    native = [f(x, d) for d in degrees for f in calls]
    monkeypatch.setattr(S, "_native", lambda: None)
    for i, (f, got) in enumerate(zip([f for _ in degrees for f in calls], native)):
        want = f(x, degrees[i // len(calls)])
        assert np.array_equal(got.view(np.int64), want.view(np.int64)), i


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_recurrences_give_the_same_bits_at_any_thread_count(threads):
    x = fg.tensor(np.linspace(-0.99, 0.99, 301))
    n = fg.tensor(np.arange(301, dtype=np.float64) * 37.0)
    before = fg.get_num_threads()
    try:
        fg.set_num_threads(1)
        want = [fg.special.legendre_polynomial_p(x, n).numpy(), fg.special.laguerre_polynomial_l(x, n).numpy()]
        fg.set_num_threads(threads)
        got = [fg.special.legendre_polynomial_p(x, n).numpy(), fg.special.laguerre_polynomial_l(x, n).numpy()]
    finally:
        fg.set_num_threads(before)
    for g, w in zip(got, want):
        assert np.array_equal(g.view(np.int64), w.view(np.int64))


def test_degrees_in_the_millions_take_torch_s_time():
    # the seed-909 fuzz run's hermite cases ran the recurrence to degrees past torch's NaN limit (over 60 s); a
    # Legendre polynomial of degree 10^6 on [-1, 1] needs its 10^6 steps (torch: ~0.2 s here): seconds, not minutes
    x = np.linspace(-0.9, 0.9, 16)
    _close(fg.special.hermite_polynomial_h(fg.tensor(x), fg.tensor(1e9)),
           TS.hermite_polynomial_h(torch.from_numpy(x), torch.tensor(1e9, dtype=torch.float64)), 0, 0, "H_1e9")
    _close(fg.special.hermite_polynomial_he(fg.tensor(x), 10**8),
           TS.hermite_polynomial_he(torch.from_numpy(x), 10**8), 0, 0, "He_1e8")
    _close(fg.special.legendre_polynomial_p(fg.tensor(x), 10**6),
           TS.legendre_polynomial_p(torch.from_numpy(x), 10**6), 1e-9, 1e-12, "P_1e6")


def test_onnx_export_of_a_model_using_special_functions_matches_torch(tmp_path):  # 14 of them
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime checks the exported graph")

    class Net(fg.nn.Module):
        def forward(self, x):
            s = fg.special
            pos = x.abs() + 0.01
            return (s.bessel_j0(x) + s.bessel_j1(x) + s.bessel_y0(pos) + s.bessel_y1(pos) + s.modified_bessel_k0(pos)
                    + s.scaled_modified_bessel_k1(pos) + s.i0e(x) + s.i1e(x) + s.ndtr(x) + s.entr(pos)
                    + s.spherical_bessel_j0(x) + s.xlog1py(x, pos) + s.modified_bessel_i1(x / 4) + s.airy_ai(x / 3))

    x = np.concatenate([np.linspace(-30, 30, 995), [0.0, 5.0, -5.0, 8.0, 2.0]]).reshape(10, 100).astype(np.float32)
    path = str(tmp_path / "special.onnx")
    fg.onnx.export(Net(), fg.tensor(x), path)
    sess = ort.InferenceSession(path)
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    xt = torch.from_numpy(x)
    pos = xt.abs() + 0.01
    want = (TS.bessel_j0(xt) + TS.bessel_j1(xt) + TS.bessel_y0(pos) + TS.bessel_y1(pos) + TS.modified_bessel_k0(pos)
            + TS.scaled_modified_bessel_k1(pos) + TS.i0e(xt) + TS.i1e(xt) + TS.ndtr(xt) + TS.entr(pos)
            + TS.spherical_bessel_j0(xt) + TS.xlog1py(xt, pos) + TS.modified_bessel_i1(xt / 4)
            + TS.airy_ai(xt / 3)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [-1, 0, 1, 3, 9, 12, 600])
def test_onnx_export_of_the_polynomials_with_a_python_degree(tmp_path, n):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime checks the exported graph")
    names = [p for p in POLYS if n <= 256 or p.startswith("hermite")]  # higher degrees refuse (below)

    class Net(fg.nn.Module):
        def forward(self, x):
            return fg.stack([getattr(fg.special, p)(x, n) for p in names])

    x = np.concatenate([np.linspace(-1.2, 1.2, 41), [-1.0, 1.0, 0.0, 0.5, 0.25]]).astype(np.float32).reshape(2, 23)
    path = str(tmp_path / "poly.onnx")
    # not verified by the exporter: its random inputs reach |x| ~ 3, where a float32 recurrence (onnxruntime's, as
    # torch's) is off by ~1e-3 relative against forgegrad's float64 one; compared with torch's float32 below instead
    fg.onnx.export(Net(), fg.tensor(x), path, verify=False)
    sess = ort.InferenceSession(path)
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    want = np.stack([getattr(TS, p)(torch.from_numpy(x), n).numpy() for p in names])
    scale = float(np.nanmax(np.abs(want))) if np.isfinite(want).any() else 1.0
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, scale))


def test_onnx_export_of_a_polynomial_refuses_tensor_degrees_and_huge_ones(tmp_path):
    class Net(fg.nn.Module):
        def __init__(self, n):
            super().__init__()
            self.n = n

        def forward(self, x):
            return fg.special.legendre_polynomial_p(x, self.n if not isinstance(self.n, str) else x * 3)

    with pytest.raises(Exception, match="degree n as a Python number"):
        fg.onnx.export(Net("tensor"), fg.tensor(np.full((2, 3), 0.5, np.float32)), str(tmp_path / "a.onnx"))
    with pytest.raises(Exception, match="above 256"):
        fg.onnx.export(Net(1000), fg.tensor(np.full((2, 3), 0.5, np.float32)), str(tmp_path / "b.onnx"))


EDGE_GRADS = {  # torch's gradient and double backward at the edges (0, poles, +-inf, NaN), float64
    "ndtr": lambda s, x: s.ndtr(x), "log_ndtr": lambda s, x: s.log_ndtr(x), "erfcx": lambda s, x: s.erfcx(x),
    "entr": lambda s, x: s.entr(x), "i0": lambda s, x: s.i0(x), "i1": lambda s, x: s.i1(x),
    "i1e": lambda s, x: s.i1e(x), "i0e": lambda s, x: s.i0e(x), "erf": lambda s, x: s.erf(x),
    "log1p": lambda s, x: s.log1p(x), "logit": lambda s, x: s.logit(x), "polygamma1": lambda s, x: s.polygamma(1, x),
    "xlog1py(0|1, y)": lambda s, x: s.xlog1py((x > 0.7).to(x.dtype), x - 1),
    "gammainc(2, x)": lambda s, x: s.gammainc(_full(x, 2.0), x),
    "gammaincc(0.5, x)": lambda s, x: s.gammaincc(_full(x, 0.5), x),
    "zeta(2, q)": lambda s, x: s.zeta(_full(x, 2.0), x),
}


def _full(x, v):
    return (fg if isinstance(x, fg.Tensor) else torch).full(tuple(x.shape), v, dtype=x.dtype)


@pytest.mark.parametrize("name", sorted(EDGE_GRADS))
def test_gradients_at_edge_values_are_torch_s_and_raise_no_numpy_warnings(name):
    # numpy warned (inf * 0, log(0), x / 0 in the gradient formulas, in the create_graph pass and in the backward of
    # that graph); torch is quiet. i1 / i1e at NaN: torch's mask is not |x| > eps, so 1/2 (forgegrad gave NaN)
    import warnings
    vals = np.array([0.0, -0.0, 1e-300, -1.0, 1.0, -1e5, 1e5, 40.0, -40.0, np.inf, -np.inf, np.nan, 0.5, 2.0])
    x, tx = fg.tensor(vals, requires_grad=True), torch.from_numpy(vals).requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = EDGE_GRADS[name](fg.special, x)
        (g,) = autograd.grad(y, x, fg.ones_like(y), create_graph=True)
        (gg,) = autograd.grad(g, x, fg.ones_like(g))
    ty = EDGE_GRADS[name](TS, tx)
    (tg,) = torch.autograd.grad(ty, tx, torch.ones_like(ty), create_graph=True)
    (tgg,) = torch.autograd.grad(tg, tx, torch.ones_like(tg))
    for what, a, b in (("value", y, ty), ("gradient", g, tg), ("double backward", gg, tgg)):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-10, atol=1e-300, equal_nan=True,
                                   err_msg=f"{name} {what}")


def test_sinc_of_float16_computes_in_float32_as_torch():
    # forgegrad multiplied by pi in float16: sinc(1) was 3e-4 (torch: -0, its kernel's opmath is float)
    x = np.array([-1.0, 1.0, 2.0, 0.0, 0.5, -3.0, 7.25, 0.001], np.float16)
    _close(fg.special.sinc(fg.tensor(x, dtype=fg.float16)), TS.sinc(torch.from_numpy(x)), 1e-3, 2e-5, "sinc float16")


@pytest.mark.parametrize("n", [170, 171, 200])
def test_polygamma_of_high_order_overflows_as_torch(n):
    # n! overflows from n = 171: forgegrad raised OverflowError (math.exp), torch gives +-inf (NaN where zeta is 0)
    x = np.array([0.5, 1.0, 3.0, 100.0, -0.5, -2.5, 1e-3, 0.0, -1.0, np.inf, np.nan, 20.0, 1e5])
    _close(fg.polygamma(n, fg.tensor(x)), torch.polygamma(n, torch.from_numpy(x)), 1e-12, 0, f"polygamma({n})")
