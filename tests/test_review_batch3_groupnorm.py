"""Review of the fused GroupNorm kernel and its ops (batch 3): a float32 input with a float64 weight / bias is
refused as torch (the float32 path cast it silently), and the backward of a group whose values are near float's
limit is finite and matches torch in float64 on every SIMD path, as the forward already did (its float sums
overflowed to NaN), with the same bits at 1/2/3 threads."""
import numpy as np
import pytest

import forgegrad as fg
import forgegrad.nn.functional as F
from forgegrad import _C

from helpers import assert_same_bits_across_threads

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("which", ["weight", "bias"])
def test_group_norm_float32_input_with_float64_parameter_is_refused_as_torch(which):
    x = np.random.default_rng(0).standard_normal((2, 4, 5)).astype(np.float32)
    p = {which: np.ones(4)}
    with pytest.raises(RuntimeError):
        torch.nn.functional.group_norm(torch.from_numpy(x), 2, **{k: torch.from_numpy(v) for k, v in p.items()})
    with pytest.raises(RuntimeError, match="same dtype"):
        F.group_norm(fg.tensor(x), 2, **{k: fg.tensor(v) for k, v in p.items()})


def test_instance_norm_float32_input_dtype_rules_as_torch():
    x = np.random.default_rng(1).standard_normal((2, 4, 5)).astype(np.float32)
    with pytest.raises(RuntimeError):
        torch.nn.functional.instance_norm(torch.from_numpy(x), weight=torch.ones(4, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="same dtype"):
        F.instance_norm(fg.tensor(x), weight=fg.tensor(np.ones(4)))
    # float64 running statistics with a float32 input: torch takes them, and so does forgegrad
    rm, rv = np.zeros(4), np.ones(4)
    trm, trv = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
    frm, frv = fg.tensor(rm.copy()), fg.tensor(rv.copy())
    want = torch.nn.functional.instance_norm(torch.from_numpy(x), trm, trv)
    got = F.instance_norm(fg.tensor(x), frm, frv)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(frv.numpy(), trv.numpy(), rtol=1e-5)


def _near_limit(rng, shape):
    return np.clip(rng.standard_normal(shape) * 3e38, -3.4e38, 3.4e38).astype(np.float32)


def _kernel(x, g, w, b, groups):
    y = np.empty_like(x)
    mean = np.empty((x.shape[0], groups), np.float32)
    rstd = np.empty_like(mean)
    _C.groupnorm.group_norm_forward(x, groups, w, b, 1e-5, y, mean, rstd)
    gx, gw, gb = np.empty_like(x), np.empty(x.shape[1], np.float32), np.empty(x.shape[1], np.float32)
    _C.groupnorm.group_norm_backward(g, x, mean, rstd, w, gx, gw, gb)
    return y, gx, gw, gb


def test_group_norm_backward_near_float_limit_matches_float64(simd_path):
    rng = np.random.default_rng(2)
    x = _near_limit(rng, (2, 4, 37))
    g = rng.standard_normal(x.shape).astype(np.float32)
    w, b = rng.standard_normal(4).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    y, gx, gw, gb = _kernel(x, g, w, b, 2)
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    tw = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    tb = torch.tensor(b, dtype=torch.float64, requires_grad=True)
    torch.nn.functional.group_norm(tx, 2, tw, tb, 1e-5).backward(torch.tensor(g, dtype=torch.float64))
    for got, ref in ((gx, tx.grad), (gw, tw.grad), (gb, tb.grad)):
        ref = ref.numpy()
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * max(1e-30, float(np.abs(ref).max())))


def test_group_norm_backward_near_float_limit_same_bits_at_1_2_3_threads(threads):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 6, 7, 3)).astype(np.float32)
    x[1:4] = _near_limit(rng, (3, 6, 7, 3))  # some groups take the double path, others not, split unevenly
    g = rng.standard_normal(x.shape).astype(np.float32)
    w, b = rng.standard_normal(6).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    assert_same_bits_across_threads(lambda: list(_kernel(x, g, w, b, 3)), threads)
