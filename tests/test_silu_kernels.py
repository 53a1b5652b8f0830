"""SiLU kernels (forgegrad.kernels.activation.silu / silu_backward, _C.activation.SILU) against torch
(CPU): odd shapes, every SIMD path, extreme inputs, NaN and inf, bit-identity across thread counts,
the fused Linear epilogue, error paths."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from forgegrad import _C
from forgegrad.kernels import activation as KA
from helpers import assert_same_bits_across_threads

SHAPES = [(1, 1), (3, 7), (5, 33), (2, 3, 17), (64, 1000), (1000003,)]
SPECIAL = np.array([100, -100, 0.0, -0.0, 1e-8, -1e-8, 30, -30, 17, -17, 88, -88, -88.7, 88.7, 1e30, -1e30],
                   np.float32)


def inputs(rng, shape, scale=4.0):
    x = (rng.standard_normal(shape) * scale).astype(np.float32)
    flat = x.reshape(-1)
    k = min(flat.size, SPECIAL.size)
    flat[:k] = SPECIAL[:k]
    return x


def torch_silu(x, g):
    t = torch.tensor(x, requires_grad=True)
    y = TF.silu(t)
    y.backward(torch.tensor(g))
    return y.detach().numpy(), t.grad.numpy()


@pytest.mark.parametrize("shape", SHAPES)
def test_silu_vs_torch(shape, simd_path, rng):
    x = inputs(rng, shape)
    g = rng.standard_normal(shape).astype(np.float32)
    y_ref, dx_ref = torch_silu(x, g)
    y = KA.silu(x)
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, y_ref, rtol=2e-6, atol=1e-30)
    np.testing.assert_allclose(KA.silu_backward(g, x), dx_ref, rtol=1e-5, atol=1e-6)


def test_silu_close_to_float64(simd_path):
    x = np.linspace(-90, 90, 360001, dtype=np.float32)
    xd = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    yd = TF.silu(xd)
    yd.backward(torch.ones_like(yd))
    # below -88.37, near where exp(-x) overflows float, the result is -0 (as torch's float32 silu
    # below -88.72): the float64 values there are under 3.7e-37 in size
    np.testing.assert_allclose(KA.silu(x), yd.detach().numpy(), rtol=5e-7, atol=3.7e-37)
    # The derivative s * (1 + x * (1 - s)) cancels near its zero (x ~ -1.28) and computes 1 - s in
    # float for large x, as torch does: a few ulp of the terms, 1e-6 absolute.
    np.testing.assert_allclose(KA.silu_backward(np.ones_like(x), x), xd.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_silu_large_inputs_are_finite(simd_path):
    x = np.array([100, -100, 1e4, -1e4, 3e38, -3e38, 88.8, -88.8] * 3, np.float32)  # full vectors and a tail
    y = KA.silu(x)
    dx = KA.silu_backward(np.ones_like(x), x)
    assert np.isfinite(y).all() and np.isfinite(dx).all()
    pos = x > 0
    np.testing.assert_array_equal(y[pos], x[pos])  # sigmoid rounds to 1
    np.testing.assert_array_equal(dx[pos], 1.0)
    assert (y[~pos] == 0).all() and np.signbit(y[~pos]).all()  # -0: the limit, negative side
    assert (dx[~pos] == 0).all()


def test_silu_nan_and_inf(simd_path):
    x = np.array([np.nan, np.inf, -np.inf, 1.0, -1.0] * 4, np.float32)  # 20: full vectors and a tail
    y = KA.silu(x)
    ref = TF.silu(torch.tensor(x)).numpy()
    nan, pinf, ninf = np.isnan(x), x == np.inf, x == -np.inf
    assert np.isnan(y[nan]).all()
    assert (y[pinf] == np.inf).all()
    assert np.isnan(y[ninf]).all()  # torch's x / (1 + exp(-x)) is -inf / inf = NaN (x = -100 gives -0)
    np.testing.assert_allclose(y, ref, rtol=1e-6, equal_nan=True)
    g = np.full_like(x, 2.0)
    dx = KA.silu_backward(g, x)
    assert np.isnan(dx[nan | pinf | ninf]).all()  # torch's inf * 0 (s = 1 at +inf, s = 0 at -inf)
    _, dx_ref = torch_silu(x, g)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-6, equal_nan=True)
    # a NaN incoming gradient stays NaN, also where x is very negative
    dn = KA.silu_backward(np.full(3, np.nan, np.float32), np.array([-1e4, 0.0, 1e4], np.float32))
    assert np.isnan(dn).all()


def test_silu_bit_identical_across_threads(threads, simd_path, rng):
    x = inputs(rng, (300007,))
    g = rng.standard_normal(x.size).astype(np.float32)
    assert_same_bits_across_threads(lambda: [KA.silu(x), KA.silu_backward(g, x)], threads)


def test_silu_out_in_place_and_noncontiguous(rng):
    x = inputs(rng, (9, 34))
    ref = TF.silu(torch.tensor(x)).numpy()
    np.testing.assert_allclose(KA.silu(x[:, ::2]), ref[:, ::2], rtol=2e-6, atol=1e-30)  # copied once
    out = np.empty((34, 9), np.float32).T  # a non-contiguous out
    KA.silu(x, out=out)
    np.testing.assert_allclose(out, ref, rtol=2e-6, atol=1e-30)
    g = rng.standard_normal(x.shape).astype(np.float32)
    _, dx_ref = torch_silu(x, g)
    np.testing.assert_allclose(KA.silu_backward(np.asfortranarray(g), x), dx_ref, rtol=1e-5, atol=1e-6)
    KA.silu_backward(g, x, out=g)  # in place over grad
    np.testing.assert_allclose(g, dx_ref, rtol=1e-5, atol=1e-6)
    KA.silu(x, out=x)  # in place over x
    np.testing.assert_allclose(x, ref, rtol=2e-6, atol=1e-30)


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_fused_linear_silu_epilogue(batch, simd_path, rng):
    x = rng.standard_normal((batch, 33)).astype(np.float32)
    w = rng.standard_normal((19, 33)).astype(np.float32)
    b = rng.standard_normal(19).astype(np.float32)
    got = _C.gemm.linear(x, w, b, _C.activation.SILU)
    ref = TF.silu(TF.linear(torch.tensor(x), torch.tensor(w), torch.tensor(b))).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    # exactly the unfused result: the same GEMM, then the same elementwise kernel
    np.testing.assert_array_equal(got, KA.silu(_C.gemm.linear(x, w, b)))


@pytest.mark.parametrize("exc, match, call", [
    (TypeError, "x must", lambda x: KA.silu(x.astype(np.float64))),
    (TypeError, "x must", lambda x: KA.silu([1.0, 2.0])),
    (TypeError, "grad must", lambda x: KA.silu_backward(x.astype(np.float16), x)),
    (TypeError, "x must", lambda x: KA.silu_backward(x, x.astype(np.int32))),
    (ValueError, "x must have the shape of grad", lambda x: KA.silu_backward(x, np.ones((4, 3), np.float32))),
    (ValueError, "out must have shape", lambda x: KA.silu(x, out=np.empty(12, np.float32))),
    (ValueError, "op must be", lambda x: _C.activation.act_forward(99, x, np.empty_like(x))),
    (ValueError, "activation must be", lambda x: _C.gemm.linear(x, np.ones((2, 4), np.float32), None, 99)),
])
def test_silu_errors(exc, match, call):
    x = np.ones((3, 4), np.float32)
    with pytest.raises(exc, match=match):
        call(x)
