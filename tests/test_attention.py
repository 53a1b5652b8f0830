"""scaled_dot_product_attention beyond the generated registry checks: every head dim and mask kind
against torch (outputs and the gradients of q, k, v and a float mask), dropout against a torch
reference that uses the same keep-mask, the functional entry point and dynamic-axis ONNX export."""
from __future__ import annotations

import numpy as np
import pytest

import forgegrad as fg
import forgegrad.nn.functional as F

torch = pytest.importorskip("torch")


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _both(q, k, v, mask=None, **kw):
    """forgegrad and torch outputs and the gradients of every float input, for one cotangent."""
    g = _rand(*q.shape[:-1], v.shape[-1], seed=99)
    fg_in = [fg.tensor(a.copy(), requires_grad=a.dtype == np.float32) for a in (q, k, v)]
    t_in = [torch.from_numpy(a.copy()).requires_grad_(True) for a in (q, k, v)]
    fm = tm = None
    if mask is not None:
        fm = fg.tensor(mask.copy(), requires_grad=mask.dtype == np.float32)
        tm = torch.from_numpy(mask.copy()).requires_grad_(mask.dtype == np.float32)
    out = F.scaled_dot_product_attention(*fg_in, fm, **kw)
    (out * fg.tensor(g)).sum().backward()
    ref = torch.nn.functional.scaled_dot_product_attention(*t_in, attn_mask=tm, **kw)
    (ref * torch.from_numpy(g)).sum().backward()
    got = [out.data] + [t.grad.data for t in fg_in] + ([fm.grad.data] if fm is not None and fm.requires_grad else [])
    want = [ref.detach().numpy()] + [t.grad.numpy() for t in t_in] + (
        [tm.grad.numpy()] if tm is not None and tm.requires_grad else [])
    return got, want


def _check(q, k, v, mask=None, tol=2e-4, **kw):
    got, want = _both(q, k, v, mask, **kw)
    for i, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=f"output/gradient {i}")


@pytest.mark.parametrize("e", [16, 40, 64, 128])
@pytest.mark.parametrize("case", ["none", "causal", "bool", "float", "scale"])
def test_against_torch(e, case):
    L, S = (33, 33) if case == "causal" else (19, 37)
    q, k, v = _rand(2, 2, L, e), _rand(2, 2, S, e, seed=1), _rand(2, 2, S, e, seed=2)
    mask, kw = None, {}
    if case == "causal":
        kw["is_causal"] = True
    elif case == "bool":
        mask = np.random.default_rng(3).uniform(size=(2, 1, L, S)) > 0.4
    elif case == "float":
        mask = _rand(L, S, seed=3)
    elif case == "scale":
        kw["scale"] = 0.05
    _check(q, k, v, mask, **kw)


@pytest.mark.parametrize("L,S", [(1, 1), (1, 9), (9, 1), (65, 65), (31, 97)])
def test_lengths_causal(L, S):
    """T = 1, lengths that are no multiple of a tile, L != S (causal is top-left aligned)."""
    _check(_rand(1, 3, L, 64), _rand(1, 3, S, 64, seed=1), _rand(1, 3, S, 64, seed=2), is_causal=True)


def test_fully_masked_row_is_zero():
    q, k, v = _rand(1, 4, 8), _rand(1, 6, 8, seed=1), _rand(1, 6, 8, seed=2)
    mask = np.ones((4, 6), bool)
    mask[1] = False
    _check(q, k, v, mask)
    fmask = np.zeros((4, 6), np.float32)
    fmask[2] = -np.inf
    out = F.scaled_dot_product_attention(fg.tensor(q), fg.tensor(k), fg.tensor(v), fg.tensor(fmask))
    assert np.all(out.data[0, 2] == 0) and np.isfinite(out.data).all()


def test_grouped_query_attention():
    q, k, v = _rand(2, 6, 5, 16), _rand(2, 2, 7, 16, seed=1), _rand(2, 2, 7, 16, seed=2)
    _check(q, k, v, enable_gqa=True, is_causal=True)


