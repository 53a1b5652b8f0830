"""SGEMM (forgegrad.kernels.matmul / bmm, forgegrad._C.gemm) against numpy in float64.

Tolerance: every element of C is a sum of K products rounded in float32, so its error is bounded
by about (K + 2) * eps32 * (|alpha| * (|op(a)| @ |op(b)|) + |beta| * |C|) elementwise; the tests use
that bound (see `assert_close`). A wrong or missing term is of the order of |a||b|, far above it.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import forgegrad as fg
from forgegrad import _C
from forgegrad.kernels import bmm, matmul

EPS32 = float(np.finfo(np.float32).eps)


def op(x, t):
    return x.T if t else x


def reference(a, b, ta=False, tb=False, alpha=1.0, beta=0.0, c=None):
    r = alpha * (op(a, ta).astype(np.float64) @ op(b, tb).astype(np.float64))
    if beta != 0.0:
        r = r + beta * c.astype(np.float64)
    return r


def assert_close(got, a, b, ta=False, tb=False, alpha=1.0, beta=0.0, c=None, what=""):
    want = reference(a, b, ta, tb, alpha, beta, c)
    k = op(a, ta).shape[1]
    mag = abs(alpha) * (np.abs(op(a, ta)).astype(np.float64) @ np.abs(op(b, tb)).astype(np.float64))
    if beta != 0.0:
        mag = mag + abs(beta) * np.abs(c.astype(np.float64))
    tol = (k + 2) * EPS32 * mag + 1e-30
    err = np.abs(got.astype(np.float64) - want)
    assert got.shape == want.shape, what
    assert np.all(err <= tol), f"{what}: max error {err.max()} (tolerance {tol.ravel()[np.argmax(err)]})"


def make(rng, shape, transposed=False):
    """A float32 array of `shape`; with transposed=True, a column-major view of that shape."""
    if transposed:
        return rng.standard_normal(shape[::-1]).astype(np.float32).T
    return rng.standard_normal(shape).astype(np.float32)


def _shapes():
    """(M, K, N) cases: tiny, primes, vectors, microkernel edges, network shapes, a few big ones."""
    s = [(1, 1, 1), (1, 1, 2), (2, 1, 1), (1, 2, 1), (2, 2, 2), (3, 3, 3)]
    primes = [1, 2, 3, 5, 7, 11, 13, 17, 31, 37, 61, 67, 97, 127]
    for i, m in enumerate(primes):
        for j, n in enumerate(primes[::-1]):
            if (i + j) % 2 == 0:
                s.append((m, primes[(i * 3 + j) % len(primes)], n))
    for k in (1, 2, 7, 64, 300, 1000):  # 1 x K x N (row vector times matrix) and M x K x 1
        s += [(1, k, 33), (1, k, 200), (45, k, 1), (200, k, 1), (1, k, 1)]
    for m in (8, 9, 12, 13, 16, 24, 25, 47, 48, 49):  # around the tiles (8 x 32, 6 x 16) and paths
        for n in (8, 9, 15, 16, 17, 31, 32, 33, 64, 65):
            s.append((m, 19 + (m * n) % 23, n))
    s += [(64, 784, 256), (64, 256, 128), (256, 64, 784), (784, 64, 256)]  # MLP layers
    s += [(100, 700, 90), (40, 330, 70), (130, 641, 50)]  # K split into several KC slices
    s += [(1023, 5, 37), (29, 1023, 41), (2049, 3, 5), (3, 2049, 9), (6, 9, 2049)]
    return s


SHAPES = _shapes()


def test_enough_shapes():
    assert len(SHAPES) >= 200


def test_matmul_shapes(simd_path, rng):
    """Every shape, each transpose combination in turn, against numpy float64."""
    for idx, (m, k, n) in enumerate(SHAPES):
        ta, tb = bool(idx & 1), bool(idx & 2)
        a = make(rng, (k, m) if ta else (m, k))
        b = make(rng, (n, k) if tb else (k, n))
        got = matmul(a, b, trans_a=ta, trans_b=tb)
        assert_close(got, a, b, ta, tb, what=f"{simd_path} M,K,N={m, k, n} trans={ta, tb}")


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
def test_alpha_beta_out(simd_path, rng, ta, tb):
    for (m, k, n), alpha, beta in [((37, 53, 41), 0.5, 0.25), ((13, 300, 70), -1.5, 1.0),
                                   ((5, 20, 90), 2.0, -1.0), ((70, 17, 6), 1.0, 0.5),
                                   ((40, 40, 40), 0.0, 2.0)]:
        a = make(rng, (k, m) if ta else (m, k))
        b = make(rng, (n, k) if tb else (k, n))
        c = make(rng, (m, n))
        out = c.copy()
        r = matmul(a, b, out=out, trans_a=ta, trans_b=tb, alpha=alpha, beta=beta)
        assert r is out
        assert_close(out, a, b, ta, tb, alpha, beta, c, what=f"{simd_path} {m, k, n} {alpha} {beta}")


def test_beta_zero_ignores_nan(simd_path, rng):
    for m, k, n in [(30, 20, 40), (3, 20, 40), (40, 20, 3)]:
        a, b = make(rng, (m, k)), make(rng, (k, n))
        out = np.full((m, n), np.nan, np.float32)
        matmul(a, b, out=out)
        assert_close(out, a, b)


def test_zero_sized(simd_path, rng):
    for m, k, n in [(0, 3, 4), (3, 0, 4), (3, 4, 0), (0, 0, 0), (1, 0, 1), (20, 0, 50)]:
        a, b = make(rng, (m, k)), make(rng, (k, n))
        got = matmul(a, b)
        assert got.shape == (m, n) and got.dtype == np.float32
        np.testing.assert_array_equal(got, np.zeros((m, n), np.float32))
        c = make(rng, (m, n))
        out = c.copy()
        matmul(a, b, out=out, alpha=2.0, beta=0.5)  # K = 0: out = beta * out
        np.testing.assert_allclose(out, 0.5 * c, rtol=1e-6)


def test_strided_views(simd_path, rng):
    big = make(rng, (90, 120))
    cases = [
        (big[::2, :37], big[1:38, 5:70]),  # row-strided slices
        (big[:45, 3:40].T, big[:45, 50:91]),  # transposed view
        (big[::3, :60:2], big[::3, 1::4]),  # no unit stride: copied
        (big[:1, :45], big[45:90, :7]),  # a single row
        (big[:40, :1], big[50:51, :60]),  # outer product (K = 1)
        (big[::-1, :20], big[:20, ::-1]),  # negative strides: copied
    ]
    for a, b in cases:
        got = matmul(a, b)
        assert_close(got, a, b, what=f"a {a.shape} {a.strides}, b {b.shape} {b.strides}")
        got = matmul(a.T, b.T, trans_a=True, trans_b=True)  # the same product through transposed views
        assert_close(got, a.T, b.T, True, True)


def test_out_layouts(simd_path, rng):
    a, b = make(rng, (33, 21)), make(rng, (21, 45))
    c = make(rng, (33, 45))
    for out in [np.zeros((40, 60), np.float32)[3:36, 7:52],  # slice of a bigger array
                np.zeros((45, 33), np.float32).T,  # column-major
                np.zeros((66, 90), np.float32)[::2, ::2]]:  # no unit stride: computed, copied back
        out[...] = c
        matmul(a, b, out=out, alpha=0.5, beta=2.0)
        assert_close(out, a, b, alpha=0.5, beta=2.0, c=c)


def test_against_cpp_oracle(simd_path, rng):
    """forgegrad's SGEMM against the plain-loop oracle fg::sgemm_reference (double accumulator)."""
    for (m, k, n), ta, tb in [((1, 1, 1), False, False), ((17, 33, 65), True, False),
                              ((64, 300, 70), False, True), ((5, 100, 300), True, True),
                              ((300, 100, 5), False, False), ((50, 700, 40), True, True)]:
        a = make(rng, (k, m) if ta else (m, k))
        b = make(rng, (n, k) if tb else (k, n))
        c = make(rng, (m, n))
        ref, got = c.copy(), c.copy()
        _C.gemm.sgemm(a, b, ref, ta, tb, 0.75, 0.5, reference=True)
        _C.gemm.sgemm(a, b, got, ta, tb, 0.75, 0.5)
        # The oracle is exact up to its final rounding; compare both with the same bound.
        assert_close(ref, a, b, ta, tb, 0.75, 0.5, c)
        mag = 0.75 * (np.abs(op(a, ta)) @ np.abs(op(b, tb))) + 0.5 * np.abs(c)
        assert np.all(np.abs(got - ref) <= (k + 3) * EPS32 * mag + 1e-30)


