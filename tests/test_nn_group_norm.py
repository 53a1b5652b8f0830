"""GroupNorm, InstanceNorm1d/2d/3d, LocalResponseNorm, CosineSimilarity and PairwiseDistance against torch: torch
state_dicts load and reproduce outputs and gradients, InstanceNorm's running statistics in training and evaluation,
identical bits at 1/2/3 threads, accuracy at a large offset, ONNX export, and bad input.

(The ops themselves, F.group_norm and the rest, are checked op by op by tests/test_op_registry.py.)"""
import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import nn
from forgegrad.nn import functional as F

from helpers import assert_close_scaled as _close
from helpers import assert_same_bits_across_threads, fg_from_torch


def _randomise(module, seed=0):
    """Non-trivial torch parameters and running statistics, so loading them is seen in the results."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.dtype.is_floating_point:
                t.copy_(torch.rand(t.shape, generator=g) + (0.5 if "var" in name else -0.5))


def _fwd_bwd(ours, theirs, x, rng, params=("weight", "bias")):
    tx = torch.tensor(x, requires_grad=True)
    fx = fg.tensor(x, requires_grad=True)
    ty, fy = theirs(tx), ours(fx)
    _close(fy._data, ty.detach().numpy(), "forward")
    gy = rng.standard_normal(ty.shape).astype(np.float32)
    ty.backward(torch.tensor(gy))
    (fy * fg.tensor(gy)).sum().backward()
    _close(fx.grad._data, tx.grad.numpy(), "grad input", atol_scale=1e-5)
    for name in params:
        p = getattr(ours, name)
        if p is not None:
            _close(p.grad._data, getattr(theirs, name).grad.numpy(), f"grad {name}", atol_scale=1e-5)


@pytest.mark.parametrize("groups,channels,shape", [
    (3, 6, (2, 6, 5, 4)), (1, 6, (3, 6, 7)), (6, 6, (2, 6, 3, 3)), (2, 8, (1, 8, 9)),
    (3, 6, (4, 6)), (3, 6, (2, 6, 1, 1)), (32, 64, (2, 64, 8, 8))])
@pytest.mark.parametrize("affine,bias", [(True, True), (False, True), (True, False)])
def test_group_norm_loads_torch_state_and_matches(rng, groups, channels, shape, affine, bias):
    theirs = torch.nn.GroupNorm(groups, channels, affine=affine, bias=bias)
    ours = nn.GroupNorm(groups, channels, affine=affine, bias=bias)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    if affine:
        np.testing.assert_array_equal(ours.weight.numpy(), theirs.weight.detach().numpy())  # init: ones
        assert (ours.bias is None) == (not bias)
    _randomise(theirs)
    fg_from_torch(ours, theirs)
    assert repr(ours) == repr(theirs)
    _fwd_bwd(ours, theirs, rng.standard_normal(shape).astype(np.float32) * 3 + 1, rng)


def _instance_pair(cls, **kw):
    theirs, ours = getattr(torch.nn, cls)(6, **kw), getattr(nn, cls)(6, **kw)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    return ours, theirs


@pytest.mark.parametrize("cls,shape", [("InstanceNorm1d", (3, 6, 7)), ("InstanceNorm2d", (2, 6, 5, 4)),
                                       ("InstanceNorm3d", (2, 6, 3, 2, 4)), ("InstanceNorm1d", (6, 9)),
                                       ("InstanceNorm2d", (6, 3, 4))])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_instance_norm_running_stats_train_then_eval(rng, cls, shape, momentum):
    ours, theirs = _instance_pair(cls, affine=True, track_running_stats=True, momentum=momentum)
    _randomise(theirs, seed=1)
    fg_from_torch(ours, theirs)
    for _ in range(2):  # training: batch statistics, running ones updated in place
        _fwd_bwd(ours, theirs, rng.standard_normal(shape).astype(np.float32) * 2 - 1, rng)
        for name in ("running_mean", "running_var"):
            _close(getattr(ours, name)._data, getattr(theirs, name).numpy(), name)
        for p in (ours.weight, ours.bias):
            p.grad = None
        theirs.zero_grad()
    assert int(ours.num_batches_tracked.item()) == int(theirs.num_batches_tracked) == 0  # torch never counts
    ours.eval()
    theirs.eval()
    before = ours.running_mean.numpy().copy()
    _fwd_bwd(ours, theirs, rng.standard_normal(shape).astype(np.float32), rng)  # the running statistics
    np.testing.assert_array_equal(ours.running_mean.numpy(), before)


@pytest.mark.parametrize("affine", [True, False])
def test_instance_norm_without_running_stats_uses_batch_stats_in_eval(rng, affine):
    ours, theirs = _instance_pair("InstanceNorm2d", affine=affine)
    assert ours.running_mean is None and "running_mean" not in ours.state_dict()
    if affine:
        _randomise(theirs)
        fg_from_torch(ours, theirs)
    ours.eval()
    theirs.eval()
    _fwd_bwd(ours, theirs, rng.standard_normal((2, 6, 4, 5)).astype(np.float32), rng)
    assert repr(ours) == repr(theirs)


def test_instance_norm_eval_loads_torch_running_stats(rng):
    theirs = torch.nn.InstanceNorm1d(6, affine=True, track_running_stats=True)
    _randomise(theirs, seed=3)
    theirs.eval()
    ours = nn.InstanceNorm1d(6, affine=True, track_running_stats=True)
    fg_from_torch(ours, theirs)
    ours.eval()
    x = rng.standard_normal((4, 6, 1)).astype(np.float32)  # one spatial element: fine in eval
    _fwd_bwd(ours, theirs, x, rng)


@pytest.mark.parametrize("size,kw", [(5, {}), (4, dict(alpha=0.3, beta=0.6, k=2.0))])
def test_local_response_norm_module(rng, size, kw):
    ours, theirs = nn.LocalResponseNorm(size, **kw), torch.nn.LocalResponseNorm(size, **kw)
    assert repr(ours) == repr(theirs)
    _fwd_bwd(ours, theirs, rng.standard_normal((2, 7, 4, 3)).astype(np.float32), rng, params=())


def test_distance_modules(rng):
    a = rng.standard_normal((4, 8)).astype(np.float32)
    b = rng.standard_normal((4, 8)).astype(np.float32)
    for ours, theirs in ((nn.CosineSimilarity(dim=1), torch.nn.CosineSimilarity(dim=1)),
                         (nn.PairwiseDistance(p=3.0, keepdim=True), torch.nn.PairwiseDistance(p=3.0, keepdim=True))):
        ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
        fa, fb = fg.tensor(a, requires_grad=True), fg.tensor(b, requires_grad=True)
        ty, fy = theirs(ta, tb), ours(fa, fb)
        _close(fy._data, ty.detach().numpy(), type(ours).__name__)
        ty.sum().backward()
        fy.sum().backward()
        _close(fa.grad._data, ta.grad.numpy(), "grad x1")
        _close(fb.grad._data, tb.grad.numpy(), "grad x2")
    x = rng.standard_normal((3, 5)).astype(np.float32)
    _close(F.normalize(fg.tensor(x), dim=-1)._data, torch.nn.functional.normalize(torch.tensor(x), dim=-1), "normalize")


def test_cosine_similarity_zero_vector_gradient_as_torch():
    # torch clamps the norms in place under no_grad: the gradient at a zero vector is x2 / (eps * ||x2||)
    a = np.zeros((2, 4), np.float32)
    a[1] = [1.0, 2.0, -1.0, 0.5]
    b = np.array([[0.3, -1.0, 2.0, 0.1], [1.0, 0.0, 0.5, -2.0]], np.float32)
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    fa, fb = fg.tensor(a, requires_grad=True), fg.tensor(b, requires_grad=True)
    torch.nn.functional.cosine_similarity(ta, tb, eps=1e-3).sum().backward()
    F.cosine_similarity(fa, fb, eps=1e-3).sum().backward()
    np.testing.assert_allclose(fa.grad.numpy(), ta.grad.numpy(), rtol=1e-5)
    np.testing.assert_allclose(fb.grad.numpy(), tb.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_group_and_instance_norm_same_bits_at_1_2_3_threads(rng, threads):
    x = rng.standard_normal((4, 48, 20, 21)).astype(np.float32)
    gy = rng.standard_normal(x.shape).astype(np.float32)
    gn = nn.GroupNorm(6, 48)
    inorm = nn.InstanceNorm2d(48, affine=True, track_running_stats=True)
    for m in (gn, inorm):
        m.weight.data = fg.tensor(rng.standard_normal(48).astype(np.float32))

    def run():
        out = []
        for m in (gn, inorm):
            m.zero_grad()
            fx = fg.tensor(x, requires_grad=True)
            y = m(fx)
            (y * fg.tensor(gy)).sum().backward()
            out += [y.numpy().copy(), fx.grad.numpy().copy(), m.weight.grad.numpy().copy(),
                    m.bias.grad.numpy().copy()]
        inorm.reset_running_stats()
        return out

    assert_same_bits_across_threads(run, threads)


def test_group_norm_keeps_precision_at_a_large_offset(rng):
    # the layer norm kernels centre each group on a float pair: at an offset of 1e3 the gradients stay within
    # float32's rounding of the float64 result where torch's float32 one-pass statistics lose digits
    x = (rng.standard_normal((2, 8, 16, 16)) + 1e3).astype(np.float32)
    w, b = rng.standard_normal(8).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    gy = rng.standard_normal(x.shape).astype(np.float32)
    tx, tw = torch.tensor(x.astype(np.float64), requires_grad=True), torch.tensor(w.astype(np.float64),
                                                                                   requires_grad=True)
    ty = torch.nn.functional.group_norm(tx, 4, tw, torch.tensor(b.astype(np.float64)))
    ty.backward(torch.tensor(gy.astype(np.float64)))
    fx, fw = fg.tensor(x, requires_grad=True), fg.tensor(w, requires_grad=True)
    fy = F.group_norm(fx, 4, fw, fg.tensor(b))
    (fy * fg.tensor(gy)).sum().backward()
    np.testing.assert_allclose(fy.numpy(), ty.detach().numpy(), atol=2e-5)
    np.testing.assert_allclose(fx.grad.numpy(), tx.grad.numpy(), atol=2e-5)
    np.testing.assert_allclose(fw.grad.numpy(), tw.grad.numpy(), atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("opset", [13, 17, 21])
def test_onnx_export_group_and_instance_norm(tmp_path, opset):
    pytest.importorskip("onnxruntime")
    fg.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.gn = nn.GroupNorm(4, 8)
            self.inorm = nn.InstanceNorm2d(8, affine=True, track_running_stats=True)
            self.inorm_plain = nn.InstanceNorm2d(8)
            self.lrn = nn.LocalResponseNorm(4)

        def forward(self, x):
            h = self.inorm(self.gn(self.conv(x)))
            return F.normalize(self.lrn(self.inorm_plain(h)), dim=1)

    net = Net()
    net.inorm.running_mean.data = fg.tensor(np.linspace(-1, 1, 8, dtype=np.float32))
    net.inorm.running_var.data = fg.tensor(np.linspace(0.5, 2, 8, dtype=np.float32))
    net.eval()
    report = fg.onnx.export(net, (fg.randn(2, 3, 7, 6),), str(tmp_path / "n.onnx"), opset=opset,
                            dynamic_axes={"x": {0: "batch", 2: "h", 3: "w"}}, rtol=1e-4, atol=1e-5,
                            verify_sizes=[{"batch": 1, "h": 2, "w": 3}, {"batch": 5, "h": 9, "w": 4}])
    assert report.ok, report


# ---- bad input -----------------------------------------------------------------------------------------
def test_group_norm_bad_arguments():
    with pytest.raises(ValueError, match="num_channels .*divisible by num_groups"):
        nn.GroupNorm(4, 6)
    with pytest.raises(ValueError, match="num_groups"):
        nn.GroupNorm(0, 6)
    m = nn.GroupNorm(3, 6)
    with pytest.raises(ValueError, match="num_channels=6"):
        m(fg.randn(2, 4, 5))
    with pytest.raises(ValueError, match=r"num_groups \(4\) must divide"):
        F.group_norm(fg.randn(2, 6, 5), 4)
    with pytest.raises(ValueError, match="weight must have shape"):
        F.group_norm(fg.randn(2, 6, 5), 3, fg.ones(5))
    with pytest.raises(ValueError, match="input must have at least 2 dimensions"):
        F.group_norm(fg.randn(6), 3)
    with pytest.raises(TypeError, match="input must be a forgegrad.Tensor"):
        m(np.zeros((2, 6, 3), np.float32))


def test_instance_norm_bad_arguments():
    m = nn.InstanceNorm2d(6, affine=True)
    with pytest.raises(ValueError, match=r"num_features \(6\)"):
        m(fg.randn(2, 5, 3, 3))
    with pytest.raises(ValueError, match="expected 3D .*or 4D input"):
        m(fg.randn(6, 3))
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        nn.InstanceNorm1d(6)(fg.randn(2, 6, 1))
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        F.instance_norm(fg.randn(2, 6, 1, 1))
    with pytest.raises(ValueError, match="running_mean and running_var are required"):
        F.instance_norm(fg.randn(2, 6, 3), use_input_stats=False)
    with pytest.warns(UserWarning, match="num_features"):  # no affine: torch normalises anyway, with a warning
        y = nn.InstanceNorm1d(6)(fg.randn(2, 5, 3))
    assert y.shape == (2, 5, 3)


@pytest.mark.parametrize("shape", [(0, 6, 4), (2, 6, 0)])
def test_empty_batch_or_spatial_axis_gives_empty_results_as_torch(shape):
    calls = [(lambda lib, x: lib.nn.functional.group_norm(x, 3)), (lambda lib, x: lib.nn.functional.instance_norm(x)),
             (lambda lib, x: lib.nn.functional.local_response_norm(x, 3))]
    for call in calls:
        x = fg.zeros(shape, requires_grad=True)
        y = call(fg, x)
        assert y.shape == tuple(call(torch, torch.zeros(shape)).shape) == shape
        y.sum().backward()
        assert x.grad.shape == shape
