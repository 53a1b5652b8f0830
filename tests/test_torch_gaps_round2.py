"""Gaps reviewers found against torch 2.13: pools (NaN in ONNX, unbatched input, lp_pool's inf), ConvTranspose's
output_size, nn.Embedding's max_norm / scale_grad_by_freq, prelu's dtypes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import forgegrad as fg
import forgegrad.nn.functional as F

tf = torch.nn.functional


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ---- 1: max_pool2d's ONNX mapping keeps NaN under export(nan_exact_pooling=True) ----------------------------
@pytest.mark.parametrize("dynamic", [False, True])
def test_onnx_max_pool2d_keeps_nan_as_torch(tmp_path, dynamic):
    ort = pytest.importorskip("onnxruntime")

    class Net(fg.nn.Module):
        def forward(self, x):
            y, idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
            return y, F.max_pool2d(x, 2), F.max_pool2d(x, 2, 1, ceil_mode=True), F.max_pool2d(x, 2, 2, dilation=2)

    x = _rand(1, 2, 6, 8)
    x[0, 0, 1, 1] = x[0, 0, 4, 6] = x[0, 1, 5, 7] = np.nan
    x[0, 1, 3, 5], x[0, 1, 0, 0] = np.inf, -np.inf
    path = str(tmp_path / "p.onnx")
    axes = {"x": {0: "b", 2: "h", 3: "w"}} if dynamic else {}
    fg.onnx.export(Net(), fg.tensor(np.ones((1, 2, 6, 8), np.float32)), path, dynamic_axes=axes, input_names=["x"],
                   verify=False, nan_exact_pooling=True)
    t = torch.tensor(x)
    want = [tf.max_pool2d(t, 3, 2, 1), tf.max_pool2d(t, 2), tf.max_pool2d(t, 2, 1, ceil_mode=True),
            tf.max_pool2d(t, 2, 2, dilation=2)]
    assert all(torch.isnan(w).any() for w in want)
    got = ort.InferenceSession(path).run(None, {"x": x})
    eager = Net()(fg.tensor(x))
    for g, e, w in zip(got, eager, want, strict=True):
        np.testing.assert_array_equal(e.numpy(), w.numpy())
        np.testing.assert_array_equal(g, w.numpy())


# ---- 2: unbatched (C, H, W) input to the functional 2-d pools --------------------------------------------------
@pytest.mark.parametrize("name,args,kwargs", [
    ("max_pool2d", (3, 2, 1), {}), ("max_pool2d", (2,), {"ceil_mode": True, "return_indices": True}),
    ("avg_pool2d", (3, 2, 1), {"count_include_pad": False}), ("adaptive_avg_pool2d", ((3, 2),), {})])
def test_functional_pools_take_unbatched_input(name, args, kwargs):
    x = _rand(3, 7, 6)
    xf, xt = fg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    got, want = getattr(F, name)(xf, *args, **kwargs), getattr(tf, name)(xt, *args, **kwargs)
    got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
    for g, w in zip(got, want, strict=True):
        assert tuple(g.shape) == tuple(w.shape)
        np.testing.assert_allclose(g.numpy(), w.detach().numpy(), rtol=1e-6, atol=1e-6)
    cot = _rand(*want[0].shape, seed=1)
    (got[0] * fg.tensor(cot)).sum().backward()
    (want[0] * torch.tensor(cot)).sum().backward()
    np.testing.assert_allclose(xf.grad.numpy(), xt.grad.numpy(), rtol=1e-6, atol=1e-6)


def test_functional_pool_rejects_wrong_rank_as_torch():
    with pytest.raises(ValueError, match="input"):
        F.max_pool2d(fg.tensor(_rand(2, 3)), 2)
    with pytest.raises(RuntimeError):
        tf.max_pool2d(torch.zeros(2, 3), 2)


# ---- 3: lp_pool with norm_type inf / -inf -----------------------------------------------------------------------
@pytest.mark.parametrize("p", [float("inf"), -float("inf")])
@pytest.mark.parametrize("nd,shape,kwargs", [(1, (2, 3, 9), {"stride": 2}), (1, (3, 8), {"ceil_mode": True}),
                                             (2, (2, 3, 7, 6), {"stride": (2, 1)}),
                                             (2, (3, 7, 6), {"ceil_mode": True})])
def test_lp_pool_inf_norm_as_torch(p, nd, shape, kwargs):
    x = _rand(*shape)
    xf, xt = fg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    k = 3 if nd == 1 else (3, 2)
    got = getattr(F, f"lp_pool{nd}d")(xf, p, k, **kwargs)
    want = getattr(tf, f"lp_pool{nd}d")(xt, p, k, **kwargs)
    np.testing.assert_array_equal(got.numpy(), want.detach().numpy())
    cot = _rand(*want.shape, seed=1)
    (got * fg.tensor(cot)).sum().backward()
    (want * torch.tensor(cot)).sum().backward()
    np.testing.assert_allclose(xf.grad.numpy(), xt.grad.numpy(), rtol=1e-6, atol=1e-6)
    module = getattr(fg.nn, f"LPPool{nd}d")(p, k, **kwargs)
    np.testing.assert_array_equal(module(fg.tensor(x)).numpy(), want.detach().numpy())


def test_lp_pool_inf_norm_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime")

    class Net(fg.nn.Module):
        def forward(self, x):
            return F.lp_pool2d(x, float("inf"), 2), F.lp_pool1d(x[:, :, 0], -float("inf"), 3, 2)

    x = _rand(2, 3, 6, 7)
    path = str(tmp_path / "lp.onnx")
    fg.onnx.export(Net(), fg.tensor(x), path, input_names=["x"], verify=False)
    t = torch.tensor(x)
    want = [tf.lp_pool2d(t, float("inf"), 2), tf.lp_pool1d(t[:, :, 0], -float("inf"), 3, 2)]
    for g, w in zip(ort.InferenceSession(path).run(None, {"x": x}), want, strict=True):
        np.testing.assert_array_equal(g, w.numpy())


# ---- 4: ConvTranspose's output_size: spatial sizes, or with the input's non-spatial sizes in front ------------
@pytest.mark.parametrize("rank,shape,sizes", [
    (2, (1, 2, 4, 4), [(10, 10), (1, 3, 10, 10), [5, 3, 9, 10], (1, 10, 10), (5, 1, 3, 10, 10), (10,)]),
    (2, (2, 4, 4), [(10, 9), (3, 10, 10), (1, 3, 10, 10)]),
    (1, (1, 2, 4), [(10,), (1, 3, 10), (3, 10), (2, 1, 3, 10)]),
    (1, (2, 4), [(9,), (3, 10), (1, 3, 10)])])
def test_conv_transpose_output_size_lengths_as_torch(rank, shape, sizes):
    torch.manual_seed(0)
    theirs = getattr(torch.nn, f"ConvTranspose{rank}d")(2, 3, 3, stride=2)
    ours = getattr(fg.nn, f"ConvTranspose{rank}d")(2, 3, 3, stride=2)
    ours.weight.data = fg.tensor(theirs.weight.detach().numpy())
    ours.bias.data = fg.tensor(theirs.bias.detach().numpy())
    x = _rand(*shape)
    for size in sizes:
        try:
            want = theirs(torch.tensor(x), output_size=size)
        except ValueError:
            with pytest.raises(ValueError, match="output_size must have"):
                ours(fg.tensor(x), output_size=size)
            continue
        np.testing.assert_allclose(ours(fg.tensor(x), output_size=size).numpy(), want.detach().numpy(),
                                   rtol=1e-5, atol=1e-5)


# ---- 5: nn.Embedding's max_norm / norm_type / scale_grad_by_freq; F.embedding's scale_grad_by_freq --------------
def _embedding_pair(**kwargs):
    torch.manual_seed(0)
    theirs = torch.nn.Embedding(7, 5, **kwargs)
    with torch.no_grad():
        theirs.weight.mul_(2.0)
    ours = fg.nn.Embedding(7, 5, **kwargs)
    ours.weight.data = fg.tensor(theirs.weight.detach().numpy().copy())
    return ours, theirs


@pytest.mark.parametrize("kwargs", [{"max_norm": 1.5}, {"max_norm": 2.0, "norm_type": 1.0},
                                    {"max_norm": 1.0, "norm_type": float("inf"), "padding_idx": 3},
                                    {"scale_grad_by_freq": True}, {"scale_grad_by_freq": True, "padding_idx": 1},
                                    {"scale_grad_by_freq": True, "max_norm": 1.0}])
def test_embedding_module_options_as_torch(kwargs):
    ours, theirs = _embedding_pair(**kwargs)
    assert repr(ours) == repr(theirs)
    idx = np.array([[1, 3, 3, 0], [6, 1, 3, 5]], np.int64)
    before = ours.weight.numpy().copy()
    got, want = ours(fg.tensor(idx)), theirs(torch.tensor(idx))
    np.testing.assert_allclose(got.numpy(), want.detach().numpy(), rtol=1e-6, atol=1e-7)
    # max_norm rescales the looked-up rows of the weight itself, outside autograd
    np.testing.assert_allclose(ours.weight.numpy(), theirs.weight.detach().numpy(), rtol=1e-6, atol=1e-7)
    if "max_norm" in kwargs:
        assert not np.array_equal(before, ours.weight.numpy())
        np.testing.assert_array_equal(ours.weight.numpy()[[2, 4]], before[[2, 4]])
    cot = _rand(2, 4, 5, seed=2)
    (got * fg.tensor(cot)).sum().backward()
    (want * torch.tensor(cot)).sum().backward()
    np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), rtol=1e-6, atol=1e-6)


def test_functional_embedding_scale_grad_by_freq_as_torch():
    w = _rand(6, 4)
    idx = np.array([0, 2, 2, 2, 5, 0, 1], np.int64)
    wf, wt = fg.tensor(w, requires_grad=True), torch.tensor(w, requires_grad=True)
    cot = _rand(7, 4, seed=1)
    (F.embedding(fg.tensor(idx), wf, scale_grad_by_freq=True) * fg.tensor(cot)).sum().backward()
    (tf.embedding(torch.tensor(idx), wt, scale_grad_by_freq=True) * torch.tensor(cot)).sum().backward()
    np.testing.assert_allclose(wf.grad.numpy(), wt.grad.numpy(), rtol=1e-6, atol=1e-7)
    # without the option, row 2 (three lookups) gets three times the mean
    assert not np.allclose(wf.grad.numpy()[2], cot[[1, 2, 3]].sum(0))


def test_embedding_sparse_and_bad_options():
    # sparse=True gives a sparse weight gradient (tests/test_sparse_training.py); a non-bool is refused
    assert fg.nn.Embedding.from_pretrained(fg.tensor(_rand(4, 3)), sparse=True).sparse
    with pytest.raises(TypeError, match="sparse"):
        fg.nn.Embedding(4, 3, sparse="yes")
    with pytest.raises(TypeError, match="scale_grad_by_freq"):
        fg.nn.Embedding(4, 3, scale_grad_by_freq="yes")
    with pytest.raises(TypeError, match="max_norm"):
        fg.nn.Embedding(4, 3, max_norm="big")
    m = fg.nn.Embedding.from_pretrained(fg.tensor(_rand(4, 3) * 3), max_norm=1.0)
    m(fg.tensor(np.array([1], np.int64)))
    assert np.linalg.norm(m.weight.numpy()[1]) <= 1.0 + 1e-6


# ---- 6: prelu does not promote dtypes ---------------------------------------------------------------------------
@pytest.mark.parametrize("x_dtype,w_dtype", [(np.float64, np.float32), (np.float32, np.float64),
                                             (np.int64, np.float32)])
def test_prelu_mixed_dtypes_refused_as_torch(x_dtype, w_dtype):
    x, w = np.arange(6).reshape(2, 3).astype(x_dtype) - 2, np.full(3, 0.25, w_dtype)
    with pytest.raises(RuntimeError, match="Type promoting not supported"):
        tf.prelu(torch.tensor(x), torch.tensor(w))
    with pytest.raises(RuntimeError, match="same dtype"):
        F.prelu(fg.tensor(x), fg.tensor(w))
    with pytest.raises(RuntimeError, match="same dtype"):
        F.prelu(fg.tensor(x, device="meta"), fg.tensor(w, device="meta"))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_prelu_same_dtype_as_torch(dtype):
    x, w = _rand(2, 3, 4).astype(dtype), np.array([0.25, -0.5, 1.5], dtype)
    got, want = F.prelu(fg.tensor(x), fg.tensor(w)), tf.prelu(torch.tensor(x), torch.tensor(w))
    assert got.numpy().dtype == want.numpy().dtype
    np.testing.assert_array_equal(got.numpy(), want.numpy())
    m = fg.nn.PReLU().double() if dtype == np.float64 else fg.nn.PReLU()
    np.testing.assert_array_equal(m(fg.tensor(x)).numpy(), torch.nn.PReLU().to(torch.float64 if dtype == np.float64
                                                                                  else torch.float32)(
        torch.tensor(x)).detach().numpy())
