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


# ---- sparse @ sparse --------------------------------------------------------------------------------------------
def _pattern_of(s):
    """A (coalesced COO) or CSR's structural pattern as a dense bool mask."""
    c = s.detach()
    mask = np.zeros(tuple(c.shape), bool)
    if c.layout is fg.sparse_csr:
        crow = c.crow_indices().numpy()
        mask[np.repeat(np.arange(c.shape[0]), np.diff(crow)), c.col_indices().numpy()] = True
    else:
        mask[tuple(c.coalesce().indices().numpy())] = True
    return mask


SHAPES = [(4, 6, 5, 0.3, 0, ()), (1, 1, 1, 1.0, 0, ()), (7, 5, 3, 0.4, 6, (1, 4)), (3, 4, 2, 0.0, 0, ()),
          (6, 8, 9, 0.25, 3, (0,))]


@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("m,k,n,density,dup,empty", SHAPES)
def test_sparse_at_sparse_values_match_torch(layout, m, k, n, density, dup, empty):
    a, ta = _sparse_pair(m, k, density, layout, dup, empty_rows=empty)
    b, tb = _sparse_pair(k, n, 0.35, layout, dup)
    for ours, ref in ((fg.sparse.mm, torch.sparse.mm), (fg.mm, torch.mm), (lambda x, y: x @ y, lambda x, y: x @ y)):
        with torch.no_grad():
            ty = ref(ta, tb)
        y = ours(a.detach(), b.detach())
        assert y.layout is a.layout and tuple(y.shape) == (m, n)
        if layout == "coo":
            assert y.is_coalesced() and ty.is_coalesced()
            np.testing.assert_array_equal(y.indices().numpy(), ty.indices().numpy())
            np.testing.assert_allclose(y.values().numpy(), ty.values().numpy(), rtol=1e-5, atol=1e-6)
        else:  # the same entries per row; ours sorts each row's columns, torch's leaves them in product order
            crow = y.crow_indices().numpy()
            np.testing.assert_array_equal(crow, ty.crow_indices().numpy())
            rows = np.repeat(np.arange(m), np.diff(crow))
            ours_order = np.lexsort((y.col_indices().numpy(), rows))
            ref_order = np.lexsort((ty.col_indices().numpy(), rows))
            assert np.all(np.diff(rows * n + y.col_indices().numpy()) > 0)
            np.testing.assert_array_equal(y.col_indices().numpy()[ours_order], ty.col_indices().numpy()[ref_order])
            np.testing.assert_allclose(y.values().numpy()[ours_order], ty.values().numpy()[ref_order], rtol=1e-5,
                                       atol=1e-6)


def test_sparse_at_sparse_keeps_cancelled_and_sums_duplicate_products():
    a = fg.sparse_coo_tensor([[0, 0, 0], [0, 1, 1]], [1.0, -1.0, 0.5], (1, 2))
    b = fg.sparse_coo_tensor([[0, 1], [0, 0]], [1.0, 2.0], (2, 1))
    ta = torch.sparse_coo_tensor(torch.tensor([[0, 0, 0], [0, 1, 1]]), torch.tensor([1.0, -1.0, 0.5]), (1, 2))
    tb = torch.sparse_coo_tensor(torch.tensor([[0, 1], [0, 0]]), torch.tensor([1.0, 2.0]), (2, 1))
    y, ty = fg.sparse.mm(a, b), torch.sparse.mm(ta, tb)
    assert y._nnz() == ty._nnz() == 1
    np.testing.assert_allclose(y.values().numpy(), ty.values().numpy())  # 1 - 2 + 1 = 0, kept


