"""Pooling kernels on numpy arrays against torch.nn.functional (forward and autograd)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from forgegrad.kernels.pool import (adaptive_avg_pool2d_backward, adaptive_avg_pool2d_forward,
                                    avg_pool2d_backward, avg_pool2d_forward, max_pool2d_backward,
                                    max_pool2d_forward, max_pool2d_values)

MAX_CASES = [
    dict(kernel_size=3),
    dict(kernel_size=2, stride=2),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=1),
    dict(kernel_size=3, stride=2, padding=1, dilation=2),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=2, stride=3, ceil_mode=True),
    dict(kernel_size=(1, 4), stride=(1, 3), padding=(0, 2), dilation=(2, 1)),
]


@pytest.mark.parametrize("shape", [(2, 3, 11, 9), (1, 17, 8, 13)])
@pytest.mark.parametrize("args", MAX_CASES)
def test_max_pool2d_matches_torch(rng, shape, args):
    x = rng.standard_normal(shape).astype(np.float32)
    y, idx = max_pool2d_forward(x, **args)
    tx = torch.tensor(x, requires_grad=True)
    ty, ti = F.max_pool2d(tx, return_indices=True, **args)
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(idx, ti.numpy())
    gy = rng.standard_normal(y.shape).astype(np.float32)
    ty.backward(torch.tensor(gy))
    np.testing.assert_allclose(max_pool2d_backward(gy, idx, x.shape), tx.grad.numpy(), rtol=1e-6, atol=1e-6)


def test_max_pool2d_ties_and_nan_follow_torch():
    x = np.zeros((1, 1, 4, 4), np.float32)  # all ties: the first element of each window wins
    x[0, 0, 2, 3] = np.nan
    y, idx = max_pool2d_forward(x, 2)
    ty, ti = F.max_pool2d(torch.tensor(x), 2, return_indices=True)
    np.testing.assert_array_equal(idx, ti.numpy())
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ty.numpy()))



# rows of 14, 5, 35 (16 + 16 + a masked 3) and 17 outputs; odd heights and widths leave a row/column out;
# 7 and 3 outputs a row (LeNet's 14 x 14; a short block whose whole store spans two later rows)
@pytest.mark.parametrize("shape", [(3, 5, 28, 28), (2, 3, 7, 10), (1, 2, 9, 70), (1, 1, 64, 35), (4, 9, 14, 14),
                                   (2, 5, 6, 7), (3, 2, 8, 6)])
def test_max_pool2d_2x2_fast_path_edge_values(rng, shape, simd_path):
    # kernel 2 / stride 2 / no padding takes per-ISA code: same ties, -inf and NaN rules as torch
    x = rng.standard_normal(shape).astype(np.float32)
    x[:, :, 0:2, 0:2] = -np.inf                      # a window of only -inf
    x[:, :, 2, 2] = x[:, :, 2, 3] = x[:, :, 3, 2]    # ties inside a window
    x[:, :, 4, 4] = x[:, :, 5, 5] = np.nan           # two NaNs in one window
    x[:, :, 0, 2] = np.nan                           # NaN first in its window
    for args in (dict(kernel_size=2), dict(kernel_size=2, stride=2, ceil_mode=True)):
        y, idx = max_pool2d_forward(x, **args)
        ty, ti = F.max_pool2d(torch.tensor(x), return_indices=True, **args)
        np.testing.assert_array_equal(idx, ti.numpy())
        np.testing.assert_array_equal(y, ty.numpy())  # NaN positions compare equal too
    # dense ties, -inf and NaNs anywhere in the windows
    x = rng.integers(0, 3, shape).astype(np.float32)
    x[rng.random(shape) < 0.2] = np.nan
    x[rng.random(shape) < 0.2] = -np.inf
    y, idx = max_pool2d_forward(x, 2)
    ty, ti = F.max_pool2d(torch.tensor(x), 2, return_indices=True)
    np.testing.assert_array_equal(idx, ti.numpy())
    np.testing.assert_array_equal(y, ty.numpy())
    # the values-only pass (inference) picks the same candidates (its own code on AVX2): the same bits,
    # signed zeros among the ties included
    assert max_pool2d_values(x, 2).tobytes() == y.tobytes()
    z = rng.choice(np.array([0.0, -0.0, 1.0, np.nan, -np.inf], np.float32), size=shape)
    assert max_pool2d_values(z, 2).tobytes() == max_pool2d_forward(z, 2)[0].tobytes()
    np.testing.assert_array_equal(max_pool2d_values(x, 3, 2, 1, 1, True), max_pool2d_forward(x, 3, 2, 1, 1, True)[0])

AVG_CASES = [
    dict(kernel_size=3),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=1),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    dict(kernel_size=2, stride=1, padding=1, divisor_override=3),
]


@pytest.mark.parametrize("args", AVG_CASES)
def test_avg_pool2d_matches_torch(rng, args):
    x = rng.standard_normal((2, 5, 11, 8)).astype(np.float32)
    y = avg_pool2d_forward(x, **args)
    tx = torch.tensor(x, requires_grad=True)
    ty = F.avg_pool2d(tx, **args)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-6)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    ty.backward(torch.tensor(gy))
    np.testing.assert_allclose(avg_pool2d_backward(gy, x.shape, **args), tx.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("output_size", [1, (3, 4), (5, 7), (11, 9), (13, 2), (None, 3)])
def test_adaptive_avg_pool2d_matches_torch(rng, output_size):
    x = rng.standard_normal((2, 3, 11, 9)).astype(np.float32)
    y = adaptive_avg_pool2d_forward(x, output_size)
    tx = torch.tensor(x, requires_grad=True)
    ty = F.adaptive_avg_pool2d(tx, output_size)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-6)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    ty.backward(torch.tensor(gy))
    np.testing.assert_allclose(adaptive_avg_pool2d_backward(gy, x.shape), tx.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_pools_bit_identical_across_thread_counts(rng, threads):
    x = rng.standard_normal((3, 7, 13, 12)).astype(np.float32)
    outs = []
    for n in (1, 2, 3):
        threads(n)
        y, idx = max_pool2d_forward(x, 3, 2, 1)
        y2, idx2 = max_pool2d_forward(x, 2)  # the 2x2 / stride 2 loop
        a = avg_pool2d_forward(x, 3, 1, 1)
        ad = adaptive_avg_pool2d_forward(x, (5, 4))
        outs.append([y, idx, max_pool2d_backward(y, idx, x.shape), a, avg_pool2d_backward(a, x.shape, 3, 1, 1),
                     ad, adaptive_avg_pool2d_backward(ad, x.shape), y2, idx2])
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            np.testing.assert_array_equal(a, b)


def test_pool_errors(rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    with pytest.raises(TypeError, match="input"):
        max_pool2d_forward(x.astype(np.float64), 2)
    with pytest.raises(ValueError, match="input must be 4-D"):
        max_pool2d_forward(x[0], 2)
    with pytest.raises(ValueError, match="larger than the padded input"):
        max_pool2d_forward(x, 7)
    with pytest.raises(ValueError, match="larger than the padded input"):
        avg_pool2d_forward(x, (2, 8))
    with pytest.raises(ValueError, match="at most half of kernel_size"):
        max_pool2d_forward(x, 2, padding=2)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        avg_pool2d_forward(x, 2, stride=0)
    with pytest.raises(ValueError, match="kernel_size must be >= 1"):
        max_pool2d_forward(x, 0)
    with pytest.raises(TypeError, match="kernel_size"):
        max_pool2d_forward(x, "2")
    with pytest.raises(ValueError, match="divisor_override"):
        avg_pool2d_forward(x, 2, divisor_override=0)
    with pytest.raises(ValueError, match="output_size"):
        adaptive_avg_pool2d_forward(x, (0, 2))
    y, idx = max_pool2d_forward(x, 2)
    with pytest.raises(TypeError, match="indices"):
        max_pool2d_backward(y, idx.astype(np.int32), x.shape)
    with pytest.raises(ValueError, match="indices must lie"):
        max_pool2d_backward(y, idx + 100, x.shape)
    with pytest.raises(ValueError, match="input_shape"):
        max_pool2d_backward(y, idx, (2, 4, 6, 6))
    with pytest.raises(ValueError, match="grad_output must have shape"):
        avg_pool2d_backward(y[:, :, :2], x.shape, 2)


def test_adaptive_avg_pool2d_global_over_a_large_plane_stays_at_float32_rounding():
    # a float running sum over 2**22 values drifted ~2e-5 (relative) from the float64 mean; torch's is ~5e-8
    x = (np.random.default_rng(3).standard_normal((1, 2, 1024, 4096)) + 3).astype(np.float32)
    ref = x.astype(np.float64).mean(axis=(2, 3), keepdims=True)
    y = adaptive_avg_pool2d_forward(x, 1)
    np.testing.assert_allclose(y, ref, rtol=2e-7, atol=0)
