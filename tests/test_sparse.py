"""forgegrad.sparse against torch.sparse: COO/CSR construction and conversions, sparse @ dense and its gradients,
sum, add, scalar mul, softmax, bad input, and dense ops refusing sparse tensors."""
import numpy as np
import pytest
import torch

import forgegrad as fg

RNG = np.random.default_rng(7)


def _coo_pair(indices, values, size, requires_grad=False):
    a = fg.sparse_coo_tensor(indices, np.asarray(values, np.float32), size, requires_grad=requires_grad)
    args = (torch.tensor(np.asarray(indices)), torch.tensor(np.asarray(values, np.float32)))
    t = torch.sparse_coo_tensor(*args, *(() if size is None else (size,)), requires_grad=requires_grad,
                                check_invariants=True)
    return a, t


def _random_sparse(m, k, density, rng=RNG, duplicates=0):
    n = int(round(m * k * density))
    rows, cols = rng.integers(0, m, n + duplicates), rng.integers(0, k, n + duplicates)
    return np.stack([rows, cols]), rng.standard_normal(n + duplicates).astype(np.float32)


def _dense(s):
    return s.to_dense().numpy() if isinstance(s, fg.Tensor) else s.to_dense().detach().numpy()


def test_coo_attributes_and_coalesce_sum_duplicates():
    idx = [[0, 1, 1, 0, 1], [2, 0, 2, 2, 0]]
    a, t = _coo_pair(idx, [1, 2, 3, 4, 5], (2, 3))
    assert a.is_sparse and a.layout is fg.sparse_coo and not a.is_coalesced() and a._nnz() == 5
    assert (a.sparse_dim(), a.dense_dim(), a.shape, a.dtype) == (2, 0, (2, 3), fg.float32)
    c, tc = a.coalesce(), t.coalesce()
    assert c.is_coalesced() and c._nnz() == tc._nnz() == 3
    np.testing.assert_array_equal(c.indices().numpy(), tc.indices().numpy())
    np.testing.assert_allclose(c.values().numpy(), tc.values().numpy())
    np.testing.assert_allclose(_dense(a), _dense(t))
    with pytest.raises(RuntimeError, match="coalesce"):
        a.indices()
    x = fg.randn(3, 4)
    assert x.layout is fg.strided and not x.is_sparse and x.to_dense() is x


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (4, 1, 3), (7,)])
def test_to_sparse_roundtrip_matches_torch(shape):
    arr = RNG.standard_normal(shape).astype(np.float32) * (RNG.random(shape) < 0.4)
    s, ts = fg.tensor(arr).to_sparse(), torch.tensor(arr).to_sparse()
    assert s.is_coalesced() and s._nnz() == ts._nnz()
    np.testing.assert_array_equal(s.indices().numpy(), ts.indices().numpy())
    np.testing.assert_array_equal(s.values().numpy(), ts.values().numpy())
    np.testing.assert_array_equal(s.to_dense().numpy(), arr)


def test_hybrid_coo_to_sparse_sparse_dim():
    arr = np.zeros((4, 3), np.float32)
    arr[1] = [1, 0, 2]
    arr[3, 2] = 5
    s, ts = fg.tensor(arr).to_sparse(1), torch.tensor(arr).to_sparse(1)
    assert (s.sparse_dim(), s.dense_dim()) == (ts.sparse_dim(), ts.dense_dim()) == (1, 1)
    np.testing.assert_array_equal(s.values().numpy(), ts.values().numpy())
    np.testing.assert_array_equal(s.to_dense().numpy(), arr)
    h = fg.sparse_coo_tensor([[2, 0, 2]], np.ones((3, 2), np.float32), (3, 2)).coalesce()
    np.testing.assert_array_equal(h.to_dense().numpy(), [[1, 1], [0, 0], [2, 2]])


