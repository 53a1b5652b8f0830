"""The dropout family on complex tensors: one real mask scales both parts of an element, the gradient is g times
that mask. torch's CPU build agrees in eval mode and at p = 0 / 1 (compared directly below); in training mode with
0 < p < 1 it raises NotImplementedError (no complex bernoulli_), so there the reference is torch's autograd through
ATen's formula (_dropout_impl) with forgegrad's mask, which a real input of ones under the same seed reveals."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import forgegrad as fg

ALPHA = 1.7580993408473766  # SELU's negative saturation (ATen's alpha_dropout)

# name -> (functional name, input shape, channel mask?, alpha?)
OPS = {
    "dropout": ("dropout", (3, 5, 7), False, False),
    "dropout1d": ("dropout1d", (3, 5, 7), True, False),
    "dropout2d": ("dropout2d", (2, 5, 3, 4), True, False),
    "dropout3d": ("dropout3d", (2, 4, 3, 2, 3), True, False),
    "alpha_dropout": ("alpha_dropout", (3, 5, 7), False, True),
    "feature_alpha_dropout": ("feature_alpha_dropout", (2, 5, 3, 4), True, True),
}
LAYERS = {"dropout": "Dropout", "dropout1d": "Dropout1d", "dropout2d": "Dropout2d", "dropout3d": "Dropout3d",
          "alpha_dropout": "AlphaDropout", "feature_alpha_dropout": "FeatureAlphaDropout"}


def _complex(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


def _torch_reference(z, keep, p, alpha):
    """ATen's _dropout_impl with the mask ``keep`` (0/1, broadcastable to z): values, and the gradient of
    L = sum(Re(y) wr + Im(y) wi) by torch's autograd."""
    x = torch.tensor(z, requires_grad=True)
    keep = torch.tensor(keep, dtype=torch.float64)
    if alpha:
        a = 1.0 / np.sqrt((ALPHA * ALPHA * p + 1) * (1 - p))
        y = x * (keep * a) + ((keep - 1) * (ALPHA * a) + ALPHA * a * p)
    else:
        y = x * (keep / (1 - p))
    rng = np.random.default_rng(7)
    wr, wi = (torch.tensor(rng.standard_normal(z.shape)) for _ in range(2))
    (y.real * wr + y.imag * wi).sum().backward()
    return y.detach().numpy(), x.grad.numpy(), wr.numpy(), wi.numpy()


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("name", list(OPS))
def test_training_dropout_of_complex_values_and_gradients(name, dtype):
    fname, shape, feature, alpha = OPS[name]
    F, p = fg.nn.functional, 0.4
    call = getattr(F, fname)
    fg.manual_seed(123)
    ones = call(fg.ones(*shape, dtype=fg.float64), p, True)
    keep = (ones.numpy() > 0).astype(np.float64)  # kept: 1/(1-p) or a + alpha a p; dropped: 0 or -alpha a (1-p)
    if feature:  # one draw per (sample, channel)
        assert (keep == keep[(slice(None),) * 2 + (slice(0, 1),) * (len(shape) - 2)]).all()
    assert 0 < keep.mean() < 1
    z = _complex(shape, dtype)
    x = fg.tensor(z, requires_grad=True)
    fg.manual_seed(123)
    y = call(x, p, True)
    want, want_grad, wr, wi = _torch_reference(z.astype(np.complex128), keep, p, alpha)
    assert y.dtype == x.dtype
    tol = 1e-6 if dtype == np.complex128 else 1e-5
    np.testing.assert_allclose(y.detach().numpy(), want, rtol=tol, atol=tol)
    (y.real * fg.tensor(wr) + y.imag * fg.tensor(wi)).sum().backward()
    assert x.grad.dtype == x.dtype
    np.testing.assert_allclose(x.grad.numpy(), want_grad, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", list(OPS))
def test_complex_dropout_matches_torch_where_torch_runs_it(name):
    """Eval mode and p = 0 give the input, p = 1 zeros, as torch's complex dropout; the nn layers too."""
    fname, shape, _, _ = OPS[name]
    z = _complex(shape, np.complex64, seed=3)
    for p, training in ((0.5, False), (0.0, True), (1.0, True)):
        x, xt = fg.tensor(z), torch.tensor(z)
        got = getattr(fg.nn.functional, fname)(x, p, training)
        want = getattr(torch.nn.functional, fname)(xt, p, training)
        assert got.dtype == fg.complex64  # where torch returns the input itself, forgegrad a view of it (as for reals)
        assert np.shares_memory(got.numpy(), x.numpy()) == (want is xt)
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    layer, tlayer = getattr(fg.nn, LAYERS[name])(0.3), getattr(torch.nn, LAYERS[name])(0.3)
    np.testing.assert_array_equal(layer.eval()(fg.tensor(z)).numpy(), tlayer.eval()(torch.tensor(z)).numpy())
    y = layer.train()(fg.tensor(z))
    assert y.dtype == fg.complex64 and y.shape == z.shape


def test_complex_dropout_in_place_and_the_mask_is_shared_by_both_parts():
    z = _complex((40, 50), np.complex128, seed=5)
    x = fg.tensor(z.copy())
    fg.manual_seed(9)
    y = fg.nn.functional.dropout(x, 0.5, training=True, inplace=True)
    assert y is x
    dropped = y.numpy() == 0
    assert 0.3 < dropped.mean() < 0.7
    np.testing.assert_allclose(y.numpy()[~dropped], 2 * z[~dropped])
