"""The last torch.nn classes forgegrad lacked: FractionalMaxPool3d (and F.fractional_max_pool3d), CrossMapLRN2d,
DataParallel (torch's CPU behaviour) and the deprecated Container, against torch 2.13. (SyncBatchNorm:
tests/test_sync_batchnorm.py.)"""
import warnings

import numpy as np
import pytest
import torch

import forgegrad as fg
import forgegrad.nn.functional as F
from forgegrad import nn


def _x(*shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def test_torch_nn_classes_all_exist():
    missing = {n for n in dir(torch.nn) if not n.startswith("_") and isinstance(getattr(torch.nn, n), type)
               and not hasattr(nn, n)}
    assert not missing, missing  # LinearCrossEntropyLoss was the last: tests/test_linear_cross_entropy.py


# ---- FractionalMaxPool3d ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,k,kw", [((2, 3, 10, 11, 9), 2, {"output_size": (4, 5, 3)}),
                                        ((3, 7, 8, 9), (2, 3, 2), {"output_ratio": (0.5, 0.6, 0.7)}),
                                        ((1, 2, 6, 13, 7), 3, {"output_size": 2}),
                                        ((2, 1, 5, 5, 5), (1, 2, 3), {"output_ratio": 0.5})])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fractional_max_pool3d_matches_torch_given_its_samples(shape, k, kw, dtype):
    x = _x(*shape, seed=3, dtype=dtype)
    x[..., 2, 3, 4] = np.nan  # a window's last NaN is its maximum (torch's scan)
    x[..., 0, 0, :3] = 1.5  # ties: the first in row-major order
    n = 1 if len(shape) == 4 else shape[0]
    s = torch.rand(n, shape[-4], 3, dtype=torch.float64 if dtype == np.float64 else torch.float32)
    xf, xt = fg.tensor(x, requires_grad=True), torch.from_numpy(x).requires_grad_()
    y, idx = F.fractional_max_pool3d(xf, k, return_indices=True, _random_samples=fg.tensor(s.numpy()), **kw)
    yt, it = torch.nn.functional.fractional_max_pool3d(xt, k, return_indices=True, _random_samples=s, **kw)
    np.testing.assert_array_equal(idx.numpy(), it.numpy())
    np.testing.assert_array_equal(y.detach().numpy(), yt.detach().numpy())
    assert y.dtype == dtype
    c = _x(*yt.shape, seed=4, dtype=dtype)
    (y * fg.tensor(c)).nansum().backward()
    (yt * torch.from_numpy(c)).nansum().backward()
    np.testing.assert_allclose(xf.grad.numpy(), xt.grad.numpy(), rtol=1e-6, atol=1e-7)


def test_fractional_max_pool3d_module_with_indices_and_errors():
    s = torch.rand(2, 3, 3)
    m = nn.FractionalMaxPool3d(2, output_ratio=0.5, return_indices=True, _random_samples=fg.tensor(s.numpy()))
    t = torch.nn.FractionalMaxPool3d(2, output_ratio=0.5, return_indices=True, _random_samples=s)
    assert repr(m) == repr(t) and list(m.state_dict()) == list(t.state_dict())
    x = _x(2, 3, 6, 8, 10, seed=5)
    (y, i), (yt, it) = m(fg.tensor(x)), t(torch.from_numpy(x))
    np.testing.assert_array_equal(y.numpy(), yt.numpy())
    np.testing.assert_array_equal(i.numpy(), it.numpy())
    samples = fg.tensor(s.numpy())
    out, ind = F.fractional_max_pool3d_with_indices(fg.tensor(x), 2, output_size=3, _random_samples=samples)
    tout, tind = torch.nn.functional.fractional_max_pool3d_with_indices(torch.from_numpy(x), 2, output_size=3,
                                                                          _random_samples=s)
    np.testing.assert_array_equal(ind.numpy(), tind.numpy())
    np.testing.assert_array_equal(out.numpy(), tout.numpy())
    o2, i2 = F.fractional_max_pool2d_with_indices(fg.tensor(x[0, 0]), 2, output_size=3)
    assert o2.shape == i2.shape == (6, 3, 3)
    fg.manual_seed(0)
    a = nn.FractionalMaxPool3d(2, output_size=(3, 3, 3))(fg.tensor(x)).numpy()
    fg.manual_seed(0)
    assert np.array_equal(a, nn.FractionalMaxPool3d((2, 2, 2), output_size=3)(fg.tensor(x)).numpy())
    empty = F.fractional_max_pool3d(fg.randn(0, 2, 6, 6, 6, requires_grad=True), 2, output_size=3)
    assert empty.shape == (0, 2, 3, 3, 3)
    with pytest.raises(ValueError, match="output size, or a pooling ratio"):
        nn.FractionalMaxPool3d(2)
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.FractionalMaxPool3d(2, output_ratio=(0.5, 0.5, 1.5))
    with pytest.raises(TypeError, match="kernel_size must be an int or a tuple of 3 ints"):
        nn.FractionalMaxPool3d((2, 2), output_size=3)
    with pytest.raises(ValueError, match="pool time 4 too large"):
        F.fractional_max_pool3d(fg.randn(1, 1, 4, 9, 9), 4, output_size=3)
    with pytest.raises(ValueError, match=r"_random_samples must have shape \(N, C, 3\)"):
        F.fractional_max_pool3d(fg.randn(1, 2, 6, 6, 6), 2, output_size=3, _random_samples=fg.rand(1, 2, 2))
    with pytest.raises(ValueError, match="4-D"):
        F.fractional_max_pool3d(fg.randn(6, 6, 6), 2, output_size=3)
    with pytest.raises(ValueError, match="either an output_size or an output_ratio"):
        F.fractional_max_pool3d(fg.randn(1, 6, 6, 6), 2)
    with pytest.raises(TypeError, match="floating point"):
        F.fractional_max_pool3d(fg.tensor(np.zeros((1, 6, 6, 6), np.int64)), 2, output_size=3)


