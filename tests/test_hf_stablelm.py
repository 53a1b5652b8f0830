"""StableLM checkpoints written by transformers itself: logits (LayerNorms, a partial rotary embedding, the parallel and
the sequential residual, query/key biases, per-head query/key LayerNorms, grouped-query heads), left-padded batches,
greedy and beam generation against transformers', the KV-cache decode path, the lean decode step and prefill against
the full forward, save_pretrained read back by transformers (the per-head norms split again), the ONNX export with its
cache, and serving: the contiguous and paged batched engines and the server give generate's tokens."""
import shutil

import numpy as np
import pytest

from forgegrad.models import from_pretrained
from forgegrad.models.hf import StableLmForCausalLM
from hf_decoder_family import (BASE, DecoderFamily, check_top_level_rotary_factor, edited_copy, install_family_tests,
                               prompts)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

MODELS = {
    # StableLM 2 12B's kind: parallel residual, per-head query/key norms, query/key/value biases, grouped-query heads
    "gqa": lambda: transformers.StableLmForCausalLM(transformers.StableLmConfig(
        **BASE, num_key_value_heads=2, use_parallel_residual=True, qk_layernorm=True, use_qkv_bias=True)),
    # StableLM-3B-4E1T's kind: sequential residual, a quarter of each head rotated; here a tied LM head, another base
    "tied": lambda: transformers.StableLmForCausalLM(transformers.StableLmConfig(
        **BASE, num_key_value_heads=6, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 500.0, "partial_rotary_factor": 0.5})),
}
IDS, LEFT_PADDED, LEFT_MASK = prompts()
install_family_tests(globals(), DecoderFamily(
    "stablelm", MODELS, StableLmForCausalLM, transformers.StableLmForCausalLM, IDS, LEFT_PADDED, LEFT_MASK,
    tied=("tied",), gradients=True, default_max_positions=4096))


def test_the_per_head_norms_keep_transformers_names_and_heads(checkpoints, tmp_path):
    """The checkpoint's q_layernorm.norms.<h> weights are head h's rows of the stacked weight, and save_pretrained
    writes them back under those names; a missing head is refused."""
    from forgegrad.models.hf._files import read_weights
    from safetensors.numpy import save_file
    root, _ = checkpoints
    model = from_pretrained(root / "gqa")
    raw = read_weights(str(root / "gqa"))
    stacked = model.model.layers[1].self_attn.k_norm.weight.numpy()
    assert stacked.shape == (2, 8)
    np.testing.assert_array_equal(stacked[1], raw["model.layers.1.self_attn.k_layernorm.norms.1.weight"])
    assert set(model.to_hf()) == set(raw)
    dst = tmp_path / "gap"
    shutil.copytree(root / "gqa", dst)
    raw = dict(raw)
    del raw["model.layers.0.self_attn.q_layernorm.norms.0.weight"]
    save_file({k: np.ascontiguousarray(v) for k, v in raw.items()}, str(dst / "model.safetensors"),
              metadata={"format": "pt"})
    with pytest.raises(ValueError, match="q_layernorm"):
        from_pretrained(dst)


def test_an_older_config_s_top_level_rotary_factor_and_the_default_quarter(checkpoints, tmp_path):
    """partial_rotary_factor at the top level (older configs) and none at all (transformers' default: 0.25)."""
    root, _ = checkpoints
    check_top_level_rotary_factor(root / "tied", tmp_path, transformers.StableLmForCausalLM, IDS, 0.5, 0.25)


def test_a_head_dim_apart_from_the_hidden_size_is_refused_by_name(checkpoints, tmp_path):
    root, _ = checkpoints
    dst = edited_copy(root / "tied", tmp_path / "head_dim", lambda cfg: {**cfg, "head_dim": 16})
    with pytest.raises(ValueError, match="head_dim"):
        from_pretrained(dst)