BIT_SHAPES = [(200, 300, 260, False, False), (64, 784, 256, True, False), (130, 641, 50, False, True),
              (37, 900, 500, True, True), (1, 4096, 300, False, False), (300, 500, 7, False, True),
              (5, 2000, 3, True, False), (1000, 64, 50, False, False), (400, 300, 13, True, True),
              (2, 3000, 700, False, True)]


def test_bit_identical_across_threads(simd_path, threads, rng):
    for m, k, n, ta, tb in BIT_SHAPES:
        a = make(rng, (k, m) if ta else (m, k))
        b = make(rng, (n, k) if tb else (k, n))
        c = make(rng, (m, n))
        results = []
        for t in (1, 2, 3):
            threads(t)
            out = c.copy()
            matmul(a, b, out=out, trans_a=ta, trans_b=tb, alpha=0.7, beta=0.3)
            results.append(out.tobytes())
        assert results[0] == results[1] == results[2], f"{simd_path} {m, k, n} differs across threads"


# Shapes for the packed path's tile variants: the first tile using a full A panel (8 rows on
# AVX-512) or a full B panel (32 columns, op(B) rows contiguous) reads it in place and packs it as
# it goes; other tiles read packed panels; edge panels of <= 16 columns run a half-width tile.
# Rows around one row block (64) pick the small-M or the general loop order; K > 320 gives several
# KC slices (later slices accumulate into C); 20x300x700 and 200x64x2600 several NC column blocks.
# AVX2 runs BLIS's loop order (B panels packed during the first 144-row block, reused by the later
# ones): 301x520x101 and 445x257x70 span several row blocks (the last partial, the last row panel
# short), several KC slices of 256 at most and a column tail.
FUSED_SHAPES = [(64, 784, 256), (256, 64, 784), (72, 100, 80), (57, 129, 530), (136, 333, 47),
                (20, 300, 700), (200, 64, 2600), (40, 5, 33), (9, 8, 48), (301, 520, 101), (445, 257, 70)]


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
def test_fused_packing_paths(simd_path, threads, rng, ta, tb):
    for m, k, n in FUSED_SHAPES:
        # Operands as slices of wider arrays (leading dimension > the slice's width): the in-place
        # reads must use the real strides.
        a = make(rng, (k + 3, m + 5))[1:k + 1, 2:m + 2] if ta else make(rng, (m + 3, k + 5))[1:m + 1, 2:k + 2]
        b = make(rng, (n + 3, k + 7))[2:n + 2, 3:k + 3] if tb else make(rng, (k + 3, n + 7))[2:k + 2, 3:n + 3]
        c = make(rng, (m, n))
        for alpha, beta in [(1.0, 0.0), (0.7, 0.3)]:
            results = []
            for t in (1, 2, 3):
                threads(t)
                out = c.copy()
                matmul(a, b, out=out, trans_a=ta, trans_b=tb, alpha=alpha, beta=beta)
                results.append(out)
            assert_close(results[0], a, b, ta, tb, alpha, beta, c, what=f"{simd_path} {m, k, n} {ta, tb}")
            assert results[0].tobytes() == results[1].tobytes() == results[2].tobytes(), \
                f"{simd_path} {m, k, n} {ta, tb} differs across threads"


