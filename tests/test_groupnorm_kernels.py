"""The fused GroupNorm kernel forgegrad._C.groupnorm against torch in float64, on every SIMD path: odd spatial sizes
(vector tails), one group, a group per channel, each affine combination and each subset of gradients; a large
offset, values near float's limit and NaN; identical bits at 1/2/3 threads with the work split; bad arguments.

(The group_norm and instance_norm ops on top of it are checked by tests/test_op_registry.py and
tests/test_nn_group_norm.py.)"""
import numpy as np
import pytest
import torch

from forgegrad import _C

from helpers import assert_same_bits_across_threads

GN = _C.groupnorm


def _forward(x, groups, w=None, b=None, eps=1e-5):
    y = np.empty_like(x)
    mean = np.empty((x.shape[0], groups), np.float32)
    rstd = np.empty_like(mean)
    GN.group_norm_forward(x, groups, w, b, eps, y, mean, rstd)
    return y, mean, rstd


def _backward(g, x, mean, rstd, w=None, need=(True, True, True)):
    c = x.shape[1]
    gx = np.empty_like(x) if need[0] else None
    gw = np.empty(c, np.float32) if need[1] else None
    gb = np.empty(c, np.float32) if need[2] else None
    GN.group_norm_backward(g, x, mean, rstd, w, gx, gw, gb)
    return gx, gw, gb


def _reference(x, groups, w, b, eps, g):
    """torch in float64: y, mean, rstd, grad_x, grad_weight (of weight, or of a ones weight), grad_bias."""
    c = x.shape[1]
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    tw = torch.tensor(w if w is not None else np.ones(c), dtype=torch.float64, requires_grad=True)
    tb = torch.tensor(b if b is not None else np.zeros(c), dtype=torch.float64, requires_grad=True)
    y = torch.nn.functional.group_norm(tx, groups, tw, tb, eps)
    y.backward(torch.tensor(g, dtype=torch.float64))
    xg = tx.detach().reshape(x.shape[0], groups, -1)
    mean = xg.mean(-1)
    rstd = 1.0 / (xg.var(-1, unbiased=False) + eps).sqrt()
    return [t.detach().numpy() for t in (y, mean, rstd, tx.grad, tw.grad, tb.grad)]


def _close(a, ref, what, rtol=2e-5, atol=2e-5):
    scale = max(1.0, float(np.abs(ref).max())) if ref.size else 1.0
    np.testing.assert_allclose(a, ref, rtol=rtol, atol=atol * scale, err_msg=what)


@pytest.mark.parametrize("shape, groups", [((2, 6, 5), 3), ((3, 8, 17, 3), 2), ((2, 12, 1), 4), ((4, 6), 6),
                                           ((2, 4, 33, 35), 1), ((5, 16, 7, 9), 16)])
@pytest.mark.parametrize("affine", ["both", "weight", "bias", "none"])
def test_group_norm_kernel_vs_torch(shape, groups, affine, simd_path, rng):
    x = rng.standard_normal(shape).astype(np.float32) * 3 + 0.5
    g = rng.standard_normal(shape).astype(np.float32)
    c = shape[1]
    w = (rng.standard_normal(c) + 1).astype(np.float32) if affine in ("both", "weight") else None
    b = rng.standard_normal(c).astype(np.float32) if affine in ("both", "bias") else None
    y, mean, rstd = _forward(x, groups, w, b, 1e-3)
    ry, rmean, rrstd, rgx, rgw, rgb = _reference(x, groups, w, b, 1e-3, g)
    _close(y, ry, "y")
    _close(mean, rmean, "mean")
    _close(rstd, rrstd, "rstd")
    gx, gw, gb = _backward(g, x, mean, rstd, w)
    _close(gx, rgx, "grad_x")
    _close(gw, rgw, "grad_weight", atol=5e-5)
    _close(gb, rgb, "grad_bias")
    # each gradient alone gives the same bits as all three together
    for k, full in enumerate((gx, gw, gb)):
        need = [False] * 3
        need[k] = True
        np.testing.assert_array_equal(_backward(g, x, mean, rstd, w, need)[k], full)


def test_group_norm_kernel_large_offset_and_float_limit(simd_path, rng):
    # a common offset of 1e4: the group mean is kept as a float pair, so the result is float32's rounding of float64
    x = (rng.standard_normal((2, 8, 13, 11)) + 1e4).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    w, b = rng.standard_normal(8).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    y, mean, rstd = _forward(x, 4, w, b)
    ry, _, _, rgx, rgw, _ = _reference(x, 4, w, b, 1e-5, g)
    _close(y, ry, "y at offset 1e4", atol=5e-5)
    gx, gw, _ = _backward(g, x, mean, rstd, w)
    _close(gx, rgx, "grad_x at offset 1e4", atol=5e-5)
    _close(gw, rgw, "grad_weight at offset 1e4", atol=5e-4, rtol=1e-4)
    # deviations near 1e20 overflow float sums of squares: that group is redone in double, as float64 gives
    x = (rng.standard_normal((2, 4, 9)) * 1e20).astype(np.float32)
    y, _, _ = _forward(x, 2)
    ry = _reference(x, 2, None, None, 1e-5, np.zeros_like(x))[0]
    _close(y, ry, "y near float's limit", atol=1e-5)


