"""Phi (phi-1, phi-1.5, phi-2) checkpoints written by transformers itself: logits (the parallel block, a partial rotary
embedding, LayerNorms, the two-layer GELU MLP, per-head query/key LayerNorms, grouped-query heads, the LM head's
bias), left-padded batches, greedy and beam generation against transformers', the KV-cache decode path, the lean
decode step and prefill against the full forward, save_pretrained read back by transformers (Phi's names restored),
the ONNX export with its cache, and serving: the contiguous and paged batched engines and the server give generate's
tokens."""
import json
import shutil

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained
from forgegrad.models.hf import PhiForCausalLM
import hf_conformance as hfc

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

VOCAB = 300
BASE = dict(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=2, num_attention_heads=6, intermediate_size=64,
            max_position_embeddings=256, initializer_range=0.3, eos_token_id=None, bos_token_id=None, pad_token_id=0)
MODELS = {
    # query/key LayerNorms and grouped-query heads (6 query heads on 2 key/value heads), half of each head rotated
    "gqa": lambda: transformers.PhiForCausalLM(transformers.PhiConfig(**BASE, num_key_value_heads=2,
                                                                      qk_layernorm=True)),
    # phi-2's kind: no query/key norms, every head its own keys; here three quarters rotated, another base, exact GELU
    "plain": lambda: transformers.PhiForCausalLM(transformers.PhiConfig(
        **BASE, hidden_act="gelu", rope_parameters={"rope_type": "default", "rope_theta": 500.0,
                                                    "partial_rotary_factor": 0.75})),
}
IDS = np.random.RandomState(1).randint(1, VOCAB, (2, 9))
LEFT_MASK = np.ones((2, 10), np.int64)
LEFT_MASK[0, :3] = 0
LEFT_PADDED = np.where(LEFT_MASK == 1, np.random.RandomState(2).randint(1, VOCAB, (2, 10)), 0)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return hfc.save_checkpoints(tmp_path_factory.mktemp("hf_phi"), MODELS, seed=0)


@pytest.mark.parametrize("name", list(MODELS))
def test_logits_and_left_padded_batches_equal_transformers(checkpoints, name):
    root, hf = checkpoints
    model = from_pretrained(root / name)
    assert isinstance(model, PhiForCausalLM) and not model.tied
    hfc.check_logits(model, hf[name], IDS)
    hfc.check_left_padded_logits(model, hf[name], LEFT_PADDED, LEFT_MASK, mask_only=True)


@pytest.mark.parametrize("name", list(MODELS))
def test_greedy_generation_equals_transformers(checkpoints, name):
    root, hf = checkpoints
    model = from_pretrained(root / name)
    hfc.check_greedy_generation(model, hf[name], IDS, LEFT_PADDED, LEFT_MASK, new_tokens=30, padded_new_tokens=15,
                                frozen_new_tokens=None)


def test_beam_search_equals_transformers(checkpoints):
    root, hf = checkpoints
    hfc.check_beam_search(from_pretrained(root / "gqa"), hf["gqa"], LEFT_PADDED, LEFT_MASK)


def test_the_cache_decode_path_equals_the_full_forward(checkpoints):
    """A prompt into the cache, then one token at a time: each step's logits are the full forward's last row; and
    greedy generate is argmax decoding by hand with full forwards."""
    root, _ = checkpoints
    model = from_pretrained(root / "gqa")
    full = model(IDS).numpy()
    cache = model.new_cache(2, IDS.shape[1])
    with fg.no_grad():
        first = model(IDS[:, :5], cache=cache).numpy()
        steps = [model(IDS[:, t:t + 1], cache=cache).numpy()[:, 0] for t in range(5, IDS.shape[1])]
    np.testing.assert_allclose(first, full[:, :5], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.stack(steps, 1), full[:, 5:], rtol=1e-5, atol=1e-5)
    hfc.check_greedy_by_hand(model, IDS, 6)


@pytest.mark.parametrize("name", list(MODELS))
def test_save_pretrained_is_read_back_by_transformers(checkpoints, tmp_path, name):
    root, hf = checkpoints
    model = from_pretrained(root / name)
    hfc.check_save_pretrained_round_trip(model, hf[name], transformers.PhiForCausalLM, tmp_path / "out", IDS,
                                         architecture="PhiForCausalLM", model_type="phi")