def test_dropout_uses_forgegrad_generator():
    """dropout_p > 0: forgegrad's generator draws the keep-mask; with the same mask, torch's math
    gives the same output and gradients."""
    p = 0.3
    q, k, v = _rand(2, 5, 8), _rand(2, 7, 8, seed=1), _rand(2, 7, 8, seed=2)
    fg.manual_seed(11)
    keep = (fg.random.generator().random((2, 5, 7), dtype=np.float32) >= p).astype(np.float32) / np.float32(1 - p)
    fg.manual_seed(11)
    tq, tk, tv = (fg.tensor(a, requires_grad=True) for a in (q, k, v))
    out = F.scaled_dot_product_attention(tq, tk, tv, dropout_p=p)
    out.sum().backward()
    rq, rk, rv = (torch.from_numpy(a).requires_grad_(True) for a in (q, k, v))
    w = torch.softmax(rq @ rk.transpose(-1, -2) / np.sqrt(8), dim=-1) * torch.from_numpy(keep)
    ref = w @ rv
    ref.sum().backward()
    np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=1e-5, atol=1e-5)
    for a, b in ((tq, rq), (tk, rk), (tv, rv)):
        np.testing.assert_allclose(a.grad.data, b.grad.numpy(), rtol=1e-4, atol=1e-5)
    zero = F.scaled_dot_product_attention(fg.tensor(q), fg.tensor(k), fg.tensor(v), dropout_p=1.0)
    assert np.all(zero.data == 0)


def test_functional_and_meta():
    q = fg.tensor(_rand(2, 3, 5, 16)).to("meta")
    k = fg.tensor(_rand(2, 3, 9, 16)).to("meta")
    v = fg.tensor(_rand(2, 3, 9, 24)).to("meta")
    assert F.scaled_dot_product_attention(q, k, v).shape == (2, 3, 5, 24)
    with pytest.raises(ValueError, match="attn_mask must be None"):
        F.scaled_dot_product_attention(q, k, v, fg.tensor(np.ones((5, 9), bool)).to("meta"), is_causal=True)


@pytest.mark.parametrize("kind", ["causal", "bool"])
def test_onnx_dynamic_sequence(kind, tmp_path):
    pytest.importorskip("onnxruntime")

    class Attn(fg.nn.Module):
        def forward(self, x):
            mask = (x[:, :, :, :1] > -3.0) if kind == "bool" else None  # (B, H, T, 1): every key kept
            return F.scaled_dot_product_attention(x, x * 0.5, x + 1.0, None if mask is None
                                                  else mask.transpose(-1, -2), is_causal=kind == "causal")

    x = fg.tensor(_rand(2, 2, 6, 16))
    report = fg.onnx.export(Attn(), x, str(tmp_path / "a.onnx"), dynamic_axes={"x": {0: "batch", 2: "seq"}},
                            verify_sizes=[{"batch": 1, "seq": 1}, {"batch": 3, "seq": 11}])
    assert report.ok, report


def _fused_run(q, k, v, mask=None, causal=False):
    from forgegrad.kernels import attention as KA
    n, L, S = q.shape[0], q.shape[1], k.shape[1]
    m = KA.prepare_mask(mask, (n,), L, S)
    out, lse = KA.attention_forward(q, k, v, 0.125, causal, m)
    g = _rand(*out.shape, seed=9)
    return (out, lse) + KA.attention_backward(g, q, k, v, out, lse, 0.125, causal, m)


