"""Edge cases of forgegrad.linalg's LU family and torch's legacy linalg names against torch 2.13: empty and 0 x 0
matrices, pivots on exact ties, torch.lu's (non-)raising and result type, triangular_solve's broadcast coefficient,
inv_ex / solve_ex on numerically singular matrices, and clear errors for malformed arguments."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad import linalg as LA

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings(r"ignore:torch\.\w+ is deprecated")  # the legacy names, on purpose


def rect(*shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, size=shape)


def _close(ours, want, tol=1e-10):
    assert ours.shape == tuple(want.shape), (ours.shape, tuple(want.shape))
    assert ours.numpy().dtype == want.detach().numpy().dtype
    np.testing.assert_allclose(ours.numpy(), want.detach().numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("shape", [(0, 0), (2, 0, 0), (3, 0), (0, 3), (2, 3, 0), (2, 0, 3)])
def test_lu_of_empty_matrices_equals_torchs(shape):
    # (a 0-length diagonal used to crash the info computation, and a 0 x 0 one the permutation)
    a = rect(*shape)
    for ours, want in ((LA.lu_factor_ex(fg.tensor(a)), torch.linalg.lu_factor_ex(torch.from_numpy(a))),
                       (LA.lu(fg.tensor(a)), torch.linalg.lu(torch.from_numpy(a))),
                       (fg.lu_unpack(*LA.lu_factor(fg.tensor(a))), torch.lu_unpack(*torch.linalg.lu_factor(
                           torch.from_numpy(a))))):
        for o, w in zip(ours, want):
            _close(o, w)
    x = fg.tensor(a, requires_grad=True)
    P, L, U = LA.lu(x)
    (L.sum() + U.sum()).backward()
    assert x.grad.shape == shape


@pytest.mark.parametrize("seed,shape,dtype", [(6, (12, 12), np.float32), (9, (5, 6, 6), np.float64),
                                              (35, (12, 12), np.float64), (51, (33, 50), np.float32),
                                              (27, (3, 20, 20), np.float32)])
def test_lu_pivots_on_exact_ties_equal_torchs(seed, shape, dtype):
    # integer-valued matrices: later pivots are decided by rounding, so the scaling must be getf2's (times the
    # reciprocal of the pivot, not a division) for the same choices as LAPACK's
    a = np.random.default_rng(seed).integers(-2, 3, shape).astype(dtype)
    ours, want = LA.lu_factor_ex(fg.tensor(a)), torch.linalg.lu_factor_ex(torch.from_numpy(a))
    np.testing.assert_array_equal(ours.pivots.numpy(), want.pivots.numpy())
    np.testing.assert_array_equal(ours.info.numpy(), want.info.numpy())


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("pos", [(3, 0), (4, 0), (3, 1), (0, 0), (2, 2)])
def test_lu_pivots_with_a_nan_equal_torchs(seed, pos):
    # LAPACK's idamax: a NaN is never the pivot over a number (|x| > max is false), unless it comes first; numpy's
    # argmax picked the first NaN. (Where NaNs spread through the factorization MKL's vectorised search can still
    # choose differently.)
    a = rect(5, 5, seed=seed)
    a[pos] = np.nan
    ours, want = LA.lu_factor_ex(fg.tensor(a)), torch.linalg.lu_factor_ex(torch.from_numpy(a))
    np.testing.assert_array_equal(ours.pivots.numpy(), want.pivots.numpy())
    np.testing.assert_allclose(ours.LU.numpy(), want.LU.numpy(), rtol=1e-12, atol=1e-12)  # NaNs where torch's


def test_legacy_lu_does_not_raise_on_singular_and_names_its_info():
    a = np.array([[1., 2], [2, 4]])
    for args in ((), (True,), (True, False)):
        r = fg.lu(fg.tensor(a), *args)  # torch.lu returns the factorization of a singular matrix
        want = torch.lu(torch.from_numpy(a), *args)
        assert type(r) is tuple and len(r) == 2
        for o, w in zip(r, want):
            np.testing.assert_allclose(o.numpy(), w.numpy())
    r = fg.lu(fg.tensor(a), True, True)
    want = torch.lu(torch.from_numpy(a), True, True)
    assert type(r).__name__ == type(want).__name__ == "_lu_with_info"
    assert (r.LU.shape, r.pivots.numpy().tolist(), int(r.info.numpy())) == (
        tuple(want.LU.shape), want.pivots.tolist(), int(want.info))


@pytest.mark.parametrize("transpose", [False, True])
def test_triangular_solve_cloned_coefficient_broadcasts_as_torchs(transpose):
    b, A = rect(2, 3, 4, 2, seed=1), rect(3, 4, 4, seed=2) + 3 * np.eye(4)
    xb, xa = fg.tensor(b, requires_grad=True), fg.tensor(A, requires_grad=True)
    tb, ta = torch.from_numpy(b).requires_grad_(), torch.from_numpy(A).requires_grad_()
    ours = fg.triangular_solve(xb, xa, False, transpose)
    want = torch.triangular_solve(tb, ta, False, transpose)
    _close(ours.solution, want.solution)
    _close(ours.cloned_coefficient, want.cloned_coefficient)  # (2, 3, 4, 4), not A's (3, 4, 4)
    c = rect(2, 3, 4, 4, seed=3)
    (ours.solution.sum() + (ours.cloned_coefficient * fg.tensor(c)).sum()).backward()
    (want.solution.sum() + (want.cloned_coefficient * torch.from_numpy(c)).sum()).backward()
    np.testing.assert_allclose(xa.grad.numpy(), ta.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(xb.grad.numpy(), tb.grad.numpy(), rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="triangular_solve: argument 'input'"):
        fg.triangular_solve(fg.tensor(rect(4)), xa)


# a rank-4 5 x 5 matrix on which numpy's LAPACK meets an exact zero pivot and torch's (and forgegrad's) LU does not
NEAR_SINGULAR = np.array([[3.6, 1.2, -0.6, 1.8, 1.8], [0., -0.4, 0.4, -0.8, 0.6], [-0.6, -2., 0., -2., 0.],
                          [0.6, -0.8, -0.2, -0.6, -3.], [-3., 0.8, 0.2, 0.6, 0.6]])


def test_inv_ex_and_solve_ex_never_raise_on_a_numerically_singular_matrix():
    a = np.stack([NEAR_SINGULAR, np.zeros((5, 5)), rect(5, 5, seed=4) + 3 * np.eye(5)])
    ta = torch.from_numpy(a)
    b = rect(3, 5, 2, seed=5)
    inv = LA.inv_ex(fg.tensor(a))  # (used to raise linalg.inv's LinAlgError)
    sol = LA.solve_ex(fg.tensor(a), fg.tensor(b))
    vec = LA.solve_ex(fg.tensor(a), fg.tensor(b[..., 0]))
    want_info = torch.linalg.inv_ex(ta).info.numpy()
    for r in (inv, sol, vec):
        np.testing.assert_array_equal(r.info.numpy(), want_info)
        np.testing.assert_array_equal(r.info.numpy(), torch.linalg.solve_ex(ta, torch.from_numpy(b)).info.numpy())
    assert np.isnan(inv.inverse.numpy()[1]).all() and np.isfinite(inv.inverse.numpy()[[0, 2]]).all()
    np.testing.assert_allclose(inv.inverse.numpy()[2], np.linalg.inv(a[2]), rtol=1e-10)
    np.testing.assert_allclose(sol.result.numpy()[2], np.linalg.solve(a[2], b[2]), rtol=1e-10)
    np.testing.assert_allclose(vec.result.numpy()[2], np.linalg.solve(a[2], b[2, :, 0]), rtol=1e-10)
    # the regular matrices' gradients are solve's / inv's (as torch's)
    x = fg.tensor(a, requires_grad=True)
    LA.inv_ex(x).inverse[2].sum().backward()
    t = ta.clone().requires_grad_()
    torch.linalg.inv(t[2]).sum().backward()
    np.testing.assert_allclose(x.grad.numpy()[2], t.grad.numpy()[2], rtol=1e-9)
    assert not x.grad.numpy()[1].any()


def test_lu_solve_unbroadcastable_batches_raise_clearly():
    LU, piv = LA.lu_factor(fg.tensor(rect(2, 4, 4) + 3 * np.eye(4)))
    with pytest.raises(ValueError, match=r"linalg.lu_solve: the batch dims of LU \(2,\) and B \(3,\)"):
        LA.lu_solve(LU, piv, fg.tensor(rect(3, 4, 2)))


def test_ldl_solve_malformed_pivots_and_meta():
    LD = fg.tensor(np.eye(3))
    b = fg.tensor(rect(3, 1))
    for bad in ([1, 2, -3], [-2, 2, 3], [-2, -3, 3]):  # a 2x2 block's pivot must come twice
        with pytest.raises(ValueError, match="'pivots'.*2x2"):
            LA.ldl_solve(LD, fg.from_numpy(np.array(bad, np.int32)), b)
    LD2, piv2 = LA.ldl_factor(fg.tensor(np.array([[0., 1, 0], [1, 0, 0], [0, 0, 2]])))
    assert (piv2.numpy() < 0).any()  # a real 2x2 block passes
    np.testing.assert_allclose(LA.ldl_solve(LD2, piv2, fg.tensor(np.ones((3, 1)))).numpy().ravel(), [1, 1, 0.5])
    out = LA.ldl_solve(LD.to("meta"), fg.from_numpy(np.arange(1, 4, dtype=np.int32)).to("meta"),
                       fg.tensor(rect(2, 3, 4)).to("meta"))
    assert out.is_meta and out.shape == (2, 3, 4)


def test_vander_refuses_bool_and_householder_product_without_reflectors_keeps_the_graph():
    with pytest.raises(TypeError, match="vander: argument 'x'"):
        LA.vander(fg.tensor(np.array([True, False])))
    h = fg.tensor(rect(5, 3), requires_grad=True)
    Q = LA.householder_product(h, fg.tensor(np.zeros(0)))
    want = torch.linalg.householder_product(torch.from_numpy(rect(5, 3)), torch.zeros(0, dtype=torch.float64))
    _close(Q, want)
    assert Q.requires_grad  # as torch's: backward runs (a zero gradient)
    Q.sum().backward()
    assert not h.grad.numpy().any()


def test_legacy_lu_solve_and_cholesky_inverse_errors_name_their_own_arguments():
    b, LU = fg.tensor(np.ones((3, 1))), fg.tensor(np.eye(3))
    piv = fg.from_numpy(np.array([1, 2, 3], np.int32))
    cases = [(lambda: fg.lu_solve(b, LU, fg.tensor(np.array([1., 2, 3]))), TypeError, "lu_solve: argument 'LU_pivots'"),
             (lambda: fg.lu_solve(fg.tensor(np.ones((4, 1))), LU, piv), ValueError, "argument 'b' .* LU_data"),
             (lambda: fg.lu_solve(b, fg.tensor(np.zeros((3, 3))), piv), LA.LinAlgError, "'LU_data'.*singular"),
             # torch: "cholesky_inverse: (Batch element 1): The diagonal element 2 is zero"
             (lambda: fg.cholesky_inverse(fg.tensor(np.stack([np.eye(3), np.diag([1., 0, 2])]))), LA.LinAlgError,
              r"cholesky_inverse: \(batch element 1\) the diagonal element 2 of argument 'input'"),
             (lambda: fg.cholesky_inverse(fg.tensor(np.diag([1., 0, 2])), True), LA.LinAlgError,
              "cholesky_inverse: the diagonal element 2")]
    for fn, err, match in cases:
        with pytest.raises(err, match=match):
            fn()
    with pytest.raises(RuntimeError, match="diagonal element 2 is zero"):
        torch.cholesky_inverse(torch.diag(torch.tensor([1., 0, 2])), True)


def test_householder_geqrf_ormqr_vander_infer_shapes_on_meta():
    def meta(*shape):
        return fg.tensor(rect(*shape)).to("meta")
    cases = [(LA.householder_product(meta(2, 5, 3), meta(2, 2)), torch.linalg.householder_product(
                 torch.empty(2, 5, 3, device="meta"), torch.empty(2, 2, device="meta"))),
             (fg.ormqr(meta(5, 3), meta(3), meta(3, 5), False, True), torch.ormqr(
                 torch.empty(5, 3, device="meta"), torch.empty(3, device="meta"), torch.empty(3, 5, device="meta"),
                 False, True)),
             (LA.vander(meta(2, 3), N=4), torch.linalg.vander(torch.empty(2, 3, device="meta"), N=4))]
    # (torch has no meta kernel for geqrf: its CPU result's shapes)
    cases += list(zip(fg.geqrf(meta(2, 3, 5)), torch.geqrf(torch.zeros(2, 3, 5))))
    for ours, want in cases:
        assert ours.is_meta and ours.shape == tuple(want.shape)
