"""forgegrad._C.sparse (cpp/kernels/per_isa/spmm.cpp): CSR SpMM and SDDMM against the numpy oracle, the same bits at
every thread count and on every SIMD path, and every bad argument refused with a Python error."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad import _C
from forgegrad.sparse import _kernels
from forgegrad.sparse._storage import csr_transpose, dense_to_coo

_ISAS = ("scalar", "avx2", "avx512")  # every path this CPU can run (tests/conftest.py's rule)
_SIMD_PATHS = [p for p in _ISAS if _ISAS.index(p) <= _ISAS.index(fg.cpu_info()["detected_isa"])]


def _csr(rng, m, k, density, empty_rows=()):
    a = (rng.standard_normal((m, k)) * (rng.random((m, k)) < density)).astype(np.float32)
    a[list(empty_rows)] = 0
    return dense_to_coo(a).to_csr(), a


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (3, 7, 1), (37, 29, 19), (70, 40, 130), (5, 4, 0), (0, 3, 4)])
def test_spmm_and_sddmm_match_reference(rng, simd_path, m, k, n):
    csr, a = _csr(rng, m, k, 0.25, empty_rows=range(0, m, 5))
    b = rng.standard_normal((k, n)).astype(np.float32)
    g = rng.standard_normal((m, n)).astype(np.float32)
    np.testing.assert_allclose(_kernels.spmm(csr, b), a @ b, rtol=1e-5, atol=1e-5)
    t, oracle = _kernels.transpose(csr), csr_transpose(csr)  # counting sort (C++) vs numpy's stable argsort
    for mine, ref in ((t.crow, oracle.crow), (t.col, oracle.col), (t.values, oracle.values)):
        np.testing.assert_array_equal(mine, ref)
    np.testing.assert_allclose(_kernels.spmm(t, g), a.T @ g, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_kernels.sddmm(csr, g, b), (g @ b.T)[csr.rows(), csr.col], rtol=1e-5, atol=1e-5)


def test_same_bits_at_any_thread_count_and_on_every_simd_path(rng, threads):
    csr, _ = _csr(rng, 301, 97, 0.1)
    b = rng.standard_normal((97, 45)).astype(np.float32)
    g = rng.standard_normal((301, 45)).astype(np.float32)
    before = fg.get_simd()
    results = []
    try:
        for path in _SIMD_PATHS:
            fg.set_simd(path)
            for n in (1, 2, 3, 8):
                threads(n)
                results.append((_kernels.spmm(csr, b), _kernels.sddmm(csr, g, b)))
    finally:
        fg.set_simd(before)
    for y, v in results[1:]:
        assert np.array_equal(y, results[0][0]) and np.array_equal(v, results[0][1])


def _args(rng):
    crow, col = np.array([0, 2, 2, 3], np.int64), np.array([1, 3, 0], np.int64)
    return crow, col, rng.standard_normal(3).astype(np.float32), rng.standard_normal((4, 5)).astype(np.float32)


def test_bindings_refuse_bad_arguments(rng):
    crow, col, vals, dense = _args(rng)
    out = np.empty((3, 5), np.float32)
    bad = [
        ((np.array([0, 2, 1, 3]), col, vals, dense, out), ValueError, "non-decreasing"),
        ((np.array([1, 2, 2, 3]), col, vals, dense, out), ValueError, "crow_indices\\[0\\]"),
        ((np.array([0, 2, 2, 4]), col, vals, dense, out), ValueError, "crow_indices\\[-1\\]"),
        ((crow[:-1], col, vals, dense, out), ValueError, "length"),
        ((crow, np.array([1, 4, 0]), vals, dense, out), IndexError, "out of range"),
        ((crow, np.array([1, -1, 0]), vals, dense, out), IndexError, "out of range"),
        ((crow, col.astype(np.int32), vals, dense, out), TypeError, "col_indices"),
        ((crow, col, vals.astype(np.float64), dense, out), TypeError, "values"),
        ((crow, col, vals[:2], dense, out), ValueError, "values"),
        ((crow, col, vals, np.ascontiguousarray(dense[:, :4]), out), ValueError, "dense"),
        ((crow, col, vals, np.asfortranarray(dense), out), ValueError, "dense"),
        ((crow, col, vals, dense, np.empty((3, 5), np.float32)[:, ::-1]), ValueError, "out"),
        ((crow, col, vals, dense, np.empty((3, 5), np.float64)), TypeError, "out"),
    ]
    for args, exc, match in bad:
        with pytest.raises(exc, match=match):
            _C.sparse.spmm(*args)
    with pytest.raises(ValueError, match="overlap|share"):
        _C.sparse.spmm(crow, col, vals, dense, dense[:3])  # out is a view of dense
    grad = rng.standard_normal((3, 5)).astype(np.float32)
    with pytest.raises(ValueError, match="out"):
        _C.sparse.sddmm(crow, col, grad, dense, np.empty(4, np.float32))
    with pytest.raises(IndexError, match="out of range"):
        _C.sparse.sddmm(crow, np.array([1, 9, 0]), grad, dense, np.empty(3, np.float32))
    with pytest.raises(ValueError, match="dense"):
        _C.sparse.sddmm(crow, col, grad, rng.standard_normal((4, 6)).astype(np.float32), np.empty(3, np.float32))
    with pytest.raises(IndexError, match="out of range"):
        _C.sparse.csr_transpose(crow, col, 3, np.empty(4, np.int64), np.empty(3, np.int64), np.empty(3, np.int64))
    with pytest.raises(ValueError, match="perm"):
        _C.sparse.csr_transpose(crow, col, 4, np.empty(5, np.int64), np.empty(3, np.int64), np.empty(2, np.int64))
    with pytest.raises(ValueError, match="out_crow_indices"):
        _C.sparse.csr_transpose(crow, col, 4, np.empty(4, np.int64), np.empty(3, np.int64), np.empty(3, np.int64))
    with pytest.raises(ValueError, match="ncols"):
        _C.sparse.csr_transpose(crow, col, -1, np.empty(0, np.int64), np.empty(3, np.int64), np.empty(3, np.int64))
