"""mT5 and umT5 (T5's code: models/hf/t5.py) from checkpoints transformers wrote: mT5 as transformers 5 writes it (tied
table, no output scale), mT5 with a head of its own (a fine-tune saved again: config tied, an lm_head in the file) and
umT5 (a relative-position table in every layer): logits with padding, greedy / beam / seeded sampling generation, the
lean decode step, float64 gradients of every parameter and save_pretrained against transformers; the ONNX export with
its caches in onnxruntime; the completions server on the paged KV pool giving generate's tokens."""
import json

import numpy as np
import pytest

from forgegrad.models import from_pretrained, save_pretrained

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
pytestmark = pytest.mark.usefixtures("torch_one_thread")  # transformers' generate crawls on a busy machine

from hf_conformance import (check_lean_seq2seq_step, check_seq2seq_generation, check_seq2seq_gradients,  # noqa: E402
                            check_seq2seq_onnx_greedy, check_seq2seq_paged_server, seq2seq_logits, weight_variant)

VOCAB = 120
# 8 buckets up to distance 12: the 10-token inputs and 12 new tokens reach the logarithmic and the last buckets
# (transformers' umT5 generate needs as many decoder layers as encoder layers)
_COMMON = dict(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
               relative_attention_num_buckets=8, relative_attention_max_distance=12, initializer_factor=1.0,
               dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
MODELS = {"mt5": lambda: transformers.MT5ForConditionalGeneration(transformers.MT5Config(**_COMMON)),
          "mt5_own_head": lambda: transformers.MT5ForConditionalGeneration(transformers.MT5Config(**_COMMON)),
          "umt5": lambda: transformers.UMT5ForConditionalGeneration(transformers.UMT5Config(**_COMMON))}


@pytest.fixture(scope="module", params=list(MODELS))
def pair(request, tmp_path_factory):
    """(transformers model, forgegrad's from_pretrained of its checkpoint, the directory)."""
    torch.manual_seed(0)
    hf = MODELS[request.param]().eval()
    path = tmp_path_factory.mktemp("t5s") / request.param
    hf.save_pretrained(path)
    if request.param == "mt5_own_head":  # mt5-small's kind: a head of its own, which transformers 5 keeps untied
        from safetensors.numpy import load_file, save_file
        tensors = load_file(str(path / "model.safetensors"))
        tensors["lm_head.weight"] = np.random.RandomState(1).standard_normal((VOCAB, 32)).astype(np.float32)
        save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
        hf = transformers.MT5ForConditionalGeneration.from_pretrained(path).eval()
        assert hf.lm_head.weight.data_ptr() != hf.shared.weight.data_ptr()
    return hf, from_pretrained(path), path


def _inputs():
    rng = np.random.RandomState(0)
    ids = rng.randint(2, VOCAB, (3, 10))
    mask = np.ones((3, 10), np.int64)
    mask[1, 6:] = 0  # right padding, as T5's tokenizers pad
    mask[2, 2:] = 0
    dec = rng.randint(2, VOCAB, (3, 6))
    dec[:, 0] = 0
    return ids, mask, dec


def test_logits_lean_step_and_save_pretrained_are_transformers(pair, tmp_path):
    from forgegrad.models.hf._decode_seq2seq import T5LeanStep
    hf, model, path = pair
    assert type(model).__name__ == type(hf).__name__
    ids, mask, dec = _inputs()
    want = seq2seq_logits(hf, ids, mask, dec)
    np.testing.assert_allclose(model(ids, mask, dec).numpy(), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    check_lean_seq2seq_step(model, T5LeanStep, ids, mask, model.decoder.block[0])
    save_pretrained(model, tmp_path / "saved")
    cfg = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert cfg["architectures"] == [type(hf).__name__] and cfg["model_type"] == hf.config.model_type
    back = type(hf).from_pretrained(tmp_path / "saved").eval()
    np.testing.assert_allclose(seq2seq_logits(back, ids, mask, dec), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())



@pytest.mark.parametrize("weights", ["bfloat16", "int8"])
def test_lean_step_takes_bfloat16_and_int8_weights(pair, tmp_path, weights):
    """A bfloat16 checkpoint loaded as stored and an int8 weight-only model: the lean step gives their Tensor decode's
    logits and generate takes it."""
    from forgegrad.models.hf._decode_seq2seq import T5LeanStep
    hf, _, path = pair
    model = weight_variant(hf, path, weights, tmp_path)
    ids, mask, _ = _inputs()
    check_lean_seq2seq_step(model, T5LeanStep, ids, mask, model.decoder.block[0], steps=10, new_tokens=8)


def test_greedy_beam_and_sampled_generation_are_transformers(pair):
    hf, model, _ = pair
    check_seq2seq_generation(hf, model, *_inputs()[:2])


def test_gradients_of_every_parameter_are_transformers_in_float64(pair):
    """umT5: each layer's relative-position table; mT5 with its own head: the head's and the table's apart."""
    hf, _, path = pair
    check_seq2seq_gradients(hf, from_pretrained(path), *_inputs())


def test_onnx_export_with_past_in_onnxruntime_is_transformers(pair, tmp_path):
    """(umT5: every layer's bias table in the graphs.)"""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    hf, model, _ = pair
    check_seq2seq_onnx_greedy(hf, model, *_inputs()[:2], tmp_path)


def test_completions_server_on_the_paged_pool_gives_generates_tokens(pair, tmp_path):
    """(umT5: its per-layer bias tables by distance in the paged kernel; 30-token sources and 16 new tokens pass the
    last bucket's distance.)"""
    pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    _, model, path = pair
    check_seq2seq_paged_server(model, path, tmp_path, VOCAB, new_tokens=16)
