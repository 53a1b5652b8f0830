"""sparse @ sparse through forgegrad._C.sparse.spgemm (cpp/kernels/spgemm.cpp): values and patterns against torch
(COO and CSR, float32 and float64, odd shapes, empty rows, no nonzeros, cancelling sums), gradients against torch,
the same bits as the numpy reference (_spgemm.spgemm_reference) and at 1, 2 and 3 threads on both accumulators
(dense and hash), other dtypes on the numpy path, and the binding's refusals."""
import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import _C
from forgegrad.sparse import _spgemm
from forgegrad.sparse._storage import CSR


def _random_csr(rng, m, n, density, dtype=np.float32, empty_rows=(), dup=0, cols=None):
    """A CSR storage (m, n) with about m*n*density entries (``dup`` more, repeating some (row, col): duplicates
    kept in the CSR, unsorted within rows), columns drawn from ``cols`` when given."""
    k = int(round(m * n * density))
    rows = rng.integers(0, m, k + dup) if m else np.zeros(0, np.int64)
    c = rng.choice(cols, k + dup) if cols is not None else rng.integers(0, max(n, 1), k + dup)
    if dup and k:
        rows[k:], c[k:] = rows[:dup], c[:dup]
    keep = ~np.isin(rows, empty_rows)
    rows, c = rows[keep], c[keep]
    order = np.argsort(rows, kind="stable")  # rows grouped, columns left in draw order
    crow = np.zeros(m + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=m), out=crow[1:])
    vals = rng.standard_normal(rows.size).astype(dtype)
    return CSR(crow, c[order].astype(np.int64), vals, (m, n))


def _torch_csr(s: CSR):
    """torch's CSR of s with duplicates summed and columns sorted (the invariants its kernels assume)."""
    ind = torch.tensor(np.stack([s.rows(), s.col]))
    coo = torch.sparse_coo_tensor(ind, torch.tensor(s.values), s.shape, check_invariants=True)
    return coo.coalesce().to_sparse_csr()


def _dense(s: CSR):
    out = np.zeros(s.shape, np.float64)
    np.add.at(out, (s.rows(), s.col), s.values.astype(np.float64))
    return out


def _assert_same(c: CSR, ref: CSR):
    for mine, want in ((c.crow, ref.crow), (c.col, ref.col), (c.values, ref.values)):
        assert mine.dtype == want.dtype
        np.testing.assert_array_equal(mine, want)


CASES = [  # m, k, n, density of a, density of b, empty rows of a, duplicates
    (1, 1, 1, 1.0, 1.0, (), 0), (5, 7, 3, 0.4, 0.5, (1, 3), 2), (17, 9, 23, 0.3, 0.2, (0, 16), 4),
    (40, 33, 61, 0.1, 0.15, (), 0), (3, 4, 2, 0.0, 0.5, (), 0), (4, 6, 5, 0.5, 0.0, (), 0), (0, 3, 4, 0.5, 0.5, (), 0),
    (4, 0, 3, 0.5, 0.5, (), 0), (3, 5, 0, 0.5, 0.5, (), 0), (64, 50, 4100, 0.1, 0.004, (5,), 3),
    (200, 40, 20000, 0.05, 0.0008, (3,), 2)]  # rows of few columns over many bitmap words: sorted, not scanned


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,k,n,da,db,empty,dup", CASES)
def test_kernel_matches_torch_and_the_numpy_reference_bit_for_bit(rng, monkeypatch, dtype, m, k, n, da, db, empty,
                                                                  dup):
    monkeypatch.setattr(_spgemm, "DENSE_ACCUMULATOR_RATIO", 10 ** 9)  # the reference's float64 dense-rows sums
    a = _random_csr(rng, m, k, da, dtype, empty, dup)
    b = _random_csr(rng, k, n, db, dtype, dup=dup)
    c = _spgemm.spgemm(a, b)
    assert c.shape == (m, n) and c.values.dtype == dtype
    assert np.all(np.diff(c.rows() * max(n, 1) + c.col) > 0)  # sorted, distinct columns per row
    # the reference's dense rows sum each entry's products in float64 in product order, as the kernel: same bits
    _assert_same(c, _spgemm.spgemm_reference(a, b))
    with torch.no_grad():
        t = torch.sparse.mm(_torch_csr(a), _torch_csr(b))
    np.testing.assert_array_equal(c.crow, t.crow_indices().numpy())  # the same nnz per row as torch's
    rows = c.rows()
    t_order = np.lexsort((t.col_indices().numpy(), rows))  # torch leaves a row's columns in product order
    np.testing.assert_array_equal(c.col, t.col_indices().numpy()[t_order])
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(c.values, t.values().numpy()[t_order], rtol=tol, atol=tol)
    np.testing.assert_allclose(_dense(c), _dense(a) @ _dense(b), rtol=tol, atol=tol)


