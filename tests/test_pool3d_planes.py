"""float32 max_pool3d on the C++ 3-D kernel and avg_pool3d on the C++ 2-D pool kernels (ops/_pool3d_planes.py)
against torch: values and indices exactly (ties, NaN, -inf, whole rows of them), gradients, ceil_mode, dilation,
padding, depth 1; the max pools' C++ gradient scatter (adaptive_max_pool3d's too); the same bits at 1, 2 and 3
threads; the 3-D kernel's argument checks."""
import importlib.util

import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad.ops import _pool3d_planes as planes

from helpers import assert_same_bits_across_threads

F = fg.nn.functional
TF = torch.nn.functional

CASES = [
    ((2, 3, 5, 6, 7), dict(kernel_size=2)),
    ((2, 3, 5, 6, 7), dict(kernel_size=3, stride=2, padding=1)),
    ((1, 2, 7, 5, 6), dict(kernel_size=(3, 2, 2), stride=(2, 1, 2), padding=(1, 1, 0), ceil_mode=True)),
    ((1, 2, 9, 8, 7), dict(kernel_size=3, stride=(3, 2, 2), padding=1, dilation=(2, 1, 2), ceil_mode=True)),
    ((1, 2, 1, 4, 5), dict(kernel_size=(1, 2, 3))),  # depth 1
    ((2, 2, 6, 5, 5), dict(kernel_size=2, stride=1, padding=1)),  # overlapping windows
    ((1, 3, 4, 7, 33), dict(kernel_size=(2, 3, 5), stride=(1, 3, 3), padding=(1, 1, 2))),  # stride 3 along W
    ((2, 1, 5, 3, 19), dict(kernel_size=3, stride=(2, 2, 1), padding=1, ceil_mode=True)),  # a row past 16 outputs
    ((1, 2, 3, 2, 40), dict(kernel_size=(3, 2, 4), stride=(1, 2, 4), dilation=(1, 1, 2), padding=(1, 1, 2))),
]


@pytest.fixture
def calls(monkeypatch):
    counts = {}
    for name in ("max_pool", "scatter_max", "avg_pool", "avg_pool_backward"):
        fn = getattr(planes, name)

        def counted(*a, _fn=fn, _name=name):
            counts[_name] = counts.get(_name, 0) + 1
            return _fn(*a)
        monkeypatch.setattr(planes, name, counted)
    return counts


def _input(rng, shape, kind):
    x = rng.standard_normal(shape).astype(np.float32)
    if kind == "ties":
        x = np.round(x).astype(np.float32)
    elif kind == "nan":
        x[rng.random(shape) < 0.05] = np.nan
        x[rng.random(shape) < 0.1] = -np.inf
    return x


@pytest.mark.parametrize("shape,kw", CASES)
@pytest.mark.parametrize("kind", ["normal", "ties", "nan"])
def test_max_pool3d_values_indices_and_gradient_match_torch(rng, calls, shape, kw, kind):
    x = _input(rng, shape, kind)
    tx, fx = torch.tensor(x, requires_grad=True), fg.tensor(x, requires_grad=True)
    ty, ti = TF.max_pool3d(tx, return_indices=True, **kw)
    fy, fi = F.max_pool3d(fx, return_indices=True, **kw)
    np.testing.assert_array_equal(fy._data, ty.detach().numpy())
    np.testing.assert_array_equal(fi._data, ti.numpy())
    g = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    ty.backward(torch.tensor(g))
    (fy * fg.tensor(g)).sum().backward()
    np.testing.assert_allclose(fx.grad._data, tx.grad.numpy(), rtol=1e-6, atol=1e-6)
    assert calls == {"max_pool": 1, "scatter_max": 1}


@pytest.mark.parametrize("shape,kw", CASES)
@pytest.mark.parametrize("count_include_pad,divisor_override", [(True, None), (False, None), (True, 3)])
def test_avg_pool3d_matches_torch(rng, calls, shape, kw, count_include_pad, divisor_override):
    kw = {k: v for k, v in kw.items() if k != "dilation"}
    x = rng.standard_normal(shape).astype(np.float32)
    tx, fx = torch.tensor(x, requires_grad=True), fg.tensor(x, requires_grad=True)
    args = dict(count_include_pad=count_include_pad, divisor_override=divisor_override, **kw)
    ty, fy = TF.avg_pool3d(tx, **args), F.avg_pool3d(fx, **args)
    np.testing.assert_allclose(fy._data, ty.detach().numpy(), rtol=1e-5, atol=1e-6)
    g = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    ty.backward(torch.tensor(g))
    (fy * fg.tensor(g)).sum().backward()
    np.testing.assert_allclose(fx.grad._data, tx.grad.numpy(), rtol=1e-5, atol=1e-6)
    disjoint = "stride" not in kw and not kw.get("padding")  # numpy's tap views then (see planes.applies)
    assert calls == ({} if disjoint else {"avg_pool": 1, "avg_pool_backward": 1})