# A large op(B) (at least 2^18 floats: kGemmFarFloats) with rows under 1024 floats apart, packed by transposing
# panels (tb: x @ W^T) on the small-M loop order: each panel's packing prefetches the next one's rows (the last
# full panel's reach past the matrix, and an edge panel of 24 columns prefetches nothing): a mixture of experts'
# 512 x 512 expert on 16 routed rows, 9 rows against 600 x 520 (two KC slices), 40 rows against 1100 x 300.
FAR_B_SHAPES = [(16, 512, 512), (9, 520, 600), (40, 300, 1100)]


def test_far_b_panels_prefetched_while_packing(simd_path, threads, rng):
    for m, k, n in FAR_B_SHAPES:
        assert n * k >= 1 << 18
        a = make(rng, (m, k))
        for b in (make(rng, (n, k)), make(rng, (n + 3, k + 7))[2:n + 2, 3:k + 3]):
            results = []
            for t in (1, 2, 3):
                threads(t)
                results.append(matmul(a, b, trans_b=True))
            assert_close(results[0], a, b, tb=True, what=f"{simd_path} {m, k, n}")
            assert results[0].tobytes() == results[1].tobytes() == results[2].tobytes(), \
                f"{simd_path} {m, k, n} differs across threads"


# AVX-512 keeps a thread's packed A panels of a KC slice for all of its column blocks (rows in
# super-blocks of at most 2048, B packed again for each): 150x700x1400 has 3 column blocks, 3 row
# blocks and 3 KC slices; 2100x40x4200 at 1 thread has 2 column blocks and 2 row super-blocks (at 2
# threads each thread's half of the columns is one block: the plain order, which must give the same
# bits). Operands are slices of wider arrays, as above.
KEEP_A_SHAPES = [(150, 700, 1400), (2100, 40, 4200)]


