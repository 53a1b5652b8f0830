"""Soft-capped attention (Gemma 2's attn_logit_softcapping) on the fused kernels, forward and backward:
the scaled scores x become t = c * tanh(x / c) before the mask. Against torch composing the same thing
(scores * scale -> c * tanh(. / c) -> mask -> softmax -> @ v, in float64) on odd shapes (lengths that are
no multiple of a tile, T=1, head dims 16 / 40 / 64), causal, float and bool masks, grouped-query heads;
every SIMD path; the same bits at 1, 2 and 3 threads; bad caps refused by every entry point that
can run a backward. (The op's generated checks, tests/test_op_registry.py, run its softcap samples too.)"""
from __future__ import annotations

import math

import numpy as np
import pytest

import forgegrad as fg
import forgegrad.nn.functional as F
from forgegrad.kernels import attention as KA

torch = pytest.importorskip("torch")

PATHS = ("scalar", "avx2", "avx512")
SIMD_PATHS = PATHS[:PATHS.index(fg.cpu_info()["detected_isa"]) + 1]


def _rand(*shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def _torch_capped(q, k, v, g, scale, cap, causal=False, mask=None):
    """out, dq, dk, dv of the composed soft-capped attention in torch float64 (q (N, L, E), mask
    broadcastable to (N, L, S): float added, bool True = takes part)."""
    tq, tk, tv = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (q, k, v))
    s = (tq * scale) @ tk.transpose(-1, -2)
    s = torch.tanh(s / cap) * cap
    L, S = q.shape[-2], k.shape[-2]
    if causal:
        s = s.masked_fill(~torch.ones(L, S, dtype=torch.bool).tril(), -math.inf)
    if mask is not None and mask.dtype == np.bool_:
        s = s.masked_fill(~torch.from_numpy(mask), -math.inf)
    elif mask is not None:
        s = s + torch.tensor(mask, dtype=torch.float64)
    out = torch.softmax(s, dim=-1) @ tv
    out.backward(torch.tensor(g, dtype=torch.float64))
    return [out.detach().numpy(), tq.grad.numpy(), tk.grad.numpy(), tv.grad.numpy()]


def _kernel(q, k, v, g, scale, cap, causal, mask):
    m = KA.prepare_mask(mask, (q.shape[0],), q.shape[1], k.shape[1])
    out, lse = KA.attention_forward(q, k, v, scale, causal, m, softcap=cap)
    return [out, *KA.attention_backward(g, q, k, v, out, lse, scale, causal, m, softcap=cap)]


@pytest.mark.parametrize("e", [16, 40, 64])
@pytest.mark.parametrize("case", ["none", "causal", "float", "bool"])
@pytest.mark.parametrize("L,S", [(70, 70), (1, 1), (37, 130)])
def test_kernel_forward_and_gradients_against_torch(e, case, L, S):
    """Every SIMD path against torch (float64), the same bits at 1, 2 and 3 threads on each."""
    causal = case == "causal"
    if causal:
        S = L
    q, k, v = _rand(3, L, e, scale=3), _rand(3, S, e, seed=1, scale=3), _rand(3, S, e, seed=2)
    g = _rand(3, L, e, seed=3)
    mask = None
    if case == "float":  # one key-padding row per (batch, head), shared by the queries
        mask = _rand(3, 1, S, seed=4, scale=2)
    elif case == "bool":
        mask = np.random.default_rng(5).uniform(size=(3, L, S)) > 0.3
        mask[..., 0] = True  # every row keeps a key (torch's composition gives NaN for a row without)
    scale, cap = 1.0 / math.sqrt(e) * 1.5, 4.0
    want = _torch_capped(q, k, v, g, scale, cap, causal, mask)
    before, isa = fg.get_num_threads(), fg.get_simd()
    try:
        for path in SIMD_PATHS:
            fg.set_simd(path)
            runs = []
            for n in (1, 2, 3):
                fg.set_num_threads(n)
                runs.append(_kernel(q, k, v, g, scale, cap, causal, mask))
            for i, (got, ref) in enumerate(zip(runs[0], want)):
                np.testing.assert_allclose(got, ref, rtol=2e-4, atol=2e-5, err_msg=f"{path}: output/gradient {i}")
            for n, run in zip((2, 3), runs[1:]):
                for i, (a, b) in enumerate(zip(runs[0], run)):
                    assert a.tobytes() == b.tobytes(), f"{path}: output/gradient {i} differs at {n} threads vs 1"
    finally:
        fg.set_num_threads(before)
        fg.set_simd(isa)
    if L > 1:  # the cap bends these scores: the uncapped gradients differ (the test can fail)
        m = KA.prepare_mask(mask, (3,), L, S)
        out, lse = KA.attention_forward(q, k, v, scale, causal, m)
        assert np.abs(KA.attention_backward(g, q, k, v, out, lse, scale, causal, m)[0] - want[1]).max() > 1e-3


