"""Phi (phi-1, phi-1.5, phi-2) checkpoints written by transformers itself: logits (the parallel block, a partial rotary
embedding, LayerNorms, the two-layer GELU MLP, per-head query/key LayerNorms, grouped-query heads, the LM head's
bias), left-padded batches, greedy and beam generation against transformers', the KV-cache decode path, the lean
decode step and prefill against the full forward, save_pretrained read back by transformers (Phi's names restored),
the ONNX export with its cache, and serving: the contiguous and paged batched engines and the server give generate's
tokens."""

import numpy as np
import pytest

from forgegrad.models import from_pretrained
from forgegrad.models.hf import PhiForCausalLM
from hf_decoder_family import (BASE, DecoderFamily, check_top_level_rotary_factor, edited_copy, install_family_tests,
                               prompts)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

MODELS = {
    # query/key LayerNorms and grouped-query heads (6 query heads on 2 key/value heads), half of each head rotated
    "gqa": lambda: transformers.PhiForCausalLM(transformers.PhiConfig(**BASE, num_key_value_heads=2,
                                                                      qk_layernorm=True)),
    # phi-2's kind: no query/key norms, every head its own keys; here three quarters rotated, another base, exact GELU
    "plain": lambda: transformers.PhiForCausalLM(transformers.PhiConfig(
        **BASE, hidden_act="gelu", rope_parameters={"rope_type": "default", "rope_theta": 500.0,
                                                    "partial_rotary_factor": 0.75})),
}
IDS, LEFT_PADDED, LEFT_MASK = prompts()
install_family_tests(globals(), DecoderFamily(
    "phi", MODELS, PhiForCausalLM, transformers.PhiForCausalLM, IDS, LEFT_PADDED, LEFT_MASK,
    tied=(), gradients=True, default_max_positions=2048))


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
        dst = edited_copy(root / "plain", tmp_path / key, lambda cfg: {**cfg, key: bad})
        with pytest.raises(ValueError, match=key if key != "hidden_act" else "gelu9"):
            from_pretrained(dst)


def test_an_older_config_s_top_level_rotary_factor_and_the_default_half(checkpoints, tmp_path):
    """partial_rotary_factor at the top level (older configs) and none at all (transformers' default: 0.5)."""
    root, _ = checkpoints
    check_top_level_rotary_factor(root / "plain", tmp_path, transformers.PhiForCausalLM, IDS, 0.75, 0.5)

