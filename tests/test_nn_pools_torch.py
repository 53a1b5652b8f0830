"""The 1-d pools, indexed pools, power-average pools and channel / alpha dropouts as layers and functions, against
torch: outputs and input gradients (batched and unbatched), unpooling torch's own indices, the dropouts' masks
(statistics, the gradient taking the forward's mask, eval identity, seeding), torch's rank rules and warnings, bad
arguments, and ONNX export with dynamic sizes. The ops themselves are checked by tests/test_op_registry.py."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import forgegrad as fg
import forgegrad.nn.functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).uniform(-2, 2, size=shape).astype(np.float32)


def _both(make_fg, make_torch, x, cot_seed=3):
    """Outputs and input gradients of a layer on forgegrad and torch (a fixed cotangent on the float output)."""
    xf, xt = fg.tensor(x.copy(), requires_grad=True), torch.from_numpy(x.copy()).requires_grad_(True)
    of, ot = make_fg(xf), make_torch(xt)
    of = of if isinstance(of, tuple) else (of,)
    ot = ot if isinstance(ot, tuple) else (ot,)
    cot = np.random.default_rng(cot_seed).uniform(-1, 1, size=ot[0].shape).astype(np.float32)
    (of[0] * fg.tensor(cot)).sum().backward()
    (ot[0] * torch.from_numpy(cot)).sum().backward()
    return [o.numpy() for o in of], xf.grad.numpy(), [o.detach().numpy() for o in ot], xt.grad.numpy()


LAYERS = [
    ("MaxPool1d", (3, 2), {"return_indices": True}, (2, 3, 9)),
    ("MaxPool1d", (3, 2, 1), {"ceil_mode": True, "return_indices": True}, (3, 7)),
    ("MaxPool1d", (2,), {"dilation": 2, "padding": 1}, (1, 4, 7)),
    ("MaxPool2d", (3, 2, 1), {"ceil_mode": True, "return_indices": True}, (2, 3, 7, 9)),
    ("AvgPool1d", (3, 2, 1), {"ceil_mode": True}, (2, 3, 9)),
    ("AvgPool1d", (3, 2, 1), {"count_include_pad": False}, (3, 7)),
    ("AdaptiveAvgPool1d", (4,), {}, (2, 3, 9)),
    ("AdaptiveAvgPool1d", (3,), {}, (3, 7)),
    ("AdaptiveMaxPool1d", (4,), {"return_indices": True}, (2, 3, 9)),
    ("AdaptiveMaxPool1d", (3,), {"return_indices": True}, (3, 7)),
    ("AdaptiveMaxPool2d", ((3, 4),), {"return_indices": True}, (2, 3, 7, 9)),
    ("AdaptiveMaxPool2d", (2,), {}, (3, 7, 9)),
    ("LPPool1d", (2, 3, 2), {}, (2, 3, 9)),
    ("LPPool1d", (3, 3, 2), {"ceil_mode": True}, (3, 9)),
    ("LPPool2d", (2, 3, 2), {"ceil_mode": True}, (2, 3, 7, 9)),
    ("LPPool2d", (1.5, (2, 3)), {}, (3, 7, 9)),
]


@pytest.mark.parametrize("name,args,kwargs,shape", LAYERS, ids=[f"{n}-{len(s)}d-{i}" for i, (n, _, _, s) in
                                                                 enumerate(LAYERS)])
def test_layer_matches_torch(name, args, kwargs, shape):
    x = _rand(*shape)
    if name.startswith("LPPool") and args[0] != 2:
        x = np.abs(x) + 0.1  # odd and fractional powers of negatives are NaN in both
    out, grad, want, want_grad = _both(getattr(fg.nn, name)(*args, **kwargs), getattr(torch.nn, name)(*args, **kwargs),
                                       x)
    assert len(out) == len(want)
    for o, w in zip(out, want):
        assert o.shape == w.shape and o.dtype == w.dtype
        np.testing.assert_allclose(o, w, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=2e-5, atol=1e-6)


def test_max_pool2d_with_indices_matches_torch():
    x = _rand(2, 3, 7, 9)
    y, idx = F.max_pool2d_with_indices(fg.tensor(x), 3, 2, 1, ceil_mode=True)
    ty, tidx = TF.max_pool2d_with_indices(torch.from_numpy(x), 3, 2, 1, ceil_mode=True)
    np.testing.assert_array_equal(y.numpy(), ty.numpy())
    np.testing.assert_array_equal(idx.numpy(), tidx.numpy())
    y1, idx1 = F.max_pool1d_with_indices(fg.tensor(x[0]), 3, 2)
    ty1, tidx1 = TF.max_pool1d_with_indices(torch.from_numpy(x[0]), 3, 2)
    np.testing.assert_array_equal(idx1.numpy(), tidx1.numpy())


@pytest.mark.parametrize("nd,shape,k,s,p,out", [
    (2, (2, 3, 7, 9), 2, 2, 0, (7, 9)), (2, (1, 2, 7, 9), 3, 2, 1, None), (2, (3, 7, 9), 3, 2, 0, None),
    (1, (2, 3, 9), 3, 2, 1, None), (1, (2, 3, 7), 2, 2, 0, [2, 3, 7]), (1, (3, 9), 3, 2, 0, None)])
def test_unpool_round_trips_torch_indices(nd, shape, k, s, p, out):
    """torch pools; forgegrad unpools torch's values and indices, and its gradient reaches each value's place."""
    x = torch.from_numpy(_rand(*shape))
    pool = getattr(torch.nn, f"MaxPool{nd}d")(k, s, p, return_indices=True)
    y, idx = pool(x)
    unpool_t = getattr(torch.nn, f"MaxUnpool{nd}d")(k, s, p)
    unpool_f = getattr(fg.nn, f"MaxUnpool{nd}d")(k, s, p)
    yt = y.detach().clone().requires_grad_(True)
    yf = fg.tensor(y.numpy().copy(), requires_grad=True)
    want = unpool_t(yt, idx, output_size=out)
    got = unpool_f(yf, fg.tensor(idx.numpy()), output_size=out)
    np.testing.assert_array_equal(got.numpy(), want.detach().numpy())
    cot = _rand(*want.shape, seed=5)
    (want * torch.from_numpy(cot)).sum().backward()
    (got * fg.tensor(cot)).sum().backward()
    np.testing.assert_array_equal(yf.grad.numpy(), yt.grad.numpy())
    # and forgegrad's own pool gives torch's indices, so its round trip is torch's too
    _, idx_f = getattr(fg.nn, f"MaxPool{nd}d")(k, s, p, return_indices=True)(fg.tensor(x.numpy()))
    np.testing.assert_array_equal(idx_f.numpy(), idx.numpy())


# ---- dropout -------------------------------------------------------------------------------------------------
def _channel_values(y, x, scale):
    """Per (sample, channel): True if dropped (all zero), False if kept (all x * scale); fails otherwise."""
    flat_y, flat_x = y.reshape(y.shape[0] * y.shape[1], -1), x.reshape(x.shape[0] * x.shape[1], -1)
    dropped = np.all(flat_y == 0, axis=1)
    np.testing.assert_allclose(flat_y[~dropped], flat_x[~dropped] * scale, rtol=1e-6)
    return dropped


@pytest.mark.parametrize("layer,shape", [("Dropout1d", (40, 50, 5)), ("Dropout2d", (40, 50, 3, 3)),
                                         ("Dropout3d", (40, 50, 2, 2, 2)), ("Dropout1d", (2000, 5))])
def test_channel_dropout_statistics_and_gradient(layer, shape):
    fg.manual_seed(0)
    p = 0.3
    x = np.abs(_rand(*shape)) + 0.5  # no zeros: a zero output means dropped
    m = getattr(fg.nn, layer)(p)
    xf = fg.tensor(x, requires_grad=True)
    y = m(xf)
    yv = y.numpy()
    if len(shape) == 2:  # unbatched (C, L): one draw per channel
        dropped = np.all(yv == 0, axis=1)
        np.testing.assert_allclose(yv[~dropped], x[~dropped] / (1 - p), rtol=1e-6)
    else:
        dropped = _channel_values(yv, x, 1 / (1 - p))
    n = dropped.size
    assert abs(dropped.mean() - p) < 4 * np.sqrt(p * (1 - p) / n), dropped.mean()
    y.sum().backward()  # the gradient is the forward's mask: 1 / (1 - p) where kept, 0 where dropped
    np.testing.assert_allclose(xf.grad.numpy(), np.where(yv == 0, 0.0, 1 / (1 - p)), rtol=1e-6)
    m.eval()
    out = m(fg.tensor(x))
    np.testing.assert_array_equal(out.numpy(), x)


def test_dropout_seeded_and_thread_independent():
    x = fg.tensor(_rand(8, 16, 5, 5))
    runs = []
    before = fg.get_num_threads()
    try:
        for threads in (1, 3):
            fg.set_num_threads(threads)
            fg.manual_seed(7)
            runs.append((F.dropout2d(x, 0.5).numpy(), F.alpha_dropout(x, 0.5, training=True).numpy()))
    finally:
        fg.set_num_threads(before)
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("feature", [False, True])
def test_alpha_dropout_keeps_mean_and_variance(feature):
    fg.manual_seed(1)
    p, alpha = 0.2, 1.7580993408473766
    a = 1 / np.sqrt((alpha * alpha * p + 1) * (1 - p))
    x = np.random.default_rng(2).standard_normal((200, 300, 4) if feature else (400, 500)).astype(np.float32)
    m = (fg.nn.FeatureAlphaDropout if feature else fg.nn.AlphaDropout)(p)
    xf = fg.tensor(x, requires_grad=True)
    y = m(xf)
    yv = y.numpy()
    kept = np.isclose(yv, a * x + alpha * a * p, rtol=1e-5, atol=1e-6)
    dropped = np.isclose(yv, a * (alpha * p - alpha), rtol=1e-5)
    assert np.all(kept | dropped)
    if feature:  # one draw per (sample, channel)
        assert np.all(kept.all(axis=2) | dropped.all(axis=2))
    assert abs(dropped.mean() - p) < 0.01
    assert abs(yv.mean()) < 0.02 and abs(yv.std() - 1) < 0.02  # SELU's fixed point kept
    y.sum().backward()
    np.testing.assert_allclose(xf.grad.numpy(), np.where(kept, a, 0.0), rtol=1e-6)
    m.eval()
    np.testing.assert_array_equal(m(fg.tensor(x)).numpy(), x)
    # torch's defaults: the functions are the identity unless training=True
    np.testing.assert_array_equal(F.alpha_dropout(fg.tensor(x), 0.5).numpy(), x)


def test_dropout_ranks_and_warnings_follow_torch():
    x3 = _rand(2, 3, 4)
    with pytest.warns(UserWarning, match="dropout2d: Received a 3D input"):
        F.dropout2d(fg.tensor(x3), 0.5)
    with pytest.warns(UserWarning, match="dropout2d: Received a 3D input"):
        TF.dropout2d(torch.from_numpy(x3), 0.5)
    with pytest.warns(UserWarning, match="dropout3d: Received a 3-D input"):
        y = F.dropout3d(fg.tensor(x3), 0.5, training=False)
    np.testing.assert_array_equal(y.numpy(), x3)
    with pytest.warns(UserWarning, match="dropout2d: Received a 2-D input"):
        F.dropout2d(fg.tensor(_rand(4, 5)), 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        F.dropout2d(fg.tensor(_rand(2, 3, 4, 4)), 0.5)
        F.dropout1d(fg.tensor(_rand(3, 4)), 0.5)
    with pytest.raises(ValueError, match="dropout1d: expected 2-D .* input"):
        F.dropout1d(fg.tensor(_rand(2, 3, 4, 4)), 0.5)
    with pytest.raises(ValueError, match="input must have at least 2 dimensions"):
        F.feature_alpha_dropout(fg.tensor(_rand(5)), 0.5, training=True)


def test_dropout_inplace_writes_the_input():
    fg.manual_seed(3)
    x0 = np.abs(_rand(4, 6, 5)) + 0.5
    x = fg.tensor(x0.copy())
    y = F.dropout1d(x, 0.5, inplace=True)
    assert y is x or np.shares_memory(y.numpy(), x.numpy())
    dropped = _channel_values(x.numpy(), x0, 2.0)  # whole channels zeroed, the rest doubled, in x itself
    assert 0 < dropped.sum() < dropped.size
    fg.manual_seed(3)
    np.testing.assert_array_equal(F.dropout1d(fg.tensor(x0), 0.5).numpy(), x.numpy())  # the same draw


# ---- bad input ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make,shape,error,match", [
    (lambda: fg.nn.MaxPool1d(5, padding=1), (2, 3, 2), ValueError, "kernel_size 5 .* larger than the padded input"),
    (lambda: fg.nn.AvgPool1d(3, padding=2), (2, 3, 9), ValueError, "padding must be at most half of kernel_size"),
    (lambda: fg.nn.MaxPool2d(3, padding=2), (2, 3, 9, 9), ValueError, "padding"),
    (lambda: fg.nn.LPPool2d(2, 11), (2, 3, 7, 9), ValueError, "kernel_size"),
    (lambda: fg.nn.MaxPool1d(3), (2, 3, 9, 9), ValueError, "input must be 2-D .* or 3-D"),
    (lambda: fg.nn.AdaptiveMaxPool2d(2), (9, 9), ValueError, "input must be 3-D .* or 4-D"),
    (lambda: fg.nn.AdaptiveAvgPool1d(0), (2, 3, 9), ValueError, "output_size"),
    (lambda: fg.nn.LPPool1d(-1, 3), (2, 3, 9), ValueError, "norm_type"),
    (lambda: fg.nn.MaxPool1d((3, 3)), (2, 3, 9), TypeError, "kernel_size"),
])
def test_bad_arguments_name_the_argument(make, shape, error, match):
    with pytest.raises(error, match=match):
        make()(fg.tensor(_rand(*shape)))


@pytest.mark.parametrize("layer", ["Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout"])
@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_dropout_probability_outside_0_1(layer, p):
    with pytest.raises(ValueError, match="p .*between 0 and 1"):
        getattr(fg.nn, layer)(p)
    fname = {"Dropout1d": "dropout1d", "Dropout2d": "dropout2d", "Dropout3d": "dropout3d",
             "AlphaDropout": "alpha_dropout", "FeatureAlphaDropout": "feature_alpha_dropout"}[layer]
    with pytest.raises(ValueError, match="p .*between 0 and 1"):
        getattr(F, fname)(fg.tensor(_rand(2, 3, 4, 4, 4)), p, True)


def test_unpool_bad_arguments():
    y, idx = F.max_pool2d_with_indices(fg.tensor(_rand(2, 3, 6, 8)), 2)
    with pytest.raises(ValueError, match="output_size"):
        F.max_unpool2d(y, idx, 2, output_size=(9, 9))
    with pytest.raises(ValueError, match="indices must have the input's shape"):
        F.max_unpool2d(y, idx[:, :1], 2)
    with pytest.raises(TypeError, match="indices must be an int64"):
        F.max_unpool2d(y, y, 2)


# ---- ONNX with dynamic sizes ----------------------------------------------------------------------------------
def test_onnx_dynamic_length(tmp_path):
    pytest.importorskip("onnxruntime")

    class Net(fg.nn.Module):
        def __init__(self):
            super().__init__()
            self.pool = fg.nn.MaxPool1d(3, 2, 1, ceil_mode=True, return_indices=True)
            self.avg = fg.nn.AvgPool1d(3, 2, 1, ceil_mode=True)
            self.amax = fg.nn.AdaptiveMaxPool1d(3, return_indices=True)
            self.aavg = fg.nn.AdaptiveAvgPool1d(2)
            self.unpool = fg.nn.MaxUnpool1d(3, 2, 1)
            self.drop = fg.nn.Dropout1d(0.4)
            self.lp = fg.nn.LPPool1d(2, 2)

        def forward(self, x):
            y, idx = self.pool(self.drop(x))
            m, midx = self.amax(x)
            return (self.unpool(y, idx), self.avg(x), m, midx.float(), self.aavg(x), self.lp(x))

    net = Net().eval()
    report = fg.onnx.export(net, fg.tensor(_rand(2, 3, 9)), str(tmp_path / "p.onnx"),
                            dynamic_axes={"x": {0: "batch", 2: "length"}},
                            verify_sizes=[{"batch": 1, "length": 7}, {"batch": 3, "length": 12}])
    assert report.ok, report


def test_onnx_dynamic_image_adaptive_max(tmp_path):
    pytest.importorskip("onnxruntime")

    class Net(fg.nn.Module):
        def forward(self, x):
            y, idx = F.adaptive_max_pool2d(x, (3, 2), return_indices=True)
            return y, idx.float(), F.lp_pool2d(x, 3.0, 2, ceil_mode=True)

    report = fg.onnx.export(Net(), fg.tensor(np.abs(_rand(2, 3, 7, 9)) + 0.1), str(tmp_path / "a.onnx"),
                            dynamic_axes={"x": {0: "batch", 2: "h", 3: "w"}},
                            verify_sizes=[{"batch": 1, "h": 5, "w": 6}, {"batch": 2, "h": 11, "w": 8}])
    assert report.ok, report
