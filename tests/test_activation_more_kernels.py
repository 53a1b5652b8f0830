"""The C++ kernels of forgegrad.kernels.activation_more (elu / selu / celu, softplus, mish, logsigmoid, hardsigmoid,
hardswish, softsign, tanhshrink, hardtanh / relu6, softshrink, hardshrink, threshold: _C.activation.pw_forward /
pw_backward) against torch's float32 CPU ops, forward
and gradient, over wide ranges on every SIMD path; NaN / +-inf / +-0 as torch's; the same bits at 1, 2 and 3
threads; in-place, non-contiguous and unaligned inputs; argument errors."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import forgegrad as fg
import forgegrad.nn.functional as F
from forgegrad import _C
from forgegrad.kernels import activation_more as KM
from helpers import assert_same_bits_across_threads

# (name, forgegrad function, torch function, keyword arguments)
CASES = [
    ("elu", {}), ("elu", {"alpha": 0.5}), ("elu", {"alpha": -0.7}), ("selu", {}), ("celu", {}),
    ("celu", {"alpha": 2.5}), ("softplus", {}), ("softplus", {"beta": 2.0, "threshold": 5.0}),
    ("softplus", {"beta": 0.5}), ("mish", {}), ("logsigmoid", {}), ("hardsigmoid", {}), ("hardswish", {}),
    ("softsign", {}), ("tanhshrink", {}), ("hardtanh", {}), ("hardtanh", {"min_val": -2.5, "max_val": 0.1}),
    ("relu6", {}), ("softshrink", {}), ("softshrink", {"lambd": 0.0}), ("hardshrink", {}),
    ("hardshrink", {"lambd": -0.5}), ("threshold", {"threshold": 0.5, "value": -3.0}),
]
IDS = [n + "".join(f"-{k}={v}" for k, v in kw.items()) for n, kw in CASES]

# Largest error against torch's float32 result, in ulps of max(|torch's|, floor, magnitude(x)), forward and
# gradient (g = 1): at most 2 ulp, 3 for mish, 10 for mish's gradient, 0 (the same bits) for the piecewise-linear
# ones and softsign.
# - floor = 1e-28: below ln(FLT_MIN) = -87.34 forgegrad's exp is exactly 0, where torch's gives numbers under
#   1.2e-38 (mish's x exp(x) under 1.1e-36).
# - magnitude: where a formula subtracts terms of that size (torch's composites do the same in float32), the error is
#   measured against them: tanhshrink x - tanh(x) against tanh(x), its gradient g - g (1 - t^2) against g; mish's
#   gradient t + x sigmoid(x) (1 - t^2), which crosses 0 near x = -1.19, against t; elu's gradient for alpha >= 0,
#   read from the output as y + alpha (ops/activation_smooth.py; torch's in-place elu_ does the same), against alpha.
# - mish's gradient is 10 ulp off torch's near x = 9, where 1 - t^2 has few bits in float32 (t rounds near 1) in both
#   (each within 500 ulp of float64 there, forgegrad's the closer).
MAX_ULP = {"elu": (2, 2), "selu": (2, 2), "celu": (2, 2), "softplus": (2, 2), "mish": (3, 10), "logsigmoid": (2, 2),
           "hardsigmoid": (0, 0), "hardswish": (0, 0), "softsign": (0, 0), "tanhshrink": (1, 1), "hardtanh": (0, 0),
           "relu6": (0, 0), "softshrink": (0, 0), "hardshrink": (0, 0), "threshold": (0, 0)}
FLOOR = 1e-28


def _mish_t(x):
    return np.tanh(np.logaddexp(0.0, x))


MAGNITUDE = {("tanhshrink", 0): lambda x, kw: np.abs(np.tanh(x)), ("tanhshrink", 1): lambda x, kw: np.ones_like(x),
             ("mish", 1): lambda x, kw: np.abs(_mish_t(x)),
             ("elu", 1): lambda x, kw: np.full_like(x, max(kw.get("alpha", 1.0), 0.0))}


def wide(n_log=4000, n_lin=40001):
    """float32 values over the whole range: +-10^(-38..38.5) log-spaced, [-100, 100] evenly, the ops' kinks."""
    mags = np.logspace(-38, 38.5, n_log)
    kinks = [0.0, -0.0, 3.0, -3.0, 20.0, 10.0, 2.5, -87.3, -87.4, 88.7, -88.7, 1.0, -1.0, 0.5, -0.5]
    return np.concatenate([mags, -mags, np.linspace(-100, 100, n_lin), kinks]).astype(np.float32)


