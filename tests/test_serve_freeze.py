"""The servers of Hugging Face checkpoints freeze the model they load in place (``nn.utils.freeze(model,
inplace=True)``; ``freeze=False`` / ``--no-freeze`` serves it as loaded): read-only, its float32 Linear weights packed
for the GEMM, no second copy of the weights. Freezing promises the same outputs bit for bit, so every answer of a
frozen server must be the unfrozen server's exactly: embeddings (base64: the float32 bytes), a DeBERTa cross-encoder's
rerank scores (its relative-position tables cached from the frozen weights), a classifier's probabilities, a decoder's
completions with their log-probabilities (decoded together, prompts prefilled in chunks; bfloat16 and int8 weights
too), an encoder-decoder's, and Whisper's transcripts (real uvicorn, httpx, checkpoints transformers wrote)."""
from __future__ import annotations

import base64
from dataclasses import replace

import numpy as np
import pytest

import forgegrad as fg
from forgegrad import nn

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
transformers.logging.set_verbosity_error()

from hf_conformance import tiny_bert_cross_encoder  # noqa: E402
from serve_helpers import post_all, running_app  # noqa: E402

CORPUS = ["hello world, a tiny corpus for a tiny tokenizer of sentences and words"] * 10
TEXTS = ["hello world", "a tiny corpus for a tiny tokenizer of sentences and words, a tiny corpus of tiny words",
         "sentences", "hello tiny world of words", "world of a tiny corpus for words"]


def _both(create, config, answers):
    """``answers(url)`` from the app ``create(config)`` makes, frozen (the default) and not: (frozen, unfrozen)."""
    assert config.freeze is True  # the servers' default
    out = []
    for freeze in (True, False):
        with running_app(create(replace(config, freeze=freeze))) as url:
            out.append(answers(url))
    return tuple(out)


def _json(responses, drop=("id", "created")):
    bodies = []
    for r in responses:
        assert r.status_code == 200, r.text
        bodies.append({k: v for k, v in r.json().items() if k not in drop})
    return bodies


def _assert_frozen_as_served(config, factory, *args):
    """The model ``served_model`` gives for ``config``: frozen in place (every float32 Linear weight packed, every
    parameter read-only), or as loaded with freeze=False."""
    from forgegrad.nn.linear import packed_weight
    from forgegrad.serve.openai_routes import served_model
    model = served_model(config, factory, args).model
    linears = [m for m in model.modules() if type(m) is nn.Linear and m.weight.numpy().dtype == np.float32]
    assert nn.utils.is_frozen(model) and linears and all(packed_weight(m) is not None for m in linears)
    assert not any(p.requires_grad or p.numpy().flags.writeable for p in model.parameters())
    loose = served_model(replace(config, freeze=False), factory, args).model
    assert not nn.utils.is_frozen(loose) and all(p.numpy().flags.writeable for p in loose.parameters())


# ---- encoders -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("freeze-bert") / "tiny-bert"
    tiny_bert_cross_encoder(path, CORPUS)  # its tokenizer; the base model below replaces the classifier
    torch.manual_seed(0)
    transformers.BertModel(transformers.BertConfig(
        vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=64, initializer_range=0.5, architectures=["BertModel"])).save_pretrained(path)
    return path


def test_served_embeddings_are_the_unfrozen_servers_bytes(bert_dir):
    from forgegrad.serve.embeddings import Embedder
    from forgegrad.serve.encoder_app import EncoderServeConfig, create_encoder_app
    config = EncoderServeConfig(str(bert_dir), max_batch=4)
    _assert_frozen_as_served(config, Embedder, 4)
    # several requests at once: inputs of several requests run together through encode_packed, 4 at most
    bodies = [{"input": TEXTS[i:] + TEXTS[:i], "encoding_format": "base64"} for i in range(3)]
    frozen, loose = _both(create_encoder_app, config,
                          lambda url: _json(post_all(url, bodies, route="/v1/embeddings")))
    assert frozen == loose
    vectors = np.frombuffer(base64.b64decode(frozen[0]["data"][1]["embedding"]), "<f4")
    assert vectors.shape == (32,) and np.isfinite(vectors).all() and np.abs(vectors).max() > 0