@pytest.mark.parametrize("ta, tb", [(False, False), (True, False), (False, True)])
def test_kept_a_panels_across_column_blocks(simd_path, threads, rng, ta, tb):
    for m, k, n in KEEP_A_SHAPES:
        a = make(rng, (k + 3, m + 5))[1:k + 1, 2:m + 2] if ta else make(rng, (m + 3, k + 5))[1:m + 1, 2:k + 2]
        b = make(rng, (n + 3, k + 7))[2:n + 2, 3:k + 3] if tb else make(rng, (k + 3, n + 7))[2:k + 2, 3:n + 3]
        c = make(rng, (m, n))
        results = []
        for t in (1, 2):
            threads(t)
            out = c.copy()
            matmul(a, b, out=out, trans_a=ta, trans_b=tb, alpha=0.7, beta=0.3)
            results.append(out)
        assert_close(results[0], a, b, ta, tb, 0.7, 0.3, c, what=f"{simd_path} {m, k, n} {ta, tb}")
        assert results[0].tobytes() == results[1].tobytes(), f"{simd_path} {m, k, n} {ta, tb} differs across threads"


@settings(max_examples=60, deadline=None)
@given(m=st.integers(0, 40), k=st.integers(0, 40), n=st.integers(0, 40), ta=st.booleans(),
       tb=st.booleans(), alpha=st.sampled_from([1.0, 0.5, -2.0, 0.0]),
       beta=st.sampled_from([0.0, 1.0, -0.5]), seed=st.integers(0, 2**32 - 1))
def test_property_matches_numpy(m, k, n, ta, tb, alpha, beta, seed):
    rng = np.random.default_rng(seed)
    a = make(rng, (k, m) if ta else (m, k), transposed=bool(seed & 1))
    b = make(rng, (n, k) if tb else (k, n), transposed=bool(seed & 2))
    c = make(rng, (m, n))
    out = c.copy()
    matmul(a, b, out=out, trans_a=ta, trans_b=tb, alpha=alpha, beta=beta)
    assert_close(out, a, b, ta, tb, alpha, beta, c)


# ---- bmm ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("sa,sb", [
    ((3, 5, 7), (3, 7, 4)), ((2, 3, 5, 7), (7, 4)), ((5, 7), (2, 3, 7, 4)),
    ((3, 1, 5, 7), (1, 4, 7, 4)), ((1, 13, 20), (6, 20, 33)), ((40, 3, 2), (40, 2, 1)),
    ((0, 5, 7), (0, 7, 4)), ((2, 5, 0), (2, 0, 3)), ((2, 0, 4), (2, 4, 3)), ((5, 7), (7, 4)),
    ((64, 16, 24), (64, 24, 16)), ((4, 70, 90), (4, 90, 50)),
])
def test_bmm_broadcast(simd_path, rng, sa, sb):
    a, b = make(rng, sa), make(rng, sb)
    got = bmm(a, b)
    want = np.matmul(a.astype(np.float64), b.astype(np.float64))
    assert got.shape == want.shape and got.dtype == np.float32
    if got.size:
        k = a.shape[-1]
        mag = np.matmul(np.abs(a).astype(np.float64), np.abs(b).astype(np.float64))
        assert np.all(np.abs(got - want) <= (k + 2) * EPS32 * mag + 1e-30)


