"""Conv / pool / batch-norm autograd ops and modules against torch (forward, backward, state)."""
import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import nn
from forgegrad.nn import conv as C
from forgegrad.nn import functional_conv as F

# different summation orders than torch: tolerance relative to the largest value
from helpers import assert_close_scaled as _close
from helpers import fg_from_torch


@pytest.mark.parametrize("kwargs", [
    dict(in_channels=3, out_channels=5, kernel_size=3),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=2, padding=1, bias=False),
    dict(in_channels=4, out_channels=8, kernel_size=3, padding="same", dilation=2, groups=2),
    dict(in_channels=16, out_channels=16, kernel_size=3, padding=1),  # Winograd path
    dict(in_channels=6, out_channels=6, kernel_size=3, padding=1, groups=6),  # depthwise
])
def test_conv2d_module_matches_torch(rng, kwargs):
    fg.manual_seed(0)
    ours = C.Conv2d(**kwargs)
    theirs = torch.nn.Conv2d(**kwargs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert ours.weight.shape == tuple(theirs.weight.shape)
    fg_from_torch(ours, theirs)
    x = rng.standard_normal((2, kwargs["in_channels"], 9, 8)).astype(np.float32)
    tx = torch.tensor(x, requires_grad=True)
    fx = fg.tensor(x, requires_grad=True)
    ty, fy = theirs(tx), ours(fx)
    _close(fy._data, ty.detach().numpy(), "forward")
    gy = rng.standard_normal(ty.shape).astype(np.float32)
    ty.backward(torch.tensor(gy))
    (fy * fg.tensor(gy)).sum().backward()
    _close(fx.grad._data, tx.grad.numpy(), "grad input")
    _close(ours.weight.grad._data, theirs.weight.grad.numpy(), "grad weight")
    if ours.bias is not None:
        _close(ours.bias.grad._data, theirs.bias.grad.numpy(), "grad bias")


def test_conv2d_init_bounds_and_errors():
    fg.manual_seed(3)
    m = C.Conv2d(8, 4, 3)
    bound = 1 / np.sqrt(8 * 9)
    assert np.abs(m.weight._data).max() <= bound + 1e-7
    assert np.abs(m.bias._data).max() <= bound + 1e-7
    assert m.weight._data.std() > bound / 4  # really initialised
    with pytest.raises(ValueError, match="divisible by groups"):
        C.Conv2d(6, 4, 3, groups=4)
    with pytest.raises(ValueError, match="strided"):
        C.Conv2d(2, 2, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="padding_mode"):
        C.Conv2d(2, 2, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match="expected 4D input"):
        m(fg.tensor(np.zeros((8, 5, 5), np.float32)))
    with pytest.raises(ValueError, match="weight must have shape"):
        m(fg.tensor(np.zeros((1, 3, 5, 5), np.float32)))
    assert repr(C.Conv2d(2, 4, 3, padding=1, bias=False)) == \
        "Conv2d(2, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)"


@pytest.mark.parametrize("make", [
    lambda m: m.MaxPool2d(2),
    lambda m: m.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
    lambda m: m.AvgPool2d(3, stride=2, padding=1),
    lambda m: m.AvgPool2d(2, count_include_pad=False, ceil_mode=True),
    lambda m: m.AdaptiveAvgPool2d((3, 2)),
    lambda m: m.AdaptiveAvgPool2d(1),
])
def test_pool_modules_match_torch(rng, make):
    ours, theirs = make(C), make(torch.nn)
    x = rng.standard_normal((2, 3, 9, 7)).astype(np.float32)
    tx, fx = torch.tensor(x, requires_grad=True), fg.tensor(x, requires_grad=True)
    ty, fy = theirs(tx), ours(fx)
    _close(fy._data, ty.detach().numpy())
    gy = rng.standard_normal(ty.shape).astype(np.float32)
    ty.backward(torch.tensor(gy))
    (fy * fg.tensor(gy)).sum().backward()
    _close(fx.grad._data, tx.grad.numpy())


def test_max_pool2d_return_indices(rng):
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    y, idx = F.max_pool2d(fg.tensor(x), 2, return_indices=True)
    ty, ti = torch.nn.functional.max_pool2d(torch.tensor(x), 2, return_indices=True)
    np.testing.assert_array_equal(idx._data, ti.numpy())
    assert idx.dtype == np.int64 and not idx.requires_grad


@pytest.mark.parametrize("cls,shape", [("BatchNorm1d", (8, 5)), ("BatchNorm1d", (4, 5, 7)),
                                       ("BatchNorm2d", (3, 5, 4, 6)), ("BatchNorm3d", (3, 5, 3, 4, 6))])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm_module_matches_torch_over_training_steps(rng, cls, shape, momentum):
    ours = getattr(nn, cls)(5, momentum=momentum)
    theirs = getattr(torch.nn, cls)(5, momentum=momentum)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    with torch.no_grad():
        theirs.weight.uniform_(0.5, 1.5)
        theirs.bias.uniform_(-0.5, 0.5)
    fg_from_torch(ours, theirs)
    for step in range(5):
        x = (rng.standard_normal(shape) * 2 + 0.3).astype(np.float32)
        tx, fx = torch.tensor(x, requires_grad=True), fg.tensor(x, requires_grad=True)
        ty, fy = theirs(tx), ours(fx)
        _close(fy._data, ty.detach().numpy(), f"step {step} forward")
        gy = rng.standard_normal(shape).astype(np.float32)
        ty.backward(torch.tensor(gy))
        (fy * fg.tensor(gy)).sum().backward()
        _close(fx.grad._data, tx.grad.numpy(), f"step {step} grad input")
    _close(ours.weight.grad._data, theirs.weight.grad.numpy(), "grad weight (5 steps accumulated)")
    _close(ours.bias.grad._data, theirs.bias.grad.numpy(), "grad bias")
    for k, v in theirs.state_dict().items():
        _close(ours.state_dict()[k]._data, v.numpy(), k)
    assert int(ours.num_batches_tracked._data) == 5
    ours.eval(), theirs.eval()
    x = rng.standard_normal(shape).astype(np.float32)
    tx, fx = torch.tensor(x, requires_grad=True), fg.tensor(x, requires_grad=True)
    ty, fy = theirs(tx), ours(fx)
    _close(fy._data, ty.detach().numpy(), "eval forward")
    ty.sum().backward()
    fy.sum().backward()
    _close(fx.grad._data, tx.grad.numpy(), "eval grad input")


def test_batchnorm_without_affine_or_running_stats(rng):
    x = rng.standard_normal((6, 3, 4, 4)).astype(np.float32)
    for kw in (dict(affine=False), dict(track_running_stats=False)):
        ours, theirs = nn.BatchNorm2d(3, **kw), torch.nn.BatchNorm2d(3, **kw)
        assert list(ours.state_dict()) == list(theirs.state_dict())
        tx, fx = torch.tensor(x, requires_grad=True), fg.tensor(x, requires_grad=True)
        ty, fy = theirs(tx), ours(fx)
        _close(fy._data, ty.detach().numpy())
        ty.sum().backward()
        fy.sum().backward()
        _close(fx.grad._data, tx.grad.numpy())
        ours.eval(), theirs.eval()
        _close(ours(fg.tensor(x))._data, theirs(torch.tensor(x)).detach().numpy())


def test_batchnorm_errors():
    with pytest.raises(ValueError, match="expected 4D input"):
        nn.BatchNorm2d(3)(fg.tensor(np.zeros((2, 3, 4), np.float32)))
    with pytest.raises(ValueError, match="expected 2D or 3D input"):
        nn.BatchNorm1d(3)(fg.tensor(np.zeros((2, 3, 4, 4), np.float32)))
    with pytest.raises(ValueError, match="expected 3 channels"):
        nn.BatchNorm1d(3)(fg.tensor(np.zeros((2, 4), np.float32)))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(3)(fg.tensor(np.zeros((1, 3), np.float32)))


def test_small_cnn_training_step_matches_torch(rng):
    def build(m, lin):
        return [m.Conv2d(3, 16, 3, padding=1), m.BatchNorm2d(16), m.MaxPool2d(2), m.Conv2d(16, 16, 3, padding=1),
                m.AvgPool2d(2), m.AdaptiveAvgPool2d(1), lin(16, 4)]

    fg.manual_seed(0)
    ours = nn.Sequential(*build(nn, nn.Linear))
    theirs = torch.nn.Sequential(*build(torch.nn, torch.nn.Linear))
    fg_from_torch(ours, theirs)
    x = rng.standard_normal((4, 3, 12, 12)).astype(np.float32)
    target = np.array([0, 3, 1, 2])

    def run_ours():
        h = fg.tensor(x)
        for i, layer in enumerate(ours):
            h = layer(h)
            if i in (0, 3):
                h = nn.functional.relu(h)
            if i == 5:
                h = h.flatten(1)
        return nn.functional.cross_entropy(h, fg.tensor(target))

    def run_theirs():
        h = torch.tensor(x)
        for i, layer in enumerate(theirs):
            h = layer(h)
            if i in (0, 3):
                h = torch.relu(h)
            if i == 5:
                h = h.flatten(1)
        return torch.nn.functional.cross_entropy(h, torch.tensor(target))

    lo, lt = run_ours(), run_theirs()
    _close(lo._data, lt.detach().numpy(), "loss")
    lo.backward()
    lt.backward()
    for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        np.testing.assert_allclose(p.grad._data, q.grad.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)


def test_keras_aliases(rng):
    fg.manual_seed(0)
    conv = C.Conv2D(8, 3, padding="same", activation="relu")
    x = fg.tensor(rng.standard_normal((2, 3, 9, 10)).astype(np.float32))
    y = conv(x)
    assert conv.weight.shape == (8, 3, 3, 3) and y.shape == (2, 8, 9, 10)
    assert (y._data >= 0).all()
    ref = torch.nn.functional.conv2d(torch.tensor(x._data), torch.tensor(conv.weight._data),
                                     torch.tensor(conv.bias._data), padding=1).relu()
    _close(y._data, ref.numpy())
    strided = C.Conv2D(4, 3, strides=2, padding="same", in_channels=3)
    assert strided(x).shape == (2, 4, 5, 5)  # ceil(9 / 2), ceil(10 / 2) as Keras
    pool = C.MaxPooling2D(2)
    _close(pool(x)._data, torch.nn.functional.max_pool2d(torch.tensor(x._data), 2).numpy())
    with pytest.raises(ValueError, match="padding"):
        C.MaxPooling2D(2, padding="same")


def test_bench_cnn_inference_runtimes_agree():
    """The cnn suite's inference rows time one computation: the frozen LeNet, torch's twin with the
    same weights and onnxruntime on the export give the same logits."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from forgegrad.bench import cnn
    fns = cnn.infer_fns(torch, ort, np.random.default_rng(0), 1, 3)
    want = fns["torch"]().numpy()
    assert want.shape == (3, 10)
    np.testing.assert_allclose(fns["forgegrad"]().numpy(), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fns["onnxruntime"]()[0], want, rtol=1e-4, atol=1e-5)
