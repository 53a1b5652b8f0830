"""Pegasus, BlenderBot and BlenderBot-small (BART's family: models/hf/bart.py) from checkpoints transformers wrote:
logits with padding, greedy / beam / seeded sampling generation, the lean decode step, float64 gradients of every
parameter and save_pretrained against transformers; the ONNX export with its caches in onnxruntime; the completions
server on the paged KV pool giving generate's tokens."""
import json

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained, generate, save_pretrained

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
pytestmark = pytest.mark.usefixtures("torch_one_thread")  # transformers' generate crawls on a busy machine

from hf_conformance import (check_lean_seq2seq_step, seq2seq_gradients, seq2seq_logits,  # noqa: E402
                            weight_variant)

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


def _hf_generate(hf, ids, mask, **kw):
    with torch.no_grad():
        return hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), **kw).numpy()


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
    """Greedy and 3-beam tokens (the config's forced end token, BlenderBot's encoder_no_repeat_ngram_size) equal
    transformers'; sampling with a seed repeats its draw, and sampling with top_k 1 (no randomness left to differ
    between the two generators) gives transformers' sampled tokens."""
    hf, model, _ = pair
    ids, mask, _ = _inputs()
    for beams in (1, 3):
        want = _hf_generate(hf, ids, mask, max_new_tokens=12, do_sample=False, num_beams=beams)
        np.testing.assert_array_equal(generate(model, ids, max_new_tokens=12, attention_mask=mask, num_beams=beams),
                                      want)
    assert (want[:, 0] == model.decoder_start_token_id).all()
    kw = dict(max_new_tokens=10, attention_mask=mask, do_sample=True, top_k=20, temperature=1.5)
    fg.manual_seed(5)
    first = generate(model, ids, **kw)
    fg.manual_seed(5)
    np.testing.assert_array_equal(generate(model, ids, **kw), first)
    torch.manual_seed(5)
    want = _hf_generate(hf, ids, mask, max_new_tokens=10, do_sample=True, top_k=1)
    np.testing.assert_array_equal(generate(model, ids, max_new_tokens=10, attention_mask=mask, do_sample=True,
                                           top_k=1), want)


def test_gradients_of_every_parameter_are_transformers_in_float64(pair):
    """Every parameter's gradient, the shared table's pad row included (the decoder starts at the pad token in Pegasus:
    its lookup gives that row no gradient, as transformers' padding_idx)."""
    hf, _, path = pair
    model = from_pretrained(path)
    ids, mask, dec = _inputs()
    dec[:, 0] = model.decoder_start_token_id
    ours, theirs = seq2seq_gradients(hf, model, ids, mask, dec)
    want = {name: theirs["model." + name].grad.numpy() for name in ours}
    scale = max(float(np.abs(g).max()) for g in want.values())
    for name, p in ours.items():  # (the key biases' gradients are 0 up to rounding: softmax ignores them)
        np.testing.assert_allclose(p.grad.numpy(), want[name], rtol=1e-3, atol=1e-5 * scale, err_msg=name)


def test_onnx_export_with_past_in_onnxruntime_is_transformers(pair, tmp_path):
    """export_seq2seq's encoder and decoder-with-past graphs: greedy tokens in onnxruntime (the config's end and
    forced end tokens) equal transformers' generate on the right-padded batch."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from forgegrad.models.hf import export_seq2seq, generate_onnx_seq2seq
    hf, model, _ = pair
    ids, mask, _ = _inputs()
    enc, dec = export_seq2seq(model, tmp_path, atol=1e-3)
    assert enc.ok and dec.ok
    enc, dec = (ort.InferenceSession(str(tmp_path / f), providers=["CPUExecutionProvider"])
                for f in ("encoder.onnx", "decoder.onnx"))
    cfg = model.config
    got = generate_onnx_seq2seq(enc, dec, ids, mask, decoder_start_token_id=model.decoder_start_token_id,
                                max_new_tokens=12, eos_token_id=cfg["eos_token_id"], pad_token_id=cfg["pad_token_id"],
                                forced_eos_token_id=cfg.get("forced_eos_token_id"),
                                encoder_no_repeat_ngram_size=cfg.get("encoder_no_repeat_ngram_size", 0))
    np.testing.assert_array_equal(got, _hf_generate(hf, ids, mask, max_new_tokens=12, do_sample=False, num_beams=1))


def test_completions_server_on_the_paged_pool_gives_generates_tokens(pair, tmp_path):
    """Concurrent greedy requests through the completions server (its paged engine: the pool's peak moves) each get
    the tokens generate gives the prompt alone."""
    import shutil

    pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    from serve_helpers import metric, post_all, running_app
    from tokenizers import Tokenizer, models, pre_tokenizers

    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    from forgegrad.serve.kv_pool import KVPool
    _, model, path = pair
    shutil.copytree(path, tmp_path / "m")
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(VOCAB)}, unk_token="w3"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "m" / "tokenizer.json"))
    prompts = [[5, 6, 7], list(range(10, 30)), [40, 41, 42, 43, 44, 45, 46, 47], [99, 100, 101, 102, 103, 104]]
    eos = model.config["eos_token_id"]
    want = []
    for p in prompts:
        out = [int(t) for t in generate(model, [p], max_new_tokens=10)[0, 1:]]
        want.append(" ".join(f"w{t}" for t in (out[:out.index(eos)] if eos in out else out)))
    block = KVPool.for_model(model, blocks=1).block_bytes
    app = create_completions_app(GenerationServeConfig(str(tmp_path / "m"), model_name="m",
                                                       kv_cache_mb=12 * block / 2 ** 20))
    with running_app(app) as url:
        answers = post_all(url, [{"prompt": p, "max_tokens": 10, "temperature": 0} for p in prompts])
        import httpx
        peak = metric(httpx.get(url + "/metrics").text, "forgegrad_kv_cache_peak", model="m")
    for r, w in zip(answers, want):
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"].strip() == w
    assert peak > 0
