"""SGEMM's direct path (products whose tiles read op(A) and op(B) in place, nothing packed:
M > 8, K <= 320, and M * N * K <= 64**3 or N <= 16 (any M; a thin op(B) whose columns are
contiguous is first transposed into scratch), row panels split over threads when large) and
bmm's one-call common case
(_C.gemm.bmm_plain), against numpy in float64 with the bound of test_gemm.assert_close.
"""
import ctypes
import mmap
import sys

import numpy as np
import pytest

from forgegrad import _C
from forgegrad.kernels import bmm, matmul

from test_gemm import EPS32, assert_close, make

DIRECT_MAX = 64 ** 3

# Around the direct path's limits: rows 9.. (M <= 8 is the skinny path), row tiles of 8 (AVX-512)
# and 6 (AVX2), column panels of 32 / 16 with masked partial vectors, K up to one KC slice (320),
# M * N * K up to 64**3 (65 x 64 x 64 and 64 x 64 x 65 just past it: packed path).
SHAPES = [(9, 1, 1), (9, 7, 10), (12, 64, 10), (13, 5, 17), (16, 33, 16), (17, 2, 31), (24, 320, 32),
          (25, 321, 30), (31, 64, 33), (32, 64, 32), (33, 9, 47), (48, 100, 15), (49, 60, 64),
          (64, 256, 10), (64, 64, 64), (65, 64, 64), (64, 65, 64), (100, 20, 5), (127, 3, 61),
          # N <= 16 at any M (past the size limit; large ones split over threads), K to 320 / 321
          (256, 128, 10), (1031, 320, 16), (2000, 64, 1), (777, 321, 13), (3001, 100, 7)]


def _view(rng, shape, pad):
    """A (rows, cols) float32 operand sliced out of a wider array (row stride cols + pad)."""
    r, c = shape
    return make(rng, (r + 1, c + pad))[1:, pad:] if pad else make(rng, shape)


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
def test_direct_shapes(simd_path, threads, rng, ta, tb):
    for m, k, n in SHAPES:
        for pad in (0, 3):
            # Row-major arguments (row stride > width when pad > 0), so that the kernel gets the
            # transposes as given: trans_a reads op(A) column-major, trans_b packs B (not direct) unless
            # N <= 16, where op(B) is transposed into scratch and the tiles run direct.
            a_arg = _view(rng, (k, m) if ta else (m, k), pad)
            b_arg = _view(rng, (n, k) if tb else (k, n), pad)
            a, b = (a_arg.T if ta else a_arg), (b_arg.T if tb else b_arg)
            c = make(rng, (m, n))
            for alpha, beta in [(1.0, 0.0), (0.7, -0.3)]:
                results = []
                for t in (1, 2, 3):
                    threads(t)
                    out = c.copy()
                    assert matmul(a_arg, b_arg, out=out, trans_a=ta, trans_b=tb, alpha=alpha, beta=beta) is out
                    results.append(out)
                assert_close(results[0], a, b, alpha=alpha, beta=beta, c=c,
                             what=f"{simd_path} {m, k, n} ta={ta} tb={tb} pad={pad}")
                assert results[0].tobytes() == results[1].tobytes() == results[2].tobytes()


def test_direct_equals_packed_bits(simd_path, rng):
    """A direct product gives exactly the bits of the same rows computed by the packed path (a
    taller product past the size limit): same tile arithmetic, one KC slice."""
    for m, k, n in [(32, 64, 32), (64, 64, 64), (17, 200, 33), (40, 7, 100)]:
        tall = 2 * DIRECT_MAX // (k * n) + m  # enough rows that the whole product is packed
        a, b = make(rng, (tall, k)), make(rng, (k, n))
        c = make(rng, (tall, n))
        for alpha, beta in [(1.0, 0.0), (-1.5, 0.25)]:
            whole, part = c.copy(), c[:m].copy()
            matmul(a, b, out=whole, alpha=alpha, beta=beta)
            matmul(a[:m], b, out=part, alpha=alpha, beta=beta)
            assert whole[:m].tobytes() == part.tobytes(), f"{simd_path} {m, k, n}"


def test_direct_beta_zero_ignores_nan(simd_path, rng):
    a, b = make(rng, (20, 30)), make(rng, (30, 10))
    out = np.full((20, 10), np.nan, np.float32)
    matmul(a, b, out=out)
    assert_close(out, a, b)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mprotect guard page via libc")
