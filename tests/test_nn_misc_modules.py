"""nn.Buffer, F.upsample / upsample_nearest / upsample_bilinear, F.gumbel_softmax, F.pdist and nn.NLLLoss2d against
torch 2.13."""
import numpy as np
import pytest
import torch

import forgegrad as fg
import forgegrad.nn.functional as F
from forgegrad import nn


def _x(*shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# ---- nn.Buffer -------------------------------------------------------------------------------------------
def test_buffer_registers_like_torch():
    def build(lib):
        class M(lib.nn.Module):
            def __init__(self):
                super().__init__()
                self.a = lib.nn.Buffer(lib.ones(2))
                self.b = lib.nn.Buffer(lib.zeros(3), persistent=False)
                self.c = lib.nn.Linear(2, 2)
        return M()

    m, t = build(fg), build(torch)
    assert list(m.state_dict()) == list(t.state_dict()) == ["a", "c.weight", "c.bias"]
    assert [n for n, _ in m.named_buffers()] == [n for n, _ in t.named_buffers()] == ["a", "b"]
    assert type(m.a) is fg.Tensor and not m.a.requires_grad
    m.b = nn.Buffer(fg.ones(3))  # assigned again as persistent: in the state_dict now, as torch's
    t.b = torch.nn.Buffer(torch.ones(3))
    assert list(m.state_dict()) == list(t.state_dict())
    src = fg.ones(4)
    m.d = nn.Buffer(src)
    m.d.add_(1)  # the module's buffer shares the given tensor's storage (torch's detach)
    assert src.numpy()[0] == 2
    # register_buffer's own persistent decides (torch ignores the Buffer's there)
    m.register_buffer("e", nn.Buffer(fg.zeros(1), persistent=False))
    t.register_buffer("e", torch.nn.Buffer(torch.zeros(1), persistent=False))
    assert "e" in m.state_dict() and "e" in t.state_dict()
    m.register_buffer("f", nn.Buffer(fg.zeros(1)), persistent=False)
    assert "f" not in m.state_dict()
    with pytest.raises(TypeError, match="data"):
        nn.Buffer([1, 2])
    with pytest.raises(TypeError, match="persistent"):
        nn.Buffer(fg.ones(1), persistent="yes")


# ---- upsample aliases --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,args,kw", [
    ("upsample", (), {"scale_factor": 2}),
    ("upsample", (), {"size": (7, 5), "mode": "bilinear"}),
    ("upsample", (), {"scale_factor": 1.5, "mode": "bilinear", "align_corners": True}),
    ("upsample_nearest", (), {"size": (4, 9)}),
    ("upsample_bilinear", (), {"scale_factor": 2}),  # align_corners=True, unlike interpolate's default
    ("upsample_bilinear", ((5, 3),), {}),
])
def test_upsample_aliases_match_torch(name, args, kw):
    x = _x(2, 3, 3, 4)
    xf, xt = fg.tensor(x, requires_grad=True), torch.from_numpy(x).requires_grad_()
    with pytest.warns(UserWarning, match=f"nn.functional.{name}` is deprecated"):
        y = getattr(F, name)(xf, *args, **kw)
    with pytest.warns(UserWarning):
        yt = getattr(torch.nn.functional, name)(xt, *args, **kw)
    np.testing.assert_allclose(y.detach().numpy(), yt.detach().numpy(), rtol=1e-5, atol=1e-6)
    c = _x(*yt.shape, seed=1)
    (y * fg.tensor(c)).sum().backward()
    (yt * torch.from_numpy(c)).sum().backward()
    np.testing.assert_allclose(xf.grad.numpy(), xt.grad.numpy(), rtol=1e-5, atol=1e-5)


# ---- gumbel_softmax ----------------------------------------------------------------------------------------
def test_gumbel_softmax_soft_and_hard():
    logits = fg.tensor(_x(4, 7, 5), requires_grad=True)
    fg.manual_seed(3)
    soft = F.gumbel_softmax(logits, tau=0.7, dim=1)
    fg.manual_seed(3)
    hard = F.gumbel_softmax(logits, tau=0.7, hard=True, dim=1)
    np.testing.assert_allclose(soft.detach().numpy().sum(1), 1.0, rtol=1e-5)
    h = hard.detach().numpy()
    assert set(np.unique(h)) <= {0.0, 1.0} and np.all(h.sum(1) == 1)
    assert np.array_equal(h.argmax(1), soft.detach().numpy().argmax(1))  # the same draw: its argmax
    # straight-through: the hard sample's gradient is the soft sample's
    c = fg.tensor(_x(4, 7, 5, seed=2))
    (soft * c).sum().backward()
    g_soft = logits.grad.numpy().copy()
    logits.grad = None
    (hard * c).sum().backward()
    np.testing.assert_allclose(logits.grad.numpy(), g_soft, rtol=1e-5, atol=1e-6)


