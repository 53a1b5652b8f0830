"""conv2d's weight and bias gradients for layers with at most 27 taps (C * KH * KW: LeNet's first 3x3 conv on
one channel, a 3x3 stem on RGB, 1x1 and 1x3 kernels on a few channels) and at least as many output channels, which
have their own kernel on AVX-512, against torch's convolution_backward; the same bits at 1 and 2 threads; the input
gradient of data is never computed."""
import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad.kernels.conv import conv2d_backward

from helpers import assert_close_scaled as _close

# (x shape, weight shape, stride, padding, dilation): N past and below the 8 fixed image chunks, odd output
# channel counts (the last channel pairs with itself), pixel counts off the vector width, strides, dilations.
CASES = [
    ((64, 1, 28, 28), (32, 1, 3, 3), 1, 1, 1),
    ((17, 1, 13, 11), (11, 1, 3, 3), 2, 1, 1),
    ((3, 2, 9, 10), (9, 2, 2, 2), 1, 0, 2),
    ((5, 1, 7, 7), (1, 1, 1, 1), 1, 0, 1),
    ((6, 1, 12, 12), (6, 1, 5, 5), 1, 0, 1),  # fewer channels than taps: the dot kernel
    ((9, 3, 6, 17), (9, 3, 1, 3), 1, (0, 1), 1),
    ((2, 1, 40, 33), (13, 1, 3, 3), 1, 0, 1),
    ((10, 3, 12, 13), (29, 3, 3, 3), 1, 1, 1),
    ((4, 2, 9, 9), (19, 2, 3, 3), 2, 1, 1),
    ((3, 4, 8, 8), (13, 4, 1, 3), 1, (0, 1), 1),
]


def _torch_grads(x, w, gy, stride, padding, dilation):
    out = torch.ops.aten.convolution_backward(
        torch.from_numpy(gy), torch.from_numpy(x), torch.from_numpy(w), [w.shape[0]],
        [stride] * 2, list(padding) if isinstance(padding, tuple) else [padding] * 2, [dilation] * 2,
        False, [0, 0], 1, [False, True, True])
    return out[1].numpy(), out[2].numpy()


@pytest.mark.parametrize("xshape,wshape,stride,padding,dilation", CASES)
def test_small_tap_weight_grad_matches_torch_at_any_thread_count(rng, threads, xshape, wshape, stride, padding,
                                                                 dilation):
    x = rng.standard_normal(xshape).astype(np.float32)
    w = rng.standard_normal(wshape).astype(np.float32)
    y = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), stride=stride, padding=padding,
                                   dilation=dilation)
    gy = rng.standard_normal(tuple(y.shape)).astype(np.float32)
    # float64 references, and each weight's sum of |terms| (the same reduction over |x| and |gy|): a reduction of up
    # to 50k products in float32 (8-image FMA chains, then lanes and chunks) is held to 4e-6 of that sum, ~10x its
    # typical rounding; torch's own float32 result differed from ours by 5e-5 relative there, and by run
    want_w, want_b = _torch_grads(x.astype(np.float64), w.astype(np.float64), gy.astype(np.float64), stride,
                                  padding, dilation)
    mag_w, mag_b = _torch_grads(np.abs(x).astype(np.float64), w.astype(np.float64), np.abs(gy).astype(np.float64),
                                stride, padding, dilation)
    results = []
    for n in (1, 2):
        threads(n)
        _, gw, gb = conv2d_backward(x, w, gy, stride=stride, padding=padding, dilation=dilation,
                                    need=(False, True, True))
        assert np.all(np.abs(gw - want_w) <= 4e-6 * mag_w + 1e-6), "weight grad"
        assert np.all(np.abs(gb - want_b) <= 4e-6 * mag_b + 1e-6), "bias grad"
        results.append((gw, gb))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    # weight alone and bias alone give the same values as both together
    _, gw, gb = conv2d_backward(x, w, gy, stride=stride, padding=padding, dilation=dilation,
                                need=(False, True, False))
    assert gb is None
    np.testing.assert_array_equal(gw, results[1][0])
    _, gw, gb = conv2d_backward(x, w, gy, stride=stride, padding=padding, dilation=dilation,
                                need=(False, False, True))
    assert gw is None
    assert np.all(np.abs(gb - want_b) <= 4e-6 * mag_b + 1e-6), "bias grad alone"


def test_empty_batch_gives_zero_weight_grad():
    x = np.zeros((0, 1, 8, 8), np.float32)
    w = np.ones((4, 1, 3, 3), np.float32)
    _, gw, gb = conv2d_backward(x, w, np.zeros((0, 4, 6, 6), np.float32), need=(False, True, True))
    np.testing.assert_array_equal(gw, np.zeros_like(w))
    np.testing.assert_array_equal(gb, np.zeros(4, np.float32))


def test_first_layer_backward_leaves_data_without_grad(rng):
    """The data input of a first conv layer does not require grad: its backward returns only the parameters'
    gradients (the op asks conv2d_backward for no input gradient), which match torch's."""
    x = rng.standard_normal((4, 1, 10, 10)).astype(np.float32)
    conv = fg.nn.Conv2d(1, 6, 3, padding=1)
    tconv = torch.nn.Conv2d(1, 6, 3, padding=1)
    with torch.no_grad():
        tconv.weight.copy_(torch.from_numpy(np.asarray(conv.weight.numpy())))
        tconv.bias.copy_(torch.from_numpy(np.asarray(conv.bias.numpy())))
    xt = fg.tensor(x)
    conv(xt).sum().backward()
    tconv(torch.from_numpy(x)).sum().backward()
    assert xt.grad is None
    _close(conv.weight.grad.numpy(), tconv.weight.grad.numpy(), "weight grad")
    _close(conv.bias.grad.numpy(), tconv.bias.grad.numpy(), "bias grad")
