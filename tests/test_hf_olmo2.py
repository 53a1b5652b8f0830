"""OLMo 2 checkpoints written by transformers itself: logits (grouped-query heads, norms after attention and the MLP,
query/key RMSNorms over the whole projection), left-padded batches, greedy and beam generation against
transformers', the KV-cache decode path, the lean decode step and prefill against the full forward, save_pretrained
read back by transformers, the ONNX export with its cache, and serving: the contiguous and paged batched engines and
the server give generate's tokens."""

import pytest

from forgegrad.models.hf import Olmo2ForCausalLM
from hf_decoder_family import BASE, DecoderFamily, install_family_tests, prompts

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

MODELS = {
    # grouped-query attention (6 query heads on 2 key/value heads)
    "gqa": lambda: transformers.Olmo2ForCausalLM(transformers.Olmo2Config(**BASE, num_key_value_heads=2)),
    # biases on the attention projections, a tied LM head, another rope base
    "tied": lambda: transformers.Olmo2ForCausalLM(transformers.Olmo2Config(
        **BASE, attention_bias=True, tie_word_embeddings=True, rope_parameters={"rope_type": "default",
                                                                                "rope_theta": 500.0})),
}
IDS, LEFT_PADDED, LEFT_MASK = prompts()
install_family_tests(globals(), DecoderFamily(
    "olmo2", MODELS, Olmo2ForCausalLM, transformers.Olmo2ForCausalLM, IDS, LEFT_PADDED, LEFT_MASK, tied=("tied",)))