def test_gumbel_softmax_samples_the_softmax():
    """argmax of logits + Gumbel noise is a draw from softmax(logits): the frequencies over 20000 draws (fixed
    seed) are within 0.015 of torch's softmax."""
    p = np.array([0.5, 0.3, 0.15, 0.05], np.float32)
    logits = fg.tensor(np.tile(np.log(p), (20000, 1)))
    fg.manual_seed(0)
    y = F.gumbel_softmax(logits, tau=0.5, hard=True).numpy()
    freq = y.mean(0)
    want = torch.softmax(torch.from_numpy(np.log(p)), 0).numpy()
    np.testing.assert_allclose(freq, want, atol=0.015)


def test_gumbel_softmax_errors():
    with pytest.raises(TypeError, match="logits"):
        F.gumbel_softmax(np.zeros(3))
    with pytest.raises(TypeError, match="hard"):
        F.gumbel_softmax(fg.zeros(3), hard="yes")
    with pytest.raises(IndexError, match="dim"):
        F.gumbel_softmax(fg.zeros(2, 3), dim=2)


# ---- pdist -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0, 0.5, 1, 2, 3.5, float("inf")])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pdist_matches_torch(p, dtype):
    x = _x(7, 5, seed=4, dtype=dtype)
    x[5] = x[2]  # a zero distance: gradient 0 there, as torch's
    xf, xt = fg.tensor(x, requires_grad=True), torch.from_numpy(x).requires_grad_()
    y, yt = F.pdist(xf, p), torch.nn.functional.pdist(xt, p)
    tol = 1e-5 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(y.detach().numpy(), yt.detach().numpy(), rtol=tol, atol=tol)
    c = _x(*yt.shape, seed=5, dtype=dtype)
    (y * fg.tensor(c)).sum().backward()
    (yt * torch.from_numpy(c)).sum().backward()
    np.testing.assert_allclose(xf.grad.numpy(), xt.grad.numpy(), rtol=10 * tol, atol=10 * tol)


def test_pdist_small_and_errors():
    assert F.pdist(fg.randn(1, 3)).shape == (0,) and F.pdist(fg.randn(0, 3)).shape == (0,)
    with pytest.raises(ValueError, match="2-D"):
        F.pdist(fg.randn(2, 3, 4))
    with pytest.raises(ValueError, match="p must be >= 0"):
        F.pdist(fg.randn(2, 3), p=-1)
    with pytest.raises(TypeError, match="floating"):
        F.pdist(fg.tensor(np.ones((2, 3), np.int64)))


# ---- NLLLoss2d -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [{}, {"reduction": "sum", "ignore_index": 1}, {"reduce": False}])
def test_nll_loss2d_is_nll_loss(kw):
    x = torch.log_softmax(torch.from_numpy(_x(2, 4, 3, 5, seed=6)), 1).numpy()
    target = np.random.default_rng(7).integers(0, 4, size=(2, 3, 5)).astype(np.int64)
    with pytest.warns(FutureWarning, match="NLLLoss2d"):
        m = nn.NLLLoss2d(**kw)
    with pytest.warns(FutureWarning):
        t = torch.nn.NLLLoss2d(**kw)
    assert isinstance(m, nn.NLLLoss)
    np.testing.assert_allclose(m(fg.tensor(x), fg.tensor(target)).numpy(),
                               t(torch.from_numpy(x), torch.from_numpy(target)).numpy(), rtol=1e-5, atol=1e-6)


# ---- AdaptiveLogSoftmaxWithLoss ------------------------------------------------------------------------------
def _asm_pair(**kw):
    args = dict(in_features=13, n_classes=23, cutoffs=[4, 9, 17], div_value=2.0)
    args.update(kw)
    t = torch.nn.AdaptiveLogSoftmaxWithLoss(**args)
    m = nn.AdaptiveLogSoftmaxWithLoss(**args)
    assert list(m.state_dict()) == list(t.state_dict())
    for (k, v), (_, vt) in zip(m.state_dict().items(), t.state_dict().items()):
        assert tuple(v.shape) == tuple(vt.shape), k
    m.load_state_dict({k: fg.tensor(v.numpy().copy()) for k, v in t.state_dict().items()})
    return m, t


