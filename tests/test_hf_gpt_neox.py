"""GPT-NeoX (Pythia) checkpoints written by transformers itself: logits (parallel and sequential residuals, a partial
rotary embedding), left-padded batches, greedy and beam generation against transformers', the KV-cache decode path,
the lean decode step and prefill against the full forward, save_pretrained read back by transformers, the ONNX export
with its cache, and serving: the contiguous and paged batched engines and the server give generate's tokens."""
import json

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained, generate
from forgegrad.models.hf import GPTNeoXForCausalLM
import hf_conformance as hfc
from hf_decoder_family import DecoderFamily, edited_copy, install_family_tests, prompts

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

VOCAB = 300
BASE = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
            max_position_embeddings=256, initializer_range=0.3, eos_token_id=None, bos_token_id=None, pad_token_id=0)
MODELS = {
    # Pythia's defaults: parallel residual, a quarter of each head's 16 dimensions rotated
    "parallel": lambda: transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(**BASE)),
    # sequential residual, half the dimensions rotated, no attention biases, another rope base
    "sequential": lambda: transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(
        **BASE, use_parallel_residual=False, rotary_pct=0.5, rotary_emb_base=500.0, attention_bias=False)),
}
IDS, LEFT_PADDED, LEFT_MASK = prompts(VOCAB)
# the cache path runs on each checkpoint, save_pretrained and the engines on the sequential one: below
install_family_tests(globals(), DecoderFamily(
    "gpt_neox", MODELS, GPTNeoXForCausalLM, transformers.GPTNeoXForCausalLM, IDS, LEFT_PADDED, LEFT_MASK,
    main="parallel", leave_out=("test_the_cache_decode_path_equals_the_full_forward",
                                "test_save_pretrained_is_read_back_by_transformers",
                                "test_the_batched_and_paged_engines_and_the_server_give_generate_s_tokens")))


@pytest.mark.parametrize("name", list(MODELS))
def test_the_cache_decode_path_equals_the_full_forward(checkpoints, name):
    """A prompt into the cache, then one token at a time: each step's logits are the full forward's last row; and
    greedy generate is argmax decoding by hand with full forwards."""
    root, _ = checkpoints
    model = from_pretrained(root / name)
    ids = IDS
    full = model(ids).numpy()
    cache = model.new_cache(2, ids.shape[1])
    with fg.no_grad():
        first = model(ids[:, :5], cache=cache).numpy()
        steps = [model(ids[:, t:t + 1], cache=cache).numpy()[:, 0] for t in range(5, ids.shape[1])]
    np.testing.assert_allclose(first, full[:, :5], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.stack(steps, 1), full[:, 5:], rtol=1e-5, atol=1e-5)
    hfc.check_greedy_by_hand(model, ids, 6)


def test_save_pretrained_is_read_back_by_transformers(checkpoints, tmp_path):
    root, hf = checkpoints
    model = from_pretrained(root / "sequential")
    hfc.check_save_pretrained_round_trip(model, hf["sequential"], transformers.GPTNeoXForCausalLM, tmp_path / "out",
                                         IDS, architecture="GPTNeoXForCausalLM", model_type="gpt_neox")


def _older_rope(cfg):
    """An older config's rope: rotary_pct / rotary_emb_base at the top level, no rope_parameters."""
    params = cfg.pop("rope_parameters")
    return dict(cfg, rotary_pct=params["partial_rotary_factor"], rotary_emb_base=params["rope_theta"])


def test_an_older_config_and_checkpoint_names_load(checkpoints, tmp_path):
    """rotary_pct / rotary_emb_base at the top level (no rope_parameters) and the ``lm_head.weight`` name and the
    causal-mask buffers some checkpoints hold: the same model."""
    from safetensors.numpy import save_file

    from forgegrad.models.hf._files import read_weights
    root, hf = checkpoints
    dst = edited_copy(root / "sequential", tmp_path / "old", _older_rope)
    tensors = dict(read_weights(str(dst)))
    tensors["lm_head.weight"] = tensors.pop("embed_out.weight")
    tensors["gpt_neox.layers.0.attention.bias"] = np.tril(np.ones((1, 1, 8, 8), np.float32))
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(dst / "model.safetensors"),
              metadata={"format": "pt"})
    np.testing.assert_allclose(from_pretrained(dst)(IDS).numpy(), hfc._hf_logits(hf["sequential"], IDS),
                               rtol=1e-4, atol=1e-4)


