"""The whole-row attention kernels for short sequences (cpp/kernels/per_isa/attention_small.cpp, taken when
query and key counts are <= 256 and there is no soft cap): forward (out, lse) and backward (dq, dk, dv)
against float64 torch on causal (L = S, L < S, L > S), masked (bool with fully masked rows, float, a
key-padding row shared by the queries) and plain attention, head sizes that are no multiple of a SIMD
vector, the 256 boundary on either side (the flash-tiled kernels past it); the same bits at any thread
count, whole pairs per thread or pairs split over query-row and key blocks, and on every SIMD path."""
from __future__ import annotations

import numpy as np
import pytest

import forgegrad as fg
from forgegrad import _C
from forgegrad.kernels import attention as KA

torch = pytest.importorskip("torch")


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _run(q, k, v, g, scale, causal, mask):
    m = KA.prepare_mask(mask, (q.shape[0],), q.shape[1], k.shape[1])
    out, lse = KA.attention_forward(q, k, v, scale, causal, m)
    return (out, lse) + KA.attention_backward(g, q, k, v, out, lse, scale, causal, m)


def _reference(q, k, v, g, scale, causal, mask):
    """out, lse, dq, dk, dv in float64 torch (a row without keys: out, gradients 0 and lse -inf)."""
    tq, tk, tv = (torch.from_numpy(a.astype(np.float64)).requires_grad_(True) for a in (q, k, v))
    L, S = q.shape[1], k.shape[1]
    s = (tq * scale) @ tk.transpose(-1, -2)
    if mask is not None:
        add = np.where(mask, 0.0, -np.inf) if mask.dtype == np.bool_ else mask.astype(np.float64)
        s = s + torch.from_numpy(add)
    if causal:
        s = s.masked_fill(~torch.ones(L, S, dtype=torch.bool).tril(), float("-inf"))
    alive = torch.isfinite(s).any(-1, keepdim=True)  # rows without keys: P = 0 (their scores replaced by 0s
    s = torch.where(alive, s, 0.0)  # first, so that no gradient is NaN)
    lse = torch.where(alive[..., 0], torch.logsumexp(s, -1), -np.inf)
    out = (torch.softmax(s, -1) * alive) @ tv
    out.backward(torch.from_numpy(g.astype(np.float64)))
    return [out.detach().numpy(), lse.detach().numpy()] + [t.grad.numpy() for t in (tq, tk, tv)]


def test_small_path_rule():
    small = _C.attention.small_path
    assert small(1, 1) and small(128, 128) and small(256, 256) and small(1, 256) and small(256, 3)
    assert not small(257, 256) and not small(256, 257) and not small(4096, 4096)
    assert not small(128, 128, 50.0)  # a soft cap takes the tiled kernels
    with pytest.raises(ValueError, match="L and S must be >= 1"):
        small(0, 4)


CASES = [  # (N, L, S, E, Ev, causal, mask kind)
    (3, 128, 128, 64, 64, True, None), (2, 31, 97, 64, 64, True, None), (2, 97, 31, 40, 24, True, None),
    (2, 256, 256, 24, 40, True, None), (2, 257, 257, 24, 40, True, None), (4, 1, 19, 16, 16, True, None),
    (2, 19, 37, 5, 7, False, None), (2, 70, 200, 64, 64, False, "bool"), (3, 33, 50, 40, 24, False, "float"),
    (4, 45, 90, 64, 64, False, "keys"), (3, 60, 60, 64, 64, True, "float")]


@pytest.mark.parametrize("N,L,S,E,Ev,causal,kind", CASES, ids=str)
def test_against_float64(N, L, S, E, Ev, causal, kind):
    q, k, v, g = _rand(N, L, E), _rand(N, S, E, seed=1), _rand(N, S, Ev, seed=2), _rand(N, L, Ev, seed=3)
    mask = None
    if kind == "bool":  # rows 0 and 5 of pair 1 see no key
        mask = np.random.default_rng(4).uniform(size=(N, L, S)) > 0.4
        mask[1, [0, 5]] = False
    elif kind == "float":
        mask = _rand(1, L, S, seed=4)
    elif kind == "keys":  # a key-padding row, shared by the queries
        mask = np.ones((N, 1, S), bool)
        for n in range(N):
            mask[n, :, S - 7 * (n + 1):] = False
    got = _run(q, k, v, g, 0.125, causal, mask)
    want = _reference(q, k, v, g, 0.125, causal, mask)
    for name, a, b in zip(("out", "lse", "dq", "dk", "dv"), got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5, err_msg=name)


def test_bits_any_thread_count_whole_or_split_pairs_and_isa():
    """1, 2, 3 pairs at 1, 2, 3 threads: whole pairs per thread or pairs split over blocks of query rows and
    keys (longer than one block of 48), the same bits; every SIMD path within float rounding."""
    before, isa = fg.get_num_threads(), fg.get_simd()
    try:
        for pairs, causal in ((1, True), (2, False), (3, True)):
            q, k, v = _rand(pairs, 131, 40), _rand(pairs, 131, 40, seed=1), _rand(pairs, 131, 24, seed=2)
            g = _rand(pairs, 131, 24, seed=3)
            mask = None if causal else _rand(pairs, 1, 131, seed=4)
            runs = []
            for n in (1, 2, 3):
                fg.set_num_threads(n)
                runs.append(_run(q, k, v, g, 0.125, causal, mask))
            for n, run in zip((2, 3), runs[1:]):
                for name, a, b in zip(("out", "lse", "dq", "dk", "dv"), runs[0], run):
                    assert a.tobytes() == b.tobytes(), f"{name} differs at {n} threads ({pairs} pairs)"
            fg.set_num_threads(1)
            paths = ("scalar", "avx2", "avx512")
            for path in paths[:paths.index(fg.cpu_info()["detected_isa"]) + 1]:
                fg.set_simd(path)
                for name, a, b in zip(("out", "lse", "dq", "dk", "dv"), _run(q, k, v, g, 0.125, causal, mask),
                                      runs[0]):
                    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=f"{path} {name}")
            fg.set_simd(isa)
    finally:
        fg.set_num_threads(before)
        fg.set_simd(isa)


def test_nan_score_spreads_over_its_row_only():
    q, k, v, g = _rand(1, 20, 16), _rand(1, 20, 16, seed=1), _rand(1, 20, 16, seed=2), _rand(1, 20, 16, seed=3)
    q[0, 7, 3] = np.nan
    out, lse, dq, dk, dv = _run(q, k, v, g, 0.25, True, None)
    assert np.isnan(out[0, 7]).all() and np.isnan(lse[0, 7])
    rows = np.arange(20) != 7
    assert np.isfinite(out[0, rows]).all() and np.isfinite(lse[0, rows]).all()