def test_group_norm_kernel_nan_marks_only_its_group(simd_path):
    x = np.tile(np.linspace(-2, 2, 19, dtype=np.float32), (3, 4, 1))
    x[1, 2, 5] = np.nan
    y, mean, rstd = _forward(x, 2, np.full(4, 2.0, np.float32), np.zeros(4, np.float32))
    assert np.isnan(y[1, 2:]).all() and np.isfinite(y[1, :2]).all() and np.isfinite(y[[0, 2]]).all()
    assert np.isnan(rstd[1, 1]) and np.isfinite(np.delete(rstd.ravel(), 3)).all()


def test_group_norm_kernel_same_bits_at_1_2_3_threads(threads, simd_path, rng):
    # 6 * 8 groups of 4 x 17 x 19: several groups per thread, and the weight / bias sums span every thread's share
    x = rng.standard_normal((6, 32, 17, 19)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    w, b = rng.standard_normal(32).astype(np.float32), rng.standard_normal(32).astype(np.float32)

    def run():
        y, mean, rstd = _forward(x, 8, w, b)
        return [y, mean, rstd, *_backward(g, x, mean, rstd, w)]

    assert_same_bits_across_threads(run, threads)


def test_group_norm_kernel_empty_input():
    y, mean, rstd = _forward(np.empty((2, 4, 0), np.float32), 2)
    assert y.shape == (2, 4, 0) and (mean == 0).all() and np.isfinite(rstd).all()
    _, gw, gb = _backward(np.empty((0, 4, 3), np.float32), np.empty((0, 4, 3), np.float32),
                          np.empty((0, 2), np.float32), np.empty((0, 2), np.float32))
    assert (gw == 0).all() and (gb == 0).all()


def _bad_forward(**over):
    x = np.ones((2, 6, 5), np.float32)
    args = dict(x=x, groups=3, weight=None, bias=None, eps=1e-5, out=np.empty_like(x),
                mean=np.empty((2, 3), np.float32), rstd=np.empty((2, 3), np.float32))
    args.update(over)
    GN.group_norm_forward(**args)


def _bad_backward(**over):
    x = np.ones((2, 6, 5), np.float32)
    args = dict(grad=np.ones_like(x), x=x, mean=np.zeros((2, 3), np.float32), rstd=np.ones((2, 3), np.float32),
                weight=None, grad_x=np.empty_like(x), grad_weight=None, grad_bias=None)
    args.update(over)
    GN.group_norm_backward(**args)


@pytest.mark.parametrize("call, over, exc, match", [
    (_bad_forward, {"x": np.ones((2, 6, 5))}, TypeError, "x"),
    (_bad_forward, {"x": np.ones((2, 5, 6), np.float32).transpose(0, 2, 1)}, ValueError, "x"),
    (_bad_forward, {"x": np.ones(6, np.float32), "out": np.empty(6, np.float32)}, ValueError, "x"),
    (_bad_forward, {"groups": 4}, ValueError, "groups"),
    (_bad_forward, {"groups": 0}, ValueError, "groups"),
    (_bad_forward, {"weight": np.ones(5, np.float32)}, ValueError, "weight"),
    (_bad_forward, {"bias": [1.0] * 6}, TypeError, "bias"),
    (_bad_forward, {"mean": np.empty(6, np.float32)}, ValueError, "mean"),
    (_bad_forward, {"rstd": np.empty((2, 3), np.float64)}, TypeError, "rstd"),
    (_bad_forward, {"eps": -1.0}, ValueError, "eps"),
    (_bad_forward, {"eps": float("nan")}, ValueError, "eps"),
    (_bad_backward, {"grad": np.ones((2, 6, 4), np.float32)}, ValueError, "grad"),
    (_bad_backward, {"mean": np.zeros((2, 4), np.float32), "rstd": np.ones((2, 4), np.float32)}, ValueError,
     "groups"),
    (_bad_backward, {"mean": np.zeros(6, np.float32)}, ValueError, "mean"),
    (_bad_backward, {"rstd": np.ones((2, 2), np.float32)}, ValueError, "rstd"),
    (_bad_backward, {"grad_weight": np.empty(5, np.float32)}, ValueError, "grad_weight")])
def test_group_norm_kernel_bad_arguments_name_the_argument(call, over, exc, match):
    with pytest.raises(exc, match=match):
        call(**over)


def test_group_norm_kernel_rejects_an_output_overlapping_an_input():
    x = np.ones((2, 6, 5), np.float32)
    with pytest.raises(ValueError, match="out"):
        _bad_forward(x=x, out=x)