def _pair(name, kw, x, g):
    a = fg.tensor(x, requires_grad=True)
    y = getattr(F, name)(a, **kw)
    y.backward(fg.tensor(g))
    t = torch.tensor(x, requires_grad=True)
    yt = getattr(TF, name)(t, **kw)
    yt.backward(torch.tensor(g))
    return (y.numpy(), a.grad.numpy()), (yt.detach().numpy(), t.grad.numpy())


def ulp_error(ours, ref, magnitude):
    same = (ours == ref) | (np.isnan(ours) & np.isnan(ref))
    both = np.isfinite(ours) & np.isfinite(ref)
    ours64, ref64 = np.where(both, ours, 0).astype(np.float64), np.where(both, ref, 0).astype(np.float64)
    scale = np.maximum(np.maximum(np.abs(ref64), FLOOR), magnitude)
    err = np.abs(ours64 - ref64) / np.spacing(scale.astype(np.float32)).astype(np.float64)
    return float(np.where(same, 0.0, np.where(both, err, np.inf)).max())


@pytest.mark.parametrize("name, kw", CASES, ids=IDS)
def test_matches_torch_over_wide_range(name, kw, simd_path):
    x = wide()
    finite = np.isfinite(x)
    (y, dx), (y_ref, dx_ref) = _pair(name, kw, x, np.ones_like(x))
    assert y.dtype == dx.dtype == np.float32
    for k, (ours, ref) in enumerate(((y, y_ref), (dx, dx_ref))):
        assert np.array_equal(np.isnan(ours), np.isnan(ref)), (name, k, x[np.isnan(ours) != np.isnan(ref)][:5])
        mag = MAGNITUDE.get((name, k), lambda v, kw: np.zeros_like(v))(x.astype(np.float64), kw)
        err = ulp_error(ours[finite], ref[finite], mag[finite])
        assert err <= MAX_ULP[name][k], (name, "forward" if k == 0 else "gradient", err)


@pytest.mark.parametrize("name, kw", CASES, ids=IDS)
def test_special_values_as_torch(name, kw, simd_path):
    # NaN, +-inf, +-0, huge and the kinks, with gradients of several signs and sizes (a tail after the full vectors)
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 3.0, -3.0, 1e38, -1e38, 1e-40, -1e-40, 20.0, 89.0, -89.0,
                  -3e38, 7.0, -1.5], np.float32)
    x = np.tile(x, 3)
    g = np.tile(np.array([1.0, -2.0, 0.5, np.inf, np.nan, 0.0], np.float32), 9)[:x.size]
    (y, dx), (y_ref, dx_ref) = _pair(name, kw, x, g)
    # atol: mish(-89) is x exp(x) = -2e-37 in torch, -0 here (exp is 0 below ln(FLT_MIN))
    np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-36, equal_nan=True, err_msg=name)
    if name in POSITIONAL_NAN:  # torch's gradient where x or g is NaN depends on the element's position
        keep = ~(np.isnan(x) | np.isnan(g))
        dx, dx_ref = dx[keep], dx_ref[keep]
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-6, atol=1e-36, equal_nan=True, err_msg=name)
    exact = (y_ref == 0) & np.isfinite(x)  # zeros keep torch's sign
    assert np.array_equal(np.signbit(y[exact]), np.signbit(y_ref[exact])), (name, x[exact])


# tests/test_op_edge_warnings.py's DIFFERS: torch's vectorized loop gives NaN (or 0) where x (or g) is NaN, its scalar
# tail g; forgegrad keeps its former numpy results there (g where x is NaN)
POSITIONAL_NAN = ("elu", "selu", "celu", "hardswish", "hardtanh", "relu6", "softshrink", "hardshrink")


def _all_calls(x, g):
    out = []
    for op, fwd, bwd in (("elu", (1.0507, 1.7581, 1.0), (1.0507, 1.7581, 1.0)), ("softplus", (1.5, 4.0), (1.5, 4.0)),
                         ("mish", (), ()), ("logsigmoid", (), ()), ("hardsigmoid", (), ()), ("hardswish", (), ()),
                         ("softsign", (), ()), ("tanhshrink", (), ()), ("hardtanh", (-1.5, 2.0), (-1.5, 2.0)),
                         ("softshrink", (0.5,), (0.5,)), ("hardshrink", (0.5,), (0.5,)),
                         ("threshold", (0.3, -2.0), (0.3,))):
        out += [KM.pointwise(op, x, *fwd), KM.pointwise_backward(op, g, x, *bwd)]
    out.append(KM.pointwise_backward("elu_from_output", g, out[0], 0.7))
    return out


