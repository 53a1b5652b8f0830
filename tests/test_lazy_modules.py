"""Lazy modules (nn.LazyLinear, LazyConv*, LazyConvTranspose*, LazyBatchNorm*, LazyInstanceNorm*; 1-3d) vs torch 2.13:
the first forward infers the size and makes the ordinary class; state_dict keys, reprs, values and gradients with
torch's materialised weights, load_state_dict into an unmaterialised module, optimizers built before the first
forward, and errors."""
import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import nn

pytestmark = pytest.mark.filterwarnings("ignore:Lazy modules")  # torch's construction warning

CASES = [
    ("LazyLinear", (5,), {}, (3, 2, 7), "Linear"),
    ("LazyLinear", (4,), {"bias": False}, (6,), "Linear"),
    ("LazyConv1d", (6, 3), {"padding": 1, "groups": 3}, (2, 9, 11), "Conv1d"),
    ("LazyConv1d", (4, 2), {"bias": False}, (5, 8), "Conv1d"),  # unbatched: in_channels from dim 0
    ("LazyConv2d", (4, 3), {"stride": 2}, (2, 5, 9, 7), "Conv2d"),
    ("LazyConv2d", (6, (3, 1)), {"groups": 2, "dilation": (1, 2)}, (1, 4, 7, 5), "Conv2d"),
    ("LazyConvTranspose1d", (4, 3), {"stride": 2, "output_padding": 1}, (2, 6, 5), "ConvTranspose1d"),
    ("LazyConvTranspose2d", (8, 3), {"groups": 2}, (1, 6, 4, 5), "ConvTranspose2d"),
    ("LazyBatchNorm1d", (), {}, (6, 7), "BatchNorm1d"),
    ("LazyBatchNorm1d", (), {"affine": False}, (4, 3, 5), "BatchNorm1d"),
    ("LazyBatchNorm2d", (), {"momentum": None}, (3, 5, 4, 6), "BatchNorm2d"),
    ("LazyBatchNorm2d", (), {"track_running_stats": False}, (3, 2, 4, 4), "BatchNorm2d"),
    ("LazyInstanceNorm1d", (), {}, (2, 3, 9), "InstanceNorm1d"),
    ("LazyInstanceNorm2d", (), {"affine": False, "track_running_stats": False}, (2, 5, 6, 7), "InstanceNorm2d"),
    ("LazyConv3d", (4, 3), {"stride": (1, 2, 1), "padding": 1}, (2, 3, 5, 6, 4), "Conv3d"),
    ("LazyConv3d", (6, (2, 3, 1)), {"groups": 2, "dilation": (2, 1, 1), "bias": False}, (4, 6, 5, 4), "Conv3d"),
    ("LazyConvTranspose3d", (4, 3), {"stride": 2, "output_padding": 1}, (1, 3, 3, 4, 2), "ConvTranspose3d"),
    ("LazyConvTranspose3d", (6, (1, 2, 3)), {"groups": 3, "padding": (0, 1, 1)}, (6, 3, 4, 5), "ConvTranspose3d"),
    ("LazyBatchNorm3d", (), {}, (3, 4, 3, 5, 2), "BatchNorm3d"),
    ("LazyBatchNorm3d", (), {"affine": False, "momentum": None}, (2, 3, 4, 3, 3), "BatchNorm3d"),
    ("LazyInstanceNorm3d", (), {}, (2, 3, 4, 5, 3), "InstanceNorm3d"),
    ("LazyInstanceNorm3d", (), {"track_running_stats": False}, (2, 4, 3, 3, 4), "InstanceNorm3d"),
]


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("name,args,kw,shape,becomes", CASES)
def test_first_forward_matches_torch(name, args, kw, shape, becomes):
    m, t = getattr(nn, name)(*args, **kw), getattr(torch.nn, name)(*args, **kw)
    assert list(m.state_dict()) == list(t.state_dict())
    assert isinstance(m, getattr(nn, becomes)) and type(m) is not getattr(nn, becomes)
    x = _x(shape)
    y, yt = m(fg.tensor(x, requires_grad=True)), t(torch.from_numpy(x))
    assert type(m) is getattr(nn, becomes) and type(t) is getattr(torch.nn, becomes)
    assert list(m.state_dict()) == list(t.state_dict())
    for (k, v), (kt, vt) in zip(m.state_dict().items(), t.state_dict().items()):
        assert k == kt and tuple(v.shape) == tuple(vt.shape), k
    assert all(type(p) is nn.Parameter for p in m.parameters())
    assert repr(m) == repr(t)
    assert tuple(y.shape) == tuple(yt.shape)
    # torch's materialised (and, for norms, updated) state: the same forward and gradients from there
    m2, t2 = getattr(nn, name)(*args, **kw), getattr(torch.nn, name)(*args, **kw)
    t2(torch.from_numpy(x))
    m2.load_state_dict({k: fg.tensor(v.detach().numpy().copy()) for k, v in t2.state_dict().items()})
    assert type(m2).__name__ == name  # loaded: the class changes at the first forward, as torch's
    x2 = _x(shape, seed=1)
    xf, xt = fg.tensor(x2, requires_grad=True), torch.from_numpy(x2).requires_grad_()
    y, yt = m2(xf), t2(xt)
    assert type(m2) is getattr(nn, becomes)
    c = _x(tuple(yt.shape), seed=2)
    (y * fg.tensor(c)).sum().backward()
    (yt * torch.from_numpy(c)).sum().backward()
    np.testing.assert_allclose(y.detach().numpy(), yt.detach().numpy(), rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(xf.grad.numpy(), xt.grad.numpy(), rtol=2e-4, atol=2e-5)
    for (k, p), (_, pt) in zip(m2.named_parameters(), t2.named_parameters()):
        np.testing.assert_allclose(p.grad.numpy(), pt.grad.numpy(), rtol=2e-4, atol=2e-5, err_msg=k)
    for (k, b), (_, bt) in zip(m2.named_buffers(), t2.named_buffers()):
        np.testing.assert_allclose(b.numpy(), bt.numpy(), rtol=1e-5, atol=1e-6, err_msg=k)


def test_initialised_as_the_ordinary_module():
    fg.manual_seed(0)
    m = nn.LazyLinear(64)
    m(fg.randn(2, 100))
    w = m.weight.numpy()
    bound = 1 / np.sqrt(100)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound and np.abs(m.bias.numpy()).max() <= bound
    b = nn.LazyBatchNorm2d()
    b.eval()
    b(fg.randn(2, 3, 4, 4))
    np.testing.assert_array_equal(b.weight.numpy(), np.ones(3, np.float32))
    np.testing.assert_array_equal(b.running_var.numpy(), np.ones(3, np.float32))
    assert int(b.num_batches_tracked.item()) == 0


@pytest.mark.parametrize("opt", ["SGD", "Adam"])
def test_optimizer_built_before_the_first_forward_works_as_torch(opt):
    m, t = nn.Sequential(nn.LazyLinear(3), nn.ReLU(), nn.LazyLinear(2)), \
        torch.nn.Sequential(torch.nn.LazyLinear(3), torch.nn.ReLU(), torch.nn.LazyLinear(2))
    kw = {"lr": 0.1, "momentum": 0.9} if opt == "SGD" else {"lr": 0.01}
    o, ot = getattr(fg.optim, opt)(m.parameters(), **kw), getattr(torch.optim, opt)(t.parameters(), **kw)
    x = _x((4, 5))
    t(torch.from_numpy(x))
    m(fg.tensor(x))
    assert type(m[0]) is nn.Linear and o.param_groups[0]["params"][0] is m[0].weight
    m.load_state_dict({k: fg.tensor(v.numpy().copy()) for k, v in t.state_dict().items()})
    for _ in range(2):
        o.zero_grad()
        ot.zero_grad()
        m(fg.tensor(x)).pow(2).sum().backward()
        t(torch.from_numpy(x)).pow(2).sum().backward()
        o.step()
        ot.step()
    for (k, p), (_, pt) in zip(m.named_parameters(), t.named_parameters()):
        np.testing.assert_allclose(p.detach().numpy(), pt.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=k)


def test_uninitialized_parameter_and_buffer():
    p = nn.UninitializedParameter()
    assert repr(p) == "<UninitializedParameter>" and p.requires_grad
    with pytest.raises(RuntimeError, match="uninitialized"):
        p.shape  # noqa: B018
    p.materialize((2, 3))
    assert type(p) is nn.Parameter and p.shape == (2, 3) and p.requires_grad
    b = nn.UninitializedBuffer()
    assert repr(b) == "<UninitializedBuffer>" and not b.requires_grad
    b.materialize(4)
    assert type(b) is fg.Tensor and b.shape == (4,)
    m = nn.LazyLinear(2)
    assert m.has_uninitialized_params() and isinstance(m, nn.lazy.LazyModuleMixin)
    assert len(list(m.parameters())) == 2


@pytest.mark.parametrize("make,x,error,match", [
    (lambda: nn.LazyLinear(3), np.zeros((2, 0), np.float32), ValueError, "in_features"),
    (lambda: nn.LazyConv2d(4, 3), np.zeros((1, 2, 3, 4, 5), np.float32), RuntimeError, "in_channels"),
    (lambda: nn.LazyConv1d(4, 3, groups=2), np.zeros((1, 3, 8), np.float32), ValueError, "groups"),
    (lambda: nn.LazyConv3d(4, 3), np.zeros((2, 5, 5), np.float32), RuntimeError, "in_channels"),
    (lambda: nn.LazyConvTranspose3d(4, 3, groups=2), np.zeros((1, 3, 4, 4, 4), np.float32), ValueError, "groups"),
    (lambda: nn.LazyBatchNorm1d(), np.zeros((5,), np.float32), ValueError, "num_features"),
    # torch reads num_features from dim 1 of an unbatched (C, L) input too, then refuses it
    (lambda: nn.LazyInstanceNorm1d(), np.zeros((3, 5), np.float32), ValueError, "num_features"),
])
def test_errors(make, x, error, match):
    with pytest.raises(error, match=match):
        make()(fg.tensor(x))


def test_partial_state_dict_is_refused_as_torch():
    m = nn.LazyLinear(4)
    with pytest.raises(RuntimeError, match='Missing key.*"bias"'):
        m.load_state_dict({"weight": fg.randn(4, 3)})
    assert m.has_uninitialized_params()  # nothing materialised by a refused load


def test_moved_or_cast_before_the_first_forward():
    m = nn.LazyLinear(3).to("meta")  # torch's placeholders move too: materialised there
    assert m(fg.randn(2, 5).to("meta")).shape == (2, 3) and m.weight.device.type == "meta"
    m = nn.LazyConv1d(4, 2).double()
    m(fg.randn(1, 3, 6, dtype=fg.float64))
    assert m.weight.dtype == fg.float64 and m.weight.shape == (4, 3, 2)
