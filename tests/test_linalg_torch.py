"""forgegrad.linalg against torch.linalg: values and gradients in float32 and float64, batched inputs, invariant
quantities for eigenvectors / singular vectors / QR (their signs are LAPACK's choice), the errors torch raises, and
a Gaussian-process marginal likelihood (cholesky + solve_triangular + logdet) whose gradient equals torch's.
The ops' generated checks (forward/backward/float64/double backward/meta/errors) are in tests/test_op_registry.py."""
import math

import numpy as np
import pytest

import forgegrad as fg
from forgegrad import linalg as LA

torch = pytest.importorskip("torch")

TOL = {np.float32: dict(rtol=2e-4, atol=2e-4), np.float64: dict(rtol=1e-9, atol=1e-10)}
DTYPES = [np.float32, np.float64]


def _rng(seed=0):
    return np.random.default_rng(seed)


def wellcond(*shape, seed=0):
    a = _rng(seed).uniform(-1, 1, size=shape)
    return a + 2.5 * np.eye(shape[-1])


def spd(*shape, seed=0):
    a = _rng(seed).uniform(-1, 1, size=shape)
    return a @ np.swapaxes(a, -1, -2) / shape[-1] + np.eye(shape[-1])


def rect(*shape, seed=0):
    return _rng(seed).uniform(-1, 1, size=shape)


def _outs(o):
    return list(o) if isinstance(o, (tuple, list)) else [o]


def compare(fg_fn, torch_fn, arrays, dtype, grad=True, seed=3):
    """fg_fn(*tensors) vs torch_fn(*tensors): every float output, and the gradient of sum(out * c) for each input
    (c a fixed random cotangent per output)."""
    arrays = [a.astype(dtype) for a in arrays]
    xs = [fg.tensor(a.copy(), requires_grad=grad) for a in arrays]
    ts = [torch.from_numpy(a.copy()).requires_grad_(grad) for a in arrays]
    fo, to = _outs(fg_fn(*xs)), _outs(torch_fn(*ts))
    assert len(fo) == len(to)
    rng = np.random.default_rng(seed)
    floss, tloss = 0, 0
    for f, t in zip(fo, to):
        want = t.detach().numpy()
        assert f.shape == tuple(want.shape), (f.shape, want.shape)
        assert f.numpy().dtype == want.dtype, (f.numpy().dtype, want.dtype)
        np.testing.assert_allclose(f.numpy(), want, **TOL[dtype])
        if grad and want.dtype.kind == "f" and t.requires_grad:
            c = rng.uniform(-1, 1, size=want.shape).astype(dtype)
            floss = floss + (f * fg.tensor(c)).sum()
            tloss = tloss + (t * torch.from_numpy(c)).sum()
    if grad and isinstance(tloss, torch.Tensor):
        floss.backward()
        tloss.backward()
        for x, t in zip(xs, ts):
            want = np.zeros(t.shape) if t.grad is None else t.grad.numpy()
            got = np.zeros(x.shape) if x.grad is None else x.grad.numpy()
            np.testing.assert_allclose(got, want, **TOL[dtype])