def test_bmm_views_and_out(simd_path, rng):
    a = make(rng, (6, 9, 11)).transpose(0, 2, 1)  # each matrix column-major
    b = make(rng, (12, 9, 7))[::2]  # batch stride of two matrices
    want = np.matmul(a.astype(np.float64), b)
    np.testing.assert_allclose(bmm(a, b), want, rtol=1e-5, atol=1e-5)
    out = np.zeros((6, 7, 11), np.float32).transpose(0, 2, 1)
    assert bmm(a, b, out=out) is out
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    out = np.zeros((6, 22, 7), np.float32)[:, ::2]
    bmm(a, b, out=out)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_bmm_bit_identical_across_threads(simd_path, threads, rng):
    for sa, sb in [((32, 20, 30), (32, 30, 25)), ((3, 200, 150), (150, 120)), ((50, 8, 64), (50, 64, 3))]:
        a, b = make(rng, sa), make(rng, sb)
        res = []
        for t in (1, 2, 3):
            threads(t)
            res.append(bmm(a, b).tobytes())
        assert res[0] == res[1] == res[2]


def test_bmm_matches_matmul_per_entry(rng):
    """The batched kernel gives exactly the bits of one matmul per entry."""
    a, b = make(rng, (10, 33, 47)), make(rng, (47, 29))
    got = bmm(a, b)
    for i in range(10):
        assert got[i].tobytes() == matmul(a[i], b).tobytes()


# ---- errors -------------------------------------------------------------------------------------