def test_empty_nnz():
    a, t = _coo_pair(np.zeros((2, 0), np.int64), np.zeros(0, np.float32), (3, 4))
    assert a._nnz() == 0 and a.coalesce()._nnz() == 0
    np.testing.assert_array_equal(_dense(a), np.zeros((3, 4)))
    d = fg.randn(4, 2)
    np.testing.assert_array_equal(fg.sparse.mm(a, d).numpy(), np.zeros((3, 2)))
    c = a.to_sparse_csr()
    np.testing.assert_array_equal(c.crow_indices().numpy(), [0, 0, 0, 0])
    assert fg.sparse.sum(a).item() == 0.0
    assert fg.tensor(np.zeros((2, 2), np.float32)).to_sparse()._nnz() == 0


def test_size_inferred_as_torch():
    a, t = _coo_pair([[0, 4], [2, 1]], [1, 2], None)
    assert a.shape == tuple(t.shape) == (5, 3)


def test_csr_construction_and_conversions_match_torch():
    arr = RNG.standard_normal((5, 6)).astype(np.float32) * (RNG.random((5, 6)) < 0.3)
    arr[2] = 0  # an empty row
    c, tc = fg.tensor(arr).to_sparse_csr(), torch.tensor(arr).to_sparse_csr()
    assert c.layout is fg.sparse_csr and c.is_sparse_csr and not c.is_sparse
    for mine, theirs in ((c.crow_indices(), tc.crow_indices()), (c.col_indices(), tc.col_indices()),
                         (c.values(), tc.values())):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    np.testing.assert_array_equal(c.to_dense().numpy(), arr)
    np.testing.assert_array_equal(c.to_sparse().to_dense().numpy(), arr)
    made = fg.sparse_csr_tensor(tc.crow_indices().numpy(), tc.col_indices().numpy(), tc.values().numpy(), (5, 6))
    np.testing.assert_array_equal(made.to_dense().numpy(), arr)
    coo = fg.sparse_coo_tensor([[1, 0, 1], [2, 1, 2]], [1.0, 2.0, 3.0], (2, 3)).to_sparse_csr()
    np.testing.assert_array_equal(coo.to_dense().numpy(), [[0, 2, 0], [0, 0, 4]])


@pytest.mark.parametrize("m,k,n,density,dups", [(1, 1, 1, 1.0, 0), (17, 13, 9, 0.2, 5), (64, 33, 70, 0.05, 3),
                                                (5, 8, 3, 0.0, 0)])
