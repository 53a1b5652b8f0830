"""forgegrad.linalg's LU family, Cholesky solves, Householder functions, tensor solves and torch's legacy linalg
names against torch: values (pivots exactly), gradients and second derivatives in float32 / float64 on odd batch
shapes (tall / wide for LU), singular matrices' info, and the errors for bad input. The registered ops'
generated checks (linalg_lu_factor, cholesky_solve) are in tests/test_op_registry.py."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad import linalg as LA

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings(r"ignore:torch\.\w+ is deprecated")  # the legacy names, on purpose

TOL = {np.float32: dict(rtol=2e-4, atol=2e-4), np.float64: dict(rtol=1e-9, atol=1e-10)}
DTYPES = [np.float32, np.float64]


def rect(*shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, size=shape)


def wellcond(*shape, seed=0):
    return rect(*shape, seed=seed) + 2.5 * np.eye(shape[-1])


def spd(*shape, seed=0):
    a = rect(*shape, seed=seed)
    return a @ np.swapaxes(a, -1, -2) / shape[-1] + np.eye(shape[-1])


def _outs(o):
    return list(o) if isinstance(o, (tuple, list)) else [o]


def compare(fg_fn, torch_fn, arrays, dtype, grad=True, second=False, seed=3):
    """Every output of fg_fn(*tensors) vs torch_fn(*tensors) (integer ones exactly), the gradient of sum(out * c)
    for each float input, and (``second``) the gradient of sum(grad * d) taken through create_graph."""
    arrays = [a if a.dtype.kind != "f" else a.astype(dtype) for a in arrays]
    isf = [a.dtype.kind == "f" for a in arrays]
    xs = [fg.tensor(a.copy(), requires_grad=grad and f) for a, f in zip(arrays, isf)]
    ts = [torch.from_numpy(a.copy()).requires_grad_(grad and f) for a, f in zip(arrays, isf)]
    fo, to = _outs(fg_fn(*xs)), _outs(torch_fn(*ts))
    assert len(fo) == len(to)
    rng = np.random.default_rng(seed)
    floss, tloss = 0, 0
    for f, t in zip(fo, to):
        want = t.detach().numpy()
        assert f.shape == tuple(want.shape), (f.shape, want.shape)
        assert f.numpy().dtype == want.dtype, (f.numpy().dtype, want.dtype)
        if want.dtype.kind == "f":
            np.testing.assert_allclose(f.numpy(), want, **TOL[dtype])
        else:
            np.testing.assert_array_equal(f.numpy(), want)
        if grad and want.dtype.kind == "f" and t.requires_grad:
            c = rng.uniform(-1, 1, size=want.shape).astype(dtype)
            floss = floss + (f * fg.tensor(c)).sum()
            tloss = tloss + (t * torch.from_numpy(c)).sum()
    if not grad:
        return
    fx = [x for x, f in zip(xs, isf) if f]
    tx = [t for t, f in zip(ts, isf) if f]
    fg_g = fg.autograd.grad(floss, fx, create_graph=second, allow_unused=True)
    t_g = torch.autograd.grad(tloss, tx, create_graph=second, allow_unused=True)
    for a, b in zip(fg_g, t_g):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(a.numpy(), b.detach().numpy(), **TOL[dtype])
    if second:
        fl2, tl2 = 0, 0
        for a, b in zip(fg_g, t_g):
            if a is not None:
                d = rng.uniform(-1, 1, size=tuple(b.shape)).astype(dtype)
                fl2, tl2 = fl2 + (a * fg.tensor(d)).sum(), tl2 + (b * torch.from_numpy(d)).sum()
        f2 = fg.autograd.grad(fl2, fx, allow_unused=True)
        t2 = torch.autograd.grad(tl2, tx, allow_unused=True)
        for a, b in zip(f2, t2):
            if b is None:
                assert a is None or not np.any(a.numpy())
            else:
                np.testing.assert_allclose(a.numpy(), b.numpy(), **TOL[dtype])


LU_SHAPES = [(4, 4), (6, 4), (3, 5), (2, 3, 5, 5), (2, 1, 7, 3), (3, 2, 6), (1, 1), (0, 3, 3)]


# ---- LU ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", LU_SHAPES)
def test_lu_factor_pivots_and_factors_equal_torchs(shape, dtype):
    a = rect(*shape, seed=len(shape))
    compare(lambda A: LA.lu_factor(A), lambda A: torch.linalg.lu_factor(A), [a], dtype)
    compare(lambda A: LA.lu_factor_ex(A), lambda A: torch.linalg.lu_factor_ex(A), [a], dtype, grad=False)
    compare(lambda A: LA.lu(A), lambda A: torch.linalg.lu(A), [a], dtype)


@pytest.mark.parametrize("shape", [(4, 4), (5, 3), (3, 5), (2, 4, 4)])
def test_lu_second_derivatives_equal_torchs(shape):
    compare(lambda A: LA.lu(A)[1:], lambda A: torch.linalg.lu(A)[1:], [rect(*shape, seed=5)], np.float64,
            second=True)
    compare(lambda A: LA.lu_factor(A)[0], lambda A: torch.linalg.lu_factor(A)[0], [rect(*shape, seed=6)],
            np.float64, second=True)


def test_lu_result_types_and_legacy_names():
    a = rect(2, 4, 4)
    assert type(LA.lu_factor(fg.tensor(a))).__name__ == "linalg_lu_factor"
    assert LA.lu_factor_ex(fg.tensor(a))._fields == ("LU", "pivots", "info")
    assert LA.lu(fg.tensor(a))._fields == ("P", "L", "U")
    assert fg.lu_unpack(*LA.lu_factor(fg.tensor(a)))._fields == ("P", "L", "U")
    LU, piv = fg.lu(fg.tensor(a))
    LU3 = fg.tensor(a).lu(get_infos=True)  # torch.return_types._lu_with_info; without get_infos a plain tuple
    assert type(LU3).__name__ == "_lu_with_info" and LU3._fields == ("LU", "pivots", "info")
    assert type(fg.lu(fg.tensor(a))) is tuple
    np.testing.assert_array_equal(piv.numpy(), torch.linalg.lu_factor(torch.from_numpy(a)).pivots.numpy())
    b = rect(2, 4, 3, seed=1)
    np.testing.assert_allclose(fg.lu_solve(fg.tensor(b), LU, piv).numpy(), np.linalg.solve(a, b), rtol=1e-9)
    np.testing.assert_allclose(fg.tensor(b).lu_solve(LU, piv).numpy(), np.linalg.solve(a, b), rtol=1e-9)


def test_singular_matrices_report_info_as_torch():
    a = np.stack([np.zeros((3, 3)), np.array([[1., 2, 3], [2, 4, 6], [1, 0, 1]]), np.eye(3),
                  np.array([[0., 1, 2], [0, 3, 4], [0, 5, 6]])])
    for dtype in DTYPES:
        ours = LA.lu_factor_ex(fg.tensor(a.astype(dtype)))
        want = torch.linalg.lu_factor_ex(torch.from_numpy(a.astype(dtype)))
        np.testing.assert_array_equal(ours.info.numpy(), want.info.numpy())
        np.testing.assert_array_equal(ours.pivots.numpy(), want.pivots.numpy())
        np.testing.assert_allclose(ours.LU.numpy(), want.LU.numpy(), **TOL[dtype])
        P, L, U = LA.lu(fg.tensor(a.astype(dtype)))
        np.testing.assert_allclose((P @ L @ U).numpy(), a, atol=1e-6)
    with pytest.raises(LA.LinAlgError, match="batch element 0.*singular"):
        LA.lu_factor(fg.tensor(a))
    with pytest.raises(LA.LinAlgError, match="singular"):
        LA.lu_factor_ex(fg.tensor(a), check_errors=True)
    # torch.lu never raises on a singular matrix (its check_errors is not acted on), with or without get_infos
    for get_infos in (False, True):
        ours, want = fg.lu(fg.tensor(a), get_infos=get_infos), torch.lu(torch.from_numpy(a), get_infos=get_infos)
        assert len(ours) == len(want)
        for o, w in zip(ours, want):
            np.testing.assert_allclose(o.numpy(), w.numpy(), **TOL[np.float64])


# ---- lu_solve, solve_ex --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("left", [True, False])
@pytest.mark.parametrize("adjoint", [False, True])
def test_lu_solve_equals_torchs(left, adjoint, dtype):
    a, b = wellcond(2, 1, 4, 4, seed=1), rect(3, 4, 2, seed=2) if left else rect(3, 2, 4, seed=2)

    def ours(A, B):
        LU, piv = LA.lu_factor(A)
        return LA.lu_solve(LU, piv, B, left=left, adjoint=adjoint)

    def theirs(A, B):
        LU, piv = torch.linalg.lu_factor(A)
        return torch.linalg.lu_solve(LU, piv, B, left=left, adjoint=adjoint)
    compare(ours, theirs, [a, b], dtype, second=dtype == np.float64)


def test_lu_solve_gradient_of_lu_itself_equals_torchs():
    a, b = wellcond(4, 4, seed=3), rect(4, 3, seed=4)
    LUp, piv = torch.linalg.lu_factor(torch.from_numpy(a))
    compare(lambda LU, B: LA.lu_solve(LU, fg.from_numpy(piv.numpy()), B),
            lambda LU, B: torch.linalg.lu_solve(LU, piv, B), [LUp.numpy(), b], np.float64, second=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_solve_ex_and_singular_info(dtype):
    a, b = wellcond(2, 3, 3, seed=5), rect(2, 3, seed=6)
    compare(lambda A, B: LA.solve_ex(A, B), lambda A, B: torch.linalg.solve_ex(A, B), [a, b], dtype)
    compare(lambda A, B: LA.solve_ex(A, B, left=False), lambda A, B: torch.linalg.solve_ex(A, B, left=False),
            [a, rect(2, 4, 3, seed=7)], dtype)
    a[1] = 0.0
    r = LA.solve_ex(fg.tensor(a.astype(dtype)), fg.tensor(b.astype(dtype)))
    np.testing.assert_array_equal(r.info.numpy(), torch.linalg.solve_ex(torch.from_numpy(a), torch.from_numpy(b)).info)
    assert np.isnan(r.result.numpy()[1]).all() and np.isfinite(r.result.numpy()[0]).all()
    with pytest.raises(LA.LinAlgError, match="singular"):
        LA.solve_ex(fg.tensor(a), fg.tensor(b), check_errors=True)


# ---- Cholesky solves -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("upper", [False, True])
def test_cholesky_solve_and_inverse_equal_torchs(upper, dtype):
    L = np.linalg.cholesky(spd(3, 1, 4, 4, seed=8))
    L = np.swapaxes(L, -1, -2) if upper else L
    b = rect(2, 4, 3, seed=9)
    compare(lambda B, F: fg.cholesky_solve(B, F, upper), lambda B, F: torch.cholesky_solve(B, F, upper), [b, L],
            dtype, second=dtype == np.float64)
    compare(lambda F: fg.cholesky_inverse(F, upper), lambda F: torch.cholesky_inverse(F, upper), [L[:, 0]], dtype,
            second=dtype == np.float64)
    compare(lambda F: F.cholesky_inverse(upper), lambda F: F.cholesky_inverse(upper), [L[0, 0]], dtype)


# ---- Householder ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5, 3), (4, 4), (2, 3, 6, 2)])
def test_geqrf_householder_product_ormqr_equal_torchs(shape, dtype):
    a = rect(*shape, seed=10)
    compare(lambda A: fg.geqrf(A), lambda A: torch.geqrf(A), [a], dtype, grad=False)
    h, tau = (t.numpy() for t in torch.geqrf(torch.from_numpy(a)))
    compare(LA.householder_product, torch.linalg.householder_product, [h, tau], dtype, second=dtype == np.float64)
    compare(lambda H, T: fg.orgqr(H, T.narrow(-1, 0, 1)), lambda H, T: torch.orgqr(H, T[..., :1]), [h, tau], dtype)
    m = shape[-2]
    batch = shape[:-2]
    for left, tr in ((True, False), (True, True), (False, False), (False, True)):
        c = rect(*batch, m, 2, seed=11) if left else rect(*batch, 3, m, seed=11)
        compare(lambda H, T, C: fg.ormqr(H, T, C, left, tr), lambda H, T, C: torch.ormqr(H, T, C, left, tr),
                [h, tau, c], dtype, second=dtype == np.float64 and left)


# ---- tensor solves, vander, legacy names ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_tensorinv_tensorsolve_vander_equal_torchs(dtype):
    a = wellcond(6, 6, seed=12).reshape(6, 2, 3)
    compare(lambda A: LA.tensorinv(A, ind=1), lambda A: torch.linalg.tensorinv(A, ind=1), [a], dtype)
    a4 = wellcond(6, 6, seed=13).reshape(2, 3, 3, 2)
    compare(lambda A: LA.tensorinv(A), lambda A: torch.linalg.tensorinv(A), [a4], dtype)
    compare(LA.tensorsolve, torch.linalg.tensorsolve, [a4, rect(2, 3, seed=14)], dtype)
    # torch's docs' case: A (6, 4, 4, 3, 2), dims (0, 2) moved to the end give (4, 3, 2, 6, 4)
    a6 = np.ascontiguousarray(wellcond(24, 24, seed=15).reshape(4, 3, 2, 6, 4).transpose(3, 0, 4, 1, 2))
    compare(lambda A, B: LA.tensorsolve(A, B, dims=(0, 2)), lambda A, B: torch.linalg.tensorsolve(A, B, dims=(0, 2)),
            [a6, rect(4, 3, 2, seed=16)], dtype)
    compare(LA.vander, torch.linalg.vander, [rect(2, 3, seed=17)], dtype, second=True)
    compare(lambda x: LA.vander(x, N=5), lambda x: torch.linalg.vander(x, N=5), [np.array([0.0, 1.5, -2.0])], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_legacy_top_level_names_equal_torchs(dtype):
    a, sq = rect(2, 5, 3, seed=18), wellcond(2, 3, 3, seed=19)
    b = rect(2, 3, 2, seed=20)
    for up, tr, unit in ((True, False, False), (False, True, False), (True, True, True)):
        compare(lambda B, A: fg.triangular_solve(B, A, up, tr, unit), lambda B, A: torch.triangular_solve(
            B, A, up, tr, unit), [b, sq], dtype)
    S = fg.svd(fg.tensor(a.astype(dtype)))
    U, s, V = torch.svd(torch.from_numpy(a.astype(dtype)))
    assert S._fields == ("U", "S", "V") and S.V.shape == tuple(V.shape) and S.U.shape == tuple(U.shape)
    np.testing.assert_allclose((S.U * S.S.unsqueeze(-2) @ S.V.transpose(-2, -1)).numpy(), a, **TOL[dtype])
    Sf = fg.svd(fg.tensor(a), some=False, compute_uv=False)
    assert Sf.U.shape == (2, 5, 5) and Sf.V.shape == (2, 3, 3) and not Sf.U.numpy().any()
    Q, R = fg.qr(fg.tensor(a.astype(dtype)), some=False)
    assert Q.shape == (2, 5, 5) and R.shape == (2, 5, 3)
    compare(lambda A: fg.cholesky(A, upper=True), lambda A: torch.cholesky(A, upper=True), [spd(2, 3, 3)], dtype)
    compare(lambda A: fg.pinverse(A), lambda A: torch.pinverse(A), [a], dtype)
    compare(lambda A: A.pinverse(), lambda A: A.pinverse(), [a], dtype)


def test_eig_eigvals_give_complex_results():  # (tests/test_complex_autograd.py checks them against torch)
    w, v = LA.eig(fg.tensor(np.array([[0.0, -1.0], [1.0, 0.0]])))
    assert w.dtype == fg.complex128 and v.dtype == fg.complex128
    np.testing.assert_allclose(np.sort_complex(LA.eigvals(fg.tensor(np.array([[0.0, -1.0], [1.0, 0.0]]))).numpy()),
                               [-1j, 1j], atol=1e-12)


# ---- bad input -----------------------------------------------------------------------------------------------------
def test_bad_input_raises_clear_errors():
    A = fg.tensor(wellcond(3, 3))
    LU, piv = LA.lu_factor(A)
    cases = [
        (lambda: LA.lu_factor(fg.tensor(np.ones(3))), ValueError, "'A'"),
        (lambda: LA.lu_factor(A, pivot=False), RuntimeError, "pivot"),
        (lambda: LA.lu_solve(LU, piv.to(fg.int64), fg.tensor(np.ones((3, 1)))), TypeError, "'pivots'.*int32"),
        (lambda: LA.lu_solve(LU, piv[:2], fg.tensor(np.ones((3, 1)))), ValueError, "'pivots'.*shape"),
        (lambda: LA.lu_solve(LU, fg.from_numpy(np.array([0, 1, 2], np.int32)), fg.tensor(np.ones((3, 1)))), ValueError,
         "'pivots'.*1..3"),
        (lambda: LA.lu_solve(LU, piv, fg.tensor(np.ones((4, 1)))), ValueError, "'B'.*rows"),
        (lambda: LA.lu_solve(LU, piv, fg.tensor(np.ones(3))), ValueError, "'B'"),
        (lambda: LA.lu_solve(fg.tensor(np.ones((3, 4))), piv, fg.tensor(np.ones((3, 1)))), ValueError,
         "'LU'.*square"),
        (lambda: LA.lu_solve(LU, piv, fg.tensor(np.ones((2, 3, 1), np.float32))), RuntimeError, "dtype"),
        (lambda: fg.lu_unpack(LU, piv.to(fg.int64)), TypeError, "'LU_pivots'"),
        (lambda: LA.lu_solve(fg.tensor(np.zeros((3, 3))), piv, fg.tensor(np.ones((3, 1)))), LA.LinAlgError,
         "'LU'.*singular"),
        (lambda: LA.lu_solve(fg.tensor(np.stack([LU.numpy()] * 2)), piv, fg.tensor(np.ones((3, 1)))), ValueError,
         "'pivots'.*shape"),
        (lambda: fg.cholesky_solve(fg.tensor(np.ones((2, 3, 1))), fg.tensor(np.stack([np.eye(3)] * 4))),
         ValueError, "batch dims"),
        (lambda: fg.cholesky_solve(fg.tensor(np.ones(3)), fg.tensor(np.eye(3))), ValueError, "'input'"),
        (lambda: fg.cholesky_inverse(fg.tensor(np.ones((3, 2)))), ValueError, "'input'.*square"),
        (lambda: LA.householder_product(fg.tensor(np.ones((2, 3))), fg.tensor(np.ones(2))), ValueError, "m >= n"),
        (lambda: LA.householder_product(fg.tensor(np.ones((3, 2))), fg.tensor(np.ones(3))), ValueError, "'tau'"),
        (lambda: LA.householder_product(fg.tensor(np.ones((2, 3, 2))), fg.tensor(np.ones((3, 2)))), ValueError,
         "'tau'.*batch"),
        (lambda: fg.ormqr(fg.tensor(np.ones((3, 2))), fg.tensor(np.ones(2)), fg.tensor(np.ones((4, 2)))),
         ValueError, "'other'"),
        (lambda: LA.tensorinv(fg.tensor(np.ones((2, 3, 6))), ind=0), ValueError, "'ind'"),
        (lambda: LA.tensorinv(fg.tensor(np.ones((2, 3, 5)))), ValueError, "not square"),
        (lambda: LA.tensorsolve(fg.tensor(np.ones((2, 3, 5))), fg.tensor(np.ones((2, 3)))), ValueError, "square"),
        (lambda: LA.vander(fg.tensor(np.ones(3)), N=1), ValueError, "'N'"),
        (lambda: LA.vander(fg.tensor(np.float64(2.0))), ValueError, "'x'"),
    ]
    for fn, err, match in cases:
        with pytest.raises(err, match=match):
            fn()


def test_meta_shapes():
    A = fg.tensor(rect(2, 5, 3)).to("meta")
    LU, piv, info = LA.lu_factor_ex(A)
    assert LU.shape == (2, 5, 3) and piv.shape == (2, 3) and info.shape == (2,) and str(piv.dtype).endswith("int32")


# ---- LDL -----------------------------------------------------------------------------------------------------------
def _sym(*shape, seed=0, diag=1.0):
    a = rect(*shape, seed=seed)
    a = a + np.swapaxes(a, -1, -2)
    n = shape[-1]
    a[..., np.arange(n), np.arange(n)] *= diag  # a small diagonal makes sytrf take 2x2 pivots
    return a


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,diag", [((5, 5), 1.0), ((3, 6, 6), 0.01), ((2, 1, 4, 4), 0.1), ((1, 1), 1.0),
                                        ((70, 70), 0.05)])
def test_ldl_factor_and_solve_equal_torchs(shape, diag, dtype):
    a = _sym(*shape, seed=shape[-1], diag=diag)
    if len(shape) == 2:  # an asymmetric input: only the lower triangle is read, as torch's
        a = a + np.triu(np.ones(shape), 1)
    compare(lambda A: LA.ldl_factor_ex(A), lambda A: torch.linalg.ldl_factor_ex(A), [a], dtype, grad=False)
    compare(lambda A: LA.ldl_factor(A, hermitian=True), lambda A: torch.linalg.ldl_factor(A, hermitian=True), [a],
            dtype, grad=False)
    LD, piv = torch.linalg.ldl_factor(torch.from_numpy(a.astype(dtype)))
    b = rect(*shape[:-1], 3, seed=1).astype(dtype)
    got = LA.ldl_solve(fg.tensor(LD.numpy()), fg.from_numpy(piv.numpy()), fg.tensor(b)).numpy()
    want = torch.linalg.ldl_solve(LD, piv, torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-3 if dtype == np.float32 else 1e-8, atol=1e-4 if dtype ==
                               np.float32 else 1e-10)


def test_ldl_singular_info_broadcast_and_errors():
    a = np.stack([np.zeros((3, 3)), _sym(3, 3)])
    r = LA.ldl_factor_ex(fg.tensor(a))
    np.testing.assert_array_equal(r.info.numpy(), torch.linalg.ldl_factor_ex(torch.from_numpy(a)).info.numpy())
    with pytest.raises(LA.LinAlgError, match="batch element 0.*singular"):
        LA.ldl_factor(fg.tensor(a))
    LD, piv = LA.ldl_factor(fg.tensor(_sym(2, 4, 4, seed=3, diag=0.01)))
    b = rect(3, 1, 4, 2, seed=4)
    x = LA.ldl_solve(LD, piv, fg.tensor(b)).numpy()  # torch 2.13's CPU kernel crashes on this broadcast
    np.testing.assert_allclose(_sym(2, 4, 4, seed=3, diag=0.01) @ x, np.broadcast_to(b, (3, 2, 4, 2)), atol=1e-9)
    cases = [(lambda: LA.ldl_factor(fg.tensor(np.ones((2, 3)))), ValueError, "'A'.*square"),
             (lambda: LA.ldl_solve(LD, piv.to(fg.int64), fg.tensor(np.ones((4, 1)))), TypeError, "'pivots'.*int32"),
             (lambda: LA.ldl_solve(LD, piv, fg.tensor(np.ones(4))), ValueError, "'B'"),
             (lambda: LA.ldl_solve(LD, piv, fg.tensor(np.ones((5, 1)))), ValueError, "'B'.*rows"),
             (lambda: LA.ldl_solve(LD, piv[:1], fg.tensor(np.ones((4, 1)))), ValueError, "'pivots'.*shape"),
             (lambda: LA.ldl_factor(fg.tensor(np.eye(2)), hermitian="yes"), TypeError, "hermitian")]
    for fn, err, match in cases:
        with pytest.raises(err, match=match):
            fn()


def test_new_names_are_exported():
    import torch as T
    missing = [n for n in dir(T.linalg) if not n.startswith("_") and n != "common_notes" and not hasattr(LA, n)]
    assert missing == []
    for n in ("lu", "lu_solve", "lu_unpack", "cholesky", "cholesky_solve", "cholesky_inverse", "orgqr", "geqrf",
              "ormqr", "svd", "qr", "triangular_solve", "pinverse"):
        assert n in fg.__all__ and n not in fg._TORCH_NAMES and hasattr(fg, n), n
    for n in ("lu", "lu_solve", "cholesky_solve", "cholesky_inverse", "orgqr", "geqrf", "ormqr", "svd", "qr",
              "triangular_solve"):
        assert hasattr(fg.Tensor, n), n