def test_kernel_backward_without_the_cap_would_differ():
    """The backward really applies the cap: with the capped forward's lse but no cap in backward the
    gradients are wrong (so the chain rule through the cap is what the test above checks)."""
    q, k, v, g = _rand(2, 40, 16, scale=3), _rand(2, 40, 16, seed=1, scale=3), _rand(2, 40, 16, seed=2), _rand(
        2, 40, 16, seed=3)
    out, lse = KA.attention_forward(q, k, v, 0.25, True, None, softcap=2.0)
    want = _torch_capped(q, k, v, g, 0.25, 2.0, causal=True)
    right = KA.attention_backward(g, q, k, v, out, lse, 0.25, True, None, softcap=2.0)
    wrong = KA.attention_backward(g, q, k, v, out, lse, 0.25, True, None)
    np.testing.assert_allclose(right[0], want[1], rtol=2e-4, atol=2e-5)
    assert np.abs(wrong[0] - want[1]).max() > 1e-2


def test_a_row_without_keys_gives_zero_output_and_gradients():
    """A bool mask that leaves a row no key: output 0 and gradient 0 for that row (torch's semantics for
    scaled_dot_product_attention), the other rows as torch's composition."""
    q, k, v = _rand(1, 2, 9, 16, scale=3), _rand(1, 2, 11, 16, seed=1, scale=3), _rand(1, 2, 11, 8, seed=2)
    mask = np.random.default_rng(3).uniform(size=(9, 11)) > 0.4
    mask[:, 0] = True
    mask[4] = False
    args = [fg.tensor(a, requires_grad=True) for a in (q, k, v)]
    out = F.scaled_dot_product_attention(*args, attn_mask=fg.tensor(mask), softcap=3.0)
    g = _rand(*out.shape, seed=4)
    (out * fg.tensor(g)).sum().backward()
    assert not out.numpy()[..., 4, :].any() and not args[0].grad.numpy()[..., 4, :].any()
    keep = np.ones(9, bool)
    keep[4] = False
    want = _torch_capped(q[..., keep, :], k, v, g[..., keep, :], 0.25, 3.0, mask=mask[keep])
    np.testing.assert_allclose(out.numpy()[..., keep, :], want[0], rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(args[0].grad.numpy()[..., keep, :], want[1], rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(args[1].grad.numpy(), want[2], rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(args[2].grad.numpy(), want[3], rtol=2e-4, atol=2e-5)


@pytest.fixture
def kernel_calls(monkeypatch):
    """The softcap of each fused forward / backward kernel call made through the op, by direction."""
    from kernel_calls import record_attention_kernels
    return record_attention_kernels(monkeypatch)


@pytest.mark.parametrize("case", ["causal", "padding", "gqa"])
def test_op_trains_on_the_fused_kernel(case, kernel_calls):
    """F.scaled_dot_product_attention(..., softcap=) with gradients: the fused forward and backward
    (counted), equal to torch's composition; grouped-query heads summed back per key/value head."""
    B, H, Hkv, L, E = 2, 4, (2 if case == "gqa" else 4), 130, 40
    q = _rand(B, H, L, E, scale=3)
    k, v = _rand(B, Hkv, L, E, seed=1, scale=3), _rand(B, Hkv, L, 24, seed=2)
    mask = None
    if case == "padding":  # transformers' additive mask: the float32 minimum on the first 5 keys of batch 0
        mask = np.zeros((B, 1, L, L), np.float32)
        mask[0, ..., :5] = np.finfo(np.float32).min
    args = [fg.tensor(a, requires_grad=True) for a in (q, k, v)]
    out = F.scaled_dot_product_attention(*args, attn_mask=None if mask is None else fg.tensor(mask),
                                         is_causal=case != "padding", enable_gqa=case == "gqa", softcap=5.0)
    g = _rand(*out.shape, seed=3)
    (out * fg.tensor(g)).sum().backward()
    assert kernel_calls == {"forward": [5.0], "backward": [5.0]}
    rep = H // Hkv
    kk, vv = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
    want = _torch_capped(q.reshape(-1, L, E), kk.reshape(-1, L, E), vv.reshape(-1, L, 24), g.reshape(-1, L, 24),
                         1 / math.sqrt(E), 5.0, causal=case != "padding",
                         mask=None if mask is None else np.repeat(mask, H, axis=1).reshape(-1, L, L))
    np.testing.assert_allclose(out.numpy().reshape(-1, L, 24), want[0], rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(args[0].grad.numpy().reshape(-1, L, E), want[1], rtol=2e-4, atol=2e-5)
    dk = want[2].reshape(B, Hkv, rep, L, E).sum(2)
    dv = want[3].reshape(B, Hkv, rep, L, 24).sum(2)
    np.testing.assert_allclose(args[1].grad.numpy(), dk, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(args[2].grad.numpy(), dv, rtol=2e-4, atol=2e-5)


def test_op_without_grad_and_with_dropout(kernel_calls):
    """no_grad: the fused forward alone; dropout (composed: its keep-mask is stored) keeps the cap."""
    q, k, v = _rand(1, 2, 33, 16, scale=3), _rand(1, 2, 33, 16, seed=1, scale=3), _rand(1, 2, 33, 16, seed=2)
    with fg.no_grad():
        fused = F.scaled_dot_product_attention(fg.tensor(q), fg.tensor(k), fg.tensor(v), is_causal=True, softcap=2.0)
    assert kernel_calls == {"forward": [2.0], "backward": []}
    want = _torch_capped(q.reshape(2, 33, 16), k.reshape(2, 33, 16), v.reshape(2, 33, 16), np.zeros((2, 33, 16)),
                         0.25, 2.0, causal=True)[0]
    np.testing.assert_allclose(fused.numpy().reshape(2, 33, 16), want, rtol=2e-4, atol=2e-5)
    fg.manual_seed(0)
    # dropout_p just above 0 keeps (almost) every weight: the composed path's capped output, rescaled
    drop = F.scaled_dot_product_attention(fg.tensor(q), fg.tensor(k), fg.tensor(v), dropout_p=1e-9, is_causal=True,
                                          softcap=2.0)
    assert kernel_calls["forward"] == [2.0]
    np.testing.assert_allclose(drop.numpy().reshape(2, 33, 16), want, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("bad, error", [(0.0, ValueError), (-1.0, ValueError), (math.inf, ValueError),
                                        (math.nan, ValueError), ("x", TypeError)])
def test_bad_softcap_is_refused_by_every_entry_point(bad, error):
    q, k, v = _rand(1, 5, 8), _rand(1, 5, 8, seed=1), _rand(1, 5, 8, seed=2)
    out, lse = KA.attention_forward(q, k, v, 0.3, True, None, softcap=2.0)
    with pytest.raises(error, match="softcap"):
        KA.attention_forward(q, k, v, 0.3, True, None, softcap=bad)
    with pytest.raises(error, match="softcap"):
        KA.attention_backward(q, q, k, v, out, lse, 0.3, True, None, softcap=bad)
    args = [fg.tensor(a, requires_grad=True) for a in (q, k, v)]
    with pytest.raises(error, match="scaled_dot_product_attention: softcap"):
        F.scaled_dot_product_attention(*args, is_causal=True, softcap=bad)
    with pytest.raises(error, match="scaled_dot_product_attention: softcap"):  # on the meta device too
        F.scaled_dot_product_attention(*(fg.tensor(a).to("meta") for a in (q, k, v)), softcap=bad)


def test_the_binding_refuses_a_negative_or_nan_cap():
    """forgegrad._C checks the cap itself (0 = none), before any kernel runs."""
    from forgegrad import _C
    q, k, v = _rand(1, 5, 8), _rand(1, 5, 8, seed=1), _rand(1, 5, 8, seed=2)
    out, lse = KA.attention_forward(q, k, v, 0.3, False, None)
    d = [np.empty_like(a) for a in (q, k, v)]
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="attention_backward: softcap must be a finite number >= 0"):
            _C.attention.attention_backward(q, k, v, out, q, lse, 0.3, False, None, None, 0, *d, bad)
