"""Long float32 scans accumulate in float64 as torch's CPU kernels do: a float32 running product or log-sum over
millions of elements drifted by whole units before (logcumsumexp of 2**24 normal values ended 0.9 off), and
logcumsumexp's gradient of a long 1-D scan ran a Python loop per element (12 s for 2**20 values)."""
import numpy as np
import pytest
import torch

import forgegrad as fg


def _torch_grad(fn, x, g, dtype):
    t = torch.from_numpy(x).to(dtype).requires_grad_()
    y = fn(t)
    y.backward(torch.from_numpy(g).to(dtype))
    return y.detach().numpy(), t.grad.numpy()


def _fg_grad(fn, x, g):
    t = fg.tensor(x, requires_grad=True)
    y = fn(t)
    y.backward(fg.tensor(g))
    return y.detach().numpy(), t.grad.numpy()


@pytest.mark.parametrize("shape, dim", [((1 << 20,), 0), ((3, 70001), 1), ((50001, 3), 0)])
def test_logcumsumexp_long_float32_as_accurate_as_torch(shape, dim):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    ref_y, ref_g = _torch_grad(lambda t: torch.logcumsumexp(t, dim), x, g, torch.float64)
    t_y, t_g = _torch_grad(lambda t: torch.logcumsumexp(t, dim), x, g, torch.float32)
    y, gx = _fg_grad(lambda t: fg.logcumsumexp(t, dim), x, g)
    assert y.dtype == np.float32 and gx.dtype == np.float32
    # within twice torch's own float32 error (and a floor of a few ulps at the largest value)
    y_err, t_y_err = np.abs(y - ref_y).max(), np.abs(t_y - ref_y).max()
    assert y_err <= 2 * t_y_err + 4 * np.spacing(np.float32(np.abs(ref_y).max()))
    scale = np.abs(ref_g).max()
    assert np.abs(gx - ref_g).max() / scale <= 2 * np.abs(t_g - ref_g).max() / scale + 1e-6


def test_logcumsumexp_2_24_values_ends_at_the_float64_sum():
    x = np.random.default_rng(6).standard_normal(1 << 24).astype(np.float32)
    y = fg.logcumsumexp(fg.tensor(x), 0).numpy()
    ref = np.logaddexp.reduce(x.astype(np.float64))
    assert abs(float(y[-1]) - ref) < 1e-5  # was 0.9 off with a float32 accumulator


@pytest.mark.parametrize("shape, dim", [((1 << 22,), 0), ((2, 100003), 1)])
def test_cumprod_long_float32_as_accurate_as_torch(shape, dim):
    rng = np.random.default_rng(7)
    x = (1 + (rng.random(shape) - 0.5) * 1e-5).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    ref_y, ref_g = _torch_grad(lambda t: torch.cumprod(t, dim), x, g, torch.float64)
    t_y, t_g = _torch_grad(lambda t: torch.cumprod(t, dim), x, g, torch.float32)
    y, gx = _fg_grad(lambda t: fg.cumprod(t, dim), x, g)
    # float32 accumulation drifted 2e-3 (relative) over 2**22 factors; torch's is ~6e-8
    assert np.abs(y / ref_y - 1).max() <= 2 * np.abs(t_y / ref_y - 1).max() + 1e-7
    scale = np.abs(ref_g).max()
    assert np.abs(gx - ref_g).max() / scale <= 2 * np.abs(t_g - ref_g).max() / scale + 1e-6


def test_cumprod_float32_past_float32_range_and_back_as_torch():
    # the float64 accumulator carries a product past float32's range and back, as torch's
    x = np.array([1e30, 1e30, 1e-30, 1e-30, 0.5], np.float32)
    np.testing.assert_array_equal(fg.cumprod(fg.tensor(x), 0).numpy(), torch.cumprod(torch.from_numpy(x), 0).numpy())
    y = np.array([1e-30, 1e-30, 1e30, 1e30, -2.0], np.float32)
    np.testing.assert_array_equal(fg.cumprod(fg.tensor(y), 0).numpy(), torch.cumprod(torch.from_numpy(y), 0).numpy())