INF = math.inf
CASES = {
    "inv batched": (LA.inv, torch.linalg.inv, lambda: [wellcond(2, 3, 5, 5)]),
    "inv 1x1": (LA.inv, torch.linalg.inv, lambda: [wellcond(1, 1)]),
    "det": (LA.det, torch.linalg.det, lambda: [wellcond(3, 4, 4)]),
    "slogdet logabsdet": (lambda a: LA.slogdet(a).logabsdet, lambda a: torch.linalg.slogdet(a).logabsdet,
                          lambda: [wellcond(2, 4, 4) * np.array([1, -1])[:, None, None]]),
    "logdet": (fg.logdet, torch.logdet, lambda: [spd(2, 5, 5)]),
    "solve matrix": (LA.solve, torch.linalg.solve, lambda: [wellcond(2, 4, 4), rect(2, 4, 3, seed=1)]),
    "solve vectors": (LA.solve, torch.linalg.solve, lambda: [wellcond(2, 4, 4), rect(2, 4, seed=1)]),
    "solve broadcast": (LA.solve, torch.linalg.solve, lambda: [wellcond(3, 1, 4, 4), rect(2, 4, 2, seed=1)]),
    "solve left=False": (lambda a, b: LA.solve(a, b, left=False), lambda a, b: torch.linalg.solve(a, b, left=False),
                         lambda: [wellcond(4, 4), rect(3, 4, seed=1)]),
    "solve_triangular lower": (lambda a, b: LA.solve_triangular(a, b, upper=False),
                               lambda a, b: torch.linalg.solve_triangular(a, b, upper=False),
                               lambda: [wellcond(2, 4, 4), rect(2, 4, 3, seed=1)]),
    "solve_triangular upper right unit": (
        lambda a, b: LA.solve_triangular(a, b, upper=True, left=False, unitriangular=True),
        lambda a, b: torch.linalg.solve_triangular(a, b, upper=True, left=False, unitriangular=True),
        lambda: [wellcond(4, 4), rect(2, 3, 4, seed=1)]),
    "cholesky": (LA.cholesky, torch.linalg.cholesky, lambda: [spd(2, 3, 5, 5)]),
    "cholesky upper": (lambda a: LA.cholesky(a, upper=True), lambda a: torch.linalg.cholesky(a, upper=True),
                       lambda: [spd(4, 4)]),
    "eigvalsh": (LA.eigvalsh, torch.linalg.eigvalsh, lambda: [spd(2, 5, 5) - 1.0]),
    "eigvalsh U": (lambda a: LA.eigvalsh(a, "U"), lambda a: torch.linalg.eigvalsh(a, "U"), lambda: [rect(4, 4)]),
    "svdvals": (LA.svdvals, torch.linalg.svdvals, lambda: [rect(2, 5, 3)]),
    "pinv tall": (LA.pinv, torch.linalg.pinv, lambda: [rect(2, 5, 3)]),
    "pinv wide": (LA.pinv, torch.linalg.pinv, lambda: [rect(3, 5)]),
    "pinv hermitian": (lambda a: LA.pinv(a, hermitian=True), lambda a: torch.linalg.pinv(a, hermitian=True),
                       lambda: [spd(4, 4)]),
    "lstsq solution": (lambda a, b: LA.lstsq(a, b).solution, lambda a, b: torch.linalg.lstsq(a, b).solution,
                       lambda: [rect(2, 6, 3), rect(2, 6, 2, seed=1)]),
    "matrix_power 3": (lambda a: LA.matrix_power(a, 3), lambda a: torch.linalg.matrix_power(a, 3),
                       lambda: [rect(2, 4, 4)]),
    "matrix_power -2": (lambda a: LA.matrix_power(a, -2), lambda a: torch.linalg.matrix_power(a, -2),
                        lambda: [wellcond(4, 4)]),
    "matrix_power 0": (lambda a: LA.matrix_power(a, 0), lambda a: torch.linalg.matrix_power(a, 0),
                       lambda: [rect(3, 3)]),
    "matrix_exp": (LA.matrix_exp, torch.linalg.matrix_exp, lambda: [rect(2, 4, 4) * 2]),
    "cross": (LA.cross, torch.linalg.cross, lambda: [rect(2, 4, 3), rect(2, 1, 3, seed=1)]),
    "cross dim 0": (lambda a, b: LA.cross(a, b, dim=0), lambda a, b: torch.linalg.cross(a, b, dim=0),
                    lambda: [rect(3, 5), rect(3, 5, seed=1)]),
    "vecdot": (LA.vecdot, torch.linalg.vecdot, lambda: [rect(4, 5), rect(5, seed=1)]),
    "multi_dot": (lambda a, b, c, d: LA.multi_dot([a, b, c, d]),
                  lambda a, b, c, d: torch.linalg.multi_dot([a, b, c, d]),
                  lambda: [rect(5), rect(5, 2, seed=1), rect(2, 7, seed=2), rect(7, seed=3)]),
    "diagonal": (lambda a: LA.diagonal(a, offset=-1, dim1=0, dim2=2),
                 lambda a: torch.linalg.diagonal(a, offset=-1, dim1=0, dim2=2), lambda: [rect(4, 2, 5)]),
    "cond": (LA.cond, torch.linalg.cond, lambda: [wellcond(2, 4, 4)]),
    # torch's cond for these p has no gradient (its inv_ex output is written in place): values only
    "cond fro": (lambda a: LA.cond(a, "fro"), lambda a: torch.linalg.cond(a, "fro"), lambda: [wellcond(4, 4)], False),
    "cond -inf": (lambda a: LA.cond(a, -INF), lambda a: torch.linalg.cond(a, -INF), lambda: [wellcond(4, 4)], False),
    "norm default": (LA.norm, torch.linalg.norm, lambda: [rect(2, 3, 4)]),
    "norm 1-d ord 3": (lambda a: LA.norm(a, 3), lambda a: torch.linalg.norm(a, 3), lambda: [rect(6)]),
    "norm 2-d nuc": (lambda a: LA.norm(a, "nuc"), lambda a: torch.linalg.norm(a, "nuc"), lambda: [rect(3, 5)]),
    "norm dim int": (lambda a: LA.norm(a, 1, dim=1), lambda a: torch.linalg.norm(a, 1, dim=1), lambda: [rect(3, 5)]),
    "norm dim pair keepdim": (lambda a: LA.norm(a, INF, dim=(0, 2), keepdim=True),
                              lambda a: torch.linalg.norm(a, INF, dim=(0, 2), keepdim=True), lambda: [rect(3, 2, 5)]),
}
for _ord in ("fro", "nuc", INF, -INF, 1, -1, 2, -2):
    CASES[f"matrix_norm {_ord}"] = (lambda a, o=_ord: LA.matrix_norm(a, o),
                                    lambda a, o=_ord: torch.linalg.matrix_norm(a, o), lambda: [rect(2, 4, 3)])