@pytest.mark.parametrize("T", [131, 300])  # the whole-row kernels for short sequences, the flash-tiled ones
@pytest.mark.parametrize("causal", [False, True])
def test_fused_kernel_bits_any_thread_count_and_isa(causal, T):
    """The fused kernels give the same bits at 1, 2 and 3 threads (forward tasks are (head, query
    block), backward tasks heads), and on every SIMD path match torch."""
    q, k, v = _rand(5, T, 40), _rand(5, T, 40, seed=1), _rand(5, T, 24, seed=2)
    mask = None if causal else _rand(5, 1, T, seed=3)
    before = fg.get_num_threads()
    try:
        runs = []
        for n in (1, 2, 3):
            fg.set_num_threads(n)
            runs.append(_fused_run(q, k, v, mask, causal))
    finally:
        fg.set_num_threads(before)
    for n, run in zip((2, 3), runs[1:]):
        for a, b in zip(runs[0], run):
            assert a.tobytes() == b.tobytes(), f"differs at {n} threads"
    isa = fg.get_simd()
    try:
        paths = ("scalar", "avx2", "avx512")
        for path in paths[:paths.index(fg.cpu_info()["detected_isa"]) + 1]:
            fg.set_simd(path)
            got = _fused_run(q, k, v, mask, causal)
            for i in (0, 2, 3, 4):
                np.testing.assert_allclose(got[i], runs[0][i], rtol=1e-4, atol=1e-5, err_msg=f"{path} output {i}")
    finally:
        fg.set_simd(isa)


@pytest.mark.parametrize("causal,masked,softcap,E,L,S", [
    (True, False, None, 64, 150, 150), (False, True, None, 40, 37, 200), (True, True, 5.0, 24, 70, 70),
    (False, False, 5.0, 64, 129, 65), (True, False, None, 64, 300, 300), (False, True, None, 40, 37, 300)])
def test_backward_split_over_key_blocks_same_bits_as_whole_pairs(causal, masked, softcap, E, L, S):
    """With fewer (batch, head) pairs than threads the backward splits each pair over its key blocks (dK,
    dV) and query tiles (dQ): the same bits as one thread per pair (1 thread), gradients as torch's."""
    from forgegrad import _C
    from forgegrad.kernels import attention as KA
    for pairs, threads in ((1, 2), (1, 3), (2, 3)):
        assert _C.attention.backward_splits(pairs, S, threads), (pairs, threads)  # the runs below take the split
    assert not _C.attention.backward_splits(2, S, 1) and not _C.attention.backward_splits(2, S, 2)
    ev = 24
    for pairs in (1, 2):
        q, k, v = _rand(pairs, L, E), _rand(pairs, S, E, seed=1), _rand(pairs, S, ev, seed=2)
        if softcap:
            q, k = q * 3, k * 3  # scores past the cap
        mask = _rand(pairs, 1, S, seed=3) if masked else None
        m = KA.prepare_mask(mask, (pairs,), L, S)
        g = _rand(pairs, L, ev, seed=9)
        before = fg.get_num_threads()
        try:
            runs = {}
            for n in (1, 2, 3):
                fg.set_num_threads(n)
                out, lse = KA.attention_forward(q, k, v, 0.125, causal, m, softcap=softcap)
                runs[n] = KA.attention_backward(g, q, k, v, out, lse, 0.125, causal, m, softcap=softcap)
        finally:
            fg.set_num_threads(before)
        for n in (2, 3):
            for name, a, b in zip("qkv", runs[1], runs[n]):
                assert a.tobytes() == b.tobytes(), f"d{name} differs at {n} threads ({pairs} pairs)"
        tq, tk, tv = (torch.from_numpy(a.astype(np.float64)).requires_grad_(True) for a in (q, k, v))
        s = (tq * 0.125) @ tk.transpose(-1, -2)
        if softcap:
            s = softcap * torch.tanh(s / softcap)
        if mask is not None:
            s = s + torch.from_numpy(mask.astype(np.float64))
        if causal:
            s = s.masked_fill(~torch.ones(L, S, dtype=torch.bool).tril(), float("-inf"))
        (torch.softmax(s, -1) @ tv).backward(torch.from_numpy(g.astype(np.float64)))
        for name, a, t in zip("qkv", runs[3], (tq, tk, tv)):
            np.testing.assert_allclose(a, t.grad.numpy(), rtol=1e-4, atol=2e-5, err_msg=f"d{name}")


def test_backward_split_rule():
    from forgegrad import _C
    split = _C.attention.backward_splits
    assert not split(1, 1000, 1)  # one thread: whole pairs
    assert not split(1, 64, 8)  # one pair of one key block: nothing to split
    assert split(1, 65, 2) and split(12, 512, 32) and split(5, 512, 4)  # most threads idle otherwise
    assert not split(12, 512, 16) and not split(3, 512, 2)  # whole pairs keep most threads busy
    with pytest.raises(ValueError, match="threads >= 1"):
        split(1, 64, 0)