@pytest.mark.parametrize("csr", [False, True])
def test_sparse_mm_values_and_gradients_match_torch(m, k, n, density, dups, csr):
    idx, vals = _random_sparse(m, k, density, duplicates=dups)
    a, t = _coo_pair(idx, vals, (m, k))
    if csr:
        a, t = a.coalesce().to_sparse_csr(), t.coalesce().to_sparse_csr()
    a.requires_grad_(True)
    t.requires_grad_(True)
    b_np = RNG.standard_normal((k, n)).astype(np.float32)
    b, tb = fg.tensor(b_np, requires_grad=True), torch.tensor(b_np, requires_grad=True)
    w = RNG.standard_normal((m, n)).astype(np.float32)
    y = fg.sparse.mm(a, b)
    ty = torch.sparse.mm(t.detach().to_sparse() if csr else t, tb)  # torch's CSR sparse.mm has no sparse grad
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    (y * fg.tensor(w)).sum().backward()
    (ty * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(b.grad.numpy(), tb.grad.numpy(), rtol=1e-5, atol=1e-5)
    # a's gradient: sparse, on a's coalesced pattern (torch.sparse.mm's)
    assert a.grad.layout is a.layout
    pattern = np.zeros((m, k), bool)
    pattern[tuple(idx)] = True
    np.testing.assert_allclose(a.grad.to_dense().numpy(), (w @ b_np.T) * pattern, rtol=1e-5, atol=1e-5)
    if not csr:
        np.testing.assert_allclose(a.grad.to_dense().numpy(), t.grad.to_dense().numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("csr", [False, True])
def test_mm_matmul_at_give_torch_mm_dense_gradient(csr):
    idx, vals = _random_sparse(6, 5, 0.3, duplicates=2)
    a, t = _coo_pair(idx, vals, (6, 5), requires_grad=True)
    if csr:
        a = a.detach().coalesce().to_sparse_csr().requires_grad_(True)
        t = t.detach().coalesce().to_sparse_csr().requires_grad_(True)
    b_np = RNG.standard_normal((5, 4)).astype(np.float32)
    for op, top in ((fg.mm, torch.mm), (fg.matmul, torch.matmul), (lambda x, y: x @ y, lambda x, y: x @ y)):
        a.grad, t.grad = None, None
        b, tb = fg.tensor(b_np, requires_grad=True), torch.tensor(b_np, requires_grad=True)
        y, ty = op(a, b), top(t, tb)
        np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-5, atol=1e-5)
        y.sum().backward()
        ty.sum().backward()
        assert a.grad.layout is fg.strided
        np.testing.assert_allclose(a.grad.numpy(), t.grad.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(b.grad.numpy(), tb.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_mm_vector_and_float64():
    idx, vals = _random_sparse(4, 6, 0.4)
    a = fg.sparse_coo_tensor(idx, vals.astype(np.float64), (4, 6))
    t = torch.sparse_coo_tensor(torch.tensor(idx), torch.tensor(vals.astype(np.float64)), (4, 6))
    v = RNG.standard_normal(6)
    np.testing.assert_allclose(fg.mm(a, fg.tensor(v)).numpy(), torch.mv(t, torch.tensor(v)).numpy(), rtol=1e-12)
    b = RNG.standard_normal((6, 3))
    y = fg.sparse.mm(a, fg.tensor(b))
    assert y.dtype == fg.float64
    np.testing.assert_allclose(y.numpy(), torch.sparse.mm(t, torch.tensor(b)).numpy(), rtol=1e-12)


def test_addmm_matches_torch():
    idx, vals = _random_sparse(5, 4, 0.5)
    a, t = _coo_pair(idx, vals, (5, 4), requires_grad=True)
    m_np, b_np = RNG.standard_normal((5, 3)).astype(np.float32), RNG.standard_normal((4, 3)).astype(np.float32)
    m, tm = fg.tensor(m_np, requires_grad=True), torch.tensor(m_np, requires_grad=True)
    b, tb = fg.tensor(b_np, requires_grad=True), torch.tensor(b_np, requires_grad=True)
    y = fg.sparse.addmm(m, a, b, beta=0.5, alpha=2.0)
    ty = torch.sparse.addmm(tm, t, tb, beta=0.5, alpha=2.0)
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    y.sum().backward()
    ty.sum().backward()
    for mine, theirs in ((m, tm), (b, tb)):
        np.testing.assert_allclose(mine.grad.numpy(), theirs.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a.grad.to_dense().numpy(), t.grad.to_dense().numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dim", [None, 0, 1, (0, 1), -1])
def test_sparse_sum_matches_torch(dim):
    idx, vals = _random_sparse(5, 4, 0.4, duplicates=2)
    a, t = _coo_pair(idx, vals, (5, 4), requires_grad=True)
    y = fg.sparse.sum(a) if dim is None else fg.sparse.sum(a, dim)
    ty = torch.sparse.sum(t) if dim is None else torch.sparse.sum(t, dim)
    np.testing.assert_allclose(_dense(y) if y.layout is fg.sparse_coo else y.numpy(),
                               _dense(ty) if ty.is_sparse else ty.detach().numpy(), rtol=1e-5, atol=1e-6)
    w = RNG.standard_normal(tuple(y.shape)).astype(np.float32)
    (y.to_dense() * fg.tensor(w)).sum().backward()
    (ty.to_dense() * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(a.grad.to_dense().numpy(), t.grad.to_dense().numpy(), rtol=1e-5, atol=1e-6)


def test_sparse_sum_hybrid_dense_dim():
    h = torch.tensor(RNG.standard_normal((4, 3)).astype(np.float32) * (RNG.random((4, 1)) < 0.6)).to_sparse(1)
    a = fg.sparse_coo_tensor(h.indices().numpy(), h.values().numpy(), (4, 3))
    for dim in (1, 0):
        y, ty = fg.sparse.sum(a, dim), torch.sparse.sum(h, dim)
        np.testing.assert_allclose(_dense(y) if y.layout is fg.sparse_coo else y.numpy(),
                                   _dense(ty) if ty.is_sparse else ty.numpy(), rtol=1e-6)


def test_add_sub_scalar_mul_and_their_gradients():
    i1, v1 = _random_sparse(4, 5, 0.3, duplicates=1)
    i2, v2 = _random_sparse(4, 5, 0.3)
    a, ta = _coo_pair(i1, v1, (4, 5), requires_grad=True)
    b, tb = _coo_pair(i2, v2, (4, 5), requires_grad=True)
    for y, ty in ((a + b, ta + tb), (a - b, ta - tb), (a * 3.0, ta * 3.0), (2.0 * b, 2.0 * tb), (-a, -ta),
                  (a / 4.0, ta / 4.0), (fg.add(a, b, alpha=0.5), torch.add(ta, tb, alpha=0.5))):
        assert y.layout is fg.sparse_coo
        np.testing.assert_allclose(_dense(y), _dense(ty), rtol=1e-6, atol=1e-6)
    w = RNG.standard_normal((4, 5)).astype(np.float32)
    ((a * 3.0 - b).to_dense() * fg.tensor(w)).sum().backward()
    ((ta * 3.0 - tb).to_dense() * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(a.grad.to_dense().numpy(), ta.grad.to_dense().numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(b.grad.to_dense().numpy(), tb.grad.to_dense().numpy(), rtol=1e-6, atol=1e-6)
    d_np = RNG.standard_normal((4, 5)).astype(np.float32)
    np.testing.assert_allclose((fg.tensor(d_np) + a).numpy(), (torch.tensor(d_np) + ta).detach().numpy(), rtol=1e-6)
    ca, cb = a.detach().coalesce().to_sparse_csr(), b.detach().coalesce().to_sparse_csr()
    np.testing.assert_allclose((ca + cb).to_dense().numpy(), _dense(ta + tb), rtol=1e-6, atol=1e-6)


def test_to_dense_and_to_sparse_gradients():
    x_np = RNG.standard_normal((3, 4)).astype(np.float32) * (RNG.random((3, 4)) < 0.5)
    x, tx = fg.tensor(x_np, requires_grad=True), torch.tensor(x_np, requires_grad=True)
    w = RNG.standard_normal((3, 4)).astype(np.float32)
    (fg.sparse.mm(x.to_sparse(), fg.ones(4, 2)).sum() + (x.to_sparse().to_dense() * fg.tensor(w)).sum()).backward()
    (torch.sparse.mm(tx.to_sparse(), torch.ones(4, 2)).sum() + (tx.to_sparse().to_dense() * torch.tensor(w)).sum()
     ).backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-6)
    a, t = _coo_pair([[0, 2, 0], [1, 3, 1]], [1, 2, 3], (3, 4), requires_grad=True)
    (a.to_dense() * fg.tensor(w)).sum().backward()
    (t.to_dense() * torch.tensor(w)).sum().backward()
    assert a.grad.layout is fg.sparse_coo
    np.testing.assert_allclose(a.grad.to_dense().numpy(), t.grad.to_dense().numpy())


def test_gradients_accumulate_over_backward_calls():
    a, t = _coo_pair([[0, 1], [1, 0]], [1, 2], (2, 2), requires_grad=True)
    b = fg.randn(2, 3)
    for _ in range(2):
        fg.sparse.mm(a, b).sum().backward()
        torch.sparse.mm(t, torch.tensor(b.numpy())).sum().backward()
    np.testing.assert_allclose(a.grad.to_dense().numpy(), t.grad.to_dense().numpy(), rtol=1e-6)
    c = fg.sparse_coo_tensor([[0, 1], [1, 0]], [1.0, 2.0], (2, 2), requires_grad=True)
    y = fg.sparse.mm(c, b).sum() + fg.mm(c, b).sum()  # sparse + dense gradients of one leaf: dense
    y.backward()
    pattern = np.array([[0, 1], [1, 0]])
    np.testing.assert_allclose(c.grad.numpy(), (np.ones((2, 3)) @ b.numpy().T) * (1 + pattern), rtol=1e-6)


@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("log", [False, True])
def test_sparse_softmax_matches_torch(dim, log):
    idx, vals = _random_sparse(5, 6, 0.4, duplicates=2)
    a, t = _coo_pair(idx, vals, (5, 6), requires_grad=True)
    f, tf = (fg.sparse.log_softmax, torch.sparse.log_softmax) if log else (fg.sparse.softmax, torch.sparse.softmax)
    # torch's backward with dim=-1 is wrong (its rows' gradients do not sum to 0; dim=1 gives the dense softmax's),
    # so torch runs with the dim made non-negative
    y, ty = f(a, dim), tf(t, dim % 2)
    np.testing.assert_allclose(_dense(y), _dense(ty), rtol=1e-5, atol=1e-6)
    w = RNG.standard_normal((5, 6)).astype(np.float32)
    (y.to_dense() * fg.tensor(w)).sum().backward()
    (ty.to_dense() * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(a.grad.to_dense().numpy(), t.grad.to_dense().numpy(), rtol=1e-5, atol=1e-5)


def test_transpose_and_clone_and_cast():
    a, t = _coo_pair([[0, 1, 2], [3, 0, 1]], [1, 2, 3], (3, 4))
    np.testing.assert_array_equal(_dense(a.t()), _dense(t.t()))
    np.testing.assert_array_equal(_dense(a.coalesce().to_sparse_csr().t()), _dense(t.t()))
    assert a.double().dtype == fg.float64 and a.clone()._nnz() == 3 and a.detach().layout is fg.sparse_coo


@pytest.mark.parametrize("op", [lambda s: s.exp(), lambda s: fg.relu(s), lambda s: s.sum(0).exp(),
                                lambda s: fg.cat([s, s]), lambda s: fg.nn.functional.linear(fg.randn(2, 3), s),
                                lambda s: fg.softmax(s, 0)])
def test_dense_ops_refuse_sparse_with_typeerror_naming_the_op(op):
    s = fg.sparse_coo_tensor([[0, 1], [1, 2]], [1.0, 2.0], (2, 3))
    with pytest.raises(TypeError, match="sparse"):
        op(s)


def test_tensor_level_refusals():
    s = fg.sparse_coo_tensor([[0], [1]], [1.0], (2, 3))
    for f in (lambda: s.numpy(), lambda: s[0], lambda: np.asarray(s), lambda: s.item(), lambda: s + 1.0,
              lambda: s * fg.ones(2, 3), lambda: np.ones((3, 2), np.float32) @ s):
        with pytest.raises(TypeError):
            f()
    with pytest.raises(RuntimeError, match="CPU only"):
        s.cuda()
    with pytest.raises(RuntimeError, match="CPU only"):
        s.to("cuda")


def test_bad_input_raises_clear_errors():
    with pytest.raises(IndexError, match="out of range"):
        fg.sparse_coo_tensor([[0, 5]], [1.0, 2.0], (3,))
    with pytest.raises(IndexError, match="out of range"):
        fg.sparse_coo_tensor([[0, -1]], [1.0, 2.0], (3,))
    with pytest.raises(TypeError, match="integers"):
        fg.sparse_coo_tensor(np.array([[0.5, 1.0]]), [1.0, 2.0], (3,))
    with pytest.raises(ValueError, match="entries"):
        fg.sparse_coo_tensor([[0, 1]], [1.0, 2.0, 3.0], (3,))
    with pytest.raises(ValueError, match="2-D"):
        fg.sparse_coo_tensor([0, 1], [1.0, 2.0], (3,))
    with pytest.raises(ValueError, match="dims"):
        fg.sparse_coo_tensor([[0, 1]], [1.0, 2.0], (3, 3))
    with pytest.raises(ValueError, match="crow_indices"):
        fg.sparse_csr_tensor([0, 2, 1], [0, 1], [1.0, 2.0], (2, 2))
    with pytest.raises(IndexError, match="col_indices"):
        fg.sparse_csr_tensor([0, 1, 2], [0, 7], [1.0, 2.0], (2, 2))
    with pytest.raises(ValueError, match="size"):
        fg.sparse_csr_tensor([0, 1, 2], [0, 1], [1.0, 2.0], (3, 2))
    with pytest.raises(RuntimeError, match="CPU only"):
        fg.sparse_coo_tensor([[0]], [1.0], (2,), device="cuda")
    s = fg.sparse_coo_tensor([[0, 1], [1, 0]], [1.0, 2.0], (2, 2))
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        fg.sparse.mm(s, fg.randn(3, 2))
    with pytest.raises(RuntimeError, match="dtype"):
        fg.sparse.mm(s, fg.randn(2, 2).double())
    with pytest.raises(RuntimeError, match="2-D"):
        fg.sparse.mm(fg.sparse_coo_tensor([[0, 1], [1, 0], [0, 0]], [1.0, 2.0], (2, 2, 2)), fg.randn(2, 2))
    with pytest.raises(RuntimeError, match="differ"):
        s + fg.sparse_coo_tensor([[0]], [1.0], (3,))


def test_requires_grad_on_integer_sparse_refused():
    with pytest.raises(RuntimeError, match="floating"):
        fg.sparse_coo_tensor([[0]], np.array([1], np.int64), (2,), requires_grad=True)


@pytest.mark.parametrize("csr", [False, True])
def test_values_requiring_grad_flow_through_the_constructor_and_values(csr):
    # learned edge weights of a graph: sparse_coo_tensor(indices, w) @ x, w's gradient as torch's
    idx = np.array([[0, 2, 1, 2, 2], [1, 0, 2, 0, 2]])  # (2, 0) twice: each duplicate gets the whole gradient
    if csr:
        idx = idx[:, [0, 2, 1, 4]]
    w_np = RNG.standard_normal(idx.shape[1]).astype(np.float32)
    x_np = RNG.standard_normal((3, 4)).astype(np.float32)
    w, tw = fg.tensor(w_np, requires_grad=True), torch.tensor(w_np, requires_grad=True)
    x, tx = fg.tensor(x_np, requires_grad=True), torch.tensor(x_np, requires_grad=True)
    if csr:
        crow = np.array([0, 1, 2, 4])
        s = fg.sparse_csr_tensor(crow, idx[1], w, (3, 3))
        ts = torch.sparse_csr_tensor(torch.tensor(crow), torch.tensor(idx[1]), tw, (3, 3))
        y, ty = fg.mm(s, x), torch.mm(ts, tx)
    else:
        s = fg.sparse_coo_tensor(idx, w, (3, 3))
        ts = torch.sparse_coo_tensor(torch.tensor(idx), tw, (3, 3))
        y, ty = fg.sparse.mm(s, x), torch.sparse.mm(ts, tx)
    assert s.requires_grad and s.grad_fn is not None
    g = RNG.standard_normal((3, 4)).astype(np.float32)
    (y * fg.tensor(g)).sum().backward()
    (ty * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_values_method_is_differentiable_and_shares_storage():
    a, t = _coo_pair([[0, 1, 2], [2, 0, 1]], [1, 2, 3], (3, 3), requires_grad=True)
    (a.coalesce().values() * fg.tensor([1.0, 2.0, 3.0])).sum().backward()
    (t.coalesce().values() * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert a.grad.layout is fg.sparse_coo
    np.testing.assert_allclose(a.grad.to_dense().numpy(), t.grad.to_dense().numpy())
    b = fg.sparse_coo_tensor([[0, 1]], [1.0, 2.0], (2,)).coalesce()
    b.values().numpy()[0] = 7.0  # torch's values() shares the storage
    assert b.to_dense().numpy()[0] == 7.0


def test_double_backward_through_sparse_mm_wrt_the_dense_operand():
    # a gradient penalty on graph features: d/dx sum((A @ x)^2) differentiated again, as torch
    idx, vals = _random_sparse(6, 5, 0.4, duplicates=2)
    a, t = _coo_pair(idx, vals, (6, 5))
    x_np = RNG.standard_normal((5, 3)).astype(np.float32)
    x, tx = fg.tensor(x_np, requires_grad=True), torch.tensor(x_np, requires_grad=True)
    for mm, tmm in ((fg.sparse.mm, torch.sparse.mm), (fg.mm, torch.mm)):
        x.grad, tx.grad = None, None
        (g,) = fg.autograd.grad((mm(a, x) ** 2).sum(), x, create_graph=True)
        (tg,) = torch.autograd.grad((tmm(t, tx) ** 2).sum(), tx, create_graph=True)
        np.testing.assert_allclose(g.detach().numpy(), tg.detach().numpy(), rtol=1e-5, atol=1e-5)
        (g ** 2).sum().backward()
        (tg ** 2).sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-4, atol=1e-4)
    s = fg.sparse_coo_tensor(idx, vals, (6, 5), requires_grad=True)
    with pytest.raises(NotImplementedError, match="sampled"):
        fg.autograd.grad((fg.sparse.mm(s, x) ** 2).sum(), s, create_graph=True)


def test_sparse_mm_same_bits_at_any_thread_count(threads):
    idx, vals = _random_sparse(300, 120, 0.05, duplicates=10)
    b_np = RNG.standard_normal((120, 33)).astype(np.float32)
    w = fg.tensor(RNG.standard_normal((300, 33)).astype(np.float32))
    runs = []
    for n in (1, 2, 3):
        threads(n)
        a = fg.sparse_coo_tensor(idx, vals, (300, 120), requires_grad=True)
        b = fg.tensor(b_np, requires_grad=True)
        y = fg.sparse.mm(a, b)
        (y * w).sum().backward()
        runs.append((y.numpy(), a.grad.coalesce().values().numpy(), b.grad.numpy()))
    for run in runs[1:]:
        for got, first in zip(run, runs[0]):
            assert np.array_equal(got, first)


def test_tensors_off_the_cpu_are_refused():
    s = fg.sparse_coo_tensor([[0, 1], [1, 0]], [1.0, 2.0], (2, 2))
    with pytest.raises(RuntimeError, match="CPU only"):
        fg.sparse.mm(s, fg.empty(2, 3, device="meta"))
    with pytest.raises(RuntimeError, match="CPU only"):
        fg.sparse_coo_tensor(fg.zeros(1, 1, dtype=fg.int64), fg.empty(1, device="meta"), (2,))


@pytest.mark.parametrize("m,k,n,density", [(5, 4, 6, 0.4), (1, 1, 1, 1.0), (40, 17, 33, 0.1)])
def test_sampled_addmm_matches_torch(m, k, n, density):
    arr = RNG.standard_normal((m, n)).astype(np.float32) * (RNG.random((m, n)) < density)
    arr[0, 0] = 1.0
    c, tc = fg.tensor(arr).to_sparse_csr().requires_grad_(True), torch.tensor(arr).to_sparse_csr().requires_grad_(True)
    a_np, b_np = RNG.standard_normal((m, k)).astype(np.float32), RNG.standard_normal((k, n)).astype(np.float32)
    a, ta = fg.tensor(a_np, requires_grad=True), torch.tensor(a_np, requires_grad=True)
    b, tb = fg.tensor(b_np, requires_grad=True), torch.tensor(b_np, requires_grad=True)
    y = fg.sparse.sampled_addmm(c, a, b, beta=0.5, alpha=2.0)
    ty = torch.sparse.sampled_addmm(tc, ta, tb, beta=0.5, alpha=2.0)
    assert y.layout is fg.sparse_csr
    np.testing.assert_allclose(y.to_dense().numpy(), ty.detach().to_dense().numpy(), rtol=1e-5, atol=1e-5)
    w = RNG.standard_normal((m, n)).astype(np.float32)
    (y.to_dense() * fg.tensor(w)).sum().backward()
    (ty.to_dense() * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), ta.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b.grad.numpy(), tb.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(c.grad.to_dense().numpy(), tc.grad.to_dense().numpy(), rtol=1e-5, atol=1e-5)


def test_sparse_mask_matches_torch():
    d_np = RNG.standard_normal((3, 4)).astype(np.float32)
    mask, tmask = _coo_pair([[0, 2, 0], [1, 3, 1]], [1, 1, 1], (3, 4))
    d, td = fg.tensor(d_np, requires_grad=True), torch.tensor(d_np, requires_grad=True)
    y, ty = d.sparse_mask(mask), td.sparse_mask(tmask.coalesce())
    np.testing.assert_allclose(_dense(y), _dense(ty))
    w = RNG.standard_normal((3, 4)).astype(np.float32)
    (y.to_dense() * fg.tensor(w)).sum().backward()
    (ty.to_dense() * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(d.grad.numpy(), td.grad.numpy())
