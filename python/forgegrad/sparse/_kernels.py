"""The numeric kernels of forgegrad.sparse: CSR @ dense (SpMM) and the sampled dense-dense product (SDDMM) of its
backward. float32 runs forgegrad._C.sparse (cpp/kernels/per_isa/spmm.cpp: per-ISA, threaded over row blocks, the
same bits at any thread count); float64 runs the numpy reference below, which is also the tests' oracle. CSR @ CSR
(SpGEMM) of float32 and float64 runs forgegrad._C.sparse.spgemm (cpp/kernels/spgemm.cpp); _spgemm.py holds its numpy
reference and the dispatch."""
from __future__ import annotations

import numpy as np

from .. import _C
from ._storage import CSR

_F32 = np.dtype(np.float32)
# the value dtypes of forgegrad._C.sparse.spgemm (both operands of one of them)
SPGEMM_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def spmm_reference(a: CSR, b: np.ndarray) -> np.ndarray:
    """out (M, N) = a (M, K) @ b (K, N): each row sums its nonzeros' rows of b in order."""
    out = np.zeros((a.shape[0], b.shape[1]), np.result_type(a.values.dtype, b.dtype))
    np.add.at(out, a.rows(), a.values[:, None] * b[a.col])
    return out


def sddmm_reference(a: CSR, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(g @ b^T) at a's nonzeros (nnz,)."""
    return np.einsum("pn,pn->p", g[a.rows()], b[a.col])


def spmm(a: CSR, b: np.ndarray) -> np.ndarray:
    if a.values.dtype == _F32 and b.dtype == _F32:
        out = np.empty((a.shape[0], b.shape[1]), _F32)
        _C.sparse.spmm(a.crow, a.col, np.ascontiguousarray(a.values), np.ascontiguousarray(b), out)
        return out
    return spmm_reference(a, b)


def sddmm(a: CSR, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    if g.dtype == _F32 and b.dtype == _F32:
        out = np.empty(a.nnz, _F32)
        _C.sparse.sddmm(a.crow, a.col, np.ascontiguousarray(g), np.ascontiguousarray(b), out)
        return out
    return sddmm_reference(a, g, b)


def transpose(a: CSR) -> CSR:
    """a^T as CSR: the pattern by _C.sparse.csr_transpose's counting sort (O(nnz), deterministic), the values
    gathered through its permutation (any dtype). The numpy oracle is _storage.csr_transpose."""
    m, k = a.shape
    crow, col, perm = np.empty(k + 1, np.int64), np.empty(a.nnz, np.int64), np.empty(a.nnz, np.int64)
    _C.sparse.csr_transpose(a.crow, a.col, k, crow, col, perm)
    return CSR(crow, col, a.values[perm], (k, m))


def spgemm(a: CSR, b: CSR) -> CSR:
    """a (M, K) @ b (K, N) by forgegrad._C.sparse.spgemm; values of one dtype in SPGEMM_DTYPES."""
    crow, col, values = _C.sparse.spgemm(a.crow, a.col, np.ascontiguousarray(a.values), b.crow, b.col,
                                         np.ascontiguousarray(b.values), b.shape[1])
    return CSR(crow, col, values, (a.shape[0], b.shape[1]))