@pytest.mark.parametrize("causal", [False, True])
def test_fused_forward_soft_cap_against_numpy(causal):
    """softcap (Gemma 2): the scaled scores pass through cap * tanh(s / cap) before the mask; odd lengths
    (keys past one key block, a tail row block), a float mask, every SIMD path, the same bits at 1-3 threads."""
    from forgegrad.kernels import attention as KA
    q, k, v = _rand(3, 37, 24) * 4, _rand(3, 70, 24, seed=1) * 4, _rand(3, 70, 16, seed=2)  # scores beyond the cap
    if causal:
        k, v = k[:, :37], v[:, :37]
    mask = None if causal else _rand(3, 1, 70, seed=3)
    m = KA.prepare_mask(mask, (3,), 37, k.shape[1])
    s = np.einsum("nld,nsd->nls", q.astype(np.float64) * 0.125, k.astype(np.float64))
    s = 5.0 * np.tanh(s / 5.0) + (0 if mask is None else mask)
    if causal:
        s = np.where(np.tril(np.ones((37, 37), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    want = (p / p.sum(-1, keepdims=True)) @ v.astype(np.float64)
    before, isa = fg.get_num_threads(), fg.get_simd()
    try:
        paths = ("scalar", "avx2", "avx512")
        for path in paths[:paths.index(fg.cpu_info()["detected_isa"]) + 1]:
            fg.set_simd(path)
            outs = []
            for n in (1, 2, 3):
                fg.set_num_threads(n)
                outs.append(KA.attention_forward(q, k, v, 0.125, causal, m, softcap=5.0)[0])
            np.testing.assert_allclose(outs[0], want, rtol=1e-4, atol=1e-5, err_msg=path)
            assert all(o.tobytes() == outs[0].tobytes() for o in outs[1:]), path
    finally:
        fg.set_num_threads(before)
        fg.set_simd(isa)
    plain = KA.attention_forward(q, k, v, 0.125, causal, m)[0]
    assert np.abs(plain - want).max() > 1e-3  # the cap changes these scores: the test can fail
    with pytest.raises(ValueError, match="softcap must be"):
        KA.attention_forward(q, k, v, 0.125, causal, m, softcap=0.0)


_MEMORY_CHILD = r"""
import numpy as np, forgegrad as fg
fg.set_num_threads(2)


def status_mb(field):  # this process's own figures (getrusage's maxrss would include the forking parent's)
    line = next(x for x in open("/proc/self/status") if x.startswith(field + ":"))
    return int(line.split()[1]) / 1024.0


n, T, D = 8, 4096, 64
rng = np.random.default_rng(0)
q, k, v, g = (rng.standard_normal((1, n, T, D), dtype=np.float32) for _ in range(4))


def step(t):  # through the op and autograd, as a model runs it
    args = [fg.tensor(a[:, :, :t], requires_grad=True) for a in (q, k, v)]
    fg.nn.functional.scaled_dot_product_attention(*args, is_causal=True).backward(fg.tensor(g[:, :, :t]))
    return args


step(64)  # warm-up: the pool's threads and their stacks
base = status_mb("VmRSS")
grads = step(T)
print(status_mb("VmHWM") - base)
"""


@pytest.mark.slow
def test_long_sequence_memory():
    """B=1, H=8, T=4096, D=64, causal forward + backward: the outputs (out, lse, dq, dk, dv: ~33 MB)
    and per-task tiles only, far below the 512 MB of one materialised score matrix. (Peak resident
    size, VmHWM, after the run minus the resident size before it.)"""
    import subprocess
    import sys
    res = subprocess.run([sys.executable, "-c", _MEMORY_CHILD], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    extra_mb = float(res.stdout.strip().splitlines()[-1])
    assert extra_mb < 300, f"extra peak {extra_mb:.0f} MB"
