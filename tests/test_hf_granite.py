"""Granite checkpoints written by transformers itself: logits (the embedding, attention, residual and logits
multipliers, grouped-query heads), left-padded batches, greedy and beam generation against transformers', the KV-cache
decode path, the lean decode step and prefill against the full forward, save_pretrained read back by transformers, the
ONNX export with its cache, and serving: the contiguous and paged batched engines and the server give generate's
tokens."""

import pytest

from forgegrad.models import from_pretrained
from forgegrad.models.hf import CheckpointError, GraniteForCausalLM
from hf_decoder_family import BASE, DecoderFamily, edited_copy, install_family_tests, prompts

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

# Granite 3's kind of scalars: scaled-up embeddings, a small attention scale and residual multiplier, divided logits
SCALARS = dict(embedding_multiplier=6.0, attention_multiplier=0.09, residual_multiplier=0.4, logits_scaling=2.5)
MODELS = {
    # grouped-query attention (6 query heads on 2 key/value heads)
    "gqa": lambda: transformers.GraniteForCausalLM(transformers.GraniteConfig(**BASE, **SCALARS,
                                                                                num_key_value_heads=2)),
    # biases on the attention projections and the MLP, a tied LM head, another rope base
    "tied": lambda: transformers.GraniteForCausalLM(transformers.GraniteConfig(
        **BASE, **SCALARS, attention_bias=True, mlp_bias=True, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 500.0})),
}
IDS, LEFT_PADDED, LEFT_MASK = prompts()
install_family_tests(globals(), DecoderFamily(
    "granite", MODELS, GraniteForCausalLM, transformers.GraniteForCausalLM, IDS, LEFT_PADDED, LEFT_MASK,
    tied=("tied",), gradients=True, default_max_positions=2048))


@pytest.mark.parametrize("key", list(SCALARS))
def test_a_zero_or_non_numeric_multiplier_is_refused_by_name(checkpoints, tmp_path, key):
    root, _ = checkpoints
    for bad in (0, "2"):
        dst = edited_copy(root / "gqa", tmp_path / f"bad{bad}", lambda cfg: {**cfg, key: bad})
        with pytest.raises((ValueError, CheckpointError), match=key):
            from_pretrained(dst)

