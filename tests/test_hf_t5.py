"""T5 encoder-decoders from checkpoints transformers wrote: logits, gradients, greedy generation and
relative-position buckets against transformers; the older Flan-T5 config form; save_pretrained."""
import json

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained, generate, save_pretrained
from forgegrad.models.hf.t5 import T5ForConditionalGeneration, relative_position_bucket

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from hf_conformance import check_lean_seq2seq_step, seq2seq_gradients, seq2seq_logits, weight_variant  # noqa: E402

VOCAB = 120


def _config(ff="relu", tie=True, decoder_layers=2):
    return transformers.T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=48, num_layers=2,
                                 num_decoder_layers=decoder_layers, num_heads=4, feed_forward_proj=ff,
                                 tie_word_embeddings=tie, initializer_factor=3.0, dropout_rate=0.0,
                                 decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)


@pytest.fixture(scope="module", params=[("relu", True), ("gated-gelu", False)], ids=["t5", "flan"])
def pair(request, tmp_path_factory):
    """(transformers model, forgegrad's from_pretrained of its checkpoint, the directory)."""
    torch.manual_seed(0)
    hf = transformers.T5ForConditionalGeneration(_config(*request.param)).eval()
    path = tmp_path_factory.mktemp("t5") / request.param[0]
    hf.save_pretrained(path)
    return hf, from_pretrained(path), path


def _inputs():
    rng = np.random.RandomState(0)
    ids = rng.randint(2, VOCAB, (3, 11))
    mask = np.ones((3, 11), np.int64)
    mask[1, 7:] = 0  # right padding, as T5 tokenizers pad
    mask[2, 3:] = 0
    dec = rng.randint(2, VOCAB, (3, 6))
    dec[:, 0] = 0
    return ids, mask, dec


def test_logits_are_transformers_with_padding(pair):
    hf, model, _ = pair
    ids, mask, dec = _inputs()
    ref = seq2seq_logits(hf, ids, mask, dec)
    got = model(ids, mask, dec).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_greedy_generation_is_transformers(pair):
    hf, model, _ = pair
    ids, mask, _ = _inputs()
    with torch.no_grad():
        want = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=15,
                           do_sample=False, num_beams=1).numpy()
    got = generate(model, ids, max_new_tokens=15, attention_mask=mask)
    np.testing.assert_array_equal(got, want)
    tokens = []
    fg.manual_seed(5)
    a = generate(model, ids, max_new_tokens=8, attention_mask=mask, do_sample=True, top_k=20,
                 streamer=lambda t: tokens.append(t))
    fg.manual_seed(5)
    np.testing.assert_array_equal(a, generate(model, ids, max_new_tokens=8, attention_mask=mask, do_sample=True,
                                              top_k=20))
    assert a[:, 0].tolist() == [0, 0, 0] and len(tokens) == a.shape[1] - 1


@pytest.mark.parametrize("weights", ["bfloat16", "int8"])
def test_lean_step_takes_bfloat16_and_int8_weights(pair, tmp_path, weights):
    """bfloat16 layers and embedding (a bfloat16 checkpoint loaded as stored) and int8 weight-only layers: the lean
    step gives their Tensor decode's logits and generate takes it."""
    from forgegrad.models.hf._decode_seq2seq import T5LeanStep
    hf, _, path = pair
    model = weight_variant(hf, path, weights, tmp_path)
    ids, mask, _ = _inputs()
    check_lean_seq2seq_step(model, T5LeanStep, ids, mask, model.decoder.block[0].layer[2], new_tokens=15)


def test_lean_decode_step_is_the_tensor_decode(pair):
    """The lean step gives the Tensor decode's logits at 20 steps on a right-padded batch; a forward pre-hook
    keeps generate on the Tensor path, with the same tokens."""
    from forgegrad.models.hf._decode_seq2seq import T5LeanStep
    _, model, _ = pair
    ids, mask, _ = _inputs()
    check_lean_seq2seq_step(model, T5LeanStep, ids, mask, model.decoder.block[0].layer[2], new_tokens=15)


def test_gradients_are_transformers(pair):
    """The relative-position bias is a learned parameter: its gradient (and every other) as torch's, computed
    in float64 (with initializer_factor 3 the sums are large: torch's own float32 gradients are ~3e-3 off)."""
    hf, _, path = pair
    ours, theirs = seq2seq_gradients(hf, from_pretrained(path), *_inputs())
    for name in ("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                 "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                 "decoder.block.1.layer.1.EncDecAttention.k.weight", "encoder.block.1.layer.1.DenseReluDense.wo.weight",
                 "shared.weight", "decoder.final_layer_norm.weight"):
        ref = theirs[name].grad.numpy()
        np.testing.assert_allclose(ours[name].grad.numpy(), ref, rtol=1e-3, atol=5e-4 * np.abs(ref).max(), err_msg=name)


@pytest.mark.parametrize("buckets,distance", [(32, 128), (16, 40)])
def test_relative_position_buckets_are_transformers(buckets, distance):
    rel = np.arange(500)[None, :] - np.arange(500)[:, None]
    bucket_fn = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket
    for bidirectional in (True, False):
        want = bucket_fn(torch.tensor(rel), bidirectional=bidirectional, num_buckets=buckets,
                         max_distance=distance).numpy()
        np.testing.assert_array_equal(relative_position_bucket(rel, bidirectional, buckets, distance), want)