def test_deberta_rerank_scores_and_classifier_probabilities_are_the_unfrozen_servers(tmp_path):
    from forgegrad.serve.encoder_app import EncoderServeConfig, create_encoder_app
    from forgegrad.serve.rerank import Reranker
    deberta = tmp_path / "tiny-deberta"
    tiny_bert_cross_encoder(deberta, CORPUS)  # its tokenizer
    torch.manual_seed(0)
    transformers.DebertaV2ForSequenceClassification(transformers.DebertaV2Config(
        vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
        max_position_embeddings=64, relative_attention=True, position_buckets=8, max_relative_positions=16,
        pos_att_type=["p2c", "c2p"], share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False,
        num_labels=1, initializer_range=0.5)).save_pretrained(deberta)
    config = EncoderServeConfig(str(deberta), max_batch=3)
    _assert_frozen_as_served(config, Reranker, 3)
    bodies = [{"query": q, "documents": TEXTS, "return_documents": False} for q in ("tiny words", "hello")]
    frozen, loose = _both(create_encoder_app, config, lambda url: _json(post_all(url, bodies, route="/v1/rerank")))
    assert frozen == loose and len({r["relevance_score"] for r in frozen[0]["results"]}) == len(TEXTS)

    three = tmp_path / "tiny-classifier"
    tiny_bert_cross_encoder(three, CORPUS)
    torch.manual_seed(1)
    transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=64, num_labels=3, initializer_range=0.5)).save_pretrained(three)
    frozen, loose = _both(create_encoder_app, EncoderServeConfig(str(three), max_batch=2),
                          lambda url: _json(post_all(url, [{"input": TEXTS}], route="/v1/classify")))
    assert frozen == loose


# ---- decoders -------------------------------------------------------------------------------------------------------
PROMPTS = ["Hi", "Hello there, how are you today? Tell me a story about forty robots.", "abc", "The quick brown fox"]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("freeze-llama") / "tiny-llama"
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=300, max_position_embeddings=256,
                                   initializer_range=0.3, eos_token_id=299, bos_token_id=298)
    transformers.LlamaForCausalLM(cfg).save_pretrained(path)
    return path


@pytest.mark.parametrize("settings", [dict(prefill_chunk=8), dict(max_batch=1), dict(weights="bfloat16"),
                                      dict(weights="int8")],
                         ids=["batched-chunked-prefill", "one-at-a-time", "bfloat16", "int8"])
def test_completions_and_their_logprobs_are_the_unfrozen_servers(llama_dir, settings):
    from forgegrad.serve.completions import GenerationServeConfig, TextGenerator, create_completions_app
    # no prefix cache: whether the sampled request's prompt hits the earlier one's blocks depends on arrival order,
    # and a hit changes its usage (cached_tokens) and rounding: this test compares frozen with unfrozen, bit for bit
    config = GenerationServeConfig(str(llama_dir), prefix_cache_mb=0, **settings)
    if settings.get("max_batch") == 1:
        _assert_frozen_as_served(config, TextGenerator)
    bodies = [{"prompt": p, "max_tokens": n, "temperature": 0, "logprobs": 3}
              for p, n in zip(PROMPTS, (30, 12, 20, 25))]
    bodies.append({"prompt": PROMPTS[3], "max_tokens": 10, "temperature": 0.9, "seed": 5, "n": 2})  # sampled
    frozen, loose = _both(create_completions_app, config, lambda url: _json(post_all(url, bodies)))
    assert frozen == loose
    assert frozen[1]["choices"][0]["logprobs"]["top_logprobs"][0]  # the log-probabilities were compared


def test_an_encoder_decoders_completions_are_the_unfrozen_servers(tmp_path):
    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    torch.manual_seed(0)
    path = tmp_path / "tiny-t5"
    transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=300, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, decoder_start_token_id=0,
        eos_token_id=1, pad_token_id=0, initializer_factor=2.0)).save_pretrained(path)
    prompts = [[int(t) for t in np.random.default_rng(i).integers(2, 290, n)] for i, n in enumerate((40, 3, 12))]
    bodies = [{"prompt": p, "max_tokens": 12, "temperature": 0, "logprobs": 2} for p in prompts]
    frozen, loose = _both(create_completions_app, GenerationServeConfig(str(path)),
                          lambda url: _json(post_all(url, bodies)))
    assert frozen == loose


