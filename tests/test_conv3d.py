"""Volumetric layers (Conv3d, ConvTranspose3d, the 3-D pools) against torch: state_dicts, forward and gradients, a
small 3-D conv net's port and ONNX export, and errors. BatchNorm3d's running statistics are checked with the other
batch norms (tests/test_conv_modules.py), the ops' generated checks in tests/test_op_registry.py."""
import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import nn

from helpers import assert_close_scaled as _close
from helpers import assert_same_bits_across_threads, fg_from_torch


def _run_both(ours, theirs, x, rng):
    """Forward and backward of both modules on x; compares outputs and every gradient."""
    tx, fx = torch.tensor(x, requires_grad=True), fg.tensor(x, requires_grad=True)
    ty, fy = theirs(tx), ours(fx)
    _close(fy._data, ty.detach().numpy(), "forward")
    gy = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    ty.backward(torch.tensor(gy))
    (fy * fg.tensor(gy)).sum().backward()
    _close(fx.grad._data, tx.grad.numpy(), "grad input")
    for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        _close(p.grad._data, q.grad.numpy(), f"grad {name}")


@pytest.mark.parametrize("kwargs,shape", [
    (dict(in_channels=3, out_channels=5, kernel_size=3), (2, 3, 5, 6, 7)),
    (dict(in_channels=4, out_channels=6, kernel_size=(3, 2, 3), stride=(1, 2, 2), padding=(1, 0, 2), bias=False),
     (2, 4, 5, 7, 6)),
    (dict(in_channels=4, out_channels=8, kernel_size=3, padding="same", dilation=(2, 1, 2), groups=2), (1, 4, 5, 6, 7)),
    (dict(in_channels=6, out_channels=6, kernel_size=3, padding=1, groups=6), (2, 6, 3, 5, 4)),
    (dict(in_channels=3, out_channels=4, kernel_size=3, padding=1, padding_mode="reflect"), (2, 3, 4, 5, 6)),
    (dict(in_channels=3, out_channels=4, kernel_size=2, padding="valid", padding_mode="circular"), (1, 3, 3, 4, 5)),
])
def test_conv3d_module_matches_torch(rng, kwargs, shape):
    fg.manual_seed(0)
    ours, theirs = nn.Conv3d(**kwargs), torch.nn.Conv3d(**kwargs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert ours.weight.shape == tuple(theirs.weight.shape)
    assert (ours.kernel_size, ours.stride, ours.padding, ours.dilation) == \
        (theirs.kernel_size, theirs.stride, theirs.padding, theirs.dilation)
    fg_from_torch(ours, theirs)
    _run_both(ours, theirs, rng.standard_normal(shape).astype(np.float32), rng)


def test_conv3d_init_matches_torch_bounds():
    fg.manual_seed(0)
    m = nn.Conv3d(4, 6, (3, 2, 3), groups=2)
    bound = 1 / np.sqrt(2 * 3 * 2 * 3)  # fan_in = in_channels / groups * kernel volume
    assert np.abs(m.weight._data).max() <= bound and np.abs(m.bias._data).max() <= bound
    assert np.abs(m.weight._data).max() > 0.5 * bound


def test_conv3d_unbatched_and_functional(rng):
    x = rng.standard_normal((3, 4, 5, 6)).astype(np.float32)
    w = rng.standard_normal((2, 3, 2, 2, 3)).astype(np.float32)
    got = nn.functional.conv3d(fg.tensor(x), fg.tensor(w), None, 1, (1, 0, 1))
    want = torch.nn.functional.conv3d(torch.tensor(x), torch.tensor(w), None, 1, (1, 0, 1))
    assert got.shape == tuple(want.shape)
    _close(got._data, want.numpy())


@pytest.mark.parametrize("kwargs,shape,output_size", [
    (dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, padding=1, output_padding=1), (2, 3, 3, 4, 5), None),
    (dict(in_channels=4, out_channels=2, kernel_size=(2, 3, 2), stride=(2, 1, 3), groups=2, dilation=(1, 2, 1)),
     (1, 4, 3, 4, 3), None),
    (dict(in_channels=2, out_channels=3, kernel_size=3, stride=2, padding=1, bias=False), (2, 2, 3, 4, 5),
     (6, 8, 10)),
])
def test_conv_transpose3d_module_matches_torch(rng, kwargs, shape, output_size):
    fg.manual_seed(0)
    ours, theirs = nn.ConvTranspose3d(**kwargs), torch.nn.ConvTranspose3d(**kwargs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    fg_from_torch(ours, theirs)
    x = rng.standard_normal(shape).astype(np.float32)
    if output_size is None:
        _run_both(ours, theirs, x, rng)
        return
    got = ours(fg.tensor(x), output_size=output_size)
    want = theirs(torch.tensor(x), output_size=output_size)
    assert got.shape == tuple(want.shape)
    _close(got._data, want.detach().numpy())


@pytest.mark.parametrize("make", [
    lambda m: m.MaxPool3d(3, stride=2, padding=1),
    lambda m: m.MaxPool3d((2, 3, 2), stride=(2, 2, 1), dilation=(1, 2, 1), ceil_mode=True),
    lambda m: m.AvgPool3d(3, stride=2, padding=1, count_include_pad=False, ceil_mode=True),
    lambda m: m.AvgPool3d((2, 2, 3), divisor_override=7),
    lambda m: m.AdaptiveAvgPool3d((2, 3, None)),
    lambda m: m.AdaptiveMaxPool3d((3, 2, 4)),
    lambda m: m.LPPool3d(2, (2, 3, 2), stride=2),
])
def test_pool3d_modules_match_torch(rng, make):
    x = rng.standard_normal((2, 3, 5, 7, 6)).astype(np.float32)
    if "LPPool" in type(make(nn)).__name__:
        x = np.abs(x) + 0.1
    _run_both(make(nn), make(torch.nn), x, rng)
    # unbatched (C, D, H, W), as torch
    got, want = make(nn)(fg.tensor(x[0])), make(torch.nn)(torch.tensor(x[0]))
    _close(got._data, want.numpy())


def test_max_pool3d_indices_and_unpool_match_torch(rng):
    x = rng.standard_normal((2, 3, 6, 5, 7)).astype(np.float32)
    fy, fidx = nn.MaxPool3d(3, stride=2, padding=1, return_indices=True)(fg.tensor(x))
    ty, tidx = torch.nn.MaxPool3d(3, stride=2, padding=1, return_indices=True)(torch.tensor(x))
    np.testing.assert_array_equal(fidx._data, tidx.numpy())
    fu = nn.MaxUnpool3d(3, stride=2, padding=1)(fy, fidx, output_size=x.shape[2:])
    tu = torch.nn.MaxUnpool3d(3, stride=2, padding=1)(ty, tidx, output_size=x.shape[2:])
    np.testing.assert_array_equal(fu._data, tu.numpy())
    fa, fai = nn.functional.adaptive_max_pool3d(fg.tensor(x), (2, 5, 3), return_indices=True)
    ta, tai = torch.nn.functional.adaptive_max_pool3d(torch.tensor(x), (2, 5, 3), return_indices=True)
    np.testing.assert_array_equal(fai._data, tai.numpy())
    np.testing.assert_array_equal(fa._data, ta.numpy())


class _Net3d:
    """A tiny 3-D U-Net-like block: conv, batch norm, pool, strided conv, transposed conv back up, skip concat,
    global pool, linear. ``m`` is torch.nn or forgegrad.nn."""

    @staticmethod
    def build(m):
        class Net(m.Module):
            def __init__(self):
                super().__init__()
                self.enc = m.Conv3d(2, 4, 3, padding=1)
                self.bn = m.BatchNorm3d(4)
                self.pool = m.MaxPool3d(2)
                self.mid = m.Conv3d(4, 6, 3, padding=1, groups=2)
                self.up = m.ConvTranspose3d(6, 4, 2, stride=2)
                self.dec = m.Conv3d(8, 4, (3, 1, 3), padding=(1, 0, 1))
                self.avg = m.AvgPool3d(2, ceil_mode=True)
                self.gap = m.AdaptiveAvgPool3d(1)
                self.head = m.Linear(4, 3)

            def forward(self, x):
                e = m.functional.relu(self.bn(self.enc(x)))
                h = m.functional.relu(self.mid(self.pool(e)))
                d = self.dec(self_cat(m, self.up(h), e))
                return self.head(self.gap(self.avg(d)).flatten(1))

        def self_cat(mod, a, b):
            return (fg if mod is nn else torch).cat([a, b], 1)
        return Net()


def test_tiny_3d_net_port_matches_torch_and_exports(rng, tmp_path):
    pytest.importorskip("onnxruntime")
    from test_onnx_common import export_and_check
    fg.manual_seed(0)
    torch.manual_seed(0)
    ours, theirs = _Net3d.build(nn), _Net3d.build(torch.nn)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    fg_from_torch(ours, theirs)
    x = rng.standard_normal((2, 2, 4, 6, 8)).astype(np.float32)
    tx, fx = torch.tensor(x, requires_grad=True), fg.tensor(x, requires_grad=True)
    ty, fy = theirs(tx), ours(fx)
    _close(fy._data, ty.detach().numpy(), "logits")
    ty.sum().backward()
    fy.sum().backward()
    _close(fx.grad._data, tx.grad.numpy(), "grad input")
    for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        _close(p.grad._data, q.grad.numpy(), f"grad {name}", atol_scale=1e-5)
    for k, v in theirs.state_dict().items():  # training-mode batch norm updated the running statistics alike
        _close(ours.state_dict()[k]._data, v.numpy(), k)
    ours.eval()
    _, proto = export_and_check(ours, fg.tensor(x), tmp_path)
    ops = {n.op_type for n in proto.graph.node}
    assert {"Conv", "ConvTranspose", "MaxPool", "BatchNormalization", "GlobalAveragePool"} <= ops


def test_conv3d_same_bits_across_threads(rng):
    x = fg.tensor(rng.standard_normal((2, 8, 6, 9, 10)).astype(np.float32), requires_grad=True)
    m = nn.Conv3d(8, 12, 3, padding=1)

    def run():
        x.grad = None
        m.zero_grad()
        y = m(x)
        (y * y).sum().backward()
        return [y._data, x.grad._data, m.weight.grad._data, m.bias.grad._data]

    assert_same_bits_across_threads(run, fg.set_num_threads)


def test_errors():
    x = fg.tensor(np.zeros((2, 4, 5, 6, 7), np.float32))
    with pytest.raises(ValueError, match="Conv3d: expected 4D or 5D input"):
        nn.Conv3d(4, 6, 3)(fg.tensor(np.zeros((4, 5, 6), np.float32)))
    with pytest.raises(ValueError, match=r"in_channels \(4\) must be divisible by groups \(3\)"):
        nn.Conv3d(4, 6, 3, groups=3)
    with pytest.raises(ValueError, match=r"out_channels \(5\) must be divisible by groups \(2\)"):
        nn.Conv3d(4, 5, 3, groups=2)
    with pytest.raises(ValueError, match="in_channels.*divisible by groups"):
        nn.functional.conv3d(x, fg.tensor(np.zeros((6, 1, 3, 3, 3), np.float32)), groups=3)
    with pytest.raises(ValueError, match="weight must have shape"):
        nn.functional.conv3d(x, fg.tensor(np.zeros((6, 3, 3, 3, 3), np.float32)))
    with pytest.raises(TypeError, match="kernel_size must be an int or a tuple of 3 ints"):
        nn.Conv3d(4, 6, (3, 3))
    with pytest.raises(ValueError, match="padding='same' is not supported for strided"):
        nn.Conv3d(4, 6, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="larger than the padded input"):
        nn.functional.conv3d(x, fg.tensor(np.zeros((2, 4, 9, 1, 1), np.float32)))
    with pytest.raises(ValueError, match="expected 5D input"):
        nn.BatchNorm3d(4)(fg.tensor(np.zeros((2, 4, 5, 6), np.float32)))
    with pytest.raises(ValueError, match="max_pool3d: input must be 4-D"):
        nn.MaxPool3d(2)(fg.tensor(np.zeros((2, 4, 5, 6, 7, 1), np.float32)))
    with pytest.raises(ValueError, match="padding must be at most half of kernel_size"):
        nn.AvgPool3d(2, padding=2)(x)
    with pytest.raises(ValueError, match="output_padding must be smaller than either stride or dilation"):
        nn.ConvTranspose3d(4, 2, 3, output_padding=1)(x)
    with pytest.raises(ValueError, match="groups"):
        nn.ConvTranspose3d(4, 3, 3, groups=2)