CASES["matrix_norm dims keepdim"] = (lambda a: LA.matrix_norm(a, -1, dim=(2, 0), keepdim=True),
                                     lambda a: torch.linalg.matrix_norm(a, -1, dim=(2, 0), keepdim=True),
                                     lambda: [rect(3, 2, 4)])


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(CASES))
def test_values_and_gradients_match_torch(name, dtype):
    fg_fn, torch_fn, make, *grad = CASES[name]
    compare(fg_fn, torch_fn, make(), dtype, grad=grad[0] if grad else True)


# ---- factorizations: invariant quantities (signs are LAPACK's) ---------------------------------------------------
def _np(t):
    return t.detach().numpy() if isinstance(t, torch.Tensor) else t.numpy()


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_eigh_invariants_and_sign_invariant_gradient(dtype):
    a = (rect(2, 5, 5) + rect(2, 5, 5).transpose(0, 2, 1)).astype(dtype)
    w, v = LA.eigh(fg.tensor(a))
    tw, tv = torch.linalg.eigh(torch.from_numpy(a))
    tol = TOL[dtype]
    np.testing.assert_allclose(w.numpy(), _np(tw), **tol)
    np.testing.assert_allclose(np.abs(v.numpy()), np.abs(_np(tv)), **tol)  # columns equal up to sign
    rec = v.numpy() @ (w.numpy()[..., None] * v.numpy().swapaxes(-1, -2))
    np.testing.assert_allclose(rec, a, **tol)
    np.testing.assert_allclose(v.numpy().swapaxes(-1, -2) @ v.numpy(), np.broadcast_to(np.eye(5), (2, 5, 5)), **tol)
    # a loss that the signs do not change: the fourth powers of the eigenvectors' entries and the eigenvalues
    c = rect(2, 5, seed=4).astype(dtype)
    x = fg.tensor(a, requires_grad=True)
    w, v = LA.eigh(x)
    ((v ** 4).sum(dim=-2) * fg.tensor(c)).sum().backward()
    t = torch.from_numpy(a).requires_grad_(True)
    tw, tv = torch.linalg.eigh(t)
    ((tv ** 4).sum(dim=-2) * torch.from_numpy(c)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=tol["rtol"] * 10, atol=tol["atol"] * 10)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("shape,full", [((2, 6, 4), False), ((4, 6), False), ((5, 5), True), ((6, 4), True)])