@pytest.mark.parametrize("kw", [{}, {"head_bias": True, "div_value": 4.0, "cutoffs": [5]}])
def test_adaptive_log_softmax_matches_torch(kw):
    m, t = _asm_pair(**kw)
    x = _x(11, 13, seed=8)
    target = np.array([0, 22, 5, 9, 3, 16, 17, 8, 4, 21, 1], np.int64)
    xf, xt = fg.tensor(x, requires_grad=True), torch.from_numpy(x).requires_grad_()
    out, loss = m(xf, fg.tensor(target))
    out_t, loss_t = t(xt, torch.from_numpy(target))
    np.testing.assert_allclose(out.detach().numpy(), out_t.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss.detach().numpy(), loss_t.detach().numpy(), rtol=1e-5, atol=1e-6)
    loss.backward()
    loss_t.backward()
    np.testing.assert_allclose(xf.grad.numpy(), xt.grad.numpy(), rtol=1e-4, atol=1e-6)
    for (k, p), (_, pt) in zip(m.named_parameters(), t.named_parameters()):
        np.testing.assert_allclose(p.grad.numpy(), pt.grad.numpy(), rtol=1e-4, atol=1e-6, err_msg=k)
    with torch.no_grad():
        np.testing.assert_allclose(m.log_prob(fg.tensor(x)).numpy(), t.log_prob(torch.from_numpy(x)).numpy(),
                                   rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(m.predict(fg.tensor(x)).numpy(), t.predict(torch.from_numpy(x)).numpy())
    o1, l1 = m(fg.tensor(x[3]), fg.tensor(np.int64(target[3])))  # unbatched
    o1t, _ = t(torch.from_numpy(x[3]), torch.tensor(target[3]))
    assert tuple(o1.shape) == tuple(o1t.shape) == ()
    np.testing.assert_allclose(o1.detach().numpy(), o1t.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_adaptive_log_softmax_errors():
    with pytest.raises(ValueError, match="cutoffs"):
        nn.AdaptiveLogSoftmaxWithLoss(8, 10, [5, 3])
    with pytest.raises(ValueError, match="cutoffs"):
        nn.AdaptiveLogSoftmaxWithLoss(8, 10, [])
    m = nn.AdaptiveLogSoftmaxWithLoss(8, 10, [4])
    with pytest.raises(RuntimeError, match="target values should be in"):
        m(fg.randn(2, 8), fg.tensor([1, 10]))
    with pytest.raises(RuntimeError, match="same size in the batch"):
        m(fg.randn(3, 8), fg.tensor([1, 2]))
    with pytest.raises(RuntimeError, match="multi-target"):
        m(fg.randn(3, 8), fg.tensor(np.zeros((3, 2), np.int64)))


# ---- FractionalMaxPool2d -------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,k,kw", [((2, 3, 11, 9), 3, {"output_size": (4, 5)}),
                                        ((3, 10, 7), (2, 3), {"output_ratio": (0.5, 0.7)}),
                                        ((1, 2, 25, 31), 2, {"output_size": (13, 11)}),
                                        ((2, 1, 6, 6), 2, {"output_size": 1})])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fractional_max_pool2d_matches_torch_given_its_samples(shape, k, kw, dtype):
    x = _x(*shape, seed=9, dtype=dtype)
    x[..., 3, 4] = np.nan  # torch's scan: a window's last NaN is its maximum
    x[..., 0, :3] = 1.5  # ties: the first
    n = 1 if len(shape) == 3 else shape[0]
    s = torch.rand(n, shape[-3], 2, dtype=torch.float64 if dtype == np.float64 else torch.float32)
    xf, xt = fg.tensor(x, requires_grad=True), torch.from_numpy(x).requires_grad_()
    y, idx = F.fractional_max_pool2d(xf, k, return_indices=True, _random_samples=fg.tensor(s.numpy()), **kw)
    yt, it = torch.nn.functional.fractional_max_pool2d(xt, k, return_indices=True, _random_samples=s, **kw)
    np.testing.assert_array_equal(idx.numpy(), it.numpy())
    np.testing.assert_array_equal(y.detach().numpy(), yt.detach().numpy())
    c = _x(*yt.shape, seed=10, dtype=dtype)
    (y * fg.tensor(c)).nansum().backward()
    (yt * torch.from_numpy(c)).nansum().backward()
    np.testing.assert_allclose(xf.grad.numpy(), xt.grad.numpy(), rtol=1e-6, atol=1e-7)


def test_fractional_max_pool2d_module_and_errors():
    s = torch.rand(2, 3, 2)
    m = nn.FractionalMaxPool2d(3, output_ratio=0.5, _random_samples=fg.tensor(s.numpy()))
    t = torch.nn.FractionalMaxPool2d(3, output_ratio=0.5, _random_samples=s)
    assert repr(m) == repr(t) and list(m.state_dict()) == list(t.state_dict())
    x = _x(2, 3, 10, 12, seed=11)
    np.testing.assert_array_equal(m(fg.tensor(x)).numpy(), t(torch.from_numpy(x)).numpy())
    fg.manual_seed(0)
    a = nn.FractionalMaxPool2d(2, output_size=(4, 4))(fg.tensor(x)).numpy()
    fg.manual_seed(0)
    assert np.array_equal(a, nn.FractionalMaxPool2d(2, output_size=4)(fg.tensor(x)).numpy())
    with pytest.raises(ValueError, match="output size, or a pooling ratio"):
        nn.FractionalMaxPool2d(2)
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.FractionalMaxPool2d(2, output_ratio=1.5)
    with pytest.raises(ValueError, match="pool height 3 too large"):
        F.fractional_max_pool2d(fg.randn(1, 1, 4, 4), 3, output_size=3)
    with pytest.raises(ValueError, match="_random_samples"):
        F.fractional_max_pool2d(fg.randn(1, 2, 6, 6), 2, output_size=3, _random_samples=fg.rand(1, 3, 2))
    with pytest.raises(ValueError, match="3-D"):
        F.fractional_max_pool2d(fg.randn(6, 6), 2, output_size=3)