def test_onnx_export_with_past_gives_transformers_tokens(checkpoints, tmp_path):
    pytest.importorskip("onnxruntime")
    root, hf = checkpoints
    hfc.check_decoder_export_with_past(from_pretrained(root / "gqa"), hf["gqa"], tmp_path / "decoder.onnx",
                                       LEFT_PADDED, LEFT_MASK)


@pytest.mark.parametrize("name", list(MODELS))
def test_the_lean_decode_step_and_prefill_equal_the_tensor_forward(checkpoints, name):
    root, _ = checkpoints
    hfc.check_lean_step_and_prefill(from_pretrained(root / name), IDS)


def test_the_batched_and_paged_engines_and_the_server_give_generate_s_tokens(checkpoints):
    """Prompts of different lengths decoded together by the contiguous engine (padding masked in the lean step) and
    by the paged engine (block tables), and concurrent requests to the completions server (the paged engine): the
    tokens of generate, one prompt at a time."""
    root, _ = checkpoints
    hfc.check_batched_engines(str(root / "gqa"), server=True)


def test_the_checkpoint_keeps_phi_s_names(checkpoints):
    """dense, q_layernorm, k_layernorm and final_layernorm are read into o_proj, q_norm, k_norm and norm, and written
    back under Phi's names: the same tensors as transformers saved."""
    from forgegrad.models.hf._files import read_weights
    root, _ = checkpoints
    model = from_pretrained(root / "gqa")
    raw = read_weights(str(root / "gqa"))
    assert model.model.layers[0].self_attn.q_norm.bias is not None and model.lm_head.bias is not None
    np.testing.assert_array_equal(model.model.norm.bias.numpy(), raw["model.final_layernorm.bias"])
    saved = model.to_hf()
    assert set(saved) == set(raw)
    for key, value in raw.items():
        np.testing.assert_array_equal(saved[key], value)


def test_options_phi_does_not_have_are_refused_by_name(checkpoints, tmp_path):
    root, _ = checkpoints
    for key, bad in (("tie_word_embeddings", True), ("resid_pdrop", 2.0), ("embd_pdrop", -1), ("hidden_act", "gelu9")):
        dst = tmp_path / key
        shutil.copytree(root / "plain", dst)
        cfg = json.loads((dst / "config.json").read_text())
        (dst / "config.json").write_text(json.dumps({**cfg, key: bad}))
        with pytest.raises(ValueError, match=key if key != "hidden_act" else "gelu9"):
            from_pretrained(dst)


def test_an_older_config_s_top_level_rotary_factor_and_the_default_half(checkpoints, tmp_path):
    """partial_rotary_factor at the top level (older configs) and none at all (transformers' default: 0.5)."""
    root, _ = checkpoints
    for factor in (0.75, None):
        dst = tmp_path / f"old{factor}"
        shutil.copytree(root / "plain", dst)
        cfg = json.loads((dst / "config.json").read_text())
        cfg["rope_parameters"].pop("partial_rotary_factor")
        if factor is not None:
            cfg["partial_rotary_factor"] = factor
        (dst / "config.json").write_text(json.dumps(cfg))
        model = from_pretrained(dst)
        assert model.rotary.head_dim == int(8 * (factor or 0.5))
        back = transformers.PhiForCausalLM.from_pretrained(dst).eval()
        hfc.check_logits(model, back, IDS)


@pytest.mark.parametrize("name", list(MODELS))
def test_training_gradients_equal_transformers(checkpoints, name):
    root, hf = checkpoints
    hfc.check_decoder_gradients(from_pretrained(root / name), hf[name], IDS)


def test_a_config_without_max_position_embeddings_takes_transformers_default(checkpoints, tmp_path):
    root, hf = checkpoints
    name = list(MODELS)[0]
    shutil.copytree(root / name, tmp_path / name)
    cfg = json.loads((tmp_path / name / "config.json").read_text())
    del cfg["max_position_embeddings"]
    (tmp_path / name / "config.json").write_text(json.dumps(cfg))
    model = from_pretrained(tmp_path / name)
    assert model.max_positions == 2048
    hfc.check_logits(model, hf[name], IDS)