def test_svd_invariants_and_gradient(shape, full, dtype):
    a = rect(*shape).astype(dtype)
    u, s, vh = LA.svd(fg.tensor(a), full_matrices=full)
    tu, ts, tvh = torch.linalg.svd(torch.from_numpy(a), full_matrices=full)
    tol = TOL[dtype]
    assert (u.shape, s.shape, vh.shape) == (tuple(tu.shape), tuple(ts.shape), tuple(tvh.shape))
    np.testing.assert_allclose(s.numpy(), _np(ts), **tol)
    k = s.shape[-1]
    np.testing.assert_allclose(np.abs(u.numpy()[..., :k]), np.abs(_np(tu)[..., :k]), **tol)
    rec = (u.numpy()[..., :k] * s.numpy()[..., None, :]) @ vh.numpy()[..., :k, :]
    np.testing.assert_allclose(rec, a, **tol)
    # sign-invariant loss: the projection U_k U_k^T weighted by S, and the squared singular vectors
    c = rect(*shape[:-2], shape[-2], shape[-2], seed=5).astype(dtype)
    x = fg.tensor(a, requires_grad=True)
    u, s, vh = LA.svd(x, full_matrices=full)
    uk = u[..., :k]
    ((uk * s.unsqueeze(-2)) @ uk.transpose(-2, -1) * fg.tensor(c)).sum().add((vh[..., :k, :] ** 2).sum()).backward()
    t = torch.from_numpy(a).requires_grad_(True)
    tu, ts, tvh = torch.linalg.svd(t, full_matrices=full)
    tuk = tu[..., :k]
    ((tuk * ts.unsqueeze(-2)) @ tuk.mT * torch.from_numpy(c)).sum().add((tvh[..., :k, :] ** 2).sum()).backward()
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=tol["rtol"] * 10, atol=tol["atol"] * 10)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("shape,mode", [((2, 6, 4), "reduced"), ((4, 6), "reduced"), ((5, 5), "complete"),
                                        ((3, 5), "complete"), ((6, 4), "r")])
def test_qr_invariants_and_gradient(shape, mode, dtype):
    a = rect(*shape).astype(dtype)
    q, r = LA.qr(fg.tensor(a), mode=mode)
    tq, tr = torch.linalg.qr(torch.from_numpy(a), mode=mode)
    tol = TOL[dtype]
    assert (q.shape, r.shape) == (tuple(tq.shape), tuple(tr.shape))
    np.testing.assert_allclose(np.abs(r.numpy()), np.abs(_np(tr)), **tol)  # rows equal up to sign
    if mode == "r":
        with pytest.raises(RuntimeError, match="mode='r'"):
            LA.qr(fg.tensor(a, requires_grad=True), mode="r")[1].sum().backward()
        return
    np.testing.assert_allclose(q.numpy() @ r.numpy(), a, **tol)
    # sign-invariant: Q diag(R) and R^T R do not change when a column of Q and a row of R flip together
    c = rect(*q.shape, seed=6).astype(dtype)
    x = fg.tensor(a, requires_grad=True)
    q, r = LA.qr(x, mode=mode)
    loss = ((r.transpose(-2, -1) @ r) ** 2).sum() + (q.abs() * fg.tensor(c)).sum()
    loss.backward()
    t = torch.from_numpy(a).requires_grad_(True)
    tq, tr = torch.linalg.qr(t, mode=mode)
    (((tr.mT @ tr) ** 2).sum() + (tq.abs() * torch.from_numpy(c)).sum()).backward()
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=tol["rtol"] * 10, atol=tol["atol"] * 10)