def test_direct_tail_reads_stay_inside_b(simd_path):
    """B's last row ends right before a page that cannot be read: a partial column panel must load
    only its own columns (masked), or the process faults."""
    libc = ctypes.CDLL(None, use_errno=True)
    page = mmap.PAGESIZE
    buf = mmap.mmap(-1, 2 * page, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    assert libc.mprotect(ctypes.c_void_p(base + page), page, 0) == 0  # PROT_NONE
    try:
        rng = np.random.default_rng(7)
        for k, n in [(64, 10), (40, 17), (9, 33), (100, 1)]:
            floats = k * n
            mem = np.frombuffer(buf, np.float32, count=page // 4)
            b = mem[page // 4 - floats:].reshape(k, n)  # ends exactly at the guard page
            b[...] = rng.standard_normal((k, n))
            a = rng.standard_normal((37, k)).astype(np.float32)
            assert_close(matmul(a, b), a, b, what=f"{simd_path} {k, n}")
            del mem, b
    finally:
        libc.mprotect(ctypes.c_void_p(base + page), page, mmap.PROT_READ | mmap.PROT_WRITE)
        buf.close()


# ---- bmm: the one-call common case ----------------------------------------------------------------

def _bmm_want(a, b):
    return np.matmul(a.astype(np.float64), b.astype(np.float64))


def _bmm_check(got, a, b):
    want = _bmm_want(a, b)
    assert got.shape == want.shape and got.dtype == np.float32
    mag = np.matmul(np.abs(a).astype(np.float64), np.abs(b).astype(np.float64))
    assert np.all(np.abs(got - want) <= (a.shape[-1] + 2) * EPS32 * mag + 1e-30)


def test_bmm_plain_layouts(simd_path, threads, rng):
    base_a, base_b = make(rng, (6, 33, 40)), make(rng, (6, 40, 25))
    cases = [
        (base_a, base_b),
        (base_a.transpose(0, 2, 1).copy().transpose(0, 2, 1), base_b),  # column-major matrices
        (base_a, base_b.transpose(0, 2, 1).copy().transpose(0, 2, 1)),
        (make(rng, (12, 33, 40))[::2], make(rng, (6, 40, 30))[:, :, 2:27]),  # batch / row strides
        (np.broadcast_to(base_a[:1], base_a.shape), base_b),  # batch stride 0
        (base_a, np.broadcast_to(base_b[2:3], base_b.shape)),
        (make(rng, (1, 33, 40)), make(rng, (1, 40, 25))),
        (make(rng, (64, 32, 64)), make(rng, (64, 64, 32))),
    ]
    for a, b in cases:
        assert _C.gemm.bmm_plain(a, b, None) is not None  # these take the one-call path
        results = []
        for t in (1, 2, 3):
            threads(t)
            results.append(bmm(a, b))
        _bmm_check(results[0], a, b)
        assert results[0].tobytes() == results[1].tobytes() == results[2].tobytes()
        for i in range(a.shape[0]):  # each entry: the bits of one matmul
            assert results[0][i].tobytes() == matmul(a[i], b[i]).tobytes()


def test_bmm_plain_out(simd_path, rng):
    a, b = make(rng, (5, 20, 30)), make(rng, (5, 30, 18))
    out = np.full((5, 20, 18), np.nan, np.float32)
    assert bmm(a, b, out=out) is out
    _bmm_check(out, a, b)
    wide = np.zeros((5, 20, 40), np.float32)
    out = wide[:, :, 3:21]  # strided rows
    assert bmm(a, b, out=out) is out
    _bmm_check(out, a, b)
    assert np.all(wide[:, :, :3] == 0) and np.all(wide[:, :, 21:] == 0)


def test_bmm_plain_declines_to_general_path(simd_path, rng):
    """Inputs outside the common case return None from bmm_plain; bmm still answers (or raises)."""
    a, b = make(rng, (4, 9, 11)), make(rng, (4, 11, 7))
    t_out = np.zeros((4, 7, 9), np.float32).transpose(0, 2, 1)  # column-major out
    assert _C.gemm.bmm_plain(a, b, t_out) is None
    assert bmm(a, b, out=t_out) is t_out
    _bmm_check(t_out, a, b)
    b2 = make(rng, (11, 7))
    assert _C.gemm.bmm_plain(a, b2, None) is None  # 2-D operand: broadcast in Python
    _bmm_check(bmm(a, b2), a, np.broadcast_to(b2, (4, 11, 7)))
    assert _C.gemm.bmm_plain(a.tolist(), b, None) is None
    with pytest.raises(TypeError):
        bmm(a.tolist(), b)
    assert _C.gemm.bmm_plain(a, b.astype(np.float64), None) is None
    with pytest.raises(TypeError):
        bmm(a, b.astype(np.float64))
    assert _C.gemm.bmm_plain(a, make(rng, (3, 11, 7)), None) is None
    with pytest.raises(ValueError):
        bmm(a, make(rng, (3, 11, 7)))
    assert _C.gemm.bmm_plain(a, make(rng, (4, 10, 7)), None) is None
    with pytest.raises(ValueError):
        bmm(a, make(rng, (4, 10, 7)))
    bad = np.zeros((4, 9, 8), np.float32)
    assert _C.gemm.bmm_plain(a, b, bad) is None
    with pytest.raises(ValueError):
        bmm(a, b, out=bad)
    ro = np.zeros((4, 9, 7), np.float32)
    ro.flags.writeable = False
    assert _C.gemm.bmm_plain(a, b, ro) is None
    with pytest.raises(ValueError):
        bmm(a, b, out=ro)
    # out overlapping an operand: the byte ranges meet, so the general path decides (and raises).
    buf = make(rng, (4, 9, 11))
    assert _C.gemm.bmm_plain(buf, make(rng, (4, 11, 11)), buf) is None
    with pytest.raises(ValueError):
        bmm(buf, make(rng, (4, 11, 11)), out=buf)
    # Overlapping out entries (batch stride 0) cannot be written one sgemm each.
    shared = np.broadcast_to(np.zeros((9, 7), np.float32), (4, 9, 7))
    assert _C.gemm.bmm_plain(a, b, shared) is None
    # Empty batch or matrices: the general path.
    assert _C.gemm.bmm_plain(make(rng, (0, 9, 11)), make(rng, (0, 11, 7)), None) is None
    assert bmm(make(rng, (0, 9, 11)), make(rng, (0, 11, 7))).shape == (0, 9, 7)
    # K = 0 is handled in one call: zeros.
    got = bmm(make(rng, (3, 4, 0)), make(rng, (3, 0, 5)))
    assert got.shape == (3, 4, 5) and np.all(got == 0)