def test_older_flan_config_with_its_own_head_and_a_deeper_decoder(tmp_path):
    """Configs written before transformers 5 say tie_word_embeddings: false for T5 v1.1 / Flan-T5 (no output
    scaling) and store lm_head.weight; a decoder may have more layers than the encoder."""
    from safetensors.numpy import load_file, save_file
    torch.manual_seed(2)
    hf = transformers.T5ForConditionalGeneration(_config("gated-gelu", False, decoder_layers=3)).eval()
    hf.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.pop("scale_decoder_outputs")
    cfg["tie_word_embeddings"] = False
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    tensors = load_file(str(tmp_path / "model.safetensors"))
    tensors["lm_head.weight"] = tensors["shared.weight"].copy()
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    model = from_pretrained(tmp_path)
    assert not model.tied and not model.scale_head and len(model.decoder.block) == 3
    ids, mask, dec = _inputs()
    ref = seq2seq_logits(hf, ids, mask, dec)
    np.testing.assert_allclose(model(ids, mask, dec).numpy(), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_save_pretrained_round_trip_and_errors(pair, tmp_path):
    hf, model, _ = pair
    save_pretrained(model, tmp_path)
    back = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path).eval()
    ids, mask, dec = _inputs()
    np.testing.assert_allclose(seq2seq_logits(back, ids, mask, dec), seq2seq_logits(hf, ids, mask, dec), rtol=1e-6,
                               atol=1e-5)
    with pytest.raises(ValueError, match="decoder_input_ids is required"):
        model(ids, mask)
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        model(ids, mask[:, :4], dec)
    assert isinstance(model, T5ForConditionalGeneration) and model.decoder_start_token_id == 0


def test_bfloat16_checkpoint_gives_the_float32_model_s_outputs(pair, tmp_path):
    """A bfloat16 checkpoint loaded with dtype="bfloat16" (every Linear and the shared embedding keep the
    file's bits) gives the float32 model's outputs (the same file widened) bit for bit."""
    hf, _, _ = pair
    hf.to(torch.bfloat16).save_pretrained(tmp_path)
    hf.float()
    bf, widened = from_pretrained(tmp_path, dtype="bfloat16"), from_pretrained(tmp_path)
    from forgegrad.quantization.bf16 import BF16Embedding, WeightOnlyBF16Linear
    assert isinstance(bf.shared, BF16Embedding) and isinstance(bf.encoder.block[0].layer[1].DenseReluDense.wo,
                                                               WeightOnlyBF16Linear)
    ids, mask, dec = _inputs()
    np.testing.assert_array_equal(bf(ids, mask, dec).numpy(), widened(ids, mask, dec).numpy())
    np.testing.assert_array_equal(generate(bf, ids, max_new_tokens=6, attention_mask=mask),
                                  generate(widened, ids, max_new_tokens=6, attention_mask=mask))


def _t5_tokenizer(path):
    """A tiny BPE tokenizer.json whose post-processor ends every input with </s> (id 1), as T5's does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(), decoders.ByteLevel()
    tok.train_from_iterator(["translate hello world to a tiny language"] * 10,
                            trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<pad>", "</s>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()[:60]))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tok.save(str(path / "tokenizer.json"))
    return tok


def test_generate_command_and_server_run_t5(pair, tmp_path, capsys):
    """`forgegrad generate` and `forgegrad serve` on a T5 directory: the prompt is the encoder's input (with
    the tokenizer's </s>), the output is the decoder's text, ending at </s>."""
    import shutil

    from forgegrad.cli import main
    _, model, path = pair
    shutil.copytree(path, tmp_path / "t5")
    tok = _t5_tokenizer(tmp_path / "t5")
    ids = tok.encode("hello world").ids
    assert ids[-1] == 1
    new = [int(t) for t in generate(model, [ids], max_new_tokens=10, eos_token_id=1)[0, 1:]]
    want = tok.decode(new[:new.index(1)] if 1 in new else new, skip_special_tokens=True)  # as pipelines decode
    assert want  # the check below means something
    assert main(["generate", str(tmp_path / "t5"), "--prompt", "hello world", "--max-new-tokens", "10"]) == 0
    assert capsys.readouterr().out == want + "\n"
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    from serve_helpers import running_app

    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    with running_app(create_completions_app(GenerationServeConfig(str(tmp_path / "t5")))) as url:
        r = httpx.post(url + "/v1/completions", json={"prompt": "hello world", "max_tokens": 10, "temperature": 0},
                       timeout=60)
        scored = httpx.post(url + "/v1/completions", json={"prompt": "hello world", "max_tokens": 10,
                                                            "temperature": 0, "logprobs": 1}, timeout=60).json()
        echo = httpx.post(url + "/v1/completions", json={"prompt": "hello world", "echo": True}, timeout=60)
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == want
    lp = scored["choices"][0]["logprobs"]
    assert len(lp["token_logprobs"]) == scored["usage"]["completion_tokens"]
    assert all(v <= 0 for v in lp["token_logprobs"])
    assert echo.status_code == 400 and echo.json()["error"]["param"] == "echo"


def test_bench_generate_t5_row_checks_and_times_both_sides():
    """`forgegrad bench generate`'s T5 row (2 layers with --quick): the same greedy tokens as transformers
    (asserted inside), then both timed."""
    from forgegrad.bench.generate import _seq2seq_rows
    (row,) = _seq2seq_rows("t5-small", 1, quick=True)
    assert row["workload"].startswith("t5-small (2 layers) encode 128 tokens")
    assert row["seconds"]["forgegrad"] > 0 and row["seconds"]["transformers"] > 0
    assert row["seconds"]["onnxruntime"] > 0 and "export_seq2seq" in row["note"]