def test_eigh_repeated_eigenvalues_give_nonfinite_vector_gradients_as_torch():
    a = np.diag([1.0, 1.0, 2.0])
    x, t = fg.tensor(a, requires_grad=True), torch.from_numpy(a).requires_grad_(True)
    LA.eigh(x)[1][0].sum().backward()
    torch.linalg.eigh(t)[1][0].sum().backward()
    assert not np.all(np.isfinite(x.grad.numpy())) and not np.all(np.isfinite(t.grad.numpy()))
    x = fg.tensor(a, requires_grad=True)
    LA.eigvalsh(x).sum().backward()  # eigenvalues alone stay finite
    np.testing.assert_allclose(x.grad.numpy(), np.eye(3), atol=1e-12)


def test_det_gradient_at_an_exactly_singular_matrix_is_the_cofactor_matrix():
    """torch's SVD path (its create_graph backward) gives the cofactors; its plain backward gives 0 there."""
    for a in (np.array([[1.0, 2.0], [2.0, 4.0]]), np.array([[1.0, 2, 3], [2, 4, 6], [0, 1, 5]])):
        x = fg.tensor(a, requires_grad=True)
        LA.det(x).backward()
        t = torch.from_numpy(a).requires_grad_(True)
        (want,) = torch.autograd.grad(torch.linalg.det(t), [t], create_graph=True)
        np.testing.assert_allclose(x.grad.numpy(), want.detach().numpy(), atol=1e-12)


# ---- errors and info -----------------------------------------------------------------------------------------------
def test_singular_inverse_raises_naming_the_argument_as_torch():
    a = np.array([[[1.0, 2.0], [2.0, 4.0]], [[1.0, 0.0], [0.0, 1.0]]])
    with pytest.raises(RuntimeError):  # torch's LinAlgError is a RuntimeError too
        torch.linalg.inv(torch.from_numpy(a))
    with pytest.raises(LA.LinAlgError, match="batch element 0.*'A' is singular"):
        LA.inv(fg.tensor(a))
    with pytest.raises(RuntimeError, match="'A' is singular"):
        LA.solve(fg.tensor(a[0]), fg.tensor(np.ones(2)))
    inverse, info = LA.inv_ex(fg.tensor(a))
    _, tinfo = torch.linalg.inv_ex(torch.from_numpy(a))
    np.testing.assert_array_equal(info.numpy(), tinfo.numpy())
    np.testing.assert_allclose(inverse.numpy()[1], np.eye(2))


def test_cholesky_not_positive_definite_as_torch():
    a = spd(3, 4, 4)
    a[1, 2, 2] = -5.0
    with pytest.raises(RuntimeError, match="leading minor of order 3 is not positive-definite"):
        torch.linalg.cholesky(torch.from_numpy(a))
    with pytest.raises(LA.LinAlgError, match=r"batch element 1.*'A'.*leading minor of order 3 is not positive"):
        LA.cholesky(fg.tensor(a))
    L, info = LA.cholesky_ex(fg.tensor(a))
    tL, tinfo = torch.linalg.cholesky_ex(torch.from_numpy(a))
    np.testing.assert_array_equal(info.numpy(), tinfo.numpy())
    np.testing.assert_allclose(L.numpy()[[0, 2]], tL.numpy()[[0, 2]], rtol=1e-12, atol=1e-12)
    with pytest.raises(LA.LinAlgError):
        LA.cholesky_ex(fg.tensor(a), check_errors=True)


