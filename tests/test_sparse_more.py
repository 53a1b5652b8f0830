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


# ---- EmbeddingBag(sparse=True) ------------------------------------------------------------------------------
BAGS = {  # (input, offsets, include_last_offset): empty bags, a bag of one, repeated rows, a 2-D input
    "offsets": ([3, 1, 3, 0, 6, 6, 2, 3, 5], [0, 3, 3, 4, 8], False),
    "last_offset": ([4, 4, 1, 0, 2], [0, 2, 2, 5], True),
    "2d": ([[1, 6, 1], [0, 2, 6], [6, 6, 6], [5, 5, 4]], None, False),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("padding_idx", [None, 6])
@pytest.mark.parametrize("mode,psw", [("sum", False), ("sum", True), ("mean", False)])  # psw: mode sum only
@pytest.mark.parametrize("bags", list(BAGS))
def test_embedding_bag_sparse_gradient_matches_torch(bags, mode, psw, padding_idx, dtype):
    inp, off, last = BAGS[bags]
    wn = RNG.standard_normal((7, 5)).astype(dtype)
    w, tw = fg.tensor(wn, requires_grad=True), torch.tensor(wn, requires_grad=True)
    pn = RNG.standard_normal(np.shape(inp)).astype(dtype) if psw else None
    p = None if pn is None else fg.tensor(pn, requires_grad=True)
    tp = None if pn is None else torch.tensor(pn, requires_grad=True)
    kw = dict(mode=mode, sparse=True, include_last_offset=last, padding_idx=padding_idx)
    y = fg.nn.functional.embedding_bag(fg.tensor(inp), w, None if off is None else fg.tensor(off),
                                       per_sample_weights=p, **kw)
    ty = torch.nn.functional.embedding_bag(torch.tensor(inp), tw, None if off is None else torch.tensor(off),
                                           per_sample_weights=tp, **kw)
    np.testing.assert_allclose(y.detach().numpy(), ty.detach().numpy(), rtol=1e-5, atol=1e-6)
    gn = RNG.standard_normal(tuple(ty.shape)).astype(dtype)
    y.backward(fg.tensor(gn))
    ty.backward(torch.tensor(gn))
    assert w.grad.layout is fg.sparse_coo and tw.grad.layout == torch.sparse_coo
    assert not w.grad.is_coalesced() or w.grad._nnz() <= 1
    np.testing.assert_array_equal(w.grad._indices().numpy(), tw.grad._indices().numpy())
    np.testing.assert_allclose(w.grad._values().numpy(), tw.grad._values().numpy(), rtol=1e-5, atol=1e-6)
    assert w.grad.dtype == w.dtype
    if psw:
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("opt", ["SparseAdam", "SGD"])
def test_embedding_bag_sparse_trains_as_torch(opt):
    wn = RNG.standard_normal((9, 4)).astype(np.float32)
    m = fg.nn.EmbeddingBag(9, 4, mode="mean", sparse=True, _weight=fg.tensor(wn.copy()))
    tm = torch.nn.EmbeddingBag(9, 4, mode="mean", sparse=True, _weight=torch.tensor(wn.copy()))
    assert m.sparse and tm.sparse
    make = {"SparseAdam": lambda lib, ps: lib.optim.SparseAdam(ps, lr=0.05),
            "SGD": lambda lib, ps: lib.optim.SGD(ps, lr=0.1, momentum=0.9)}[opt]
    o, to = make(fg, list(m.parameters())), make(torch, list(tm.parameters()))
    for step in range(4):
        inp = RNG.integers(0, 9, 10)
        off = np.sort(RNG.choice(np.arange(1, 10), 3, replace=False))
        off = np.r_[0, off]
        tgt = RNG.standard_normal((4, 4)).astype(np.float32)
        for lib, mod, op in ((fg, m, o), (torch, tm, to)):
            op.zero_grad()
            loss = ((mod(lib.tensor(inp), lib.tensor(off)) - lib.tensor(tgt)) ** 2).sum()
            loss.backward()
            op.step()
        np.testing.assert_allclose(m.weight.detach().numpy(), tm.weight.detach().numpy(), rtol=1e-5, atol=1e-5)


def test_embedding_bag_sparse_refusals_as_torch():
    w = fg.randn(5, 3, requires_grad=True)
    with pytest.raises(ValueError, match="max mode does not support sparse"):
        torch.nn.functional.embedding_bag(torch.tensor([1, 2]), torch.randn(5, 3), torch.tensor([0]), mode="max",
                                          sparse=True)
    with pytest.raises(ValueError, match="max mode does not support sparse"):
        fg.nn.functional.embedding_bag(fg.tensor([1, 2]), w, fg.tensor([0]), mode="max", sparse=True)
    with pytest.raises(ValueError, match="max mode does not support sparse"):
        fg.nn.EmbeddingBag(5, 3, mode="max", sparse=True)(fg.tensor([[1, 2]]))
    with pytest.raises(RuntimeError, match="scale_grad_by_freq not supported with sparse"):
        fg.nn.EmbeddingBag(5, 3, sparse=True, scale_grad_by_freq=True)(fg.tensor([[1, 2]])).sum().backward()
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        m = fg.nn.EmbeddingBag(5, 3, sparse=True)
        m(fg.tensor([[1, 2]])).sum().backward()
        fg.optim.Adam(m.parameters()).step()
    with pytest.raises(TypeError, match="sparse"):
        fg.nn.functional.embedding_bag(fg.tensor([1, 2]), w, fg.tensor([0]), sparse="yes")
