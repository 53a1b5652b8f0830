"""LayerNorm and RMSNorm kernels (forgegrad.kernels.norm) against torch (CPU; float32, and float64
where torch's own float32 rounding is the larger error): odd shapes, with and without weight and
bias, every SIMD path, rows with a large offset, NaN and inf, bit-identity across thread counts,
error paths."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from forgegrad import _C
from forgegrad.kernels.norm import layer_norm_backward, layer_norm_forward, rms_norm_backward, rms_norm_forward
from helpers import assert_same_bits_across_threads

# (x shape, normalized_shape)
CASES = [((1, 1), 1), ((3, 7), 7), ((5, 33), (33,)), ((2, 3, 17), 17), ((2, 3, 17), (3, 17)), ((64, 1000), 1000),
         ((4, 1), 1), ((17,), 17), ((3, 2, 4096), 4096)]
AFFINE = ["none", "weight", "bias", "both"]


def _ns(normalized_shape):
    return (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)


def _close(a, b, what, rtol=1e-5, atol=2e-6):
    # Sums over a row are added in a different order here and in the reference: the residual
    # float32 rounding is a few ulps of the largest values.
    b = np.asarray(b)
    scale = max(1.0, float(np.abs(b).max())) if b.size else 1.0
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol * scale, err_msg=what)


def torch_layer_norm(x, ns, w, b, eps, g, dtype):
    """torch's (y, mean, rstd, grad_x, grad_weight, grad_bias) in `dtype`; mean / rstd reshaped to
    the batch shape."""
    tx = torch.tensor(x, dtype=dtype, requires_grad=True)
    tw = None if w is None else torch.tensor(w, dtype=dtype, requires_grad=True)
    tb = None if b is None else torch.tensor(b, dtype=dtype, requires_grad=True)
    y, mean, rstd = torch.native_layer_norm(tx, ns, tw, tb, eps)
    y.backward(torch.tensor(g, dtype=dtype))
    batch = x.shape[:x.ndim - len(ns)]
    return (y.detach().numpy(), mean.detach().numpy().reshape(batch), rstd.detach().numpy().reshape(batch),
            tx.grad.numpy(), None if w is None else tw.grad.numpy(), None if b is None else tb.grad.numpy())


def _params(rng, ns, affine):
    w = (rng.standard_normal(ns) + 1).astype(np.float32) if affine in ("weight", "both") else None
    b = rng.standard_normal(ns).astype(np.float32) if affine in ("bias", "both") else None
    return w, b


@pytest.mark.parametrize("shape,normalized_shape", CASES)
@pytest.mark.parametrize("affine", AFFINE)
def test_layer_norm_vs_torch(shape, normalized_shape, affine, simd_path, rng):
    ns = _ns(normalized_shape)
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    w, b = _params(rng, ns, affine)
    y, mean, rstd = layer_norm_forward(x, normalized_shape, w, b, eps=1e-5)
    batch = shape[:len(shape) - len(ns)]
    assert y.shape == shape and mean.shape == batch and rstd.shape == batch
    assert y.dtype == mean.dtype == rstd.dtype == np.float32
    gx, gw, gb = layer_norm_backward(g, x, mean, rstd, w, needs=(True, w is not None, b is not None))
    assert (gw is None) == (w is None) and (gb is None) == (b is None)
    ours = (y, mean, rstd, gx, gw, gb)
    names = ("y", "mean", "rstd", "grad_x", "grad_weight", "grad_bias")
    for dtype in (torch.float32, torch.float64):
        ref = torch_layer_norm(x, ns, w, b, 1e-5, g, dtype)
        for a, r, name in zip(ours, ref, names):
            # With one element per row x - mean is 0, so the exact grad_x and grad_weight are 0
            # (float64 gives 0, as we do), but torch's float32 (a * g + b * x + c) leaves rounding
            # noise scaled by rstd = 1/sqrt(eps) there.
            if r is None or (name in ("grad_x", "grad_weight") and dtype == torch.float32 and np.prod(ns) == 1):
                continue
            _close(a, r, name, atol=2e-6 if dtype == torch.float64 else 5e-6)
    if np.prod(ns) == 1:
        assert not gx.any() and (gw is None or not gw.any())


def test_layer_norm_needs(rng):
    x = rng.standard_normal((6, 10)).astype(np.float32)
    g = rng.standard_normal((6, 10)).astype(np.float32)
    w = rng.standard_normal(10).astype(np.float32)
    _, mean, rstd = layer_norm_forward(x, 10, w)
    full = layer_norm_backward(g, x, mean, rstd, w)
    for needs in [(True, False, False), (False, True, False), (False, False, True), (False, True, True)]:
        part = layer_norm_backward(g, x, mean, rstd, w, needs=needs)
        for want, a, ref in zip(needs, part, full):
            assert (a is None) != want
            if want:
                assert a.tobytes() == ref.tobytes()
    assert layer_norm_backward(g, x, mean, rstd, w, needs=(False, False, False)) == (None, None, None)
    # without a weight, grad_weight is the gradient of an implicit weight of ones
    _, _, rstd1 = layer_norm_forward(x, 10)
    _, gw1, gb1 = layer_norm_backward(g, x, mean, rstd1)
    _close(gw1, (g * (x - x.mean(1, keepdims=True)) * rstd1[:, None]).sum(0), "grad_weight, no weight")
    _close(gb1, g.sum(0), "grad_bias, no weight")


@pytest.mark.parametrize("d", [1, 7, 100, 1000, 4096])
@pytest.mark.parametrize("noise", [1.0, 0.01])
def test_layer_norm_large_offset(d, noise, simd_path, rng):
    # Rows of 1e4 + noise: torch's float32 statistics are off by ~1e-3 of the output there (its
    # mean is a rounded float); ours measure the rounding and stay at float precision of the float64
    # result, forward and backward.
    x = (1e4 + noise * rng.standard_normal((6, d))).astype(np.float32)
    x[1] = -x[1]  # a negative offset too
    g = rng.standard_normal(x.shape).astype(np.float32)
    w = (rng.standard_normal(d) + 1).astype(np.float32)
    b = rng.standard_normal(d).astype(np.float32)
    y, mean, rstd = layer_norm_forward(x, d, w, b)
    gx, gw, gb = layer_norm_backward(g, x, mean, rstd, w)
    ref = torch_layer_norm(x, (d,), w, b, 1e-5, g, torch.float64)
    names = ("y", "mean", "rstd", "grad_x", "grad_weight", "grad_bias")
    for a, r, name in zip((y, mean, rstd, gx, gw, gb), ref, names):
        _close(a, r, name, rtol=2e-5, atol=5e-6)
    assert np.isfinite(y).all() and np.isfinite(gx).all()


def test_layer_norm_nan_and_inf(simd_path):
    x = np.tile(np.linspace(-2, 2, 19, dtype=np.float32), (5, 1))
    x[1, 3] = np.nan
    x[2, 18] = np.inf  # in the tail vector
    x[3, 0] = -np.inf  # the first element (the shift of the mean's sum)
    g = np.ones_like(x)
    w = np.full(19, 2.0, np.float32)
    y, mean, rstd = layer_norm_forward(x, 19, w, np.zeros(19, np.float32))
    y_ref, _, _, gx_ref, gw_ref, gb_ref = torch_layer_norm(x, (19,), w, np.zeros(19, np.float32), 1e-5, g,
                                                           torch.float32)
    assert np.isnan(y[1:4]).all() and np.isnan(y_ref[1:4]).all()  # a NaN or inf makes its row NaN
    _close(y[[0, 4]], y_ref[[0, 4]], "finite rows")
    assert np.isnan(mean[1]) and np.isnan(rstd[1:4]).all()
    gx, gw, gb = layer_norm_backward(g, x, mean, rstd, w)
    assert np.isnan(gx[1:4]).all() and np.isnan(gx_ref[1:4]).all()
    _close(gx[[0, 4]], gx_ref[[0, 4]], "grad_x of finite rows")
    assert np.isnan(gw).all() == np.isnan(gw_ref).all()
    _close(gb, gb_ref, "grad_bias")  # sum(g): no NaN from x


def test_layer_norm_noncontiguous_inputs_are_copied(rng):
    base = rng.standard_normal((8, 40)).astype(np.float32)
    x = base[:, ::2]
    w = rng.standard_normal(40).astype(np.float32)[::2]
    g = np.asfortranarray(rng.standard_normal((8, 20)).astype(np.float32))
    y, mean, rstd = layer_norm_forward(x, (20,), w, None)
    gx, gw, gb = layer_norm_backward(g, x, mean, rstd, w)
    ref = torch_layer_norm(np.ascontiguousarray(x), (20,), np.ascontiguousarray(w), None, 1e-5,
                           np.ascontiguousarray(g), torch.float64)
    for a, r, name in zip((y, mean, rstd, gx, gw), ref, ("y", "mean", "rstd", "grad_x", "grad_weight")):
        _close(a, r, name)
    _close(gb, g.sum(0), "grad_bias")


def test_layer_norm_empty_batch_and_1d():
    y, mean, rstd = layer_norm_forward(np.zeros((0, 5), np.float32), 5)
    assert y.shape == (0, 5) and mean.shape == (0,) and rstd.shape == (0,)
    gx, gw, gb = layer_norm_backward(np.zeros((0, 5), np.float32), y, mean, rstd, np.ones(5, np.float32))
    assert gx.shape == (0, 5) and (gw == 0).all() and (gb == 0).all()
    x = np.arange(6, dtype=np.float32)
    y, mean, rstd = layer_norm_forward(x, 6)
    assert mean.shape == () and rstd.shape == ()
    _close(y, TF.layer_norm(torch.tensor(x), (6,)).numpy(), "1-D y")
    gx, _, _ = layer_norm_backward(np.ones(6, np.float32), x, mean, rstd)
    _close(gx, np.zeros(6), "1-D grad_x")


# ---- RMSNorm -------------------------------------------------------------------------------
def torch_rms_norm(x, ns, w, eps, g, dtype):
    tx = torch.tensor(x, dtype=dtype, requires_grad=True)
    tw = None if w is None else torch.tensor(w, dtype=dtype, requires_grad=True)
    y = TF.rms_norm(tx, ns, tw, eps)
    y.backward(torch.tensor(g, dtype=dtype))
    return y.detach().numpy(), tx.grad.numpy(), None if w is None else tw.grad.numpy()


@pytest.mark.parametrize("shape,normalized_shape", CASES)
@pytest.mark.parametrize("with_weight", [False, True])
@pytest.mark.parametrize("eps", [None, 1e-6])
def test_rms_norm_vs_torch(shape, normalized_shape, with_weight, eps, simd_path, rng):
    ns = _ns(normalized_shape)
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    w = (rng.standard_normal(ns) + 1).astype(np.float32) if with_weight else None
    y, rstd = rms_norm_forward(x, normalized_shape, w, eps=eps)
    assert rstd.shape == shape[:len(shape) - len(ns)]
    gx, gw = rms_norm_backward(g, x, rstd, w, needs=(True, with_weight))
    x64 = x.astype(np.float64)
    axes = tuple(range(x.ndim - len(ns), x.ndim))
    e = np.finfo(np.float32).eps if eps is None else eps  # torch's default for eps=None
    _close(rstd, 1 / np.sqrt((x64 * x64).mean(axes) + e), "rstd")
    for ref in (torch_rms_norm(x, ns, w, eps, g, torch.float32), torch_rms_norm(x, ns, w, eps, g, torch.float64)):
        for a, r, name in zip((y, gx, gw), ref, ("y", "grad_x", "grad_weight")):
            if r is not None:
                _close(a, r, name)


def test_rms_norm_nan_row(simd_path):
    x = np.ones((3, 21), np.float32)
    x[1, 20] = np.nan
    y, rstd = rms_norm_forward(x, 21)
    gx, gw = rms_norm_backward(np.ones_like(x), x, rstd)
    assert np.isnan(y[1]).all() and np.isfinite(y[[0, 2]]).all()
    assert np.isnan(gx[1]).all() and np.isfinite(gx[[0, 2]]).all() and np.isnan(gw).all()


# ---- bit-identity for any thread count ----------------------------------------------------
@pytest.mark.parametrize("shape", [(700, 300), (5000, 24), (3, 5000), (1, 17)])
def test_bit_identical_across_threads(shape, threads, simd_path, rng):
    d = shape[1]
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal(d).astype(np.float32)
    b = rng.standard_normal(d).astype(np.float32)

    def run():
        y, mean, rstd = layer_norm_forward(x, d, w, b)
        outs = [y, mean, rstd, *layer_norm_backward(g, x, mean, rstd, w)]
        outs += layer_norm_backward(g, x, mean, rstd, None, needs=(False, True, True))[1:]
        ry, rr = rms_norm_forward(x, d, w)
        return outs + [ry, rr, *rms_norm_backward(g, x, rr, w)]

    assert_same_bits_across_threads(run, threads)


# ---- errors -------------------------------------------------------------------------------
def test_errors():
    x = np.ones((3, 4), np.float32)
    m, r = np.zeros(3, np.float32), np.ones(3, np.float32)
    w = np.ones(4, np.float32)
    cases = [
        (TypeError, "x must", lambda: layer_norm_forward(x.astype(np.float64), 4)),
        (TypeError, "x must", lambda: layer_norm_forward(x.tolist(), 4)),
        (TypeError, "weight must", lambda: layer_norm_forward(x, 4, w.astype(np.float16))),
        (ValueError, r"weight must have the normalized shape \(4,\)",
         lambda: layer_norm_forward(x, 4, np.ones(3, np.float32))),
        (ValueError, "bias must have the normalized shape",
         lambda: layer_norm_forward(x, 4, None, np.ones((1, 4), np.float32))),
        (ValueError, r"x's trailing dimensions must equal normalized_shape \(3,\)", lambda: layer_norm_forward(x, 3)),
        (ValueError, "normalized_shape", lambda: layer_norm_forward(x, (2, 3, 4))),
        (ValueError, "normalized_shape must have at least one", lambda: layer_norm_forward(x, ())),
        (ValueError, "normalized_shape must hold sizes >= 1",
         lambda: layer_norm_forward(np.ones((3, 0), np.float32), 0)),
        (TypeError, "normalized_shape must be an int or a tuple", lambda: layer_norm_forward(x, 4.0)),
        (TypeError, "normalized_shape must hold ints", lambda: layer_norm_forward(x, (True,))),
        (ValueError, "eps must be a finite number >= 0", lambda: layer_norm_forward(x, 4, eps=-1.0)),
        (TypeError, "eps must be a number", lambda: layer_norm_forward(x, 4, eps="1e-5")),
        (ValueError, "grad must have the shape of x", lambda: layer_norm_backward(x[:2], x, m, r)),
        (TypeError, "grad must", lambda: layer_norm_backward(x.astype(np.float64), x, m, r)),
        (ValueError, "mean must have the batch shape of x",
         lambda: layer_norm_backward(x, x, np.zeros(4, np.float32), r)),
        (ValueError, "mean must have the batch shape of x",
         lambda: layer_norm_backward(x, x, np.zeros((3, 4), np.float32), r)),
        (ValueError, r"rstd must have the shape of mean \(3,\)",
         lambda: layer_norm_backward(x, x, m, np.ones(2, np.float32))),
        (TypeError, "rstd must", lambda: layer_norm_backward(x, x, m, r.astype(np.float64))),
        (ValueError, "weight must have the normalized shape",
         lambda: layer_norm_backward(x, x, m, r, np.ones(3, np.float32))),
        (ValueError, "needs must be a tuple of 3", lambda: layer_norm_backward(x, x, m, r, needs=(True, True))),
        (ValueError, "x's trailing dimensions", lambda: rms_norm_forward(x, 5)),
        (ValueError, "rstd must have the batch shape", lambda: rms_norm_backward(x, x, np.ones(4, np.float32))),
        (ValueError, "needs must be a tuple of 2", lambda: rms_norm_backward(x, x, r, needs=True)),
        # the bindings check on their own (no crash when the wrappers are bypassed)
        (ValueError, "x must be C-contiguous", lambda: _C.layernorm.layer_norm_forward(
            x.T, 1, None, None, 1e-5, np.empty((4, 3), np.float32), np.empty(4, np.float32), np.empty(4, np.float32))),
        (ValueError, r"mean must have shape \(3,\)", lambda: _C.layernorm.layer_norm_forward(
            x, 1, None, None, 1e-5, np.empty_like(x), np.empty(4, np.float32), r)),
        (ValueError, "normalized_ndim", lambda: _C.layernorm.layer_norm_forward(
            x, 0, None, None, 1e-5, np.empty_like(x), m, r)),
        (ValueError, "normalized_ndim", lambda: _C.layernorm.rms_norm_forward(x, 3, None, 1e-5, np.empty_like(x), r)),
        (ValueError, "must not be empty", lambda: _C.layernorm.layer_norm_forward(
            np.ones((3, 0), np.float32), 1, None, None, 1e-5, np.empty((3, 0), np.float32), m, r)),
        (TypeError, "weight must be None or a numpy.ndarray", lambda: _C.layernorm.layer_norm_forward(
            x, 1, [1.0] * 4, None, 1e-5, np.empty_like(x), m, r)),
        (ValueError, "eps must be",
         lambda: _C.layernorm.rms_norm_forward(x, 1, None, float("nan"), np.empty_like(x), r)),
        (ValueError, "mean must have the batch shape", lambda: _C.layernorm.layer_norm_backward(
            x, x, np.zeros((3, 4), np.float32), r, None, np.empty_like(x), None, None)),
        (ValueError, "grad_weight must have shape", lambda: _C.layernorm.layer_norm_backward(
            x, x, m, r, None, None, np.empty(3, np.float32), None)),
        (ValueError, "grad_x must be writeable", lambda: _C.layernorm.rms_norm_backward(
            x, x, r, None, np.broadcast_to(np.empty(4, np.float32), (3, 4)), None)),
    ]
    for exc, match, call in cases:
        with pytest.raises(exc, match=match):
            call()
