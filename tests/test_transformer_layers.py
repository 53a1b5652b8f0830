"""nn.MultiheadAttention, the Transformer layers and stacks, and the position encodings against torch:
torch's state_dicts load unchanged and give torch's outputs and gradients (every mask kind,
need_weights both ways, batch_first both ways, kdim/vdim, norm_first both ways); bad input raises
errors naming the argument; bits identical at 1, 2 and 3 threads."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import nn
from helpers import assert_close_scaled, assert_same_bits_across_threads, fg_from_torch

pytestmark = pytest.mark.usefixtures("torch_one_thread")

E, H, N, L, S = 16, 4, 3, 5, 7


def _grads_match(ours, theirs, atol_scale=2e-5, rtol=1e-4):
    named = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        tp = named[name]
        assert p.grad is not None, name
        assert_close_scaled(p.grad, tp.grad, name, atol_scale=atol_scale, rtol=rtol)


def _masks(kind, rng):
    """(attn_mask, key_padding_mask) as numpy arrays for a mask kind."""
    am = kpm = None
    if kind in ("bool", "both"):
        am = rng.random((L, S)) > 0.7
        am[:, 0] = False  # every query keeps a key
    if kind == "float":
        am = rng.standard_normal((L, S)).astype(np.float32)
    if kind == "3d":
        am = rng.standard_normal((N * H, L, S)).astype(np.float32)
    if kind in ("kpm", "both"):
        kpm = np.zeros((N, S), bool)
        kpm[0, -3:] = True
        kpm[2, -1] = True
    if kind == "kpm_float":
        kpm = np.where(rng.random((N, S)) > 0.8, -1e4, 0.0).astype(np.float32)
    return am, kpm


def _torch_or_none(a):
    return None if a is None else torch.from_numpy(a)


MASKS = ["none", "bool", "float", "3d", "kpm", "kpm_float", "both"]
# every mask kind with need_weights both ways (and batch_first both ways); kdim/vdim with a few
MHA_CASES = ([(True, True, m, False, None) for m in MASKS] + [(False, True, m, True, None) for m in MASKS]
             + [(True, False, "both", True, 12), (False, True, "bool", False, 12), (True, True, "3d", True, 12),
                (False, True, "kpm", True, 12), (True, False, "float", False, None)])


@pytest.mark.parametrize("need_weights,average,mask,batch_first,kvdim", MHA_CASES)
def test_multihead_attention_matches_torch(rng, need_weights, average, mask, batch_first, kvdim):
    torch.manual_seed(0)
    t = torch.nn.MultiheadAttention(E, H, batch_first=batch_first, kdim=kvdim, vdim=kvdim)
    m = nn.MultiheadAttention(E, H, batch_first=batch_first, kdim=kvdim, vdim=kvdim)
    assert list(m.state_dict()) == list(t.state_dict())
    fg_from_torch(m, t)
    q = rng.standard_normal((N, L, E) if batch_first else (L, N, E)).astype(np.float32)
    kv = rng.standard_normal((N, S, kvdim or E) if batch_first else (S, N, kvdim or E)).astype(np.float32)
    am, kpm = _masks(mask, rng)
    tq, tk = torch.tensor(q, requires_grad=True), torch.tensor(kv, requires_grad=True)
    ot, wt = t(tq, tk, tk, key_padding_mask=_torch_or_none(kpm), attn_mask=_torch_or_none(am),
               need_weights=need_weights, average_attn_weights=average)
    fq, fk = fg.tensor(q, requires_grad=True), fg.tensor(kv, requires_grad=True)
    of, wf = m(fq, fk, fk, key_padding_mask=kpm, attn_mask=am, need_weights=need_weights,
               average_attn_weights=average)
    assert_close_scaled(of, ot, "output")
    if need_weights:
        assert wf.shape == tuple(wt.shape)
        assert_close_scaled(wf, wt, "weights")
    else:
        assert wf is None and wt is None
    g = rng.standard_normal(of.shape).astype(np.float32)
    ot.backward(torch.from_numpy(g))
    of.backward(fg.tensor(g))
    assert_close_scaled(fq.grad, tq.grad, "query grad", atol_scale=2e-5, rtol=1e-4)
    assert_close_scaled(fk.grad, tk.grad, "key/value grad", atol_scale=2e-5, rtol=1e-4)
    _grads_match(m, t)


@pytest.mark.parametrize("need_weights", [True, False])
def test_self_attention_causal_hint_unbatched_and_bias_kv(rng, need_weights):
    torch.manual_seed(1)
    kw = dict(add_bias_kv=True, add_zero_attn=True)
    for extra in ({}, kw):
        t = torch.nn.MultiheadAttention(E, H, **extra)
        m = nn.MultiheadAttention(E, H, **extra)
        fg_from_torch(m, t)
        x = rng.standard_normal((L, E)).astype(np.float32)  # unbatched
        causal = torch.nn.Transformer.generate_square_subsequent_mask(L)
        ot, wt = t(*[torch.from_numpy(x)] * 3, attn_mask=causal, is_causal=True, need_weights=need_weights)
        fx = fg.tensor(x)
        of, wf = m(fx, fx, fx, attn_mask=nn.Transformer.generate_square_subsequent_mask(L), is_causal=True,
                   need_weights=need_weights)
        assert of.shape == (L, E)
        assert_close_scaled(of, ot, f"output {extra}")
        if need_weights:
            assert_close_scaled(wf, wt, f"weights {extra}")


def test_square_subsequent_mask_equals_torch():
    for sz in (1, 4):
        np.testing.assert_array_equal(nn.Transformer.generate_square_subsequent_mask(sz).numpy(),
                                      torch.nn.Transformer.generate_square_subsequent_mask(sz).numpy())


def test_multihead_attention_errors():
    with pytest.raises(ValueError, match="embed_dim .*divisible by num_heads"):
        nn.MultiheadAttention(10, 3)
    m = nn.MultiheadAttention(E, H, batch_first=True)
    x = fg.randn(N, L, E)
    with pytest.raises(ValueError, match="attn_mask must have shape"):
        m(x, x, x, attn_mask=np.zeros((L, L + 1), bool))
    with pytest.raises(ValueError, match="key_padding_mask must have shape"):
        m(x, x, x, key_padding_mask=np.zeros((N + 1, L), bool))
    with pytest.raises(TypeError, match="attn_mask"):
        m(x, x, x, attn_mask=np.zeros((L, L), np.int64))
    with pytest.raises(TypeError, match="key_padding_mask"):
        m(x, x, x, key_padding_mask=np.zeros((N, L), np.int32))
    with pytest.raises(ValueError, match="is_causal=True needs attn_mask"):
        m(x, x, x, is_causal=True)
    with pytest.raises(ValueError, match="query must have embed_dim"):
        m(fg.randn(N, L, E + 1), x, x)
    with pytest.raises(ValueError, match="key should be 3-D"):
        m(x, fg.randn(L, E), x)
    with pytest.raises(ValueError, match="batch sizes differ"):
        m(x, fg.randn(N + 1, L, E), fg.randn(N + 1, L, E))


# ---- layers and stacks ---------------------------------------------------------------------------------
def _src_tgt(rng, batch_first, t_len=4):
    src = rng.standard_normal((N, S, E) if batch_first else (S, N, E)).astype(np.float32)
    tgt = rng.standard_normal((N, t_len, E) if batch_first else (t_len, N, E)).astype(np.float32)
    return src, tgt


@pytest.mark.parametrize("norm_first,batch_first,activation", [(False, False, "relu"), (True, True, "gelu"),
                                                               (False, True, "callable"), (True, False, "relu")])
def test_encoder_and_decoder_layers_match_torch(rng, norm_first, batch_first, activation):
    act_t = torch.nn.functional.silu if activation == "callable" else activation
    act_f = nn.functional.silu if activation == "callable" else activation
    kw = dict(dim_feedforward=24, dropout=0.0, batch_first=batch_first, norm_first=norm_first)
    torch.manual_seed(2)
    src, tgt = _src_tgt(rng, batch_first)
    kpm = np.zeros((N, S), bool)
    kpm[1, -2:] = True
    causal = nn.Transformer.generate_square_subsequent_mask(tgt.shape[1 if batch_first else 0])
    for kind in ("encoder", "decoder"):
        cls = "TransformerEncoderLayer" if kind == "encoder" else "TransformerDecoderLayer"
        t = getattr(torch.nn, cls)(E, H, activation=act_t, **kw)
        m = getattr(nn, cls)(E, H, activation=act_f, **kw)
        assert list(m.state_dict()) == list(t.state_dict())
        fg_from_torch(m, t)
        ts, tt = torch.tensor(src, requires_grad=True), torch.tensor(tgt, requires_grad=True)
        fs, ft = fg.tensor(src, requires_grad=True), fg.tensor(tgt, requires_grad=True)
        if kind == "encoder":
            ot = t(ts, src_key_padding_mask=torch.from_numpy(kpm))
            of = m(fs, src_key_padding_mask=kpm)
        else:
            ot = t(tt, ts, tgt_mask=torch.from_numpy(causal.numpy()), memory_key_padding_mask=torch.from_numpy(kpm),
                   tgt_is_causal=True)
            of = m(ft, fs, tgt_mask=causal, memory_key_padding_mask=kpm, tgt_is_causal=True)
        assert_close_scaled(of, ot, kind)
        g = rng.standard_normal(of.shape).astype(np.float32)
        ot.backward(torch.from_numpy(g))
        of.backward(fg.tensor(g))
        assert_close_scaled(fs.grad, ts.grad, f"{kind} src grad", atol_scale=2e-5, rtol=1e-4)
        _grads_match(m, t)


@pytest.mark.parametrize("batch_first,norm_first", [(False, False), (True, True)])
def test_transformer_matches_torch_with_masks(rng, batch_first, norm_first):
    torch.manual_seed(3)
    kw = dict(d_model=E, nhead=H, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=24, dropout=0.0,
              batch_first=batch_first, norm_first=norm_first)
    t, m = torch.nn.Transformer(**kw), nn.Transformer(**kw)
    assert list(m.state_dict()) == list(t.state_dict())
    fg_from_torch(m, t)
    src, tgt = _src_tgt(rng, batch_first)
    kpm = np.zeros((N, S), bool)
    kpm[0, -1] = True
    mask = nn.Transformer.generate_square_subsequent_mask(4)
    ot = t(torch.from_numpy(src), torch.from_numpy(tgt), tgt_mask=torch.from_numpy(mask.numpy()),
           src_key_padding_mask=torch.from_numpy(kpm), memory_key_padding_mask=torch.from_numpy(kpm))
    of = m(fg.tensor(src), fg.tensor(tgt), tgt_mask=mask, src_key_padding_mask=kpm, memory_key_padding_mask=kpm)
    assert_close_scaled(of, ot, "transformer", atol_scale=1e-5)
    ot.sum().backward()
    of.sum().backward()
    _grads_match(m, t, atol_scale=5e-5)
    with pytest.raises(ValueError, match="batch number of src and tgt"):
        bad = fg.randn(N + 1, 4, E) if batch_first else fg.randn(4, N + 1, E)
        m(fg.tensor(src), bad)
    with pytest.raises(ValueError, match="d_model"):
        m(fg.tensor(src), fg.randn(*tgt.shape[:-1], E + 1))


def test_layer_argument_errors():
    with pytest.raises(ValueError, match="activation should be relu/gelu"):
        nn.TransformerEncoderLayer(E, H, activation="tanh")
    with pytest.raises(ValueError, match="divisible by num_heads"):
        nn.TransformerDecoderLayer(10, 3)
    with pytest.raises(ValueError, match="num_layers"):
        nn.TransformerEncoder(nn.TransformerEncoderLayer(E, H), 0)


def test_encoder_layer_dropout_trains_and_eval_is_deterministic():
    fg.manual_seed(0)
    m = nn.TransformerEncoderLayer(E, H, 24, dropout=0.5, batch_first=True)
    x = fg.randn(N, L, E)
    m.train()
    assert not np.array_equal(m(x).numpy(), m(x).numpy())
    m.eval()
    np.testing.assert_array_equal(m(x).numpy(), m(x).numpy())


def test_same_bits_at_1_2_3_threads(threads, rng):
    fg.manual_seed(4)
    m = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True, norm_first=True)
    x = rng.standard_normal((2, 40, 32)).astype(np.float32)
    mask = nn.Transformer.generate_square_subsequent_mask(40)

    def run():
        m.zero_grad()
        xt = fg.tensor(x, requires_grad=True)
        y = m(xt, src_mask=mask, is_causal=True)
        (y * y).sum().backward()
        return [y.numpy().copy(), xt.grad.numpy().copy()] + [p.grad.numpy().copy() for p in m.parameters()]

    assert_same_bits_across_threads(run, threads)


# ---- position encodings -----------------------------------------------------------------------------------
def test_sinusoidal_encoding_matches_the_formula():
    pe = nn.sinusoidal_position_encoding(50, 16)
    t = np.arange(50)[:, None]
    i = np.arange(8)[None, :]
    np.testing.assert_allclose(pe[:, 0::2], np.sin(t / 10000 ** (2 * i / 16)), atol=1e-6)
    np.testing.assert_allclose(pe[:, 1::2], np.cos(t / 10000 ** (2 * i / 16)), atol=1e-6)
    layer = nn.SinusoidalPositionalEncoding(16, max_len=50)
    x = fg.randn(2, 9, 16)
    np.testing.assert_allclose(layer(x).numpy(), x.numpy() + pe[:9], atol=1e-6)
    assert "pe" not in layer.state_dict()
    with pytest.raises(ValueError, match="exceeds max_len=50"):
        layer(fg.randn(1, 51, 16))


def test_rotary_is_a_complex_rotation_of_the_half_pairs():
    """RoFormer's definition: pair i = (x[i], x[i + D/2]) as a complex number, times exp(1j t theta_i)
    with theta_i = 10000^(-2i/D) (Hugging Face LLaMA's "rotate half" layout), written independently."""
    rng = np.random.default_rng(0)
    q = rng.standard_normal((2, 3, 6, 8)).astype(np.float32)
    k = rng.standard_normal((2, 3, 6, 8)).astype(np.float32)
    rope = nn.RotaryEmbedding(8, max_len=16)
    fq, fk = rope(fg.tensor(q), fg.tensor(k), offset=2)

    def reference(x):
        z = x[..., :4].astype(np.float64) + 1j * x[..., 4:]
        theta = 10000.0 ** (-np.arange(4) * 2 / 8)
        z = z * np.exp(1j * np.arange(2, 8)[:, None] * theta[None, :])
        return np.concatenate([z.real, z.imag], axis=-1)

    np.testing.assert_allclose(fq.numpy(), reference(q), atol=2e-6)
    np.testing.assert_allclose(fk.numpy(), reference(k), atol=2e-6)
    # q.k depends on the positions only through their difference
    a = fg.tensor(q[:, :, :1])
    s1 = (rope(a, a, offset=3)[0] * rope(a, a, offset=5)[1]).sum().item()
    s2 = (rope(a, a, offset=7)[0] * rope(a, a, offset=9)[1]).sum().item()
    assert abs(s1 - s2) < 1e-4
    with pytest.raises(ValueError, match="head_dim=8"):
        rope(fg.randn(1, 1, 2, 6), fg.randn(1, 1, 2, 6))


def test_learned_positions_get_gradients_for_used_rows():
    layer = nn.LearnedPositionalEmbedding(10, 4)
    y = layer(fg.zeros(2, 3, 4))
    y.sum().backward()
    g = layer.weight.grad.numpy()
    np.testing.assert_array_equal(g[:3], np.full((3, 4), 2.0, np.float32))
    np.testing.assert_array_equal(g[3:], 0.0)