# ---- Whisper --------------------------------------------------------------------------------------------------------
def test_whispers_transcripts_and_logits_are_the_unfrozen_servers(tmp_path):
    pytest.importorskip("python_multipart")
    import whisper_helpers
    from forgegrad.serve.openai_routes import served_model
    from forgegrad.serve.speech_app import SpeechServeConfig, Transcriber, create_speech_app
    path = whisper_helpers.tiny_whisper(tmp_path / "tiny-whisper")
    config = SpeechServeConfig(str(path), max_batch=3)
    _assert_frozen_as_served(config, Transcriber)
    frozen_model = served_model(config, Transcriber).model
    loose_model = served_model(replace(config, freeze=False), Transcriber).model
    features = np.random.default_rng(0).standard_normal((2, whisper_helpers.MELS, 100)).astype(np.float32)
    prompt = fg.tensor(np.array([[whisper_helpers.START] + list(range(10, 22))] * 2))
    with fg.no_grad():
        np.testing.assert_array_equal(frozen_model(fg.tensor(features), decoder_input_ids=prompt).numpy(),
                                      loose_model(fg.tensor(features), decoder_input_ids=prompt).numpy())

    def transcripts(url):
        with httpx.Client(base_url=url, timeout=60) as c:
            return [c.post("/v1/audio/transcriptions", files={"file": ("a.wav", make()[0], "audio/wav")},
                           data={"response_format": fmt}).json()
                    for make in whisper_helpers.WAVS.values() for fmt in ("json", "verbose_json")]

    frozen, loose = _both(create_speech_app, config, transcripts)
    assert frozen == loose and any(r.get("segments") for r in frozen)


def test_the_no_freeze_flag(tmp_path, capsys):
    from serve_helpers import write_checkpoint

    from forgegrad.cli import build_parser, main
    from forgegrad.serve.completions import GenerationServeConfig
    assert build_parser().parse_args(["serve", "dir"]).freeze is True
    assert build_parser().parse_args(["serve", "dir", "--no-freeze"]).freeze is False
    write_checkpoint("mlp", str(tmp_path / "ckpt"))  # a forgegrad checkpoint: always served frozen
    assert main(["serve", str(tmp_path / "ckpt"), "--no-freeze"]) == 2
    assert "--no-freeze applies to a Hugging Face checkpoint directory" in capsys.readouterr().err
    with pytest.raises(ValueError, match="freeze must be True or False, got 'no'"):
        GenerationServeConfig(str(tmp_path), freeze="no").validate()


def test_a_model_whose_packed_weights_would_not_fit_is_served_as_loaded():
    from forgegrad.serve.openai_routes import freeze_fits
    fg.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 8))
    need = (64 * 128 + 128 * 8) * 4  # the float32 Linear weights: what their packed copies take, about
    assert freeze_fits(model, None) is None and freeze_fits(model, 2 * need) is None
    assert "its packed weights" in freeze_fits(model, 2 * need - 1)


def test_the_memory_available_is_the_containers_where_its_cgroup_limits_it(tmp_path):
    """In a container the host's MemAvailable overstates what the server may take: the cgroup's limit less its usage
    (v2's memory.max / memory.current, v1's memory.limit_in_bytes / memory.usage_in_bytes) counts where it is less;
    no limit ("max", v1's huge number) or no cgroup files: MemAvailable."""
    from forgegrad.serve.openai_routes import available_bytes
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       65536000 kB\nMemAvailable:   32000000 kB\n")
    host = 32000000 * 1024
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text("4294967296\n")
    (v2 / "memory.current").write_text("1073741824\n")
    assert available_bytes(str(meminfo), str(v2)) == 3 * 2 ** 30
    (v2 / "memory.max").write_text("max\n")
    assert available_bytes(str(meminfo), str(v2)) == host
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("2147483648\n")
    (v1 / "memory" / "memory.usage_in_bytes").write_text("536870912\n")
    assert available_bytes(str(meminfo), str(v1)) == 3 * 2 ** 29
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert available_bytes(str(meminfo), str(v1)) == host
    assert available_bytes(str(meminfo), str(tmp_path / "none")) == host
    assert available_bytes(str(tmp_path / "no-meminfo"), str(v2)) is None
    # a limit the model's packed weights would not fit in half of is served as loaded
    from forgegrad.serve.openai_routes import freeze_fits
    model = nn.Sequential(nn.Linear(1024, 1024))
    (v2 / "memory.max").write_text(str(2 ** 30 + 4 * 2 ** 20 + 1) + "\n")
    assert freeze_fits(model, available_bytes(str(meminfo), str(v2))) is not None
