"""The faster paths of Tensor.unfold's backward, histogram, the shifts, gcd, isin, rot90 and log1p against torch, on
inputs large or odd enough to take them (the registry's samples are small and would mostly take the plain paths)."""
import numpy as np
import pytest
import torch

import forgegrad as fg


@pytest.mark.parametrize("shape,d,size,step", [((3, 70), 1, 16, 4), ((5, 37, 2), 1, 7, 3), ((41,), 0, 5, 2),
                                               ((4, 33), 1, 6, 6), ((2, 29, 3), 1, 4, 9), ((9, 4), 0, 9, 1),
                                               ((6, 50), -1, 10, 4), ((5, 36, 2), 1, 6, 2), ((12, 3), 0, 8, 4),
                                               ((2, 33, 3), 1, 8, 1), ((12,), 0, 5, 1), ((3, 40), -1, 7, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unfold_overlapping_windows_gradient(shape, d, size, step, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    ours, ref = fg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, ty = ours.unfold(d, size, step), ref.unfold(d, size, step)
    w = (rng.standard_normal(tuple(y.shape)) * 10.0 ** rng.integers(-3, 4, tuple(y.shape))).astype(dtype)
    (y * fg.tensor(w)).sum().backward()
    (ty * torch.tensor(w)).sum().backward()
    assert ours.grad.dtype == ours.dtype
    # torch adds an element's terms in increasing window index: the same order, the same bits
    assert ours.grad.numpy().tobytes() == ref.grad.numpy().tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bins", [1, 7, 100, 4096])
def test_histogram_int_bins_matches_torch(dtype, bins):
    rng = np.random.default_rng(bins)
    x = np.concatenate([rng.standard_normal(20000), rng.integers(-8, 9, 3000) * 0.25, [np.nan, np.inf]]).astype(dtype)
    for kw in ({"range": (-1.3, 2.0)}, {"range": (0.0, 0.25)}, {}):
        if not kw:  # the data's range: finite data (torch refuses a NaN range too)
            x = x[np.isfinite(x)]
        hist, edges = fg.histogram(fg.tensor(x), bins, **kw)
        t_hist, t_edges = torch.histogram(torch.tensor(x), bins, **kw)
        assert np.array_equal(hist.numpy(), t_hist.numpy()) and np.array_equal(edges.numpy(), t_edges.numpy())
        assert hist.numpy().dtype == dtype


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.int32, np.int64])
def test_shifts_by_a_number_and_a_tensor_match_torch(dtype):
    info = np.iinfo(dtype)
    rng = np.random.default_rng(1)
    a = rng.integers(info.min, info.max, 5000, endpoint=True).astype(dtype)
    fa, ta = fg.from_numpy(a), torch.from_numpy(a)
    for k in range(info.bits + 2):
        assert np.array_equal((fa << k).numpy(), (ta << k).numpy()), k
        assert np.array_equal((fa >> k).numpy(), (ta >> k).numpy()), k
    low = -2 if info.min < 0 else 0
    s = rng.integers(low, info.bits + 3, 5000).astype(dtype)
    fs, ts = fg.from_numpy(s), torch.from_numpy(s)
    assert np.array_equal((fa << fs).numpy(), (ta << ts).numpy())
    assert np.array_equal((fa >> fs).numpy(), (ta >> ts).numpy())
    assert (fa << 3).dtype == fa.dtype


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8])
def test_gcd_with_the_minimum_matches_torch(dtype):
    info = np.iinfo(dtype)
    rng = np.random.default_rng(2)
    a = rng.integers(info.min, info.max, (40, 50), endpoint=True).astype(dtype)
    b = rng.integers(info.min, info.max, (50,), endpoint=True).astype(dtype)
    a[0, :5], b[:3] = info.min, info.min
    a[1, :5] = 0
    for x, y in ((a, b), (b, a)):
        got = fg.gcd(fg.from_numpy(x), fg.from_numpy(y)).numpy()
        assert np.array_equal(got, torch.gcd(torch.from_numpy(x), torch.from_numpy(y)).numpy())


@pytest.mark.parametrize("test_count", [1, 3, 8, 9])
def test_isin_few_test_elements_matches_torch(test_count):
    rng = np.random.default_rng(test_count)
    el = (rng.integers(-6, 7, (30, 40)) * 0.5).astype(np.float32)
    el[0, :4] = [np.nan, -0.0, 0.0, np.inf]
    test = (rng.integers(-6, 7, test_count) * 0.5).astype(np.float32)
    test[0] = -0.0 if test_count < 3 else np.nan
    for invert in (False, True):
        got = fg.isin(fg.tensor(el), fg.tensor(test), invert=invert).numpy()
        assert np.array_equal(got, torch.isin(torch.tensor(el), torch.tensor(test), invert=invert).numpy())
    assert np.array_equal(fg.isin(fg.tensor(el), 1.5).numpy(), torch.isin(torch.tensor(el), 1.5).numpy())


@pytest.mark.parametrize("k", [-3, -1, 1, 3, 5])
def test_rot90_odd_turns_are_torch_strides(k):
    x = np.random.default_rng(3).standard_normal((3, 5, 4)).astype(np.float32)
    ours, ref = fg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, ty = fg.rot90(ours, k, (2, 0)), torch.rot90(ref, k, [2, 0])
    assert np.array_equal(y.numpy(), ty.detach().numpy()) and y.is_contiguous() == ty.is_contiguous()
    assert tuple(s // 4 for s in y.numpy().strides) == ty.stride()
    (y * 3).sum().backward()
    (ty * 3).sum().backward()
    assert np.array_equal(ours.grad.numpy(), ref.grad.numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log1p_below_minus_one_same_bits_as_numpy(dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(10000).astype(dtype) * 2
    x[:6] = [np.nan, -np.inf, np.inf, -1.0, -0.0, -1.5]
    got = fg.log1p(fg.tensor(x)).numpy()
    with np.errstate(all="ignore"):
        assert got.tobytes() == np.log1p(x).tobytes()
    np.testing.assert_allclose(got, torch.log1p(torch.tensor(x)).numpy(), rtol=1e-6, equal_nan=True)
