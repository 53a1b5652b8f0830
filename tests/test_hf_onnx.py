"""Hugging Face models loaded with from_pretrained (GPT-2, Llama with grouped-query attention, a BERT
classifier) export to ONNX with dynamic batch and sequence axes (positions as slices of the position
tables; grouped-query attention as repeated key/value heads) and give transformers' logits in
onnxruntime."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained
from forgegrad.models.hf import _layers
from forgegrad.onnx import export

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ort = pytest.importorskip("onnxruntime")
transformers.logging.set_verbosity_error()

VOCAB = 90
DYNAMIC = {"input_ids": {0: "batch", 1: "tokens"}}


def _hf(name):
    torch.manual_seed(0)
    if name == "gpt2":
        cfg = transformers.GPT2Config(n_layer=2, n_embd=24, n_head=3, vocab_size=VOCAB, n_positions=40,
                                      initializer_range=0.3)
        return transformers.GPT2LMHeadModel(cfg).eval()
    if name == "bert_cls":
        cfg = transformers.BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=48,
                                      vocab_size=VOCAB, max_position_embeddings=64, num_labels=3)
        return transformers.BertForSequenceClassification(cfg).eval()
    cfg = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=48, num_attention_heads=6, num_key_value_heads=2,
                                   intermediate_size=40, vocab_size=VOCAB, max_position_embeddings=64,
                                   initializer_range=0.3)
    return transformers.LlamaForCausalLM(cfg).eval()


_EXPORTS = {}


def _export(name, tmp_path_factory):
    """(transformers model, forgegrad's from_pretrained of its checkpoint, ONNX path, export report),
    made once per architecture."""
    if name not in _EXPORTS:
        root = tmp_path_factory.mktemp("hf_onnx_" + name)
        hf = _hf(name)
        hf.save_pretrained(root / "ckpt")
        model = from_pretrained(root / "ckpt")
        path = str(root / "model.onnx")
        report = export(model, np.arange(7, dtype=np.int64)[None] % VOCAB, path, dynamic_axes=DYNAMIC, rtol=1e-4,
                        atol=1e-5)  # logits of size ~10 (initializer_range 0.3)
        _EXPORTS[name] = hf, model, path, report
    return _EXPORTS[name]


@pytest.fixture(scope="module", params=["gpt2", "llama", "bert_cls"])
def exported(request, tmp_path_factory):
    return _export(request.param, tmp_path_factory)


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def decoder(request, tmp_path_factory):
    return _export(request.param, tmp_path_factory)


@pytest.mark.parametrize("shape", [(1, 1), (2, 5), (3, 17), (1, 40)])
def test_exported_model_gives_transformers_logits_at_any_batch_and_length(exported, shape):
    hf, model, path, report = exported
    assert report.ok
    ids = np.random.RandomState(sum(shape)).randint(0, VOCAB, shape).astype(np.int64)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: ids})[0]
    with torch.no_grad():
        ref = hf(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    # forgegrad's kernels and onnxruntime's sum in different orders (and per ISA: AVX-512 vs AVX2 tiles),
    # so a logit of ~0.2 after several layers may differ by ~1e-5 between them.
    np.testing.assert_allclose(got, model(ids).numpy(), rtol=1e-4, atol=5e-5)


def test_bench_generate_times_onnxruntime_on_the_model_exported_with_its_cache(decoder, monkeypatch):
    """The bench's onnxruntime prefill gives the last position's logits and fills the cache; its generation
    yields forgegrad's greedy tokens (NEW tokens: fewer here, the test models have 40-64 positions)."""
    import forgegrad.bench.generate as bench
    from forgegrad.bench.generate import _onnxruntime_runs
    from forgegrad.models.hf import generate
    monkeypatch.setattr(bench, "NEW", 9)
    _, model, _, _ = decoder
    ids = np.random.RandomState(4).randint(0, VOCAB, (1, 30))
    prefill, run_generate = _onnxruntime_runs(model, ids, threads=1)
    logits, *present = prefill()
    np.testing.assert_allclose(logits, model(ids, logits_to_keep=1).numpy(), rtol=1e-4, atol=1e-5)
    assert present[0].shape[2] == 30
    np.testing.assert_array_equal(run_generate(), generate(model, ids, max_new_tokens=9, eos_token_id=None))


def test_position_slices_equal_explicit_positions_bit_for_bit(decoder):
    """The default positions (slices of wpe / of the rotary tables) and the same positions passed
    explicitly (an Embedding lookup / cos and sin computed for them) give identical logits."""
    _, model, _, _ = decoder
    ids = np.random.RandomState(3).randint(0, VOCAB, (2, 11))
    explicit = np.broadcast_to(np.arange(11), (2, 11))
    assert np.array_equal(model(ids).numpy(), model(ids, position_ids=explicit).numpy())
    cache = model.new_cache(2, 20)
    model(ids[:, :6], cache=cache)
    # positions 6.. of the cached pass: slices from the middle of the tables
    np.testing.assert_allclose(model(ids[:, 6:], cache=cache).numpy(), model(ids).numpy()[:, 6:], rtol=1e-5,
                               atol=1e-5)


def test_rotary_positions_past_the_table_are_computed(monkeypatch):
    """Positions beyond the precomputed table give the same cos/sin as computing them directly."""
    monkeypatch.setattr(_layers.RotaryEmbedding, "TABLE_POSITIONS", 8)
    rope = _layers.RotaryEmbedding(16, max_positions=1000)
    assert rope.cos_table.shape == (1, 1, 8, 16)
    for start, t in [(0, 8), (3, 5), (5, 9), (20, 4)]:
        cos, sin = rope.cos_sin_range(start, t)
        ref_cos, ref_sin = rope.cos_sin(np.arange(start, start + t)[None])
        assert np.array_equal(cos.numpy(), ref_cos.numpy()) and np.array_equal(sin.numpy(), ref_sin.numpy())


def test_rotary_tables_are_not_saved(decoder):
    _, model, _, _ = decoder
    assert not any("table" in k for k in model.state_dict())


def test_gpt2_positions_past_n_positions_raise_clearly(tmp_path):
    _hf("gpt2").save_pretrained(tmp_path)
    model = from_pretrained(tmp_path)
    for grad in (True, False):  # the Tensor forward and the lean prefill
        with fg.set_grad_enabled(grad), pytest.raises(ValueError, match="position 40 exceeds the model's n_positions"):
            model(np.zeros((1, 41), np.int64))
        with fg.set_grad_enabled(grad), pytest.raises(ValueError, match="12 tokens exceed the cache's max_length 11"):
            model(np.zeros((1, 12), np.int64), cache=model.new_cache(1, 11))
    cache = model.new_cache(1, 41)
    model(np.zeros((1, 39), np.int64), cache=cache)
    with pytest.raises(ValueError, match="position 40 exceeds"):
        model(np.zeros((1, 2), np.int64), cache=cache)