def test_same_bits_at_any_thread_count(simd_path, threads):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(300_007) * 8).astype(np.float32)
    x[::97] = np.nan
    g = rng.standard_normal(x.size).astype(np.float32)
    assert_same_bits_across_threads(lambda: _all_calls(x, g), threads)


def test_isa_paths_agree_closely(simd_path):
    # every path computes the same formulas; only the fused multiply-adds (AVX) round differently
    x = (np.random.default_rng(1).standard_normal(4099) * 6).astype(np.float32)
    g = np.ones_like(x)
    ours = _all_calls(x, g)
    fg.set_simd("scalar")  # the portable path (the fixture restores the path afterwards)
    ref = _all_calls(x, g)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=4e-6, atol=2e-7)  # atol: mish's gradient cancels near x = -1.19


def test_in_place_noncontiguous_unaligned():
    rng = np.random.default_rng(2)
    base = (rng.standard_normal((9, 14)) * 4).astype(np.float32)
    view = base[::2, 1::3]  # strided
    ref = KM.pointwise("mish", np.ascontiguousarray(view))
    assert np.array_equal(KM.pointwise("mish", view), ref)
    buf = np.zeros(base.size * 4 + 1, np.uint8)
    unaligned = np.frombuffer(buf.data, np.float32, count=base.size, offset=1).reshape(base.shape)
    assert not unaligned.flags.aligned
    unaligned[...] = base
    assert np.array_equal(KM.pointwise("softplus", unaligned, 1.0, 20.0), KM.pointwise("softplus", base, 1.0, 20.0))
    g = np.ones_like(base)
    assert np.array_equal(KM.pointwise_backward("hardswish", g, unaligned), KM.pointwise_backward("hardswish", g, base))
    out = np.empty((9, 28), np.float32)[:, ::2]  # a strided out
    KM.pointwise("elu", base, 1.0, 1.0, 1.0, out=out)
    assert np.array_equal(out, KM.pointwise("elu", base, 1.0, 1.0, 1.0))
    x = base.copy()
    y = KM.pointwise("tanhshrink", x, out=x)  # in place
    assert y is x and np.array_equal(x, KM.pointwise("tanhshrink", base))
    gx = g.copy()
    KM.pointwise_backward("logsigmoid", gx, base, out=gx)
    assert np.array_equal(gx, KM.pointwise_backward("logsigmoid", g, base))


def test_errors():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="op must be one of"):
        KM.pointwise("swish", x)
    with pytest.raises(ValueError, match="backward only"):
        KM.pointwise("elu_from_output", x, 1.0)
    with pytest.raises(TypeError, match="expected 2 float parameters"):
        KM.pointwise("softplus", x, 1.0)
    with pytest.raises(TypeError, match="numbers"):
        KM.pointwise("softplus", x, "1", 2.0)
    with pytest.raises(TypeError, match="x must have dtype float32"):
        KM.pointwise("mish", x.astype(np.float64))
    with pytest.raises(ValueError, match="saved must have the shape"):
        KM.pointwise_backward("mish", x, np.ones((3, 2), np.float32))
    with pytest.raises(ValueError, match="out"):
        KM.pointwise("mish", x, out=np.empty((3, 2), np.float32))
    big = np.ones(10, np.float32)
    with pytest.raises(ValueError, match="overlap"):
        KM.pointwise("mish", big[:8], out=big[2:])
    # the binding's own checks
    with pytest.raises(ValueError, match="op must be in"):
        _C.activation.pw_forward(99, x, np.empty_like(x))
    with pytest.raises(ValueError, match="backward only"):
        _C.activation.pw_forward(_C.activation.PW_ELU_FROM_OUTPUT, x, np.empty_like(x))
    with pytest.raises((TypeError, ValueError), match="out"):
        _C.activation.pw_backward(_C.activation.PW_MISH, x, x, np.empty((2, 3), np.float64))


def test_float64_keeps_numpy():
    x = np.linspace(-5, 5, 101)
    for name in ("mish", "selu", "softplus", "hardswish"):
        a = fg.tensor(x, requires_grad=True)
        getattr(F, name)(a).sum().backward()
        t = torch.tensor(x, requires_grad=True)
        getattr(TF, name)(t).sum().backward()
        assert a.numpy().dtype == np.float64
        np.testing.assert_allclose(a.grad.numpy(), t.grad.numpy(), rtol=1e-12, atol=1e-14)
