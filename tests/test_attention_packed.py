"""Causal self-attention on a packed q/k/v projection (ops.attention.packed_causal_attention, the path
GPT's attention takes): against torch's split + SDPA + head merge on odd shapes (head sizes that are
not a multiple of the SIMD width, lengths that are not a multiple of a tile), bit-identical to the
composed ops (head split, scaled_dot_product_attention, merge) and across thread counts and ISAs, and
GPT's forward/backward bit-identical with and without it."""
from __future__ import annotations

import numpy as np
import pytest

import forgegrad as fg
import forgegrad.nn.functional as F
from forgegrad.ops.attention import packed_causal_attention

torch = pytest.importorskip("torch")

SHAPES = [(2, 70, 3, 24), (1, 1, 1, 8), (3, 129, 4, 64), (2, 33, 2, 5), (1, 65, 2, 40)]  # (B, T, H, D)


def _data(B, T, H, D, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((B, T, 3 * H * D)).astype(np.float32),
            rng.standard_normal((B, T, H * D)).astype(np.float32))


def _packed(qkv, g, H):
    x = fg.tensor(qkv.copy(), requires_grad=True)
    y = packed_causal_attention(x, H)
    y.backward(fg.tensor(g))
    return y.numpy(), x.grad.numpy()


def _composed(qkv, g, H):
    B, T, C3 = qkv.shape
    D = C3 // (3 * H)
    x = fg.tensor(qkv.copy(), requires_grad=True)
    p = x.reshape(B, T, 3, H, D).permute(2, 0, 3, 1, 4)
    y = F.scaled_dot_product_attention(p[0], p[1], p[2], is_causal=True).permute(0, 2, 1, 3).reshape(B, T, H * D)
    y.backward(fg.tensor(g))
    return y.numpy(), x.grad.numpy()


@pytest.mark.parametrize("shape", SHAPES)
def test_against_torch_and_composed(shape):
    B, T, H, D = shape
    qkv, g = _data(*shape)
    out, grad = _packed(qkv, g, H)
    tx = torch.from_numpy(qkv.copy()).requires_grad_(True)
    q, k, v = (a.view(B, T, H, D).transpose(1, 2) for a in tx.split(H * D, dim=2))
    ty = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, -1)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(out, ty.detach().numpy(), rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(grad, tx.grad.numpy(), rtol=1e-4, atol=2e-5)
    c_out, c_grad = _composed(qkv, g, H)  # the same kernel arithmetic, only the layout differs
    assert out.tobytes() == c_out.tobytes() and grad.tobytes() == c_grad.tobytes()


def test_no_graph_and_bits_any_thread_count_and_isa():
    qkv, g = _data(2, 131, 3, 40, seed=1)
    with fg.no_grad():
        inf = packed_causal_attention(fg.tensor(qkv), 3).numpy()
    before = fg.get_num_threads()
    try:
        runs = []
        for n in (1, 2, 3):
            fg.set_num_threads(n)
            runs.append(_packed(qkv, g, 3))
    finally:
        fg.set_num_threads(before)
    assert inf.tobytes() == runs[0][0].tobytes()
    for run in runs[1:]:
        assert all(a.tobytes() == b.tobytes() for a, b in zip(runs[0], run))
    isa = fg.get_simd()
    try:
        paths = ("scalar", "avx2", "avx512")
        for path in paths[:paths.index(fg.cpu_info()["detected_isa"]) + 1]:
            fg.set_simd(path)
            for a, b in zip(_packed(qkv, g, 3), runs[0]):
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=path)
    finally:
        fg.set_simd(isa)


def test_bad_arguments():
    from forgegrad.kernels import attention as KA
    with pytest.raises(ValueError, match="3 x heads"):
        KA.attention_forward_packed(np.zeros((1, 4, 10), np.float32), 2)
    with pytest.raises(ValueError, match="heads"):
        KA.attention_forward_packed(np.zeros((1, 4, 12), np.float32), 0)


def test_gpt_same_bits_as_composed_path(monkeypatch):
    """GPT's training forward/backward through the packed kernel equals the composed ops bit for bit."""
    from forgegrad.models import GPT
    from forgegrad.models import transformer as T

    def run():
        fg.manual_seed(0)
        model = GPT(vocab_size=37, block_size=16, n_layer=2, n_head=3, n_embd=24)
        idx = fg.tensor(np.random.default_rng(0).integers(0, 37, (2, 11)))
        loss = F.cross_entropy(model(idx).reshape(-1, 37), fg.tensor(np.random.default_rng(1).integers(0, 37, 22)))
        loss.backward()
        return [loss.numpy()] + [p.grad.numpy() for p in model.parameters()]

    fused = run()
    monkeypatch.setattr(T, "recorder", lambda: object())  # what a trace sees: the composed ops
    composed = run()
    assert all(a.tobytes() == b.tobytes() for a, b in zip(fused, composed))


def test_gpt_inference_fast_path_same_bits_and_respects_hooks():
    """GPT's graph-free forward runs the blocks straight on the kernels: the same bits as the module
    path; a forward pre-hook, a replaced layer or active dropout sends it back to the modules."""
    from forgegrad.models import GPT
    fg.manual_seed(0)
    model = GPT(vocab_size=37, block_size=16, n_layer=2, n_head=3, n_embd=24, bias=False).eval()
    idx = fg.tensor(np.random.default_rng(0).integers(0, 37, (2, 11)))
    with fg.no_grad():
        fast = model(idx).numpy()
    ref = model(idx).detach().numpy()  # with a graph: the module path
    assert fast.tobytes() == ref.tobytes()
    block = model.transformer.h[1]
    assert block._plain()
    handle = block.ln_2.register_forward_pre_hook(lambda m, args: (args[0] * 0.0,))
    assert not block._plain()
    with fg.no_grad():
        hooked = model(idx).numpy()
    handle.remove()
    assert not np.allclose(hooked, fast)  # the hook ran
    model.train()
    assert block._plain()  # dropout p = 0: still the identity
    model.transformer.h[0].attn.resid_dropout.p = 0.5
    assert not model.transformer.h[0]._plain()
