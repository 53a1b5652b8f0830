"""The C++ kernels of forgegrad.kernels.activation_param (prelu, glu, rrelu's training forward: _C.activation.
prelu_forward / prelu_backward, glu_forward / glu_backward, rrelu_train_forward) against torch's float32 CPU ops on
odd shapes (C = 1, C = 3, 1-d and 0-d inputs, 0-size dims, glu along the first, a middle and the last dim), prelu's
weight gradient against a float64 sum over 2**22 elements, the same bits at 1, 2 and 3 threads, every SIMD path,
non-contiguous inputs and the argument errors."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import forgegrad as fg
import forgegrad.nn.functional as F
from forgegrad import _C
from forgegrad.kernels import activation_param as KP
from helpers import assert_same_bits_across_threads

A = _C.activation


def ulps(ours, ref, magnitude=None):
    """Largest difference in ulps of max(|ref|, magnitude, the smallest normal); NaN must match NaN."""
    assert np.array_equal(np.isnan(ours), np.isnan(ref))
    keep = ~np.isnan(ref) & (ours != ref)  # equal (infinities included): 0 ulp
    o, r = ours[keep].astype(np.float64), ref[keep].astype(np.float64)
    if o.size == 0:
        return 0.0
    if not np.isfinite(o).all():
        return np.inf
    mag = np.maximum(np.abs(r), np.finfo(np.float32).tiny)
    if magnitude is not None:
        mag = np.maximum(mag, np.abs(magnitude[keep]))
    scale = np.spacing(mag.astype(np.float32)).astype(np.float64)
    return float((np.abs(o - r) / scale).max())


def _prelu_pair(x, w, g):
    a, b = fg.tensor(x, requires_grad=True), fg.tensor(w, requires_grad=True)
    y = F.prelu(a, b)
    y.backward(fg.tensor(g))
    at, bt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    yt = TF.prelu(at, bt)
    yt.backward(torch.tensor(g))
    return (y.numpy(), a.grad.numpy(), b.grad.numpy()), (yt.detach().numpy(), at.grad.numpy(), bt.grad.numpy())


PRELU_SHAPES = [((2, 3, 5, 4), (3,)), ((7, 1, 9), (1,)), ((6,), (1,)), ((), (1,)), ((), ()), ((4, 3), ()),
                ((0, 3, 4), (3,)), ((2, 0, 4), (1,)), ((5, 3), (3,)), ((2, 5, 70), (5,)), ((3, 64, 2, 2), (64,)),
                ((2, 3, 4100), (3,)), ((2, 16, 9, 9), (1,))]


@pytest.mark.parametrize("xs, ws", PRELU_SHAPES, ids=[f"{x}-{w}" for x, w in PRELU_SHAPES])
def test_prelu_matches_torch(xs, ws, simd_path):
    rng = np.random.default_rng(len(xs) + sum(xs))
    x = (rng.standard_normal(xs) * 3).astype(np.float32)
    if x.size > 4:
        x.flat[:4] = [0.0, -0.0, np.nan, -np.inf]
    w = rng.uniform(-0.5, 1.5, ws).astype(np.float32)
    g = rng.standard_normal(xs).astype(np.float32)
    (y, gx, gw), (yt, gxt, gwt) = _prelu_pair(x, w, g)
    assert y.dtype == gx.dtype == gw.dtype == np.float32 and gw.shape == gwt.shape
    assert ulps(y, yt) == 0 and ulps(gx, gxt) == 0  # one multiply and a select: the same bits
    if x.size > 4:  # a NaN input makes its channel's weight gradient NaN, as torch's
        assert np.array_equal(np.isnan(gw), np.isnan(gwt))
    axes = tuple(i for i in range(x.ndim) if i != 1) if w.size > 1 else None
    ref = np.where(x > 0, 0.0, x.astype(np.float64) * g).sum(axis=axes).reshape(gw.shape)
    finite = np.isfinite(ref)
    np.testing.assert_allclose(gw[finite], ref[finite], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape, ws", [((64, 4, 1 << 14), 4), ((1 << 19, 8), 8), ((1 << 22,), 1)],
                         ids=["rows", "periodic", "one slope"])
def test_prelu_weight_gradient_accuracy(shape, ws):
    # 2**22 elements: float64 reference of the float32 products; the error is at most torch's (float32 cascade)
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape).astype(np.float32) + 0.3
    g = rng.standard_normal(shape).astype(np.float32) + 0.1
    w = np.full(ws, 0.25, np.float32)
    _, gw = KP.prelu_backward(g, x, w, need_input=False)
    prod = np.where(x > 0, np.float32(0), g * x).astype(np.float64)  # torch's float32 products
    axes = tuple(i for i in range(x.ndim) if i != 1) if ws > 1 else None
    ref = prod.sum(axis=axes).reshape(ws)
    bt = torch.tensor(w, requires_grad=True)
    TF.prelu(torch.tensor(x), bt).backward(torch.tensor(g))
    err, err_torch = np.abs(gw - ref) / np.abs(ref), np.abs(bt.grad.numpy() - ref) / np.abs(ref)
    assert err.max() <= max(err_torch.max(), 1.2e-7), (err, err_torch)  # 1.2e-7: the final rounding to float32


GLU_CASES = [((3, 8), -1), ((4, 6, 5), 0), ((2, 6, 5), 1), ((2,), 0), ((3, 5, 2), -1), ((0, 4), 1), ((4, 0), 0),
             ((2, 64, 7, 9), 1), ((300, 258), -1), ((2, 2, 3000), 1)]


@pytest.mark.parametrize("shape, dim", GLU_CASES, ids=[f"{s}-dim{d}" for s, d in GLU_CASES])
def test_glu_matches_torch(shape, dim, simd_path):
    rng = np.random.default_rng(sum(shape) + dim)
    x = (rng.standard_normal(shape) * 6).astype(np.float32)
    ys = list(shape)
    ys[dim] //= 2
    g = rng.standard_normal(ys).astype(np.float32)
    a = fg.tensor(x, requires_grad=True)
    y = F.glu(a, dim)
    y.backward(fg.tensor(g))
    at = torch.tensor(x, requires_grad=True)
    yt = TF.glu(at, dim)
    yt.backward(torch.tensor(g))
    assert y.shape == tuple(yt.shape) and a.grad.shape == x.shape
    # sigmoid through simd.h's exp (about 2 ulp), as the other kernels; torch's products in the same order. b's
    # gradient (1 - s) s a g loses the relative accuracy of 1 - s where s rounds near 1, in torch's float32 too: it
    # is measured against |a g|
    assert ulps(y.numpy(), yt.detach().numpy()) <= 4
    ag = np.concatenate([np.zeros_like(g), np.split(x, 2, axis=dim)[0] * g], axis=dim)
    assert ulps(a.grad.numpy(), at.grad.numpy(), ag) <= 4


def test_glu_wide_range_and_special_values(simd_path):
    mags = np.logspace(-30, 30, 2000)
    v = np.concatenate([mags, -mags, np.linspace(-100, 100, 2001), [0.0, -0.0, np.inf, -np.inf, np.nan, 88.0, -88.0,
                                                                    -87.4, 87.4, 1e-40, -1e-40]]).astype(np.float32)
    x = np.stack([np.roll(v, 7), v])  # a = a shifted copy, b = every value
    g = np.ones((1, v.size), np.float32)
    y, dx = KP.glu(x, 0), KP.glu_backward(g, x, 0)
    at = torch.tensor(x, requires_grad=True)
    yt = TF.glu(at, 0)
    yt.backward(torch.tensor(g))
    # |b| large: exp(-b) is clamped at 88.7 here (sigmoid is 0 / 1 there up to 3e-39), torch's goes on to 1e-44:
    # measured against 1e-30 |a|; b's gradient (1 - s) s a against |a| (the cancellation in 1 - s, torch's too)
    a = np.minimum(np.abs(x[0]), 3e38)
    assert ulps(y[0], yt.detach().numpy()[0], 1e-30 * a) <= 4
    grad, grad_t = dx.reshape(2, -1), at.grad.numpy().reshape(2, -1)
    assert ulps(grad[0], grad_t[0], np.full_like(a, 1e-30)) <= 4
    assert ulps(grad[1], grad_t[1], a) <= 4


def test_rrelu_training_matches_numpy_formula_and_stream():
    x = (np.random.default_rng(3).standard_normal((5, 7, 9)) * 2).astype(np.float32)
    x.flat[:4] = [0.0, -0.0, np.nan, -np.inf]
    fg.manual_seed(11)
    a = fg.tensor(x, requires_grad=True)
    y = F.rrelu(a, 0.1, 0.4, training=True)
    g = np.random.default_rng(4).standard_normal(x.shape).astype(np.float32)
    y.backward(fg.tensor(g))
    fg.manual_seed(11)  # the same draw as the float64-in numpy formula
    from forgegrad import random as R
    r = R.generator().uniform(0.1, 0.4, size=x.shape).astype(np.float32)
    noise = np.where(x <= 0, r, np.float32(1))
    assert np.array_equal(y.numpy(), x * noise, equal_nan=True)
    assert np.array_equal(a.grad.numpy(), g * noise)
    neg = x <= 0
    assert np.all((noise[neg] >= 0.1) & (noise[neg] <= 0.4)) and np.all(noise[~neg] == 1)


def _all_calls(x4, w, x2, w2, xg, gg, xr):
    g4 = np.cos(x4)
    out = [KP.prelu(x4, w), *KP.prelu_backward(g4, x4, w), KP.prelu(x2, w2), *KP.prelu_backward(np.cos(x2), x2, w2)]
    out += [KP.glu(xg, 1), KP.glu_backward(gg, xg, 1)]
    noise = np.linspace(0.1, 0.3, xr.size, dtype=np.float32)
    out += [KP.rrelu_train(xr, noise), noise]
    return out


def test_same_bits_at_any_thread_count(simd_path, threads):
    rng = np.random.default_rng(0)
    x4 = rng.standard_normal((8, 16, 70, 70)).astype(np.float32)
    w = rng.uniform(0, 0.5, 16).astype(np.float32)
    x2 = rng.standard_normal((300_001, 3)).astype(np.float32)
    w2 = rng.uniform(0, 0.5, 3).astype(np.float32)
    xg = rng.standard_normal((7, 2 * 20_000, 3)).astype(np.float32)
    gg = rng.standard_normal((7, 20_000, 3)).astype(np.float32)
    xr = rng.standard_normal(300_007).astype(np.float32)
    assert_same_bits_across_threads(lambda: _all_calls(x4, w, x2, w2, xg, gg, xr), threads)


def test_isa_paths_agree_closely(simd_path):
    rng = np.random.default_rng(1)
    args = (rng.standard_normal((3, 5, 67)).astype(np.float32), rng.uniform(0, 1, 5).astype(np.float32),
            rng.standard_normal((41, 3)).astype(np.float32), rng.uniform(0, 1, 3).astype(np.float32),
            rng.standard_normal((3, 10, 7)).astype(np.float32), rng.standard_normal((3, 5, 7)).astype(np.float32),
            rng.standard_normal(4099).astype(np.float32))
    ours = _all_calls(*args)
    fg.set_simd("scalar")  # the portable path (the fixture restores the path afterwards)
    ref = _all_calls(*args)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=3e-6, atol=1e-6)


def test_noncontiguous_inputs():
    rng = np.random.default_rng(2)
    base = rng.standard_normal((6, 8, 10)).astype(np.float32)
    view = base.transpose(2, 1, 0)[:, ::2]  # (10, 4, 6), strided
    wbase = rng.uniform(0, 1, 8).astype(np.float32)
    w = wbase[::2]
    assert np.array_equal(KP.prelu(view, w), KP.prelu(np.ascontiguousarray(view), w.copy()))
    g = np.ones(view.shape, np.float32)[:, ::-1]
    for ours, ref in zip(KP.prelu_backward(g, view, w), KP.prelu_backward(g.copy(), view.copy(), w.copy())):
        assert np.array_equal(ours, ref)
    gv = base[:, ::2]  # (6, 4, 10)
    assert np.array_equal(KP.glu(gv, -1), KP.glu(gv.copy(), -1))
    assert np.array_equal(KP.glu_backward(gv[..., :5], gv, -1), KP.glu_backward(gv[..., :5].copy(), gv.copy(), -1))
    # through the ops: a transposed input
    a = fg.tensor(view, requires_grad=True)
    F.prelu(a, fg.tensor(w.copy())).sum().backward()
    at = torch.tensor(view, requires_grad=True)
    TF.prelu(at, torch.tensor(w.copy())).sum().backward()
    assert np.array_equal(a.grad.numpy(), at.grad.numpy())


def test_float64_keeps_numpy():
    x = np.linspace(-5, 5, 60).reshape(3, 4, 5)
    w = np.array([0.1, 0.2, -0.3, 0.4])
    a, b = fg.tensor(x, requires_grad=True), fg.tensor(w, requires_grad=True)
    F.prelu(a, b).sum().backward()
    (F.glu(a, 1) * 2).sum().backward()
    assert a.numpy().dtype == b.grad.numpy().dtype == np.float64
    at, bt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    TF.prelu(at, bt).sum().backward()
    (TF.glu(at, 1) * 2).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), at.grad.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(b.grad.numpy(), bt.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_errors():
    x = np.ones((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match="weight must have 1 element or one per channel"):
        A.prelu_forward(x, np.ones(4, np.float32), np.empty_like(x))
    with pytest.raises(ValueError, match="no channel dim"):
        A.prelu_forward(np.ones(5, np.float32), np.ones(5, np.float32), np.empty(5, np.float32))
    with pytest.raises(ValueError, match="weight must be 0-d or 1-d"):
        A.prelu_forward(x, np.ones((3, 1), np.float32), np.empty_like(x))
    with pytest.raises(TypeError, match="x must be a float32"):
        A.prelu_forward(x.astype(np.float64), np.ones(3, np.float32), np.empty_like(x))
    with pytest.raises(ValueError, match="grad_weight"):
        A.prelu_backward(x, x, np.ones(3, np.float32), None, np.empty(4, np.float32))
    with pytest.raises(ValueError, match="grad"):
        A.prelu_backward(np.ones((2, 3), np.float32), x, np.ones(3, np.float32), None, None)
    with pytest.raises(ValueError, match="overlap"):
        A.prelu_backward(x, x, np.ones(3, np.float32), x, None)  # grad_input may be grad, never x
    with pytest.raises(ValueError, match="must be even"):
        A.glu_forward(np.ones((3, 5), np.float32), 1, np.empty((3, 2), np.float32))
    with pytest.raises(IndexError, match="dim must be in"):
        A.glu_forward(x, 3, np.empty_like(x))
    with pytest.raises(ValueError, match="0-d"):
        A.glu_forward(np.ones((), np.float32), 0, np.empty((), np.float32))
    with pytest.raises(ValueError, match="out"):
        A.glu_forward(x, 0, np.empty((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="grad"):
        A.glu_backward(x, x, 2, np.empty_like(x))
    with pytest.raises(ValueError, match="noise"):
        A.rrelu_train_forward(x, np.ones(3, np.float32), np.empty_like(x))
    buf = np.ones(30, np.float32)
    with pytest.raises(ValueError, match="overlap"):
        A.rrelu_train_forward(buf[:24], buf[4:28], np.empty(24, np.float32))
    with pytest.raises(TypeError, match="x must be a numpy.ndarray"):
        KP.prelu([1.0], np.ones(1, np.float32))
