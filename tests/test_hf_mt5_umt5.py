"""mT5 and umT5 (T5's code: models/hf/t5.py) from checkpoints transformers wrote: mT5 as transformers 5 writes it (tied
table, no output scale), mT5 with a head of its own (a fine-tune saved again: config tied, an lm_head in the file) and
umT5 (a relative-position table in every layer): logits with padding, greedy / beam / seeded sampling generation, the
lean decode step, float64 gradients of every parameter and save_pretrained against transformers; the ONNX export with
its caches in onnxruntime; the completions server on the paged KV pool giving generate's tokens."""
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


def _hf_generate(hf, ids, mask, **kw):
    with torch.no_grad():
        return hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), **kw).numpy()


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
    """Greedy and 3-beam tokens equal transformers'; sampling with a seed repeats its draw, and sampling with top_k 1
    (no randomness left to differ between the two generators) gives transformers' sampled tokens."""
    hf, model, _ = pair
    ids, mask, _ = _inputs()
    for beams in (1, 3):
        want = _hf_generate(hf, ids, mask, max_new_tokens=12, do_sample=False, num_beams=beams)
        np.testing.assert_array_equal(generate(model, ids, max_new_tokens=12, attention_mask=mask, num_beams=beams),
                                      want)
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
    """Every parameter's gradient (umT5: each layer's relative-position table; mT5 with its own head: the head's and
    the table's apart) equals transformers' float64 copy's."""
    hf, _, path = pair
    model = from_pretrained(path)
    ours, theirs = seq2seq_gradients(hf, model, *_inputs())
    assert set(ours) == set(theirs)
    want = {name: theirs[name].grad.numpy() for name in ours}
    scale = max(float(np.abs(g).max()) for g in want.values())
    for name, p in ours.items():
        np.testing.assert_allclose(p.grad.numpy(), want[name], rtol=1e-3, atol=1e-5 * scale, err_msg=name)


def test_onnx_export_with_past_in_onnxruntime_is_transformers(pair, tmp_path):
    """export_seq2seq's encoder and decoder-with-past graphs (umT5: every layer's bias table in them): greedy tokens
    in onnxruntime equal transformers' generate on the right-padded batch."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from forgegrad.models.hf import export_seq2seq, generate_onnx_seq2seq
    hf, model, _ = pair
    ids, mask, _ = _inputs()
    enc, dec = export_seq2seq(model, tmp_path, atol=1e-3)
    assert enc.ok and dec.ok
    enc, dec = (ort.InferenceSession(str(tmp_path / f), providers=["CPUExecutionProvider"])
                for f in ("encoder.onnx", "decoder.onnx"))
    got = generate_onnx_seq2seq(enc, dec, ids, mask, decoder_start_token_id=0, max_new_tokens=12, eos_token_id=1,
                                pad_token_id=0)
    np.testing.assert_array_equal(got, _hf_generate(hf, ids, mask, max_new_tokens=12, do_sample=False, num_beams=1))


def test_completions_server_on_the_paged_pool_gives_generates_tokens(pair, tmp_path):
    """Concurrent greedy requests through the completions server (its paged engine: the pool's peak moves; umT5's
    per-layer bias tables in the paged kernel) each get the tokens generate gives the prompt alone."""
    import shutil

    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    from serve_helpers import metric, post_all, running_app
    from tokenizers import Tokenizer, models, pre_tokenizers

    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    from forgegrad.serve.kv_pool import KVPool
    _, model, path = pair
    shutil.copytree(path, tmp_path / "m")
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(VOCAB)}, unk_token="w2"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "m" / "tokenizer.json"))
    prompts = [[5, 6, 7], list(range(10, 40)), [40, 41, 42, 43, 44, 45, 46, 47], [99, 100, 101, 102, 103, 104]]
    want = []
    for p in prompts:
        out = [int(t) for t in generate(model, [p], max_new_tokens=16)[0, 1:]]
        want.append(" ".join(f"w{t}" for t in (out[:out.index(1)] if 1 in out else out)))
    block = KVPool.for_model(model, blocks=1).block_bytes
    app = create_completions_app(GenerationServeConfig(str(tmp_path / "m"), model_name="m",
                                                       kv_cache_mb=12 * block / 2 ** 20))
    with running_app(app) as url:
        answers = post_all(url, [{"prompt": p, "max_tokens": 16, "temperature": 0} for p in prompts])
        peak = metric(httpx.get(url + "/metrics").text, "forgegrad_kv_cache_peak", model="m")
    for r, w in zip(answers, want):
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"].strip() == w
    assert peak > 0