@pytest.mark.parametrize("fn", [LA.inv, LA.det, LA.cholesky, LA.eigh, LA.matrix_exp, lambda a: LA.matrix_power(a, 2)])
def test_non_square_is_refused_naming_the_argument(fn):
    with pytest.raises(ValueError, match="'A' must be a batch of square matrices"):
        fn(fg.tensor(np.ones((2, 3))))


def test_cross_refuses_what_torch_refuses():
    with pytest.raises(ValueError, match="same number of dimensions"):
        LA.cross(fg.tensor(rect(4, 3)), fg.tensor(rect(2, 4, 3)))
    with pytest.raises(ValueError, match="size 3"):
        LA.cross(fg.tensor(rect(4, 2)), fg.tensor(rect(4, 2)))


def test_complex_and_integer_inputs_are_refused():
    with pytest.raises(TypeError, match="complex inputs are not supported"):
        LA.inv(np.eye(2, dtype=np.complex64))
    with pytest.raises(TypeError, match="'A' must be a floating point tensor"):
        LA.det(fg.tensor(np.eye(2, dtype=np.int64)))
    with pytest.raises(TypeError, match="upper"):
        LA.solve_triangular(fg.tensor(np.eye(2)), fg.tensor(np.ones((2, 1))), upper=None)
    with pytest.raises(ValueError, match="mode"):
        LA.qr(fg.tensor(np.eye(2)), mode="full")


def test_matrix_rank_and_lstsq_outputs_match_torch():
    a = rect(2, 6, 4)
    a[1, :, 3] = a[1, :, 0] + a[1, :, 1]  # rank 3
    for kw in ({}, {"hermitian": False, "rtol": 0.1}, {"atol": 0.5}):
        np.testing.assert_array_equal(LA.matrix_rank(fg.tensor(a), **kw).numpy(),
                                      torch.linalg.matrix_rank(torch.from_numpy(a), **kw).numpy())
    s = spd(5, 5)
    np.testing.assert_array_equal(LA.matrix_rank(fg.tensor(s), hermitian=True).numpy(),
                                  torch.linalg.matrix_rank(torch.from_numpy(s), hermitian=True).numpy())
    a, b = rect(2, 6, 3), rect(2, 6, 2, seed=1)
    for driver in ("gelsy", "gelsd", "gelss", "gels"):
        got = LA.lstsq(fg.tensor(a), fg.tensor(b), driver=driver)
        want = torch.linalg.lstsq(torch.from_numpy(a), torch.from_numpy(b), driver=driver)
        for g, w in zip(got, want):
            assert g.shape == tuple(w.shape), (driver, g.shape, w.shape)
            np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-9, atol=1e-10)


def test_torch_level_functions_and_tensor_methods():
    a = wellcond(2, 3, 3)
    x, t = fg.tensor(a), torch.from_numpy(a)
    pairs = [(fg.det(x), torch.det(t)), (fg.inverse(x), torch.inverse(t)), (x.det(), t.det()),
             (x.inverse(), t.inverse()), (fg.matrix_exp(x), torch.matrix_exp(t)), (x.matrix_power(2),
                                                                                    t.matrix_power(2)),
             (fg.slogdet(x).logabsdet, torch.slogdet(t).logabsdet), (x.pinverse(), t.pinverse())]
    s = spd(3, 3)
    pairs.append((fg.tensor(s).cholesky(), torch.linalg.cholesky(torch.from_numpy(s))))  # Tensor.cholesky: deprecated
    pairs.append((fg.tensor(s).logdet(), torch.from_numpy(s).logdet()))
    for got, want in pairs:
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10, atol=1e-12)
    sign, logabs = LA.slogdet(x)
    tsign, tlog = torch.linalg.slogdet(t)
    np.testing.assert_array_equal(sign.numpy(), tsign.numpy())
    neg = -wellcond(3, 3)
    assert np.isnan(fg.logdet(fg.tensor(neg)).item()) == np.isnan(torch.logdet(torch.from_numpy(neg)).item())


