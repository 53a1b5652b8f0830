"""det / slogdet / inv of matrices holding inf or NaN, as torch computes them.

numpy's LAPACK (OpenBLAS) and torch's (MKL) factor such a matrix differently, and the inf - inf and 0 * inf of
each order decide which entries come out NaN, inf or finite: numpy gave det = inf where torch gives NaN, and the
other way round. torch's values are those of the unblocked LU with partial pivoting (LAPACK's getf2: the pivot is the
first largest |a| of the column, a NaN never wins; the column is scaled by the pivot's reciprocal; the rank-1
update has no zero skipping), with

- det and slogdet factoring A^T (torch hands its row-major buffer to LAPACK as it is, det(A^T) = det(A)),
  det = sign(perm) * prod(diag U); slogdet = (sign(perm) * prod(sign(diag U)), sum(log|diag U|)), sign 0 where the
  log is NaN;
- inv factoring A and solving A X = I: forward then back substitution over all columns at once, dividing every
  entry (no zero skipping: 0 / NaN is NaN).

Checked against torch 2.13 on random float32 / float64 matrices of 1 to 70 rows with 1 to 3 non-finite entries
(tests/fuzz/test_fuzz_regressions_numerics.py). Finite matrices keep numpy's LAPACK (blocked, fast); only the
batch elements holding a non-finite value come here, one Python step per column.
"""
from __future__ import annotations

import numpy as np


def _pivot(col: np.ndarray) -> int:
    """The first index of the largest |col| (BLAS i?amax: a NaN never compares larger, so wins only at 0)."""
    a = np.abs(col)
    best, at = a[0], 0
    for i in range(1, a.shape[0]):
        if a[i] > best:
            best, at = a[i], i
    return at


def lu_unblocked(a: np.ndarray):
    """(LU, row permutation, its sign) of a square matrix, LAPACK getf2's order of operations."""
    a = a.copy()
    n = a.shape[0]
    perm, sign = np.arange(n), 1.0
    tiny = np.finfo(a.dtype).tiny
    with np.errstate(all="ignore"):
        for j in range(n):
            p = j + _pivot(a[j:, j])
            if a[p, j] != 0:
                if p != j:
                    a[[j, p]] = a[[p, j]]
                    perm[[j, p]] = perm[[p, j]]
                    sign = -sign
                if abs(a[j, j]) >= tiny:
                    a[j + 1:, j] *= a.dtype.type(1) / a[j, j]
                else:
                    a[j + 1:, j] /= a[j, j]
            a[j + 1:, j + 1:] -= np.outer(a[j + 1:, j], a[j, j + 1:])
    return a, perm, sign


def nonfinite(a: np.ndarray) -> np.ndarray:
    """Batch mask (a.shape[:-2]) of the matrices holding inf or NaN."""
    return ~np.isfinite(a).all(axis=(-2, -1))


def _each(a: np.ndarray, mask: np.ndarray):
    """The batch indices of ``a`` where ``mask`` holds, with that matrix."""
    for idx in zip(*np.nonzero(mask)) if mask.ndim else ([()] if mask else []):
        yield idx, a[idx]


def det_into(a: np.ndarray, det: np.ndarray) -> np.ndarray:
    """``det`` (numpy's, shape a.shape[:-2]) with torch's value at each non-finite matrix."""
    mask = nonfinite(a)
    if not mask.any():
        return det
    det = np.array(det, copy=True)
    for idx, m in _each(a, mask):
        lu, _, sign = lu_unblocked(np.ascontiguousarray(m.T))
        with np.errstate(all="ignore"):
            det[idx] = sign * np.prod(np.diagonal(lu))
    return det


def slogdet_into(a: np.ndarray, sign: np.ndarray, logabs: np.ndarray):
    """(sign, logabs) (numpy's) with torch's values at each non-finite matrix."""
    mask = nonfinite(a)
    if not mask.any():
        return sign, logabs
    sign, logabs = np.array(sign, copy=True), np.array(logabs, copy=True)
    for idx, m in _each(a, mask):
        lu, _, s = lu_unblocked(np.ascontiguousarray(m.T))
        d = np.diagonal(lu)
        with np.errstate(all="ignore"):
            la = np.sum(np.log(np.abs(d)))
            sg = s * np.prod(np.sign(d))
        logabs[idx] = la
        sign[idx] = 0.0 if np.isnan(la) else sg
    return sign, logabs


def inv_nonfinite(m: np.ndarray):
    """(A^-1 as torch's solve(A, I) gives it, whether a pivot is exactly 0: torch's 'singular')."""
    lu, perm, _ = lu_unblocked(m)
    n = m.shape[0]
    d = np.diagonal(lu)
    if (d == 0).any():
        return None, True
    b = np.eye(n, dtype=m.dtype)[perm]
    with np.errstate(all="ignore"):
        for k in range(n):
            b[k + 1:] -= np.outer(lu[k + 1:, k], b[k])
        for k in range(n - 1, -1, -1):
            b[k] /= lu[k, k]
            b[:k] -= np.outer(lu[:k, k], b[k])
    return b, False
