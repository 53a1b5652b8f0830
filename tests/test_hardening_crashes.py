"""Regression tests for the crashes a fuzz and sanitizer campaign found (issue #12, item 2), and the
numerics of item 3 that live in C++ (softmax of -inf). Each crash reproducer runs in a child
interpreter: a regression fails the test with the signal instead of killing pytest."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import _C
from forgegrad.kernels import activation as KA
from forgegrad.kernels import loss as KL
from forgegrad.kernels import softmax as KS

from hardening_util import check_ok


# ---- BatchNorm with an empty spatial/length axis (was SIGFPE: 4096 / L with L = 0) ---------------
def test_batchnorm_zero_length_axis_does_not_trap():
    check_ok("""
        import numpy as np, forgegrad as fg
        from forgegrad import nn
        from forgegrad.kernels import norm
        y = nn.BatchNorm2d(2).eval()(fg.zeros(4, 2, 3, 0))
        assert y.shape == (4, 2, 3, 0), y.shape
        y = nn.BatchNorm1d(2).eval()(fg.zeros(4, 2, 0))
        assert y.shape == (4, 2, 0)
        x = np.zeros((4, 2, 3, 0), np.float32)
        one, zero = np.ones(2, np.float32), np.zeros(2, np.float32)
        for training in (False, True):  # the training-mode backward trapped too
            gx, gw, gb = norm.batch_norm_backward(x, x, one, zero, one, training=training)
            assert gx.shape == x.shape and np.all(gw == 0) and np.all(gb == 0), (gw, gb)
        try:  # training forward: no batch statistics exist; a clear error, not a crash
            nn.BatchNorm2d(2)(fg.zeros(4, 2, 3, 0))
        except ValueError as e:
            assert "more than 1 value per channel" in str(e)
        print("OK")
    """)


# ---- matmul / linear: a failed operand copy is MemoryError (was SIGSEGV: ensure() unchecked) -----
def test_matmul_and_linear_failed_copy_raise_memory_error():
    check_ok("""
        import resource, numpy as np
        from forgegrad import _C
        base = np.ones((2048, 4096), np.float32)   # 32 MiB
        a = base[::2, ::2]                         # strided both ways: must be copied (8 MiB)
        b, w = np.ones((2048, 4), np.float32), np.ones((4, 2048), np.float32)
        with open("/proc/self/status") as f:
            vm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))
        resource.setrlimit(resource.RLIMIT_AS, (vm + 4 * 2**20, resource.RLIM_INFINITY))
        for call in (lambda: _C.gemm.matmul(a, b), lambda: _C.gemm.linear(a, w)):
            try:
                call()
                raise SystemExit("no MemoryError")
            except MemoryError:
                pass
        print("OK")
    """)


# ---- raw sgemm / bmm: a single-row matrix must have unit column stride (was an out-of-bounds write)
def test_sgemm_bmm_single_row_column_stride_checked():
    check_ok("""
        import numpy as np
        from forgegrad import _C
        a, b = np.ones((1, 8), np.float32), np.ones((8, 8), np.float32)
        bad_outs = [np.zeros((1, 16), np.float32)[:, ::2], np.zeros((1, 8), np.float32)[:, ::-1]]
        for out in bad_outs:
            good_out = np.zeros((1, 8), np.float32)
            for call in (lambda: _C.gemm.sgemm(a, b, out), lambda: _C.gemm.sgemm(a[:, ::-1], b, good_out)):
                try:
                    call()
                    raise SystemExit("accepted")
                except ValueError as e:
                    assert "unit stride" in str(e), e
            try:
                _C.gemm.bmm(a[None], b[None], out[None])
                raise SystemExit("bmm accepted")
            except ValueError as e:
                assert "unit stride" in str(e), e
        print("OK")
    """)


def test_sgemm_single_row_still_computes():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((1, 5)).astype(np.float32)
    b = rng.standard_normal((5, 3)).astype(np.float32)
    out = np.zeros((1, 3), np.float32)
    _C.gemm.sgemm(a, b, out)
    np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-6)


# ---- cross-entropy with weight / grad_loss as a Python sequence (was a heap use-after-free) --------
def test_cross_entropy_sequence_weight_and_grad_loss():
    # 2**16 classes / rows: the arrays converted from the lists are over glibc's mmap threshold, so
    # reading them after they were freed faults instead of silently reading stale memory
    check_ok("""
        import numpy as np
        from forgegrad import _C
        rng = np.random.default_rng(0)
        for n, c in ((4, 1 << 16), (1 << 16, 3)):
            z = rng.standard_normal((n, c)).astype(np.float32)
            t = rng.integers(0, c, n).astype(np.int64)
            wl = [np.float32(v) for v in rng.uniform(0.5, 2.0, c)]   # a float32 array once in C++
            gl = [np.float32(v) for v in rng.uniform(0.1, 2.0, n)]
            res = []
            for w, g in ((wl, gl), (np.array(wl, np.float32), np.array(gl, np.float32))):
                p, l = np.empty((n, c), np.float32), np.empty(n, np.float32)
                s = _C.loss.cross_entropy_forward(z, t, w, -100, 0.1, p, l)
                d = np.empty((n, c), np.float32)
                _C.loss.cross_entropy_backward(p, t, w, -100, 0.1, g, 1.0, d)
                res.append((s, l, d))
            assert res[0][0] == res[1][0]
            assert np.array_equal(res[0][1], res[1][1]) and np.array_equal(res[0][2], res[1][2])
        print("OK")
    """)


# ---- unaligned numpy buffers: refused by the bindings, copied by the kernel wrappers ---------------
def _unaligned(shape, fill=None, rng=None):
    n = int(np.prod(shape))
    buf = np.zeros(n * 4 + 1, np.uint8)
    a = np.frombuffer(buf.data, np.float32, count=n, offset=1).reshape(shape)
    assert not a.flags.aligned
    a[...] = rng.standard_normal(shape) if fill is None else fill
    return a


def test_unaligned_buffers_are_refused_by_bindings_and_copied_by_wrappers():
    check_ok("""
        import numpy as np
        from forgegrad import _C
        buf = np.zeros(4 * 64 + 1, np.uint8)
        x = np.frombuffer(buf.data, np.float32, count=64, offset=1).reshape(8, 8)
        for call, name in ((lambda: _C.softmax.softmax_forward(x, np.empty((8, 8), np.float32), False), "x"),
                           (lambda: _C.softmax.softmax_forward(np.ones((8, 8), np.float32), x, False), "out")):
            try:
                call()
                raise SystemExit("accepted")
            except ValueError as e:
                assert name + " is not aligned" in str(e), e
        print("OK")
    """)
    rng = np.random.default_rng(1)
    x = _unaligned((6, 7), rng=rng)
    ref = x.copy()
    np.testing.assert_array_equal(KS.softmax(x), KS.softmax(ref))
    np.testing.assert_array_equal(KA.gelu(x), KA.gelu(ref))
    np.testing.assert_array_equal(_C.gemm.matmul(x, ref.T), _C.gemm.matmul(ref, ref.T))
    np.testing.assert_array_equal(_C.gemm.linear(x, ref), _C.gemm.linear(ref, ref))
    t = np.arange(6, dtype=np.int64) % 7
    np.testing.assert_array_equal(KL.cross_entropy_forward(x, t)[0], KL.cross_entropy_forward(ref, t)[0])
    with pytest.raises(ValueError, match="out is not aligned"):
        KA.relu(ref, out=_unaligned((6, 7), fill=0))
    out = _unaligned((6, 6), fill=0)  # matmul's binding computes into an aligned copy and copies back
    _C.gemm.matmul(ref, ref.T, out=out)
    np.testing.assert_array_equal(out, _C.gemm.matmul(ref, ref.T))
    with fg.no_grad():
        np.testing.assert_array_equal(fg.tensor(x).relu()._data, np.maximum(ref, 0))

def test_every_kernel_wrapper_takes_unaligned_inputs():
    # each wrapper hands its kernels aligned copies: results equal those from aligned arrays (and a
    # UBSan build of _C reports nothing here)
    check_ok("""
        import numpy as np
        import forgegrad as fg
        from forgegrad import _C
        from forgegrad.kernels import activation as A, conv as C, gemm as G, loss as L, norm as N
        from forgegrad.kernels import optim as O, pool as P, rnn as R, softmax as S
        rng = np.random.default_rng(0)

        def un(a):  # an unaligned array equal to a
            buf = np.zeros(a.nbytes + 1, np.uint8)
            u = np.frombuffer(buf.data, a.dtype, count=a.size, offset=1).reshape(a.shape)
            u[...] = a
            assert not u.flags.aligned
            return u

        def same(fn, *args, **kw):  # fn on unaligned copies of the array args == fn on the arrays
            un_args = [un(a) if isinstance(a, np.ndarray) else a for a in args]
            want, got = fn(*args, **kw), fn(*un_args, **kw)
            for w, g in zip(*(v if isinstance(v, tuple) else (v,) for v in (want, got))):
                if isinstance(w, np.ndarray):
                    assert np.array_equal(w, g, equal_nan=True), fn
            return want

        f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)
        x, x2, c3 = f32(4, 3, 8, 8), f32(6, 10), f32(3)
        for f in (A.relu, A.sigmoid, A.tanh, A.gelu, A.leaky_relu, S.softmax, S.log_softmax):
            same(f, x)
        for f in (A.relu_backward, A.sigmoid_backward, A.tanh_backward, A.gelu_backward,
                  S.softmax_backward, S.log_softmax_backward):
            same(f, x, f32(*x.shape))
        same(A.column_sums, x2)
        t, w10 = np.arange(6, dtype=np.int64) % 10, np.abs(f32(10))
        _, p, _, _ = same(L.cross_entropy_forward, x2, t, w10)
        same(L.cross_entropy_backward, p, t, w10, -100, 0.0, np.abs(f32(6)))
        _, sm, si = same(N.batch_norm_forward, x, c3, c3, None, None, True)
        same(N.batch_norm_backward, f32(*x.shape), x, c3, sm, si, True)
        y, idx = same(P.max_pool2d_forward, x, 2)
        same(P.max_pool2d_backward, f32(*y.shape), idx, x.shape)
        same(P.avg_pool2d_backward, same(P.avg_pool2d_forward, x, 2), x.shape, 2)
        same(P.adaptive_avg_pool2d_backward, same(P.adaptive_avg_pool2d_forward, x, 3), x.shape)
        w = f32(5, 3, 3, 3)
        same(C.conv2d_backward, x, w, same(C.conv2d_forward, x, w, f32(5), padding=1), padding=1)
        same(_C.gemm.matmul, x2, f32(10, 7))
        same(_C.gemm.linear, x2, f32(7, 10), f32(7))
        same(G.bmm, f32(3, 4, 5), f32(3, 5, 2))
        same(O.vector_norms, [un(f32(100))], 2.0)
        same(lambda *a: R.lstm_forward(*a)[:3], f32(5, 2, 3), f32(2, 4), f32(2, 4), f32(16, 3), f32(16, 4), f32(16))
        g = f32(4, 4)
        ps = [f32(4, 4), None]
        ps[1] = ps[0].copy()
        for p_, g_ in zip(ps, (g, un(g))):
            O.adam_step([p_], [g_], [np.zeros_like(g)], [np.zeros_like(g)], None, [1], lr=1e-3, beta1=0.9,
                        beta2=0.99, eps=1e-8)
            O.sgd_step([p_], [g_], [np.zeros_like(g)], [True], lr=0.1, momentum=0.9)
        assert np.array_equal(ps[0], ps[1])
        with fg.no_grad():
            for op in (lambda t: t.relu(), lambda t: t.softmax(dim=1), lambda t: t.exp()):
                assert np.array_equal(op(fg.tensor(x2))._data, op(fg.tensor(un(x2)))._data)
        print("OK")
    """)


# ---- softmax of -inf is exactly 0 (was FLT_MIN ~ 1.2e-38), bit-identical for any thread count ------
@pytest.mark.parametrize("cols", [3, 8, 17, 100])
def test_softmax_of_minus_inf_is_exactly_zero(threads, cols):
    rng = np.random.default_rng(cols)
    x = rng.standard_normal((33, cols)).astype(np.float32)
    x[:, ::3] = -np.inf
    x[0, :] = -np.inf  # row 0: a single finite entry, whose probability is then exactly 1
    x[0, 1] = 0.5
    results = []
    for n in (1, 2, 3):
        threads(n)
        results.append((KS.softmax(x), KS.log_softmax(x)))
    for s, ls in results[1:]:
        assert np.array_equal(s, results[0][0]) and np.array_equal(ls, results[0][1], equal_nan=True)
    s, ls = results[0]
    masked = np.isneginf(x)
    assert np.all(s[masked] == 0.0) and s[0, 1] == 1.0
    assert np.all(np.isneginf(ls[masked]))
    want = torch.softmax(torch.from_numpy(x), dim=1).numpy()
    np.testing.assert_allclose(s, want, rtol=1e-6, atol=0)
    with fg.no_grad():
        y = fg.tensor(x).softmax(dim=1)._data
    assert np.all(y[masked] == 0.0)


def test_exp_limits_are_exact():
    # below ln(FLT_MIN) exp gives exactly 0; NaN stays NaN; ordinary values keep their accuracy
    x = np.array([-np.inf, -1e30, -104.0, -88.0, -87.0, 0.0, 1.0, 88.0, np.nan], np.float32)
    y = _C.rnn.activation("exp", x)
    assert np.all(y[:4] == 0.0) and np.isnan(y[-1])
    np.testing.assert_allclose(y[4:-1], np.exp(x[4:-1].astype(np.float64)), rtol=1e-6)
    assert KA.sigmoid(np.array([-np.inf, np.inf], np.float32)).tolist() == [0.0, 1.0]