# ---- a Gaussian process: cholesky + solve_triangular + logdet ------------------------------------------------------
def _gp_nll(lib, X, y, log_ls, log_noise):
    """Negative log marginal likelihood of an RBF Gaussian process (one library's ops: fg or torch)."""
    la = fg.linalg if lib is fg else torch.linalg
    n = X.shape[0]
    d2 = ((X.unsqueeze(1) - X.unsqueeze(0)) ** 2).sum(dim=-1)
    K = (d2 * (-0.5) / (log_ls * 2).exp()).exp() + log_noise.exp() * (fg.eye(n).double() if lib is fg else
                                                                      torch.eye(n, dtype=torch.float64))
    L = la.cholesky(K)
    alpha = la.solve_triangular(L, y.unsqueeze(-1), upper=False)
    logdet = fg.logdet(K) if lib is fg else torch.logdet(K)
    return 0.5 * (alpha ** 2).sum() + 0.5 * logdet + 0.5 * n * math.log(2 * math.pi)


def test_gaussian_process_marginal_likelihood_and_gradient_equal_torch():
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(12, 2))
    y = np.sin(X[:, 0]) + 0.1 * rng.standard_normal(12)
    params = [X, y, np.array(0.3), np.array(-2.0)]
    fp = [fg.tensor(p.copy(), requires_grad=True) for p in params]
    tp = [torch.from_numpy(p.copy()).requires_grad_(True) for p in params]
    f, t = _gp_nll(fg, *fp), _gp_nll(torch, *tp)
    np.testing.assert_allclose(f.item(), t.item(), rtol=1e-10)
    f.backward()
    t.backward()
    for a, b in zip(fp, tp):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-8, atol=1e-10)


def test_double_backward_through_composed_functions():
    """create_graph through pinv (svd) and logdet (slogdet): Hessian-vector products equal torch's."""
    a = rect(4, 3)
    s = spd(3, 3)
    for fn, tfn, arr in ((LA.pinv, torch.linalg.pinv, a), (fg.logdet, torch.logdet, s),
                         (lambda m: LA.matrix_norm(m, "nuc"), lambda m: torch.linalg.matrix_norm(m, "nuc"), a)):
        x = fg.tensor(arr, requires_grad=True)
        t = torch.from_numpy(arr).requires_grad_(True)
        c = rect(*arr.shape, seed=9)
        (gx,) = fg.autograd.grad((fn(x) ** 2).sum(), [x], create_graph=True)
        (gt,) = torch.autograd.grad((tfn(t) ** 2).sum(), [t], create_graph=True)
        (hx,) = fg.autograd.grad((gx * fg.tensor(c)).sum(), [x])
        (ht,) = torch.autograd.grad((gt * torch.from_numpy(c)).sum(), [t])
        np.testing.assert_allclose(hx.numpy(), ht.numpy(), rtol=1e-8, atol=1e-10)


def test_compositions_export_to_onnx(tmp_path):
    pytest.importorskip("onnxruntime")

    class M(fg.nn.Module):
        def forward(self, a, b):
            return LA.matrix_power(a, 3) + LA.det(a).unsqueeze(-1).unsqueeze(-1), LA.cross(b, b * 2 + 1), \
                LA.vecdot(b, b + 1), LA.multi_dot([b[0], a[0, :3], a[1, :, 1:], b[1]])

    a, b = rect(2, 4, 4).astype(np.float32), rect(5, 3, seed=1).astype(np.float32)
    report = fg.onnx.export(M(), (fg.tensor(a), fg.tensor(b)), str(tmp_path / "linalg.onnx"), dynamic_axes={})
    assert report.ok, report