@pytest.mark.parametrize("nd", [2, 3])
def test_fractional_max_pool_samples_checked_as_torch(nd):
    """torch takes _random_samples with more rows than the batch (the first N are used: a module's fixed samples
    on a smaller last batch) and refuses samples whose dtype is not the input's."""
    f, tf = getattr(F, f"fractional_max_pool{nd}d"), getattr(torch.nn.functional, f"fractional_max_pool{nd}d")
    x = _x(2, 3, *(7,) * nd, seed=6)
    s = torch.rand(5, 3, nd)
    y, yt = f(fg.tensor(x), 2, output_size=3, _random_samples=fg.tensor(s.numpy())), tf(torch.from_numpy(x), 2, 3,
                                                                                          _random_samples=s)
    np.testing.assert_array_equal(y.numpy(), yt.numpy())
    m = getattr(nn, f"FractionalMaxPool{nd}d")(2, output_size=3, _random_samples=fg.tensor(s.numpy()))
    np.testing.assert_array_equal(m(fg.tensor(x[:1])).numpy(), tf(torch.from_numpy(x[:1]), 2, 3,
                                                                  _random_samples=s).numpy())
    for bad in (s.double(), torch.zeros(2, 3, nd, dtype=torch.int64)):
        with pytest.raises(RuntimeError, match="same dtype as input"):
            tf(torch.from_numpy(x), 2, 3, _random_samples=bad)
        with pytest.raises(TypeError, match="_random_samples must have the input's dtype float32"):
            f(fg.tensor(x), 2, output_size=3, _random_samples=fg.tensor(bad.numpy()))
    with pytest.raises(ValueError, match="_random_samples must have shape"):
        f(fg.tensor(x), 2, output_size=3, _random_samples=fg.rand(1, 3, nd))
    with pytest.raises(TypeError, match="_random_samples must be a forgegrad.Tensor"):
        f(fg.tensor(x), 2, output_size=3, _random_samples=s.tolist())
    with pytest.raises(TypeError, match="output_ratio must be a number or a tuple"):  # torch: '<' not supported
        getattr(nn, f"FractionalMaxPool{nd}d")(2, output_ratio=(0.5,) * (nd - 1) + ("half",))


def test_fractional_max_pool2d_float16_draws_its_own_samples():
    """float16 input without _random_samples: the samples are drawn (float32 draws rounded, as the 2-D code did
    before it became n-dimensional), and given float16 samples the values are torch's."""
    x = _x(2, 3, 9, 9, seed=7).astype(np.float16)
    xf = fg.tensor(x).half()  # fg.tensor makes float32 of a float16 array
    fg.manual_seed(0)
    y = F.fractional_max_pool2d(xf, 2, output_size=4)
    assert y.dtype == fg.float16 and y.shape == (2, 3, 4, 4)
    s = torch.rand(2, 3, 2).half()
    np.testing.assert_array_equal(
        F.fractional_max_pool2d(xf, 2, output_size=4, _random_samples=fg.tensor(s.numpy()).half()).numpy(),
        torch.nn.functional.fractional_max_pool2d(torch.from_numpy(x), 2, 4, _random_samples=s).numpy())


