"""Adaptive average / max pooling to sizes > 1 on the per-ISA kernel (cpp/kernels/per_isa/adaptive_pool.cpp):
values, indices and gradients against torch on odd shapes and overlapping windows, ties and NaN as torch's
row-major scan resolves them, bit-identical results on every SIMD path and at 1 / 2 / 3 threads, the average's
float64 accuracy, and the binding's argument checks."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import forgegrad as fg
import forgegrad.nn.functional as F
from forgegrad import _C
from forgegrad.kernels.pool import (adaptive_avg_pool2d_backward, adaptive_avg_pool2d_forward,
                                    adaptive_max_pool2d_backward, adaptive_max_pool2d_forward)
from helpers import assert_same_bits_across_threads

pytestmark = pytest.mark.usefixtures("torch_one_thread")

# (input shape, output size): VGG's 7x7, 17 -> 3, 56 -> 7, overlapping 9 -> 4, a row of 5, outputs larger than
# the input, widths around the vector lengths, a wide plane
CASES = [((2, 3, 14, 14), (7, 7)), ((1, 4, 17, 17), (3, 3)), ((1, 2, 56, 56), (7, 7)), ((3, 2, 9, 9), (4, 4)),
         ((2, 2, 7, 7), (1, 5)), ((1, 3, 5, 4), (7, 6)), ((2, 1, 13, 33), (5, 6)), ((1, 2, 3, 200), (2, 37)),
         ((1, 1, 31, 17), (31, 1)), ((2, 2, 7, 9), (3, 4))]


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("shape,out", CASES)
def test_adaptive_avg_matches_torch(shape, out):
    x = _x(shape, seed=sum(shape))
    y = adaptive_avg_pool2d_forward(x, out)
    tx = torch.tensor(x, requires_grad=True)
    ty = TF.adaptive_avg_pool2d(tx, out)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=2e-6, atol=1e-7)
    gy = _x(y.shape, seed=1)
    ty.backward(torch.tensor(gy))
    np.testing.assert_allclose(adaptive_avg_pool2d_backward(gy, x.shape), tx.grad.numpy(), rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("shape,out", CASES)
def test_adaptive_max_matches_torch(shape, out):
    x = _x(shape, seed=sum(shape) + 1)
    y, idx = adaptive_max_pool2d_forward(x, out)
    tx = torch.tensor(x, requires_grad=True)
    ty, ti = TF.adaptive_max_pool2d(tx, out, return_indices=True)
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(idx, ti.numpy())
    gy = _x(y.shape, seed=2)
    ty.backward(torch.tensor(gy))
    # overlapping windows can share a maximum: both add, in output order (torch's)
    np.testing.assert_array_equal(adaptive_max_pool2d_backward(gy, idx, x.shape), tx.grad.numpy())


@pytest.mark.parametrize("shape,out", [((2, 3, 9, 9), (4, 4)), ((1, 2, 12, 10), (5, 3)), ((1, 1, 4, 3), (7, 5))])
def test_adaptive_max_ties_and_infinities_follow_torch(shape, out):
    x = np.floor(np.random.default_rng(3).uniform(0, 3, shape)).astype(np.float32)  # many equal maxima
    x[..., 0, :] = -np.inf  # a row of -inf: windows of -inf keep their first element
    x[0, 0] = -np.inf  # a whole plane of -inf
    y, idx = adaptive_max_pool2d_forward(x, out)
    ty, ti = TF.adaptive_max_pool2d(torch.tensor(x), out, return_indices=True)
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(idx, ti.numpy())


def test_adaptive_max_ties_across_rows_take_the_row_major_first():
    # equal maxima at (1, 0) and (0, 1): the column-wise pass sees column 0 first, torch's scan row 0 first
    x = np.zeros((1, 1, 2, 2), np.float32)
    x[0, 0, 1, 0] = x[0, 0, 0, 1] = 5.0
    _, idx = adaptive_max_pool2d_forward(x, 1)
    ti = TF.adaptive_max_pool2d(torch.tensor(x), 1, return_indices=True)[1]
    assert idx.ravel().tolist() == ti.flatten().tolist() == [1]


@pytest.mark.parametrize("shape,out", [((2, 3, 9, 9), (4, 4)), ((1, 2, 14, 14), (7, 7)), ((1, 1, 5, 4), (7, 6))])
def test_adaptive_nan_follows_torch(shape, out):
    rng = np.random.default_rng(4)
    x = _x(shape, seed=5)
    x[rng.random(shape) < 0.15] = np.nan  # several NaNs in some windows: torch keeps the last one
    x[0, 0, 1, :] = np.nan  # a NaN row across column windows
    y, idx = adaptive_max_pool2d_forward(x, out)
    ty, ti = TF.adaptive_max_pool2d(torch.tensor(x), out, return_indices=True)
    np.testing.assert_array_equal(y, ty.numpy())  # NaN where torch has NaN
    np.testing.assert_array_equal(idx, ti.numpy())
    ya = adaptive_avg_pool2d_forward(x, out)
    np.testing.assert_array_equal(np.isnan(ya), np.isnan(TF.adaptive_avg_pool2d(torch.tensor(x), out).numpy()))


def test_adaptive_avg_of_negative_zeros_is_positive_zero_as_torch():
    x = np.full((1, 1, 6, 6), -0.0, np.float32)
    y = adaptive_avg_pool2d_forward(x, (4, 4))
    assert not np.signbit(y).any() and not np.signbit(TF.adaptive_avg_pool2d(torch.tensor(x), (4, 4)).numpy()).any()


def test_adaptive_avg_sums_in_float64():
    # a large window of values with a nonzero mean: a float32 running sum drifts, a float64 one does not
    x = (np.random.default_rng(6).standard_normal((1, 2, 512, 300)) + 3.0).astype(np.float32)
    y = adaptive_avg_pool2d_forward(x, (2, 3))
    ref = x.astype(np.float64).reshape(1, 2, 2, 256, 3, 100).mean(axis=(3, 5))
    np.testing.assert_allclose(y, ref, rtol=1.2e-7, atol=0)


@pytest.mark.parametrize("shape,out", [((2, 5, 17, 17), (3, 3)), ((1, 3, 9, 9), (4, 4)), ((1, 2, 5, 4), (7, 6))])
def test_same_bits_on_every_simd_path(simd_path, shape, out):
    x = _x(shape, seed=7)
    x[0, 0, 2, 3] = np.nan
    gy = _x((shape[0], shape[1]) + out, seed=8)
    fg.set_simd("scalar")
    ref = [adaptive_avg_pool2d_forward(x, out), adaptive_avg_pool2d_backward(gy, shape),
           *adaptive_max_pool2d_forward(x, out)]
    fg.set_simd(simd_path)
    got = [adaptive_avg_pool2d_forward(x, out), adaptive_avg_pool2d_backward(gy, shape),
           *adaptive_max_pool2d_forward(x, out)]
    for a, b in zip(ref, got):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("shape,out", [((8, 64, 21, 19), (4, 4)), ((3, 300, 14, 14), (7, 7))])
def test_same_bits_at_1_2_3_threads(threads, shape, out):
    x = _x(shape, seed=9)
    gy = _x((shape[0], shape[1]) + out, seed=10)
    assert_same_bits_across_threads(lambda: [adaptive_avg_pool2d_forward(x, out),
                                             adaptive_avg_pool2d_backward(gy, shape),
                                             *adaptive_max_pool2d_forward(x, out)], threads)


@pytest.mark.parametrize("nd", [1, 2])
def test_ops_float32_and_float64_through_autograd(nd):
    shape = (2, 3, 9) if nd == 1 else (2, 3, 9, 11)
    out = 4 if nd == 1 else (4, 3)
    for dtype in (np.float32, np.float64):
        x = _x(shape, seed=11).astype(dtype)
        xt = fg.tensor(x, requires_grad=True)
        pool = F.adaptive_max_pool1d if nd == 1 else F.adaptive_max_pool2d
        y, idx = pool(xt, out, return_indices=True)
        (y * fg.tensor(np.arange(y.numel(), dtype=dtype).reshape(y.shape))).sum().backward()
        tx = torch.tensor(x, requires_grad=True)
        tpool = TF.adaptive_max_pool1d if nd == 1 else TF.adaptive_max_pool2d
        ty, ti = tpool(tx, out, return_indices=True)
        (ty * torch.arange(ty.numel(), dtype=tx.dtype).reshape(ty.shape)).sum().backward()
        assert y.numpy().dtype == dtype
        np.testing.assert_array_equal(y.numpy(), ty.detach().numpy())
        np.testing.assert_array_equal(idx.numpy(), ti.numpy())
        np.testing.assert_array_equal(xt.grad.numpy(), tx.grad.numpy())


def test_binding_checks_its_arguments():
    x = _x((2, 3, 9, 9))
    y, idx = np.empty((2, 3, 4, 4), np.float32), np.empty((2, 3, 4, 4), np.int64)
    with pytest.raises(ValueError, match="indices"):
        _C.pool.adaptive_max_pool2d_forward(x, y, np.empty((2, 3, 4, 5), np.int64))
    with pytest.raises(ValueError, match="adaptive_max_pool2d"):
        _C.pool.adaptive_max_pool2d_forward(x, np.empty((2, 2, 4, 4), np.float32), idx)
    with pytest.raises(ValueError, match="adaptive_max_pool2d"):
        _C.pool.adaptive_max_pool2d_forward(x, np.empty((2, 3, 0, 4), np.float32), np.empty((2, 3, 0, 4), np.int64))
    with pytest.raises(TypeError):
        _C.pool.adaptive_max_pool2d_forward(x.astype(np.float64), y, idx)
    with pytest.raises(TypeError):
        _C.pool.adaptive_max_pool2d_forward(x, y, idx.astype(np.int32))
    with pytest.raises(ValueError, match="overlap|alias"):
        _C.pool.adaptive_max_pool2d_forward(x, x.reshape(-1)[:96].reshape(2, 3, 4, 4), idx)
    with pytest.raises(ValueError, match="output_size"):
        adaptive_max_pool2d_forward(x, (0, 2))
    with pytest.raises(TypeError, match="float32"):
        adaptive_max_pool2d_forward(x.astype(np.float64), 2)
    with pytest.raises(ValueError, match="indices"):
        adaptive_max_pool2d_backward(np.ones((2, 3, 4, 4), np.float32), np.full((2, 3, 4, 4), 81, np.int64), x.shape)