def test_adaptive_max_pool3d_gradient_on_the_cpp_scatter(rng, calls):
    x = rng.standard_normal((2, 3, 5, 7, 6)).astype(np.float32)
    tx, fx = torch.tensor(x, requires_grad=True), fg.tensor(x, requires_grad=True)
    ty, fy = TF.adaptive_max_pool3d(tx, (3, 4, 4)), F.adaptive_max_pool3d(fx, (3, 4, 4))
    g = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    ty.backward(torch.tensor(g))
    (fy * fg.tensor(g)).sum().backward()
    np.testing.assert_allclose(fx.grad._data, tx.grad.numpy(), rtol=1e-6, atol=1e-6)
    assert calls == {"scatter_max": 1}


def test_float64_and_non_contiguous(rng, calls):
    x = rng.standard_normal((1, 2, 4, 5, 6))
    np.testing.assert_array_equal(F.max_pool3d(fg.tensor(x), 2)._data, TF.max_pool3d(torch.tensor(x), 2).numpy())
    assert calls == {}
    xs = rng.standard_normal((2, 3, 6, 5, 7)).astype(np.float32).transpose(0, 1, 4, 3, 2)  # strided view
    np.testing.assert_array_equal(F.max_pool3d(fg.tensor(xs), 3, 2, 1)._data,
                                  TF.max_pool3d(torch.tensor(xs), 3, 2, 1).numpy())
    np.testing.assert_allclose(F.avg_pool3d(fg.tensor(xs), 3, 2, 1)._data,
                               TF.avg_pool3d(torch.tensor(xs), 3, 2, 1).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fill", [np.nan, -np.inf])
def test_max_pool3d_rows_of_nan_or_minus_inf_match_torch(rng, fill):
    # whole rows, planes and volumes of NaN / -inf: the last NaN wins, -inf keeps the window's first tap inside
    x = rng.standard_normal((2, 3, 5, 6, 7)).astype(np.float32)
    x[0, 0, :, 2] = fill
    x[0, 1, 1:3] = fill
    x[1, 2] = fill
    x[1, 0, :, :, 3] = fill
    kw = dict(kernel_size=3, stride=2, padding=1, return_indices=True)
    ty, ti = TF.max_pool3d(torch.tensor(x), **kw)
    fy, fi = F.max_pool3d(fg.tensor(x), **kw)
    np.testing.assert_array_equal(fy._data, ty.numpy())
    np.testing.assert_array_equal(fi._data, ti.numpy())


def test_max_pool3d_kernel_binding_checks_its_arguments():
    x = np.zeros((1, 1, 2, 2, 2), np.float32)
    y, i = np.empty((1, 1, 1, 1, 1), np.float32), np.empty((1, 1, 1, 1, 1), np.int64)
    mp = fg._C.pool.max_pool3d_forward
    with pytest.raises(ValueError, match="stride must be >= 1"):
        mp(x, y, i, (2, 2, 2), (1, 0, 1), (0, 0, 0), (1, 1, 1))
    with pytest.raises(ValueError, match="indices"):
        mp(x, y, np.empty((1, 1, 1, 1, 2), np.int64), (2, 2, 2), (2, 2, 2), (0, 0, 0), (1, 1, 1))
    with pytest.raises(ValueError, match="reach past int64"):
        mp(x, np.empty((1, 1, 3, 1, 1), np.float32), np.empty((1, 1, 3, 1, 1), np.int64), (2, 2, 2),
           (2 ** 62, 1, 1), (0, 0, 0), (1, 1, 1))


def test_empty_batch():
    x = fg.tensor(np.zeros((0, 2, 4, 4, 4), np.float32), requires_grad=True)
    y = F.max_pool3d(x, 2) + F.avg_pool3d(x, 2)
    assert y.shape == (0, 2, 2, 2, 2)
    y.sum().backward()
    assert x.grad.shape == (0, 2, 4, 4, 4)


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_same_bits_at_1_2_3_threads(rng, threads, pool):
    x = fg.tensor(rng.standard_normal((2, 8, 9, 12, 11)).astype(np.float32), requires_grad=True)
    fn = F.max_pool3d if pool == "max" else F.avg_pool3d

    def run():
        x.grad = None
        y = fn(x, 3, (2, 1, 2), 1)
        (y * y).sum().backward()
        return [y._data, x.grad._data]

    assert_same_bits_across_threads(run, threads)


def test_bad_geometry_raises_before_the_kernels(calls):
    x = fg.tensor(np.zeros((1, 2, 3, 4, 5), np.float32))
    with pytest.raises(ValueError, match="padding must be at most half of kernel_size"):
        F.max_pool3d(x, 2, padding=(0, 2, 0))
    with pytest.raises(ValueError, match="stride must be >= 1"):
        F.avg_pool3d(x, 2, stride=(1, 0, 1))
    with pytest.raises(ValueError, match="input is too large|kernel_size"):
        F.max_pool3d(x, (4, 1, 1))
    assert calls == {}


def test_window_of_padding_only_matches_torch_forward_and_backward_raises(rng):
    # H = 1, padding 1, dilation 2: the one window along H reads rows -1 and 1, both padding. torch's values are -inf
    # and its indices point one plane past (h = 1); its backward writes there, out of bounds for the last plane
    x = rng.standard_normal((1, 2, 2, 1, 3)).astype(np.float32)
    kw = dict(kernel_size=(1, 2, 1), padding=(0, 1, 0), dilation=(1, 2, 1), return_indices=True)
    ty, ti = TF.max_pool3d(torch.tensor(x), **kw)
    fx = fg.tensor(x, requires_grad=True)
    fy, fi = F.max_pool3d(fx, **kw)
    np.testing.assert_array_equal(fy._data, ty.numpy())
    np.testing.assert_array_equal(fi._data, ti.numpy())
    with pytest.raises(ValueError, match=r"max pool backward: indices must lie in \[0, 6\)"):
        fy.sum().backward()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ceil_mode_window_past_the_padded_input_matches_torch(rng, dtype):
    # W = 1 with a dilated span of 3, stride 3: floor mode has no window, ceil mode one (it starts inside the input),
    # as max_pool2d
    x = rng.standard_normal((2, 2, 6, 8, 1)).astype(dtype)
    kw = dict(kernel_size=(1, 2, 2), stride=(1, 4, 3), dilation=(1, 2, 2), ceil_mode=True, return_indices=True)
    tx, fx = torch.tensor(x, requires_grad=True), fg.tensor(x, requires_grad=True)
    ty, ti = TF.max_pool3d(tx, **kw)
    fy, fi = F.max_pool3d(fx, **kw)
    np.testing.assert_array_equal(fy._data, ty.detach().numpy())
    np.testing.assert_array_equal(fi._data, ti.numpy())
    ty.sum().backward()
    fy.sum().backward()
    np.testing.assert_array_equal(fx.grad._data, tx.grad.numpy())
    with pytest.raises(ValueError, match="kernel_size"):
        F.max_pool3d(fx, **{**kw, "ceil_mode": False})
    with pytest.raises(RuntimeError):
        TF.max_pool3d(tx, **{**kw, "ceil_mode": False})


def test_avg_pool3d_input_smaller_than_kernel_raises_as_torch():
    x = np.zeros((1, 2, 7, 3, 3), np.float32)  # W 3 < kernel 4, though 3 + 2 * padding 1 is not
    kw = dict(kernel_size=(1, 2, 4), padding=(0, 0, 1))
    with pytest.raises(RuntimeError, match="smaller than kernel size"):
        TF.avg_pool3d(torch.tensor(x), **kw)
    with pytest.raises(ValueError, match=r"avg_pool3d: input \(7, 3, 3\) is smaller than kernel_size \(1, 2, 4\)"):
        F.avg_pool3d(fg.tensor(x), **kw)


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime is not installed")
def test_onnx_export_of_a_window_past_the_padded_input_says_why(tmp_path, rng):
    x = fg.tensor(rng.standard_normal((1, 2, 6, 8, 1)).astype(np.float32))
    ok = fg.nn.MaxPool3d((1, 2, 1), 3, dilation=(1, 2, 1), ceil_mode=True)  # an end pad of 1, below the kernel
    fg.onnx.export(ok, (x,), str(tmp_path / "ok.onnx"), rtol=0, atol=0)
    past = fg.nn.MaxPool3d((1, 2, 2), (1, 4, 3), dilation=(1, 2, 2), ceil_mode=True)  # W: one window, span 3 over 1
    with pytest.raises(fg.onnx.UnsupportedOpError, match="ceil_mode window reaches past the padded input"):
        fg.onnx.export(past, (x,), str(tmp_path / "past.onnx"))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_empty_batch_max_pools_backward_in_both_dtypes(dtype):
    x = fg.tensor(np.zeros((0, 2, 4, 5, 6), dtype), requires_grad=True)
    y = F.max_pool3d(x, 3, 2, 1) + F.adaptive_max_pool3d(x, (2, 3, 3))
    assert y.shape == tuple(TF.max_pool3d(torch.zeros((0, 2, 4, 5, 6)), 3, 2, 1).shape)
    (y.sum() + F.adaptive_max_pool3d(x, (2, 5, 3)).sum()).backward()  # uneven windows, then sizes that divide
    assert x.grad.shape == x.shape and x.grad.dtype == x.dtype


@pytest.mark.parametrize("nd", [2, 3])
def test_empty_batch_max_unpool(nd):
    shape = (0, 2, 4, 5, 6)[:2 + nd]
    x = fg.tensor(np.zeros(shape, np.float32), requires_grad=True)
    pool, unpool = (F.max_pool2d, F.max_unpool2d) if nd == 2 else (F.max_pool3d, F.max_unpool3d)
    tpool, tunpool = (TF.max_pool2d, TF.max_unpool2d) if nd == 2 else (TF.max_pool3d, TF.max_unpool3d)
    y = unpool(*pool(x, 2, return_indices=True), 2)
    assert y.shape == tuple(tunpool(*tpool(torch.zeros(shape), 2, return_indices=True), 2).shape)
    y.sum().backward()
    assert x.grad.shape == x.shape