def test_the_batched_and_paged_engines_and_the_server_give_generate_s_tokens(checkpoints):
    """Prompts of different lengths decoded together by the contiguous engine (padding masked in the lean step) and
    by the paged engine (block tables), and concurrent requests to the completions server (the paged engine): the
    tokens of generate, one prompt at a time."""
    root, _ = checkpoints
    hfc.check_batched_engines(str(root / "sequential"), server=True)


def test_an_odd_number_of_rotary_dimensions_rotates_as_transformers(tmp_path):
    """head_dim 12 at Pythia's rotary_pct 0.25 is 3 rotary dimensions: transformers takes frequencies
    theta^(-2i/3) for i in {0, 1} and rotates the first 4 dimensions; forgegrad's logits, lean step and greedy tokens
    are the same (it refused the config)."""
    torch.manual_seed(0)
    hf = transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(**{**BASE, "hidden_size": 48})).eval()
    hf.save_pretrained(tmp_path)
    model = from_pretrained(tmp_path)
    assert model.rotary.inv_freq.shape == (2,)
    hfc.check_logits(model, hf, IDS)
    hfc.check_lean_decode_step(model, IDS)
    np.testing.assert_array_equal(generate(model, IDS, max_new_tokens=10), hfc._hf_greedy(hf, IDS, 10))


def test_an_older_config_s_rope_scaling_applies(checkpoints, tmp_path):
    """An older config's ``rope_scaling`` (linear, factor 4) beside rotary_pct / rotary_emb_base: transformers scales
    the rope, so does forgegrad (it was dropped, the plain rope's logits)."""
    root, _ = checkpoints
    dst = edited_copy(root / "parallel", tmp_path / "scaled",
                      lambda cfg: dict(_older_rope(cfg), rope_scaling={"type": "linear", "factor": 4.0}))
    hf = transformers.GPTNeoXForCausalLM.from_pretrained(dst).eval()
    ids = np.random.RandomState(3).randint(1, VOCAB, (1, 40))
    np.testing.assert_allclose(from_pretrained(dst)(ids).numpy(), hfc._hf_logits(hf, ids), rtol=1e-4, atol=1e-4)


def test_gpt_neox_20b_s_gelu_fast_activation(tmp_path):
    """GPT-NeoX-20B's config says hidden_act "gelu_fast" (transformers' tanh approximation of GELU, as gelu_new): the
    logits, the lean step and greedy tokens are transformers' (the config was refused as an unknown activation)."""
    torch.manual_seed(0)
    hf = transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(**BASE, hidden_act="gelu_fast")).eval()
    hf.save_pretrained(tmp_path)
    model = from_pretrained(tmp_path)
    hfc.check_logits(model, hf, IDS)
    hfc.check_lean_decode_step(model, IDS)
    np.testing.assert_array_equal(generate(model, IDS, max_new_tokens=10), hfc._hf_greedy(hf, IDS, 10))


def test_a_num_key_value_heads_key_is_ignored_as_transformers_ignores_it(tmp_path):
    """GPT-NeoX has no grouped-query attention: transformers reads a config's num_key_value_heads for nothing, so a
    checkpoint whose config carries one (2 here, with 4 heads) generates transformers' tokens (the KV cache and the lean
    step took their head count from it and generate failed on a broadcast)."""
    torch.manual_seed(0)
    hf = transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(**BASE, num_key_value_heads=2)).eval()
    hf.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text()).get("num_key_value_heads") == 2
    model = from_pretrained(tmp_path)
    hfc.check_logits(model, hf, IDS)
    hfc.check_lean_decode_step(model, IDS)
    np.testing.assert_array_equal(generate(model, IDS, max_new_tokens=10), hfc._hf_greedy(hf, IDS, 10))
