"""nn.Conv1d / F.conv1d against torch (state_dict, outputs, gradients), its errors, and its ONNX export
(the op's generated checks are in test_op_registry.py)."""
import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import nn
from helpers import assert_close_scaled as _close
from helpers import fg_from_torch
from test_onnx_common import export_and_check


@pytest.mark.parametrize("kwargs", [
    dict(in_channels=3, out_channels=5, kernel_size=3),
    dict(in_channels=80, out_channels=24, kernel_size=3, padding=1),  # Whisper's first conv
    dict(in_channels=24, out_channels=24, kernel_size=3, stride=2, padding=1),  # and its second
    dict(in_channels=4, out_channels=6, kernel_size=(4,), stride=(2,), padding=(3,), bias=False),
    dict(in_channels=4, out_channels=8, kernel_size=4, padding="same", dilation=2, groups=2),
    dict(in_channels=6, out_channels=6, kernel_size=5, padding="valid", groups=6),  # depthwise
])
def test_conv1d_module_matches_torch(rng, kwargs):
    fg.manual_seed(0)
    ours, theirs = nn.Conv1d(**kwargs), torch.nn.Conv1d(**kwargs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert ours.weight.shape == tuple(theirs.weight.shape)
    fg_from_torch(ours, theirs)
    x = rng.standard_normal((2, kwargs["in_channels"], 23)).astype(np.float32)
    tx, fx = torch.tensor(x, requires_grad=True), fg.tensor(x, requires_grad=True)
    ty, fy = theirs(tx), ours(fx)
    _close(fy.numpy(), ty.detach().numpy(), "forward")
    gy = rng.standard_normal(ty.shape).astype(np.float32)
    ty.backward(torch.tensor(gy))
    (fy * fg.tensor(gy)).sum().backward()
    _close(fx.grad.numpy(), tx.grad.numpy(), "grad input")
    _close(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), "grad weight")
    if ours.bias is not None:
        _close(ours.bias.grad.numpy(), theirs.bias.grad.numpy(), "grad bias")


def test_conv1d_unbatched_init_and_repr(rng):
    fg.manual_seed(3)
    m = nn.Conv1d(8, 4, 3, padding=1)
    bound = 1 / np.sqrt(8 * 3)
    assert np.abs(m.weight.numpy()).max() <= bound + 1e-7 and m.weight.numpy().std() > bound / 4
    x = rng.standard_normal((8, 10)).astype(np.float32)
    np.testing.assert_array_equal(m(fg.tensor(x)).numpy(), m(fg.tensor(x[None])).numpy()[0])
    assert repr(m) == "Conv1d(8, 4, kernel_size=(3,), stride=(1,), padding=(1,))"
    assert "padding='same'" in repr(nn.Conv1d(2, 2, 3, padding="same"))


def test_conv1d_errors():
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv1d(6, 4, 3, groups=4)
    with pytest.raises(ValueError, match="strided"):
        nn.Conv1d(2, 2, 3, stride=2, padding="same")
    with pytest.raises(TypeError, match="Conv1d: kernel_size must be an int or a tuple of one int"):
        nn.Conv1d(2, 2, (3, 3))
    with pytest.raises(ValueError, match="Conv1d: padding must be >= 0"):
        nn.Conv1d(2, 2, 3, padding=-1)
    with pytest.raises(ValueError, match="padding_mode"):
        nn.Conv1d(2, 2, 3, padding_mode="mirror")
    m = nn.Conv1d(3, 4, 3)
    with pytest.raises(ValueError, match="expected 2D or 3D input"):
        m(fg.zeros(1, 3, 5, 5))
    with pytest.raises(ValueError, match="weight must have shape"):
        m(fg.zeros(1, 2, 9))
    with pytest.raises(TypeError, match="conv1d: stride must be an int or a tuple of one int"):
        nn.functional.conv1d(fg.zeros(1, 3, 9), m.weight, stride=(1, 1))


def test_conv1d_float64_matches_torch(rng):
    x = rng.standard_normal((2, 3, 17))
    w = rng.standard_normal((4, 3, 3))
    fx, fw = fg.tensor(x, requires_grad=True), fg.tensor(w, requires_grad=True)
    y = nn.functional.conv1d(fx, fw, stride=2, padding=1)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    ty = torch.nn.functional.conv1d(tx, tw, stride=2, padding=1)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    y.sum().backward()
    ty.sum().backward()
    np.testing.assert_allclose(fx.grad.numpy(), tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fw.grad.numpy(), tw.grad.numpy(), rtol=1e-12, atol=1e-12)


class _AudioFront(nn.Module):
    """Whisper's front end: two convs with GELU, the second halving the length."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv1d(8, 12, 3, padding=1), nn.Conv1d(12, 12, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(12, 6, 4, padding="same", dilation=2, groups=2, bias=False)

    def forward(self, x):
        h = nn.functional.gelu(self.conv2(nn.functional.gelu(self.conv1(x))))
        return self.conv3(h)


@pytest.mark.parametrize("opset", [13, 17])
def test_conv1d_onnx_export(tmp_path, opset):
    fg.manual_seed(0)
    _, proto = export_and_check(_AudioFront(), fg.randn(3, 8, 21), tmp_path, opset=opset)
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert len(convs) == 3
    assert [list(a.ints) for a in convs[1].attribute if a.name == "strides"] == [[2]]
