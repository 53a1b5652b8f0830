"""StarCoder2 checkpoints written by transformers itself: logits (LayerNorms, biases, the two-layer GELU MLP,
sliding-window attention, grouped-query heads), left-padded batches, greedy and beam generation against transformers',
the KV-cache decode path, the lean decode step and prefill against the full forward, save_pretrained read back by
transformers, the ONNX export with its cache, and serving: the contiguous and paged batched engines and the server give
generate's tokens."""
import json

import numpy as np
import pytest

from forgegrad.models import from_pretrained
from forgegrad.models.hf import Starcoder2ForCausalLM
import hf_conformance as hfc
from hf_decoder_family import BASE, DecoderFamily, edited_copy, install_family_tests, prompts

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

MODELS = {
    # StarCoder2's defaults (biases, GELU tanh, a tied head) with grouped-query heads and a window of 4 tokens, which
    # the prompts (9, 10 tokens) and the generated tokens reach past
    "gqa": lambda: transformers.Starcoder2ForCausalLM(transformers.Starcoder2Config(
        **BASE, num_key_value_heads=2, sliding_window=4)),
    # no biases (the LayerNorms keep theirs), exact GELU, an untied head, no window, another rope base
    "untied": lambda: transformers.Starcoder2ForCausalLM(transformers.Starcoder2Config(
        **BASE, num_key_value_heads=3, use_bias=False, hidden_act="gelu", tie_word_embeddings=False,
        sliding_window=None, rope_parameters={"rope_type": "default", "rope_theta": 500.0})),
}
IDS, LEFT_PADDED, LEFT_MASK = prompts()


def _windows(model, name):
    assert model.sliding_windows == [4 if name == "gqa" else None] * 2


install_family_tests(globals(), DecoderFamily(
    "starcoder2", MODELS, Starcoder2ForCausalLM, transformers.Starcoder2ForCausalLM, IDS, LEFT_PADDED, LEFT_MASK,
    tied=("gqa",), check_loaded=_windows, prefill_ids=IDS[:, :4], gradients=True, default_max_positions=4096))


def test_dropout_probabilities_out_of_range_are_refused_by_name(checkpoints, tmp_path):
    root, _ = checkpoints
    for key in ("embedding_dropout", "residual_dropout", "attention_dropout"):
        dst = edited_copy(root / "gqa", tmp_path / key, lambda cfg: {**cfg, key: 1.5})
        with pytest.raises(ValueError, match=key):
            from_pretrained(dst)


def test_training_drops_the_embeddings_and_block_outputs(checkpoints):
    """With residual and embedding dropout, two training forwards differ and eval mode gives transformers' logits."""
    root, hf = checkpoints
    cfg = json.loads((root / "gqa" / "config.json").read_text())
    model = Starcoder2ForCausalLM({**cfg, "embedding_dropout": 0.3, "residual_dropout": 0.3})
    model.load_state_dict(from_pretrained(root / "gqa").state_dict())
    model.train()
    assert not np.allclose(model(IDS).numpy(), model(IDS).numpy())
    model.eval()
    hfc.check_logits(model, hf["gqa"], IDS)