@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_public_mm_matches_torch_on_both_layouts(rng, layout, dtype):
    an = rng.standard_normal((13, 11)) * (rng.random((13, 11)) < 0.3)
    bn = rng.standard_normal((11, 29)) * (rng.random((11, 29)) < 0.3)
    an[[2, 7]] = 0
    ta, tb = torch.tensor(an, dtype=dtype).to_sparse(), torch.tensor(bn, dtype=dtype).to_sparse()
    if layout == "csr":
        ta, tb = ta.to_sparse_csr(), tb.to_sparse_csr()
    a, b = fg.tensor(ta.to_dense().numpy()).to_sparse(), fg.tensor(tb.to_dense().numpy()).to_sparse()
    if layout == "csr":
        a, b = a.to_sparse_csr(), b.to_sparse_csr()
    for ours, ref in ((fg.sparse.mm, torch.sparse.mm), (fg.mm, torch.mm)):
        with torch.no_grad():
            ty = ref(ta, tb)
        y = ours(a, b)
        assert y.layout is a.layout and y.dtype == a.dtype and y._nnz() == ty._nnz()
        tol = 1e-5 if dtype == torch.float32 else 1e-12
        np.testing.assert_allclose(y.to_dense().numpy(), ty.to_dense().numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_cancelling_sums_stay_as_explicit_zeros(layout):
    # a = [[1, -1], [3, 0]], b = [[2, 1], [2, 0]]: C[0, 0] = 1*2 + (-1)*2 = 0 (kept), C[0, 1] = 1, C[1] = [6, 3]
    ind_a, val_a = [[0, 0, 1], [0, 1, 0]], [1.0, -1.0, 3.0]
    ind_b, val_b = [[0, 1, 0], [0, 0, 1]], [2.0, 2.0, 1.0]
    for dtype, tdtype in ((np.float32, torch.float32), (np.float64, torch.float64)):
        a = fg.sparse_coo_tensor(ind_a, np.array(val_a, dtype), (2, 2))
        b = fg.sparse_coo_tensor(ind_b, np.array(val_b, dtype), (2, 2))
        ta = torch.sparse_coo_tensor(torch.tensor(ind_a), torch.tensor(val_a, dtype=tdtype), (2, 2),
                                     check_invariants=True).coalesce()
        tb = torch.sparse_coo_tensor(torch.tensor(ind_b), torch.tensor(val_b, dtype=tdtype), (2, 2),
                                     check_invariants=True).coalesce()
        if layout == "csr":
            a, b, ta, tb = a.to_sparse_csr(), b.to_sparse_csr(), ta.to_sparse_csr(), tb.to_sparse_csr()
        y, ty = fg.sparse.mm(a, b), torch.sparse.mm(ta, tb)
        assert y._nnz() == ty._nnz() == 4
        vals = y.values().numpy()
        assert vals[0] == 0 and vals.dtype == dtype  # kept, as torch keeps it
        np.testing.assert_array_equal(np.sort(vals), np.sort(ty.values().numpy()))


def test_wide_outputs_take_the_hash_and_match_the_reference_bit_for_bit(rng, monkeypatch):
    """N above the dense accumulator's limit (2^21 columns): every task hashes. The columns are drawn from 300
    values spread over N so that products collide; the reference sums densely in float64 (as the kernel)."""
    n = 2_500_000
    cols = rng.choice(n, 300, replace=False)
    monkeypatch.setattr(_spgemm, "DENSE_ACCUMULATOR_RATIO", 10 ** 9)  # the reference's dense rows, a row a block
    for dtype in (np.float32, np.float64):
        a = _random_csr(rng, 3, 40, 0.5, dtype, dup=3)
        b = _random_csr(rng, 40, 300, 0.3, dtype, dup=5)
        b = CSR(b.crow, cols[b.col], b.values, (40, n))
        _assert_same(_spgemm.spgemm(a, b), _spgemm.spgemm_reference(a, b))


def _thread_cases(rng):
    """One product per accumulator: N = 300 (dense), N = 120000 (dense or hash per task: it depends on the cut,
    hence on the thread count) and N = 2.3e6 (hash)."""
    out = []
    for n in (300, 120_000, 2_300_000):
        cols = np.unique(rng.integers(0, n, 400))
        a = _random_csr(rng, 301, 97, 0.08, np.float32, empty_rows=range(0, 301, 7), dup=50)
        b = _random_csr(rng, 97, cols.size, 0.2, np.float32, dup=30)
        b = CSR(b.crow, cols[b.col], b.values, (97, n))
        out.append((a, b))
    return out


def test_same_bits_at_one_two_and_three_threads(rng, threads):
    cases = _thread_cases(rng)
    results = {}
    for t in (1, 2, 3):
        threads(t)
        results[t] = [_spgemm.spgemm(a, b) for a, b in cases] + [
            _spgemm.spgemm(a.with_values(a.values.astype(np.float64)), b.with_values(b.values.astype(np.float64)))
            for a, b in cases]
    for t in (2, 3):
        for mine, ref in zip(results[t], results[1]):
            _assert_same(mine, ref)


@pytest.mark.parametrize("fn", ["mm", "sparse.mm"])
@pytest.mark.parametrize("m,k,n,empty", [(6, 9, 7, (0, 4)), (1, 5, 1, ()), (11, 3, 13, (2,))])
def test_float64_coo_gradients_match_torch(rng, fn, m, k, n, empty):
    ours_fn, ref_fn = {"mm": (fg.mm, torch.mm), "sparse.mm": (fg.sparse.mm, torch.sparse.mm)}[fn]
    an = rng.standard_normal((m, k)) * (rng.random((m, k)) < 0.4)
    an[list(empty)] = 0
    bn = rng.standard_normal((k, n)) * (rng.random((k, n)) < 0.4)
    a, b = fg.tensor(an).to_sparse().requires_grad_(), fg.tensor(bn).to_sparse().requires_grad_()
    ta, tb = torch.tensor(an).to_sparse().requires_grad_(), torch.tensor(bn).to_sparse().requires_grad_()
    w = rng.standard_normal((m, n))
    (ours_fn(a, b).to_dense() * fg.tensor(w)).sum().backward()
    (ref_fn(ta, tb).to_dense() * torch.tensor(w)).sum().backward()
    for g, tg in ((a.grad, ta.grad), (b.grad, tb.grad)):
        assert g.layout is fg.sparse_coo and g.dtype == fg.float64
        np.testing.assert_allclose(g.to_dense().numpy(), tg.to_dense().numpy(), rtol=1e-12, atol=1e-12)


def test_other_dtypes_keep_the_numpy_path():
    an = np.array([[1, 0, 2], [0, 0, 0], [3, -1, 0]], np.int64)
    bn = np.array([[0, 4], [5, 0], [1, 1]], np.int64)
    y = fg.sparse.mm(fg.tensor(an).to_sparse(), fg.tensor(bn).to_sparse())  # torch 2.13: not for int64 on CPU
    assert y.dtype == fg.int64
    np.testing.assert_array_equal(y.to_dense().numpy(), an @ bn)
    h = _spgemm.spgemm(CSR(np.array([0, 2]), np.array([0, 1]), np.array([1.5, 2.0], np.float16), (1, 2)),
                       CSR(np.array([0, 1, 2]), np.array([0, 0]), np.array([2.0, 0.25], np.float16), (2, 1)))
    assert h.values.dtype == np.float16 and h.values.tolist() == [3.5]


def _args():
    a_crow, a_col, a_val = np.array([0, 2, 2, 3]), np.array([1, 3, 0]), np.array([1.0, 2.0, 3.0], np.float32)
    b_crow, b_col, b_val = np.array([0, 1, 1, 3, 4]), np.array([0, 4, 1, 2]), np.ones(4, np.float32)
    return [a_crow, a_col, a_val, b_crow, b_col, b_val, 5]


def _with(i, value):
    args = _args()
    args[i] = value
    return args


def test_binding_refuses_bad_arguments():
    crow, col, vals = _C.sparse.spgemm(*_args())
    np.testing.assert_array_equal(crow, [0, 1, 1, 2])  # row 0: a_03 * b_32; row 2: a_20 * b_00
    np.testing.assert_array_equal(col, [2, 0])
    np.testing.assert_array_equal(vals, np.array([2.0, 3.0], np.float32))
    bad = [
        (_with(0, np.array([0, 2, 1, 3])), ValueError, "a_crow_indices must be non-decreasing"),
        (_with(0, np.array([1, 2, 2, 3])), ValueError, "a_crow_indices\\[0\\] must be 0"),
        (_with(0, np.array([0, 2, 2, 4])), ValueError, "a_crow_indices\\[-1\\]"),
        (_with(0, np.zeros(0, np.int64)), ValueError, "a_crow_indices must have at least one entry"),
        (_with(3, np.array([0, 1, 3, 1, 4])), ValueError, "b_crow_indices must be non-decreasing"),
        (_with(3, np.array([0, 1, 1, 3])), IndexError, "a_col_indices\\[1\\] = 3 is out of range for 3 columns"),
        (_with(1, np.array([1, -1, 0])), IndexError, "a_col_indices\\[1\\] = -1 is out of range"),
        (_with(4, np.array([0, 5, 1, 2])), IndexError, "b_col_indices\\[1\\] = 5 is out of range for 5 columns"),
        (_with(6, 4), IndexError, "b_col_indices"),
        (_with(6, -1), ValueError, "ncols must be >= 0"),
        (_with(1, np.array([1, 3, 0], np.int32)), TypeError, "a_col_indices must be a int64"),
        (_with(3, np.array([0, 1, 1, 3, 4], np.float64)), TypeError, "b_crow_indices"),
        (_with(2, np.array([1, 2, 3], np.int64)), TypeError, "a_values must be a float32 or float64"),
        (_with(5, np.ones(4, np.float64)), TypeError, "b_values"),
        (_with(2, np.ones(2, np.float32)), ValueError, "a_values must have shape \\(3,\\)"),
        (_with(5, np.ones(5, np.float32)), ValueError, "b_values must have shape \\(4,\\)"),
        (_with(2, np.ones((3, 1), np.float32)), ValueError, "a_values must be 1-D"),
        (_with(4, np.zeros(0, np.int64)), ValueError, "b_crow_indices\\[-1\\] must equal the number of b_col"),
        (_with(5, np.ones(8, np.float32)[::2]), ValueError, "b_values must be C-contiguous"),
    ]
    for args, exc, match in bad:
        with pytest.raises(exc, match=match):
            _C.sparse.spgemm(*args)
