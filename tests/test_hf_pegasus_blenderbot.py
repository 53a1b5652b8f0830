"""Pegasus, BlenderBot and BlenderBot-small (BART's family: models/hf/bart.py) from checkpoints transformers wrote:
logits with padding, greedy / beam / seeded sampling generation, the lean decode step, float64 gradients of every
parameter and save_pretrained against transformers; the ONNX export with its caches in onnxruntime; the completions
server on the paged KV pool giving generate's tokens."""
import json

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained, save_pretrained

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
pytestmark = pytest.mark.usefixtures("torch_one_thread")  # transformers' generate crawls on a busy machine

from hf_conformance import (check_lean_seq2seq_step, check_seq2seq_generation, check_seq2seq_gradients,  # noqa: E402
                            check_seq2seq_onnx_greedy, check_seq2seq_paged_server, seq2seq_logits, weight_variant)

VOCAB = 120
_COMMON = dict(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=3, encoder_attention_heads=4,
               decoder_attention_heads=2, encoder_ffn_dim=48, decoder_ffn_dim=40, max_position_embeddings=64,
               dropout=0.0, init_std=0.3, scale_embedding=True)
MODELS = {
    # sinusoidal positions from row 0, pre-norm layers and final norms, the pad token (0) starts, eos 1
    "pegasus": lambda: transformers.PegasusForConditionalGeneration(transformers.PegasusConfig(**_COMMON)),
    # pre-norm, learned positions from row 0, no embedding norm; its config's encoder_no_repeat_ngram_size 3
    "blenderbot": lambda: transformers.BlenderbotForConditionalGeneration(transformers.BlenderbotConfig(**_COMMON)),
    # post-norm; the encoder normalizes tokens + positions, the decoder its tokens before adding positions
    "blenderbot_small": lambda: transformers.BlenderbotSmallForConditionalGeneration(
        transformers.BlenderbotSmallConfig(**_COMMON)),
}


@pytest.fixture(scope="module", params=list(MODELS))
def pair(request, tmp_path_factory):
    """(transformers model, forgegrad's from_pretrained of its checkpoint, the directory); every LayerNorm and the
    final_logits_bias random, so that a misplaced or missing one is seen."""
    torch.manual_seed(0)
    hf = MODELS[request.param]().eval()
    with torch.no_grad():
        for m in hf.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.normal_(1.0, 0.3)
                m.bias.normal_(0.0, 0.3)
        hf.final_logits_bias.normal_()
    path = tmp_path_factory.mktemp("s2s") / request.param
    hf.save_pretrained(path)
    return hf, from_pretrained(path), path


def _inputs():
    rng = np.random.RandomState(0)
    ids = rng.randint(3, VOCAB, (3, 10))
    mask = np.ones((3, 10), np.int64)
    mask[1, 6:] = 0  # right padding
    mask[2, 2:] = 0
    dec = rng.randint(3, VOCAB, (3, 5))
    return ids, mask, dec


def test_logits_lean_step_and_save_pretrained_are_transformers(pair, tmp_path):
    hf, model, _ = pair
    ids, mask, dec = _inputs()
    dec[:, 0] = model.decoder_start_token_id
    want = seq2seq_logits(hf, ids, mask, dec)
    np.testing.assert_allclose(model(ids, mask, dec).numpy(), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    with fg.no_grad():
        np.testing.assert_allclose(model(ids, mask, dec).numpy(), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    from forgegrad.models.hf._decode_seq2seq import BartLeanStep
    check_lean_seq2seq_step(model, BartLeanStep, ids, mask, model.decoder.layers[0])
    save_pretrained(model, tmp_path / "saved")
    cfg = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert cfg["architectures"] == [type(hf).__name__] and cfg["model_type"] == hf.config.model_type
    back = type(hf).from_pretrained(tmp_path / "saved").eval()
    np.testing.assert_allclose(seq2seq_logits(back, ids, mask, dec), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("weights", ["bfloat16", "int8"])
def test_lean_step_takes_bfloat16_and_int8_weights(pair, tmp_path, weights):
    """A bfloat16 checkpoint loaded as stored and an int8 weight-only model: the lean step gives their Tensor decode's
    logits and generate takes it."""
    from forgegrad.models.hf._decode_seq2seq import BartLeanStep
    hf, _, path = pair
    model = weight_variant(hf, path, weights, tmp_path)
    ids, mask, _ = _inputs()
    check_lean_seq2seq_step(model, BartLeanStep, ids, mask, model.decoder.layers[0], steps=10, new_tokens=8)


def test_greedy_beam_and_sampled_generation_are_transformers(pair):
    """The config's forced end token and BlenderBot's encoder_no_repeat_ngram_size on both sides."""
    hf, model, _ = pair
    check_seq2seq_generation(hf, model, *_inputs()[:2])


def test_gradients_of_every_parameter_are_transformers_in_float64(pair):
    """Every parameter's gradient, the shared table's pad row included (the decoder starts at the pad token in Pegasus:
    its lookup gives that row no gradient, as transformers' padding_idx)."""
    hf, _, path = pair
    model = from_pretrained(path)
    ids, mask, dec = _inputs()
    dec[:, 0] = model.decoder_start_token_id
    check_seq2seq_gradients(hf, model, ids, mask, dec, prefix="model.")


def test_onnx_export_with_past_in_onnxruntime_is_transformers(pair, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    hf, model, _ = pair
    check_seq2seq_onnx_greedy(hf, model, *_inputs()[:2], tmp_path)


def test_completions_server_on_the_paged_pool_gives_generates_tokens(pair, tmp_path):
    pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    _, model, path = pair
    check_seq2seq_paged_server(model, path, tmp_path, VOCAB)
