"""Attention-weight dropout in training, from each architecture's config key (GPT-2's attn_pdrop, BERT's
attention_probs_dropout_prob, the Llama family's attention_dropout, Gemma 2's with its soft cap): at probability 1
every weight is dropped, so training-mode outputs equal transformers' with nothing random left; at 0.3 a seed repeats
its draw, eval mode is unaffected, and a probability outside [0, 1] is refused naming the key."""
import json

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

VOCAB = 64
LLAMA = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=40,
             vocab_size=VOCAB, max_position_embeddings=32, initializer_range=0.3)
MODELS = {  # name: (builder taking the dropout probability, its config key)
    "gpt2": (lambda p: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=VOCAB, n_positions=32, initializer_range=0.3, attn_pdrop=p,
        resid_pdrop=0.0, embd_pdrop=0.0)), "attn_pdrop"),
    "bert": (lambda p: transformers.BertModel(transformers.BertConfig(
        num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=40, vocab_size=VOCAB,
        max_position_embeddings=32, attention_probs_dropout_prob=p, hidden_dropout_prob=0.0)),
        "attention_probs_dropout_prob"),
    "llama": (lambda p: transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA, attention_dropout=p)),
              "attention_dropout"),
    "gemma2": (lambda p: transformers.Gemma2ForCausalLM(transformers.Gemma2Config(
        **LLAMA, head_dim=8, query_pre_attn_scalar=8, sliding_window=4, attn_logit_softcapping=2.0,
        final_logit_softcapping=3.0, attention_dropout=p)), "attention_dropout"),
}
IDS = np.random.RandomState(0).randint(1, VOCAB, (2, 9))


def _outputs(out):
    return (out.logits if hasattr(out, "logits") else out.last_hidden_state).numpy()


def _ours(model):
    out = model(IDS)
    return (out if isinstance(out, fg.Tensor) else out[0]).numpy()


@pytest.mark.parametrize("name", list(MODELS))
def test_attention_dropout_in_training(name, tmp_path):
    make, key = MODELS[name]
    torch.manual_seed(0)
    hf = make(1.0)
    if name == "gemma2":
        hf.config._attn_implementation = "eager"  # transformers' sdpa path does not take the soft cap
    hf.train()
    hf.save_pretrained(tmp_path / "m")
    model = from_pretrained(tmp_path / "m").train()
    with torch.no_grad():
        want = _outputs(hf(torch.tensor(IDS)))
    np.testing.assert_allclose(_ours(model), want, rtol=1e-4, atol=1e-4)
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg[key] = 0.3
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    model = from_pretrained(tmp_path / "m")
    with fg.no_grad():
        calm = _ours(model.eval())
        model.train()
        fg.manual_seed(1)
        first = _ours(model)
        fg.manual_seed(1)
        np.testing.assert_array_equal(_ours(model), first)
        assert not np.allclose(first, calm)
        np.testing.assert_array_equal(_ours(model.eval()), calm)
    cfg[key] = -0.5
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=f"{key} must be a probability in \\[0, 1\\], got -0.5"):
        from_pretrained(tmp_path / "m")
