"""forgegrad.sparse against torch.sparse, the products beyond sparse @ dense: dense @ sparse (mm, matmul, @,
sparse.mm) with values and gradients, nn.EmbeddingBag(sparse=True) / F.embedding_bag(sparse=True) gradients and
optimizer steps, bad input."""
import numpy as np
import pytest
import torch

import forgegrad as fg

RNG = np.random.default_rng(11)


def _sparse_pair(m, n, density, layout, duplicates=0, dtype=np.float32, empty_rows=()):
    """A (m, n) sparse matrix in forgegrad and torch: COO (uncoalesced when duplicates) or CSR; rows in
    ``empty_rows`` hold nothing."""
    k = int(round(m * n * density)) + duplicates
    rows, cols = RNG.integers(0, m, k), RNG.integers(0, n, k)
    keep = ~np.isin(rows, empty_rows)
    idx, vals = np.stack([rows[keep], cols[keep]]), RNG.standard_normal(int(keep.sum())).astype(dtype)
    a = fg.sparse_coo_tensor(idx, vals, (m, n))
    t = torch.sparse_coo_tensor(torch.tensor(idx), torch.tensor(vals), (m, n), check_invariants=True)
    if layout == "csr":
        a, t = a.to_sparse_csr(), t.coalesce().to_sparse_csr()
    return a.detach().requires_grad_(), t.detach().requires_grad_()


def _np(x):
    if isinstance(x, torch.Tensor):
        x = x.to_dense() if x.layout != torch.strided else x
        return x.detach().numpy()
    return (x.to_dense() if x.layout is not fg.strided else x).detach().numpy()


MM = {"mm": (fg.mm, torch.mm), "matmul": (fg.matmul, torch.matmul), "@": (lambda a, b: a @ b, lambda a, b: a @ b),
      "sparse.mm": (fg.sparse.mm, torch.sparse.mm)}


@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("fn", list(MM))
@pytest.mark.parametrize("m,k,n,dup,empty", [(3, 7, 5, 0, ()), (1, 1, 1, 0, ()), (6, 9, 4, 5, (0, 3)),
                                             (5, 4, 3, 0, (0, 1, 2, 3))])
def test_dense_at_sparse_values_and_gradients_match_torch(layout, fn, m, k, n, dup, empty):
    s, ts = _sparse_pair(k, n, 0.4, layout, dup, empty_rows=empty)
    dn = RNG.standard_normal((m, k)).astype(np.float32)
    d, td = fg.tensor(dn, requires_grad=True), torch.tensor(dn, requires_grad=True)
    ours, ref = MM[fn]
    y, ty = ours(d, s), ref(td, ts)
    assert y.layout is fg.strided and ty.layout == torch.strided and tuple(y.shape) == tuple(ty.shape)
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    gn = RNG.standard_normal((m, n)).astype(np.float32)
    y.backward(fg.tensor(gn))
    np.testing.assert_allclose(d.grad.numpy(), gn @ _np(ts).T, rtol=1e-5, atol=1e-5)
    if fn == "sparse.mm":  # the sparse operand's gradient: sparse, on its pattern, its layout
        assert s.grad.layout is s.layout
        if layout == "coo":  # torch 2.13's backward fails for CSR (SparseCsc); COO compared with torch's
            ty.backward(torch.tensor(gn))
            assert ts.grad.layout == torch.sparse_coo
            np.testing.assert_allclose(_np(s.grad), _np(ts.grad), rtol=1e-5, atol=1e-5)
        pattern = np.zeros((k, n), bool)
        c = s.detach().to_sparse().coalesce() if layout == "coo" else s.detach()
        if layout == "coo":
            pattern[tuple(c.indices().numpy())] = True
        else:
            crow, col = c.crow_indices().numpy(), c.col_indices().numpy()
            pattern[np.repeat(np.arange(k), np.diff(crow)), col] = True
        np.testing.assert_allclose(_np(s.grad), np.where(pattern, dn.T @ gn, 0), rtol=1e-5, atol=1e-5)
    else:  # torch.mm / matmul / @: a dense gradient d^T @ G
        ty.backward(torch.tensor(gn))
        assert s.grad.layout is fg.strided and ts.grad.layout == torch.strided
        np.testing.assert_allclose(s.grad.numpy(), ts.grad.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_vector_at_sparse_and_float64(layout):
    s, ts = _sparse_pair(6, 4, 0.5, layout, 2, dtype=np.float64)
    vn = RNG.standard_normal(6)
    v, tv = fg.tensor(vn, requires_grad=True), torch.tensor(vn, requires_grad=True)
    y, ty = fg.matmul(v, s), torch.matmul(tv, ts)
    assert y.shape == (4,) and y.dtype == fg.float64
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-12)
    y.sum().backward()
    ty.sum().backward()
    np.testing.assert_allclose(v.grad.numpy(), tv.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(s.grad.numpy(), ts.grad.numpy(), rtol=1e-12)


def test_dense_at_sparse_create_graph_in_dense_operand():
    s, ts = _sparse_pair(5, 4, 0.5, "coo")
    s, ts = s.detach(), ts.detach()
    dn = RNG.standard_normal((3, 5)).astype(np.float32)
    d, td = fg.tensor(dn, requires_grad=True), torch.tensor(dn, requires_grad=True)
    (g,) = fg.autograd.grad((d @ s).pow(2).sum(), d, create_graph=True)
    (tg,) = torch.autograd.grad((td @ ts).pow(2).sum(), td, create_graph=True)
    np.testing.assert_allclose(g.detach().numpy(), tg.detach().numpy(), rtol=1e-5, atol=1e-5)
    (gg,) = fg.autograd.grad(g.sum(), d)
    (tgg,) = torch.autograd.grad(tg.sum(), td)
    np.testing.assert_allclose(gg.numpy(), tgg.numpy(), rtol=1e-4, atol=1e-4)


def test_dense_at_sparse_bad_input_raises_as_torch():
    s, ts = _sparse_pair(4, 5, 0.5, "coo")
    for bad in (np.ones((3, 5), np.float32),):
        with pytest.raises(RuntimeError):
            torch.mm(torch.tensor(bad), ts)
        with pytest.raises(RuntimeError, match="cannot be multiplied"):
            fg.mm(fg.tensor(bad), s)
        with pytest.raises(RuntimeError, match="cannot be multiplied"):
            fg.tensor(bad) @ s.to_sparse_csr()
    with pytest.raises(RuntimeError):
        torch.mm(torch.ones(3, 4, dtype=torch.float64), ts)
    with pytest.raises(RuntimeError, match="dtype"):
        fg.mm(fg.ones(3, 4, dtype=fg.float64), s)
    hybrid = fg.tensor(np.ones((4, 5), np.float32)).to_sparse(1)
    with pytest.raises(RuntimeError, match="2 sparse dims"):
        fg.ones(3, 4) @ hybrid
    with pytest.raises(TypeError):
        np.ones((3, 4), np.float32) @ s
