"""The HF decoders' gradient_checkpointing_enable() against transformers' with its own enabled: a left-padded batch
(attention mask), rope position ids, in training mode; every parameter's gradient equals transformers' (float64
copy), and with attention dropout the checkpointed run's gradients equal the plain run's bit for bit."""
import copy

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

VOCAB = 48
LLAMA = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=40,
             vocab_size=VOCAB, max_position_embeddings=32, initializer_range=0.3)
IDS = np.random.RandomState(0).randint(1, VOCAB, (2, 8))
# left padding for Llama; right for Gemma 2, whose eager attention gives padded rows (nothing to attend) NaN
MASKS = {"llama": np.array([[0, 0, 1, 1, 1, 1, 1, 1], [1] * 8], np.int64),
         "gemma2": np.array([[1, 1, 1, 1, 1, 1, 0, 0], [1] * 8], np.int64)}


def _hf(name, dropout):
    torch.manual_seed(0)
    if name == "llama":
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA, attention_dropout=dropout))
    hf = transformers.Gemma2ForCausalLM(transformers.Gemma2Config(
        **LLAMA, head_dim=8, query_pre_attn_scalar=8, sliding_window=4, attn_logit_softcapping=2.0,
        final_logit_softcapping=3.0, attention_dropout=dropout))
    hf.config._attn_implementation = "eager"
    return hf


def _weights(mask):
    return np.random.RandomState(1).standard_normal(IDS.shape + (VOCAB,)) * mask[..., None]  # no loss on padding


def _ours(model, mask, ckpt, seed=0):
    if ckpt:
        model.gradient_checkpointing_enable()
    else:
        model.gradient_checkpointing_disable()
    model.train()
    model.zero_grad()
    fg.manual_seed(seed)
    (model(IDS, attention_mask=mask) * fg.tensor(_weights(mask).astype(np.float32))).sum().backward()
    return {k: p.grad.numpy().copy() for k, p in model.named_parameters()}


@pytest.mark.parametrize("name", ["llama", "gemma2"])
def test_gradients_equal_transformers_with_gradient_checkpointing(name, tmp_path):
    hf = _hf(name, 0.0)
    hf.save_pretrained(tmp_path / "m")
    ref = copy.deepcopy(hf).double().train()
    ref.activation_checkpointing_enable({"use_reentrant": False})  # (5.x name of gradient_checkpointing_enable)
    out = ref(torch.tensor(IDS), attention_mask=torch.tensor(MASKS[name])).logits
    (out * torch.tensor(_weights(MASKS[name]))).sum().backward()
    want = {k: p.grad.numpy() for k, p in ref.named_parameters()}
    model = from_pretrained(tmp_path / "m")
    _ours(model, MASKS[name], True)
    # the gradients, named as saved (to_hf is affine: Gemma's norms store 1 + w, so its value at zero comes off)
    model.load_state_dict({k: fg.zeros(*p.shape) for k, p in model.named_parameters()})
    offset = {k: np.array(v, copy=True) for k, v in model.to_hf().items()}
    model.load_state_dict({k: p.grad for k, p in model.named_parameters()})
    got = {k: v - offset[k] for k, v in model.to_hf().items()}
    assert set(got) == set(want)
    scale = max(float(np.abs(g).max()) for g in want.values())
    for key, g in want.items():
        np.testing.assert_allclose(got[key], g, rtol=1e-4, atol=1e-5 * scale, err_msg=key)


@pytest.mark.parametrize("name", ["llama", "gemma2"])
def test_attention_dropout_draws_the_same_masks_when_recomputed(name, tmp_path):
    _hf(name, 0.3).save_pretrained(tmp_path / "m")
    model = from_pretrained(tmp_path / "m")
    plain, ckpt = _ours(model, MASKS[name], False), _ours(model, MASKS[name], True)
    assert model.is_gradient_checkpointing
    for k in plain:
        np.testing.assert_array_equal(ckpt[k], plain[k], err_msg=k)
    other = _ours(model, MASKS[name], True, seed=1)  # the dropout is live: another seed, other gradients
    assert any(not np.array_equal(other[k], plain[k]) for k in plain)