@pytest.mark.parametrize("fn", ["mm", "sparse.mm"])
@pytest.mark.parametrize("m,k,n,density,dup,empty", SHAPES)
def test_sparse_at_sparse_coo_gradients_match_torch(fn, m, k, n, density, dup, empty):
    a, ta = _sparse_pair(m, k, density, "coo", dup, empty_rows=empty)
    b, tb = _sparse_pair(k, n, 0.35, "coo", dup)
    ours, ref = MM[fn]
    y, ty = ours(a, b), ref(ta, tb)
    wn = RNG.standard_normal((m, n)).astype(np.float32)
    (y.to_dense() * fg.tensor(wn)).sum().backward()
    (ty.to_dense() * torch.tensor(wn)).sum().backward()
    for g, tg in ((a.grad, ta.grad), (b.grad, tb.grad)):
        assert g.layout is fg.sparse_coo and tg.layout == torch.sparse_coo
        np.testing.assert_allclose(_np(g), _np(tg), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fn", ["mm", "sparse.mm"])
def test_sparse_at_sparse_csr_gradients(fn):
    """torch 2.13 has no CSR @ CSR backward: checked against the dense products (at the output's pattern)."""
    a, ta = _sparse_pair(5, 6, 0.4, "csr")
    b, tb = _sparse_pair(6, 4, 0.4, "csr")
    y = MM[fn][0](a, b)
    wn = RNG.standard_normal((5, 4)).astype(np.float32)
    (y.to_dense() * fg.tensor(wn)).sum().backward()
    g = np.where(_pattern_of(y), wn, 0)  # the output's gradient at its pattern
    an, bn = _np(ta), _np(tb)
    ga, gb = g @ bn.T, an.T @ g
    if fn == "sparse.mm":
        ga, gb = np.where(_pattern_of(a), ga, 0), np.where(_pattern_of(b), gb, 0)
    assert a.grad.layout is fg.sparse_csr and b.grad.layout is fg.sparse_csr
    np.testing.assert_allclose(_np(a.grad), ga, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_np(b.grad), gb, rtol=1e-5, atol=1e-5)


def test_sparse_at_sparse_bad_input_raises_as_torch():
    a = fg.tensor(np.ones((2, 3), np.float32)).to_sparse()
    ta = torch.ones(2, 3).to_sparse()
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        torch.sparse.mm(ta, torch.ones(4, 2).to_sparse())
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        fg.sparse.mm(a, fg.tensor(np.ones((4, 2), np.float32)).to_sparse())
    with pytest.raises(RuntimeError, match="does not match"):
        torch.sparse.mm(ta, torch.ones(3, 2, dtype=torch.float64).to_sparse())
    with pytest.raises(RuntimeError, match="does not match"):
        fg.sparse.mm(a, fg.ones(3, 2, dtype=fg.float64).to_sparse())
    with pytest.raises(RuntimeError):
        torch.mm(ta, torch.ones(3, 2).to_sparse_csr())
    with pytest.raises(RuntimeError, match="one layout"):
        fg.mm(a, fg.ones(3, 2).to_sparse_csr())
    with pytest.raises(RuntimeError, match="2 sparse dims"):
        fg.sparse.mm(a, fg.ones(3, 2).to_sparse(1))


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_sparse_at_sparse_dense_output_gradient(layout):
    """y.backward(dense G): mm gives dense G @ b^T and a^T @ G; sparse.mm those at the operands' patterns."""
    a, ta = _sparse_pair(4, 5, 0.4, layout, 2)
    b, tb = _sparse_pair(5, 3, 0.4, layout)
    an, bn = _np(ta), _np(tb)
    gn = RNG.standard_normal((4, 3)).astype(np.float32)
    for fn, sampled in ((fg.mm, False), (fg.sparse.mm, True)):
        a.grad = b.grad = None
        fn(a, b).backward(fg.tensor(gn))
        ga, gb = gn @ bn.T, an.T @ gn
        if sampled:
            ga, gb = np.where(_pattern_of(a), ga, 0), np.where(_pattern_of(b), gb, 0)
            assert a.grad.layout is a.layout
        np.testing.assert_allclose(_np(a.grad), ga, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(_np(b.grad), gb, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ratio", [0, 10 ** 9])  # 0: the products summed by sorting; huge: by dense row blocks
@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_sparse_at_sparse_reference_summation_paths_match_torch(ratio, layout, monkeypatch):
    """The numpy reference (the path of dtypes the C++ kernel does not take, and its oracle), both ways it sums."""
    from forgegrad.sparse import _spgemm
    monkeypatch.setattr(_spgemm, "DENSE_ACCUMULATOR_RATIO", ratio)
    monkeypatch.setattr(_spgemm, "_BLOCK", 7)  # several row blocks, a block of one row too
    a, ta = _sparse_pair(9, 6, 0.4, layout, 4, empty_rows=(2, 8))
    b, tb = _sparse_pair(6, 5, 0.4, layout, 3)
    y = _spgemm.spgemm_reference(_spgemm._csr(a.detach()._data), _spgemm._csr(b.detach()._data))
    with torch.no_grad():
        ty = torch.sparse.mm(ta, tb)
    assert y.nnz == ty._nnz()
    np.testing.assert_allclose(y.to_dense(), _np(ty), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_batched_dense_matmul_sparse_matches_torch(layout):
    s, ts = _sparse_pair(4, 5, 0.5, layout, 2)
    dn = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    d, td = fg.tensor(dn, requires_grad=True), torch.tensor(dn, requires_grad=True)
    y, ty = fg.matmul(d, s), torch.matmul(td, ts)
    assert tuple(y.shape) == tuple(ty.shape) == (2, 3, 5)
    np.testing.assert_allclose(y.detach().numpy(), ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    gn = RNG.standard_normal((2, 3, 5)).astype(np.float32)
    y.backward(fg.tensor(gn))
    ty.backward(torch.tensor(gn))
    np.testing.assert_allclose(d.grad.numpy(), td.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_np(s.grad), _np(ts.grad), rtol=1e-5, atol=1e-5)
