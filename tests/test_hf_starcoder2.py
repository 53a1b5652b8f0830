"""StarCoder2 checkpoints written by transformers itself: logits (LayerNorms, biases, the two-layer GELU MLP,
sliding-window attention, grouped-query heads), left-padded batches, greedy and beam generation against transformers',
the KV-cache decode path, the lean decode step and prefill against the full forward, save_pretrained read back by
transformers, the ONNX export with its cache, and serving: the contiguous and paged batched engines and the server give
generate's tokens."""
import json
import shutil

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained
from forgegrad.models.hf import Starcoder2ForCausalLM
import hf_conformance as hfc

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

VOCAB = 300
BASE = dict(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=2, num_attention_heads=6, intermediate_size=64,
            max_position_embeddings=256, initializer_range=0.3, eos_token_id=None, bos_token_id=None, pad_token_id=0)
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
IDS = np.random.RandomState(1).randint(1, VOCAB, (2, 9))
LEFT_MASK = np.ones((2, 10), np.int64)
LEFT_MASK[0, :3] = 0
LEFT_PADDED = np.where(LEFT_MASK == 1, np.random.RandomState(2).randint(1, VOCAB, (2, 10)), 0)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return hfc.save_checkpoints(tmp_path_factory.mktemp("hf_starcoder2"), MODELS, seed=0)


@pytest.mark.parametrize("name", list(MODELS))
def test_logits_and_left_padded_batches_equal_transformers(checkpoints, name):
    root, hf = checkpoints
    model = from_pretrained(root / name)
    assert isinstance(model, Starcoder2ForCausalLM) and model.tied == (name == "gqa")
    assert model.sliding_windows == [4 if name == "gqa" else None] * 2
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
    hfc.check_save_pretrained_round_trip(model, hf[name], transformers.Starcoder2ForCausalLM, tmp_path / "out", IDS,
                                         architecture="Starcoder2ForCausalLM", model_type="starcoder2")


def test_onnx_export_with_past_gives_transformers_tokens(checkpoints, tmp_path):
    pytest.importorskip("onnxruntime")
    root, hf = checkpoints
    hfc.check_decoder_export_with_past(from_pretrained(root / "gqa"), hf["gqa"], tmp_path / "decoder.onnx",
                                       LEFT_PADDED, LEFT_MASK)


@pytest.mark.parametrize("name", list(MODELS))
def test_the_lean_decode_step_and_prefill_equal_the_tensor_forward(checkpoints, name):
    """The decode step masks the keys before the window; the fused prefill takes prompts within it."""
    root, _ = checkpoints
    hfc.check_lean_step_and_prefill(from_pretrained(root / name), IDS, prefill_ids=IDS[:, :4])


def test_the_batched_and_paged_engines_and_the_server_give_generate_s_tokens(checkpoints):
    """Prompts of different lengths decoded together by the contiguous engine (padding masked in the lean step) and
    by the paged engine (block tables), and concurrent requests to the completions server (the paged engine): the
    tokens of generate, one prompt at a time."""
    root, _ = checkpoints
    hfc.check_batched_engines(str(root / "gqa"), server=True)


def test_dropout_probabilities_out_of_range_are_refused_by_name(checkpoints, tmp_path):
    root, _ = checkpoints
    for key in ("embedding_dropout", "residual_dropout", "attention_dropout"):
        dst = tmp_path / key
        shutil.copytree(root / "gqa", dst)
        cfg = json.loads((dst / "config.json").read_text())
        (dst / "config.json").write_text(json.dumps({**cfg, key: 1.5}))
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
    assert model.max_positions == 4096
    hfc.check_logits(model, hf[name], IDS)
