"""Batch-norm kernels on numpy arrays against torch.nn.functional.batch_norm."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from forgegrad.kernels.norm import batch_norm_backward, batch_norm_forward

# Statistics are accumulated in double here and in a different order by torch: the residual float32
# rounding differs by a few ulps of the largest values, hence a tolerance scaled by them.
from helpers import assert_close_scaled as _close

SHAPES = [(7, 5), (1, 3, 9), (4, 5, 13), (3, 6, 5, 7), (2, 19, 8, 9), (64, 33)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_matches_torch(rng, simd_path, shape, training, affine):
    c = shape[1]
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    w = rng.standard_normal(c).astype(np.float32) if affine else None
    b = rng.standard_normal(c).astype(np.float32) if affine else None
    rm = rng.standard_normal(c).astype(np.float32)
    rv = (rng.random(c) + 0.5).astype(np.float32)
    trm, trv = torch.tensor(rm), torch.tensor(rv)
    y, sm, si = batch_norm_forward(x, w, b, rm, rv, training, 0.1, 1e-5)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True) if affine else None
    tb = torch.tensor(b, requires_grad=True) if affine else None
    ty = F.batch_norm(tx, trm, trv, tw, tb, training, 0.1, 1e-5)
    _close(y, ty.detach().numpy(), "output")
    _close(rm, trm.numpy(), "running_mean")
    _close(rv, trv.numpy(), "running_var")
    gy = rng.standard_normal(shape).astype(np.float32)
    ty.backward(torch.tensor(gy))
    gx, gw, gb = batch_norm_backward(gy, x, w, sm, si, training, need=(True, affine, affine))
    _close(gx, tx.grad.numpy(), "grad_input")
    if affine:
        _close(gw, tw.grad.numpy(), "grad_weight")
        _close(gb, tb.grad.numpy(), "grad_bias")
    else:
        assert gw is None and gb is None


@pytest.mark.parametrize("shape", [(16, 7), (4, 6, 10), (3, 4, 5, 6)])
def test_running_stats_after_five_training_steps(rng, shape):
    c = shape[1]
    rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
    bn = torch.nn.BatchNorm1d(c, momentum=0.3) if len(shape) < 4 else torch.nn.BatchNorm2d(c, momentum=0.3)
    w = rng.standard_normal(c).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(w))
        bn.bias.copy_(torch.tensor(b))
    for _ in range(5):
        x = (rng.standard_normal(shape) * 2 - 0.5).astype(np.float32)
        y, _, _ = batch_norm_forward(x, w, b, rm, rv, True, 0.3, 1e-5)
        ty = bn(torch.tensor(x))
        _close(y, ty.detach().numpy(), "output")
    _close(rm, bn.running_mean.numpy(), "running_mean")
    _close(rv, bn.running_var.numpy(), "running_var")
    bn.eval()
    x = rng.standard_normal(shape).astype(np.float32)
    y, _, _ = batch_norm_forward(x, w, b, rm, rv, False, 0.3, 1e-5)
    _close(y, bn(torch.tensor(x)).detach().numpy(), "eval output")


def test_training_without_running_stats(rng):
    x = rng.standard_normal((5, 3, 4)).astype(np.float32)
    y, sm, si = batch_norm_forward(x, None, None, None, None, True)
    ty = F.batch_norm(torch.tensor(x), None, None, training=True)
    _close(y, ty.numpy(), "output")
    _close(sm, x.mean(axis=(0, 2)), "save_mean")


@pytest.mark.parametrize("shape", [(37, 70), (5, 9, 31), (3, 70, 4, 5)])
def test_batch_norm_bit_identical_across_thread_counts(rng, threads, shape):
    c = shape[1]
    x = rng.standard_normal(shape).astype(np.float32)
    gy = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal(c).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    outs = []
    for n in (1, 2, 3):
        threads(n)
        rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
        y, sm, si = batch_norm_forward(x, w, b, rm, rv, True, 0.1, 1e-5)
        outs.append([y, sm, si, rm, rv, *batch_norm_backward(gy, x, w, sm, si, True)])
    for other in outs[1:]:
        for a, b_ in zip(outs[0], other):
            np.testing.assert_array_equal(a, b_)


def test_batch_norm_errors(rng):
    x = rng.standard_normal((4, 3, 5)).astype(np.float32)
    c3 = np.ones(3, np.float32)
    with pytest.raises(TypeError, match="input"):
        batch_norm_forward(x.astype(np.float64), c3, c3, c3.copy(), c3.copy(), True)
    with pytest.raises(ValueError, match="input must be"):
        batch_norm_forward(x[0, 0], c3, c3, c3.copy(), c3.copy(), True)
    with pytest.raises(ValueError, match="weight must have shape"):
        batch_norm_forward(x, np.ones(4, np.float32), c3, c3.copy(), c3.copy(), True)
    with pytest.raises(TypeError, match="running_var"):
        batch_norm_forward(x, c3, c3, c3.copy(), np.ones(3), True)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        batch_norm_forward(x[:1, :, :1], c3, c3, c3.copy(), c3.copy(), True)
    with pytest.raises(ValueError, match="running_mean and running_var are required"):
        batch_norm_forward(x, c3, c3, None, None, False)
    with pytest.raises(ValueError, match="in place"):
        batch_norm_forward(x, c3, c3, np.ones(6, np.float32)[::2], c3.copy(), True)
    with pytest.raises(ValueError, match="grad_output must have shape"):
        batch_norm_backward(x[:2], x, c3, c3, c3)
