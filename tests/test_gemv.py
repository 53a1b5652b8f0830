"""Batch-1 GEMV (x (1, K) @ W.T for a row-major (N, K) weight: a Linear layer's decode step) against
numpy in float64, on the shapes its traversal cares about.

The AVX2 build reads the rows as several long streams (row i of each run of the row range per
block, gemm_skinny.cpp's gemv_streams); every row keeps one fixed operation sequence, so a row's
result must not depend on which rows share its block, on the row range it was called with, or on
the thread count. Tolerance as in test_gemm: (K + 2) * eps32 * (|x| @ |W|.T) elementwise.
"""
import numpy as np
import pytest

from forgegrad import _C
from forgegrad.kernels import matmul

EPS32 = float(np.finfo(np.float32).eps)

# (N, K): N around the 4 streams (N < 4, N % 4 != 0, runs of one row), K around the 8-float vectors
# and their masked tails, and decode shapes (768- and 1024-wide layers, a slice of a vocabulary head).
SHAPES = [(1, 1), (1, 768), (2, 7), (3, 9), (4, 8), (5, 15), (7, 16), (8, 17), (9, 33), (13, 64), (31, 100),
          (257, 768), (1030, 769), (2304, 768), (771, 1024), (3, 3072), (1001, 3000)]


def _check(got, x, w, bias=None, alpha=1.0, what=""):
    want = alpha * (x.astype(np.float64) @ w.T.astype(np.float64))
    mag = abs(alpha) * (np.abs(x).astype(np.float64) @ np.abs(w).T.astype(np.float64))
    if bias is not None:
        want = want + bias
        mag = mag + np.abs(bias)
    tol = (w.shape[1] + 2) * EPS32 * mag + 1e-30
    err = np.abs(got.astype(np.float64) - want)
    assert got.shape == want.shape, what
    assert np.all(err <= tol), f"{what}: max error {err.max()} (tolerance {tol.ravel()[np.argmax(err)]})"


@pytest.mark.parametrize("n,k", SHAPES)
def test_linear_matches_numpy(simd_path, rng, n, k):
    w = rng.standard_normal((n, k)).astype(np.float32)
    x = rng.standard_normal((1, k)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    _check(_C.gemm.linear(x, w), x, w, what=f"{simd_path} {n}x{k}")
    _check(_C.gemm.linear(x, w, b), x, w, b, what=f"{simd_path} {n}x{k} bias")


@pytest.mark.parametrize("n,k", [(9, 33), (1030, 769), (2304, 768)])
def test_strided_rows_and_alpha_beta(simd_path, rng, n, k):
    # Rows further apart than K (a column slice of a wider weight) and C accumulated with beta.
    wide = rng.standard_normal((n, k + 13)).astype(np.float32)
    w = wide[:, 5:k + 5]
    x = rng.standard_normal((1, k)).astype(np.float32)
    c = rng.standard_normal((1, n)).astype(np.float32)
    out = c.copy()
    matmul(x, w, out=out, trans_b=True, alpha=0.75, beta=0.5)
    want = 0.75 * (x.astype(np.float64) @ w.T.astype(np.float64)) + 0.5 * c
    mag = 0.75 * (np.abs(x).astype(np.float64) @ np.abs(w).T.astype(np.float64)) + 0.5 * np.abs(c)
    assert np.all(np.abs(out - want) <= (k + 3) * EPS32 * mag + 1e-30), f"{simd_path} {n}x{k}"


@pytest.mark.parametrize("n,k", [(5003, 768), (4099, 1024), (1001, 3000)])
def test_rows_do_not_depend_on_grouping_or_threads(simd_path, threads, rng, n, k):
    # Large enough to be split over threads (~512k multiply-adds per range). Each row's result must
    # be the same bits for 1, 2 or 3 threads and when the weight is cut into row slices of other
    # lengths (other runs, other blocks).
    w = rng.standard_normal((n, k)).astype(np.float32)
    x = rng.standard_normal((1, k)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    results = []
    for t in (1, 2, 3):
        threads(t)
        results.append(_C.gemm.linear(x, w, b))
    _check(results[0], x, w, b, what=f"{simd_path} {n}x{k}")
    assert results[0].tobytes() == results[1].tobytes() == results[2].tobytes(), \
        f"{simd_path} {n}x{k} differs across threads"
    threads(1)
    for j0, j1 in ((0, 7), (3, n // 2 + 1), (n // 3, n), (n - 5, n)):
        part = _C.gemm.linear(x, np.ascontiguousarray(w[j0:j1]), b[j0:j1])
        assert part.tobytes() == results[0][:, j0:j1].tobytes(), f"{simd_path} {n}x{k} rows {j0}:{j1}"