# ---- CrossMapLRN2d ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [2, 3, 4, 5, 7])
@pytest.mark.parametrize("channels", [1, 3, 8])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_map_lrn2d_values_and_gradients_are_torchs(size, channels, dtype):
    x = _x(2, channels, 3, 4, seed=size + channels, dtype=dtype) * 3
    kw = {"alpha": 0.3, "beta": 0.7, "k": 1.5}
    xf, xt = fg.tensor(x, requires_grad=True), torch.from_numpy(x).requires_grad_()
    y, yt = nn.CrossMapLRN2d(size, **kw)(xf), torch.nn.CrossMapLRN2d(size, **kw)(xt)
    np.testing.assert_allclose(y.detach().numpy(), yt.detach().numpy(), rtol=1e-6, atol=1e-7)
    assert y.dtype == dtype
    g = _x(*x.shape, seed=1, dtype=dtype)
    (y * fg.tensor(g)).sum().backward()
    (yt * torch.from_numpy(g)).sum().backward()
    np.testing.assert_allclose(xf.grad.numpy(), xt.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_cross_map_lrn2d_module_and_errors():
    assert repr(nn.CrossMapLRN2d(3)) == repr(torch.nn.CrossMapLRN2d(3))
    assert repr(nn.CrossMapLRN2d(5, 1e-3, 0.5, 2.0)) == repr(torch.nn.CrossMapLRN2d(5, 1e-3, 0.5, 2.0))
    x = _x(2, 4, 3, 3)
    np.testing.assert_allclose(nn.CrossMapLRN2d(1)(fg.tensor(x)).numpy(),
                               torch.nn.CrossMapLRN2d(1)(torch.from_numpy(x)).numpy(), rtol=1e-6)
    y = nn.CrossMapLRN2d(1)(fg.tensor(x, requires_grad=True))
    with pytest.raises(RuntimeError, match="no gradient for size=1"):  # torch's backward fails there as well
        y.sum().backward()
    with pytest.raises(ValueError, match="Expected input to be 4D, got 3D"):
        nn.CrossMapLRN2d(3)(fg.randn(4, 3, 3))
    with pytest.raises(ValueError, match="at least one channel"):
        nn.CrossMapLRN2d(3)(fg.randn(2, 0, 3, 3))
    with pytest.raises(ValueError, match="size must be a positive int"):
        nn.CrossMapLRN2d(0)
    with pytest.raises(TypeError, match="alpha"):
        nn.CrossMapLRN2d(3, alpha="big")
    with pytest.raises(TypeError, match="forgegrad.Tensor"):
        nn.CrossMapLRN2d(3)(x)


# ---- DataParallel and Container ---------------------------------------------------------------------------------
def test_data_parallel_is_torchs_cpu_wrapper():
    fg.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    dp = nn.DataParallel(net, device_ids=[0], output_device=0)
    tdp = torch.nn.DataParallel(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)))
    assert dp.module is net and dp.device_ids == tdp.device_ids == []
    assert list(dp.state_dict()) == list(tdp.state_dict()) == ["module.0.weight", "module.0.bias",
                                                               "module.2.weight", "module.2.bias"]
    assert repr(dp).splitlines()[:2] == repr(tdp).splitlines()[:2]
    tdp.load_state_dict({k: torch.from_numpy(v.numpy()) for k, v in dp.state_dict().items()})
    x = _x(5, 4)
    xf = fg.tensor(x, requires_grad=True)
    y = dp(xf)
    np.testing.assert_allclose(y.detach().numpy(), tdp(torch.from_numpy(x)).detach().numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(y.detach().numpy(), net(fg.tensor(x)).detach().numpy())
    y.sum().backward()
    assert net[0].weight.grad is not None and list(dp.parameters())[0] is net[0].weight
    fresh = nn.DataParallel(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))
    fresh.load_state_dict(dp.state_dict())
    np.testing.assert_array_equal(fresh(fg.tensor(x)).detach().numpy(), y.detach().numpy())
    with pytest.raises(TypeError, match="module must be a forgegrad.nn.Module"):
        nn.DataParallel(lambda v: v)
    with pytest.raises(TypeError, match="device_ids must be None or a list"):
        nn.DataParallel(net, device_ids=0)
    with pytest.raises(TypeError, match="dim must be an int"):
        nn.DataParallel(net, dim="0")


def test_container_is_torchs_deprecated_module_of_keyword_children():
    with pytest.warns(FutureWarning, match="nn.Container` is deprecated"):
        c = nn.Container(a=nn.Linear(2, 3), b=nn.ReLU())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        t = torch.nn.Container(a=torch.nn.Linear(2, 3), b=torch.nn.ReLU())
    assert [n for n, _ in c.named_children()] == [n for n, _ in t.named_children()] == ["a", "b"]
    assert list(c.state_dict()) == list(t.state_dict())
    with pytest.raises(TypeError, match="is not a Module subclass"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            nn.Container(a=3)
