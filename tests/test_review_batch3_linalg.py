"""Review of forgegrad.linalg against torch.linalg (batch 3): mixed dtypes as torch (solve, lstsq, vecdot, cross,
multi_dot refuse; solve_triangular computes in A's dtype), cond of singular and empty matrices, matrix_power(A, 0)
of a non-finite A, 0-d ``info`` / logdet of a single matrix, non-finite inputs to the LAPACK factorizations raising
forgegrad's LinAlgError naming the argument (numpy's own error, a ValueError, before), cholesky of a NaN."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad import linalg as LA

torch = pytest.importorskip("torch")

INF = float("inf")


def _pair(a, b):
    return (fg.tensor(a), fg.tensor(b)), (torch.from_numpy(a), torch.from_numpy(b))


@pytest.mark.parametrize("name, call", [
    ("solve", lambda L, a, b: L.solve(a, b)),
    ("lstsq", lambda L, a, b: L.lstsq(a, b)),
    ("vecdot", lambda L, a, b: L.vecdot(a, b)),
    ("cross", lambda L, a, b: L.cross(a, b)),
    ("multi_dot", lambda L, a, b: L.multi_dot([a, b])),
])
@pytest.mark.parametrize("first", [np.float32, np.float64])
def test_mixed_dtypes_are_refused_as_torch(name, call, first):
    second = np.float64 if first == np.float32 else np.float32
    a = (np.eye(3) * 2 + 0.1).astype(first)
    b = np.ones((3, 3), second)
    (fa, fb), (ta, tb) = _pair(a, b)
    with pytest.raises(RuntimeError):
        call(torch.linalg, ta, tb)
    with pytest.raises(RuntimeError, match="same dtype"):
        call(LA, fa, fb)


@pytest.mark.parametrize("da, db", [(np.float32, np.float64), (np.float64, np.float32)])
def test_solve_triangular_mixed_dtypes_compute_in_a_dtype_as_torch(da, db):
    a = (np.triu(np.random.default_rng(0).uniform(-1, 1, (4, 4))) + 2 * np.eye(4)).astype(da)
    b = np.random.default_rng(1).uniform(-1, 1, (4, 2)).astype(db)
    x, y = fg.tensor(a, requires_grad=True), fg.tensor(b, requires_grad=True)
    ta, tb = torch.from_numpy(a).requires_grad_(), torch.from_numpy(b).requires_grad_()
    out = LA.solve_triangular(x, y, upper=True)
    want = torch.linalg.solve_triangular(ta, tb, upper=True)
    assert out.numpy().dtype == want.detach().numpy().dtype
    np.testing.assert_allclose(out.numpy(), want.detach().numpy(), rtol=1e-5, atol=1e-6)
    out.sum().backward()
    want.sum().backward()
    for got, ref in ((x.grad, ta.grad), (y.grad, tb.grad)):
        assert got.numpy().dtype == ref.numpy().dtype
        np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("p", ["fro", 1, -1, INF, -INF])
def test_cond_of_a_singular_matrix_is_inf_as_torch(p):
    # batch element 0 exactly singular (inv raised LinAlgError before), element 1 regular
    a = np.stack([np.array([[1.0, 2.0], [2.0, 4.0]]), np.array([[2.0, 1.0], [0.0, 3.0]])])
    got = LA.cond(fg.tensor(a), p).numpy()
    np.testing.assert_allclose(got, torch.linalg.cond(torch.from_numpy(a), p).numpy(), rtol=1e-12)
    assert got[0] == INF


def test_cond_nuc_of_a_singular_matrix_is_huge_or_inf():
    # torch goes through the SVD for 'nuc' and gets 1 / (a rounding-error singular value); forgegrad's exact inf
    a = np.array([[1.0, 2.0], [2.0, 4.0]])
    assert LA.cond(fg.tensor(a), "nuc").item() > 1e15 < torch.linalg.cond(torch.from_numpy(a), "nuc").item()


def test_cond_keeps_its_gradient_on_a_regular_batch():
    a = np.array([[[2.0, 1.0], [0.5, 3.0]], [[1.0, -1.0], [2.0, 1.5]]])
    x = fg.tensor(a, requires_grad=True)
    t = torch.from_numpy(a).requires_grad_()
    LA.cond(x, "fro").sum().backward()
    # torch's cond for 'fro' has no gradient: compare with its own composition
    (torch.linalg.matrix_norm(t, "fro") * torch.linalg.matrix_norm(torch.linalg.inv(t), "fro")).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-10)


@pytest.mark.parametrize("shape", [(0, 0), (2, 0, 0)])
@pytest.mark.parametrize("p", [None, "fro", 1])
def test_cond_of_empty_matrices_is_zero_as_torch(shape, p):
    got = LA.cond(fg.tensor(np.zeros(shape)), p)
    want = torch.linalg.cond(torch.zeros(shape, dtype=torch.float64), p)
    assert got.shape == tuple(want.shape)
    np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_matrix_power_zero_of_a_non_finite_matrix_is_the_identity_as_torch():
    a = np.array([[INF, 1.0], [np.nan, 1.0]])
    x = fg.tensor(a, requires_grad=True)
    out = LA.matrix_power(x, 0)
    np.testing.assert_array_equal(out.numpy(), torch.linalg.matrix_power(torch.from_numpy(a), 0).numpy())
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros((2, 2)))


def test_info_and_logdet_of_one_matrix_are_0_d_as_torch():
    a = np.eye(3) * 2.0
    t = torch.from_numpy(a)
    assert LA.cholesky_ex(fg.tensor(a)).info.shape == tuple(torch.linalg.cholesky_ex(t).info.shape) == ()
    assert LA.cholesky_ex(fg.tensor(-a)).info.shape == ()
    assert LA.inv_ex(fg.tensor(a)).info.shape == tuple(torch.linalg.inv_ex(t).info.shape) == ()
    assert LA.inv_ex(fg.tensor(np.zeros((3, 3)))).info.shape == ()
    assert fg.logdet(fg.tensor(a)).shape == tuple(torch.logdet(t).shape) == ()
    assert fg.tensor(a).logdet().shape == ()
    np.testing.assert_allclose(fg.logdet(fg.tensor(a)).item(), torch.logdet(t).item())


@pytest.mark.parametrize("name, call", [
    ("svd", lambda L, a: L.svd(a)),
    ("svdvals", lambda L, a: L.svdvals(a)),
    ("eigh", lambda L, a: L.eigh(a)),
    ("eigvalsh", lambda L, a: L.eigvalsh(a)),
    ("pinv", lambda L, a: L.pinv(a)),
    ("matrix_rank", lambda L, a: L.matrix_rank(a)),
    ("cond", lambda L, a: L.cond(a)),
    ("matrix_norm 2", lambda L, a: L.matrix_norm(a, 2)),
    ("cholesky", lambda L, a: L.cholesky(a)),
])
def test_non_finite_input_raises_linalg_error_as_torch(name, call):
    a = np.full((3, 3), np.nan)
    with pytest.raises(torch.linalg.LinAlgError):
        call(torch.linalg, torch.from_numpy(a))
    with pytest.raises(LA.LinAlgError, match="'A'"):
        call(LA, fg.tensor(a))


def test_lstsq_non_finite_input_raises_linalg_error():
    with pytest.raises(LA.LinAlgError, match="'A'"):
        LA.lstsq(fg.tensor(np.full((3, 2), np.nan)), fg.tensor(np.ones((3, 1))))


def test_cholesky_ex_reports_a_nan_pivot_as_torch():
    a = np.eye(3)
    a[1, 1] = np.nan
    batch = np.stack([a, np.eye(3)])
    got = LA.cholesky_ex(fg.tensor(batch)).info.numpy()
    np.testing.assert_array_equal(got, torch.linalg.cholesky_ex(torch.from_numpy(batch)).info.numpy())
    with pytest.raises(LA.LinAlgError, match=r"batch element 0.*order 2"):
        LA.cholesky(fg.tensor(batch))


@pytest.mark.parametrize("uplo", ["l", "u"])
def test_eigh_takes_lower_case_uplo_as_torch(uplo):
    a = np.array([[1.0, 5.0, -2.0], [0.5, 2.0, 1.0], [3.0, -1.0, 0.0]])
    t = torch.from_numpy(a)
    np.testing.assert_allclose(LA.eigh(fg.tensor(a), UPLO=uplo).eigenvalues.numpy(),
                               torch.linalg.eigh(t, UPLO=uplo).eigenvalues.numpy(), rtol=1e-12)
    np.testing.assert_allclose(LA.eigvalsh(fg.tensor(a), uplo).numpy(), torch.linalg.eigvalsh(t, uplo).numpy(),
                               rtol=1e-12)
    with pytest.raises(ValueError, match="UPLO"):
        LA.eigh(fg.tensor(a), UPLO="lower")


@pytest.mark.filterwarnings("error")  # numpy's cast / overflow warnings leaked before
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e300])
def test_matrix_exp_of_non_finite_or_huge_input_is_nan_as_torch_without_warnings(bad):
    a = np.stack([np.array([[bad, 0.0], [0.0, 1.0]]), np.array([[0.5, 1.0], [-1.0, 0.25]])])
    got = LA.matrix_exp(fg.tensor(a)).numpy()
    want = torch.linalg.matrix_exp(torch.from_numpy(a)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12)  # NaN where torch's is NaN; the finite matrix untouched


@pytest.mark.parametrize("a_shape, b_shape", [((2, 3, 4), (3,)), ((3, 4), (2, 3, 1))])
def test_lstsq_refuses_b_of_the_wrong_rank_naming_it_as_torch(a_shape, b_shape):
    a, b = np.ones(a_shape), np.ones(b_shape)
    with pytest.raises(RuntimeError, match="dim"):
        torch.linalg.lstsq(torch.from_numpy(a), torch.from_numpy(b))
    with pytest.raises(ValueError, match="'B'"):  # an IndexError, or a broadcast result, before
        LA.lstsq(fg.tensor(a), fg.tensor(b))


def test_inv_ex_of_a_batch_with_a_singular_matrix_keeps_the_graph_as_torch():
    a = np.stack([np.array([[1.0, 2.0], [2.0, 4.0]]), np.array([[2.0, 1.0], [0.5, 3.0]])])
    x = fg.tensor(a, requires_grad=True)
    t = torch.from_numpy(a).requires_grad_()
    got, want = LA.inv_ex(x), torch.linalg.inv_ex(t)
    np.testing.assert_array_equal(got.info.numpy(), want.info.numpy())
    assert np.isnan(got.inverse.numpy()[0]).all()
    np.testing.assert_allclose(got.inverse.numpy()[1], want.inverse.detach().numpy()[1], rtol=1e-12)
    assert got.inverse.requires_grad and want.inverse.requires_grad  # no graph at all before
    got.inverse[1].sum().backward()
    want.inverse[1].sum().backward()
    np.testing.assert_allclose(x.grad.numpy()[1], t.grad.numpy()[1], rtol=1e-12)
    np.testing.assert_array_equal(x.grad.numpy()[0], np.zeros((2, 2)))


def test_a_bare_memory_error_from_lapack_names_the_op(monkeypatch):
    # the op fuzz suite: a (3, 22369622) matrix made numpy's qr raise MemoryError() with no message under the
    # worker's memory limit; it is raised again naming the op and the argument's shape
    import numpy as _np

    def fail(*a, **k):
        raise MemoryError()
    monkeypatch.setattr(_np.linalg, "qr", fail)
    A = fg.tensor(_np.ones((3, 5), _np.float32))
    with pytest.raises(MemoryError, match=r"linalg\.qr: .*'A' of shape \(3, 5\)"):
        fg.linalg.qr(A)