def test_matmul_errors(rng):
    a, b = make(rng, (3, 4)), make(rng, (4, 5))
    with pytest.raises(TypeError, match="a"):
        matmul(a.astype(np.float64), b)
    with pytest.raises(TypeError, match="b"):
        matmul(a, [[1.0] * 5] * 4)
    with pytest.raises(ValueError, match=r"a must be 2-D.*\(4,\)"):
        matmul(a[0], b)
    with pytest.raises(ValueError, match=r"b must be 2-D"):
        matmul(a, b[None])
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(5, 4\)"):
        matmul(a, b.T)
    with pytest.raises(ValueError, match=r"inner dimensions"):
        matmul(a, b, trans_a=True)
    with pytest.raises(ValueError, match=r"out must have shape \(3, 5\), got \(5, 3\)"):
        matmul(a, b, out=np.zeros((5, 3), np.float32))
    with pytest.raises(TypeError, match="out"):
        matmul(a, b, out=np.zeros((3, 5), np.float64))
    ro = np.zeros((3, 5), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        matmul(a, b, out=ro)
    with pytest.raises(ValueError, match="beta"):
        matmul(a, b, beta=1.0)
    buf = np.zeros((4, 5), np.float32)
    with pytest.raises(ValueError, match="overlap"):
        matmul(a, buf, out=buf[:3])


def test_bmm_errors(rng):
    with pytest.raises(TypeError, match="a"):
        bmm(np.zeros((2, 3, 4), np.int32), make(rng, (2, 4, 5)))
    with pytest.raises(ValueError, match=r"a must be at least 2-D"):
        bmm(make(rng, (4,)), make(rng, (4, 5)))
    with pytest.raises(ValueError, match=r"inner dimensions.*\(2, 3, 4\).*\(2, 3, 5\)"):
        bmm(make(rng, (2, 3, 4)), make(rng, (2, 3, 5)))
    with pytest.raises(ValueError, match=r"batch dimensions do not broadcast"):
        bmm(make(rng, (2, 3, 4)), make(rng, (3, 4, 5)))
    with pytest.raises(ValueError, match=r"out must have shape \(2, 3, 5\)"):
        bmm(make(rng, (2, 3, 4)), make(rng, (2, 4, 5)), out=np.zeros((2, 5, 3), np.float32))


def test_binding_rejects_bad_arrays(rng):
    """The compiled functions validate on their own: bad input raises, never crashes."""
    a, b, c = make(rng, (3, 4)), make(rng, (4, 5)), np.zeros((3, 5), np.float32)
    with pytest.raises(TypeError, match="a must be a float32"):
        _C.gemm.sgemm(a.astype(np.float64), b, c)
    with pytest.raises(ValueError, match="out must have shape"):
        _C.gemm.sgemm(a, b, np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError, match="inner dimensions"):
        _C.gemm.sgemm(a, b, c, trans_a=True)
    with pytest.raises(ValueError, match="unit stride"):
        _C.gemm.sgemm(make(rng, (3, 8))[:, ::2], b, c)
    with pytest.raises(ValueError, match="negative"):
        _C.gemm.sgemm(make(rng, (3, 4))[::-1], b, c)
    with pytest.raises(ValueError, match=r"a must be 3-D, got 2-D with shape \(3, 4\)"):
        _C.gemm.bmm(a, b, c)
    with pytest.raises(ValueError, match=r"b must be 2-D, got 1-D"):
        _C.gemm.sgemm(a, b[0], c)
    with pytest.raises(ValueError, match="batch sizes differ"):
        _C.gemm.bmm(make(rng, (2, 3, 4)), make(rng, (3, 4, 5)), np.zeros((2, 3, 5), np.float32))
    with pytest.raises(ValueError, match="overlapping batch"):
        from numpy.lib.stride_tricks import as_strided
        o = np.zeros((3, 5), np.float32)
        _C.gemm.bmm(make(rng, (2, 3, 4)), make(rng, (2, 4, 5)), as_strided(o, (2, 3, 5), (0, 20, 4)))


# ---- the benchmark package (timings themselves are not tested) ----------------------------------

def test_bench_registry_table_and_pinning():
    import forgegrad.bench as bench
    from forgegrad.bench import _timing

    assert "gemm" in bench.suites()
    before = fg.get_num_threads()
    with _timing.pinned_threads(1):
        assert fg.get_num_threads() == 1
        sec = _timing.compare({"forgegrad": lambda: None, "numpy": lambda: None, "torch": None},
                              repeat=2, warmup=1, min_time=1e-4)
    assert fg.get_num_threads() == before
    assert sec["torch"] is None and sec["forgegrad"] > 0 and sec["numpy"] > 0
    rows = [{"workload": "8x8x8 NN", "threads": 1, "flop": 1024.0,
             "seconds": {"forgegrad": 1e-6, "numpy": 2e-6, "torch": None}}]
    table = bench.format_table(rows)
    assert "absent" in table and "x numpy" in table and "2.00" in table
    with pytest.raises(ValueError, match="unknown benchmark suite"):
        bench.run("no-such-suite")


# (M, N, K) through each sgemm path: skinny rows (M <= 8), direct small products, the thin-weight
# direct form (N <= 16), the dot form, packed with several K slices and edge panels, K = 0
LINEAR_ACT_SHAPES = [(1, 50, 70), (7, 33, 19), (40, 30, 20), (256, 10, 128), (300, 128, 64), (37, 129, 600),
                     (20, 5, 0)]


@pytest.mark.parametrize("M,N,K", LINEAR_ACT_SHAPES)
def test_linear_activation_is_the_activation_after(simd_path, threads, rng, M, N, K):
    """linear(..., activation) applies the op to each output tile as the GEMM finishes it: the same
    bits as the activation kernel over the output afterwards, packed weight or not, NaN and
    infinities included, at any thread count."""
    x = rng.standard_normal((M, K)).astype(np.float32)
    if x.size >= 3:
        x.flat[:3] = [np.nan, np.inf, -np.inf]
    w = rng.standard_normal((N, K)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    packed = _C.gemm.PackedWeight(w)
    for name in ("RELU", "LEAKY_RELU", "GELU", "SIGMOID", "SILU"):
        code, alpha = getattr(_C.activation, name), 0.1 if name == "LEAKY_RELU" else 0.0
        want = _C.gemm.linear(x, w, b)
        _C.activation.act_forward(code, want, want, alpha)
        for n in (1, 2):
            threads(n)
            for p in (None, packed):
                got = _C.gemm.linear(x, w, b, code, alpha, p)
                assert got.tobytes() == want.tobytes(), (name, n, p is not None)


@pytest.mark.parametrize("M,N,K", LINEAR_ACT_SHAPES)
def test_linear_bias_is_beta_one_over_the_bias_rows(simd_path, threads, rng, M, N, K):
    """linear's bias, written by each output tile just before its first K slice on the packed path
    (by a fill of the output on the others): the same bits as sgemm with beta = 1 over an output
    filled with the bias rows, packed weight or not, at any thread count."""
    x = rng.standard_normal((M, K)).astype(np.float32)
    w = rng.standard_normal((N, K)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    want = np.broadcast_to(b, (M, N)).copy()
    _C.gemm.sgemm(x, w, want, False, True, 1.0, 1.0)
    packed = _C.gemm.PackedWeight(w)
    for n in (1, 3):
        threads(n)
        for p in (None, packed):
            got = _C.gemm.linear(x, w, b, -1, 0.0, p)
            assert got.tobytes() == want.tobytes(), (n, p is not None)
