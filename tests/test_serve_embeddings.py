"""``POST /v1/embeddings`` on the real server for encoder checkpoints that sentence-transformers itself wrote (tiny
BERT, XLM-RoBERTa, ModernBERT and DeBERTa-v3 encoders that transformers made): the vectors are
``SentenceTransformer.encode``'s for every pooling mode, with and without Normalize; plain transformers directories,
token-id inputs, base64, the CLI, and bad requests."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
st = pytest.importorskip("sentence_transformers")
transformers.logging.set_verbosity_error()

from serve_helpers import metric, post_all, running_app, start_cli_server  # noqa: E402

from forgegrad.serve.encoder_app import EncoderServeConfig, create_encoder_app  # noqa: E402

TEXTS = ["hello world", "a tiny corpus for a tiny tokenizer of sentences", "sentences", "hello tiny world of words"]


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """A 2-layer BERT (transformers, torch seeded 0) with a WordPiece tokenizer (tokenizers) in transformers' layout."""
    from tokenizers import BertWordPieceTokenizer
    path = tmp_path_factory.mktemp("bert") / "tiny-bert"
    path.mkdir()
    tok = BertWordPieceTokenizer(lowercase=True)
    tok.train_from_iterator(["hello world, a tiny corpus for a tiny tokenizer of sentences and words"] * 10,
                            vocab_size=120)
    tok.save(str(path / "tokenizer.json"))
    transformers.PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"), unk_token="[UNK]",
                                         sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
                                         mask_token="[MASK]").save_pretrained(path)
    torch.manual_seed(0)
    transformers.BertModel(transformers.BertConfig(
        vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=64)).save_pretrained(path)
    return path


def _sentence_transformer(bert_dir, out, modes, normalize, max_seq_length=None):
    """sentence-transformers' own save of bert_dir with a Pooling of ``modes`` (and Normalize)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    t = Transformer(str(bert_dir), max_seq_length=max_seq_length)
    modules = [t, Pooling(32, modes)] + ([Normalize()] if normalize else [])
    model = SentenceTransformer(modules=modules, device="cpu")
    model.save(str(out))
    return model


def _post(client, body):
    r = client.post("/v1/embeddings", json=body)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("modes,normalize", [("mean", True), ("cls", False), (("max", "mean_sqrt_len_tokens"), True),
                                             ("lasttoken", False), ("weightedmean", True)])
def test_vectors_are_sentence_transformers_encode(bert_dir, tmp_path, modes, normalize):
    model = _sentence_transformer(bert_dir, tmp_path / "st", modes, normalize)
    want = model.encode(TEXTS, convert_to_numpy=True, batch_size=2)
    ids = [model.tokenizer(t)["input_ids"] for t in TEXTS]
    with running_app(create_encoder_app(EncoderServeConfig(str(tmp_path / "st"), max_batch=3))) as url, \
            httpx.Client(base_url=url, timeout=60) as c:
        got = _post(c, {"input": TEXTS, "model": "st"})
        assert got["object"] == "list" and got["model"] == "st"
        assert [d["index"] for d in got["data"]] == [0, 1, 2, 3]
        assert all(d["object"] == "embedding" for d in got["data"])
        vectors = np.array([d["embedding"] for d in got["data"]], np.float32)
        np.testing.assert_allclose(vectors, want, rtol=1e-4, atol=2e-5)
        assert got["usage"] == {"prompt_tokens": sum(map(len, ids)), "total_tokens": sum(map(len, ids))}
        # one text at a time, token ids as the tokenizer gives them, base64: the same vectors
        one = _post(c, {"input": TEXTS[1]})["data"]
        np.testing.assert_allclose(one[0]["embedding"], want[1], rtol=1e-4, atol=2e-5)
        by_ids = _post(c, {"input": ids, "encoding_format": "base64"})["data"]
        decoded = np.array([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in by_ids])
        np.testing.assert_allclose(decoded, want, rtol=1e-4, atol=2e-5)
        assert _post(c, {"input": ids[0]})["data"][0]["embedding"] == pytest.approx(list(want[0]), abs=2e-5)
        # the score API: the cosine similarity of each pair's vectors
        scored = c.post("/v1/score", json={"text_1": TEXTS[0], "text_2": TEXTS}).json()["data"]
        unit = want / np.linalg.norm(want, axis=1, keepdims=True)
        np.testing.assert_allclose([d["score"] for d in scored], unit @ unit[0], rtol=1e-4, atol=1e-5)


def test_xlm_roberta_sentence_transformer(tmp_path):
    """An XLM-RoBERTa encoder (positions from pad_token_id + 1) with a RoBERTa-style byte-level BPE tokenizer (<s> ...
    </s>, <pad> = 1), as sentence-transformers saves it: encode's vectors, and the 2 positions it cannot use."""
    from tokenizers import ByteLevelBPETokenizer, processors
    base = tmp_path / "base"
    base.mkdir()
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(["hello world, a tiny corpus for a tiny tokenizer of sentences and words"] * 10,
                            vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tok.save(str(base / "tokenizer.json"))
    transformers.PreTrainedTokenizerFast(tokenizer_file=str(base / "tokenizer.json"), bos_token="<s>",
                                         eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                                         mask_token="<mask>").save_pretrained(base)
    torch.manual_seed(0)
    transformers.XLMRobertaModel(transformers.XLMRobertaConfig(
        vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=34, pad_token_id=1, bos_token_id=0, eos_token_id=2)).save_pretrained(base)
    model = _sentence_transformer(base, tmp_path / "st", "mean", True)
    want = model.encode(TEXTS, convert_to_numpy=True)
    with running_app(create_encoder_app(EncoderServeConfig(str(tmp_path / "st")))) as url, \
            httpx.Client(base_url=url, timeout=60) as c:
        vectors = np.array([d["embedding"] for d in _post(c, {"input": TEXTS})["data"]], np.float32)
        assert c.get("/v1/models").json()["data"][0]["max_model_len"] == 32
        r = c.post("/v1/embeddings", json={"input": [[5] * 33]})
        assert r.status_code == 400 and "takes at most 32" in r.json()["error"]["message"]
    np.testing.assert_allclose(vectors, want, rtol=1e-4, atol=2e-5)


def test_concurrent_requests_share_batches(bert_dir, tmp_path):
    """Requests that wait while a batch runs make the next batch together (up to max_batch inputs, a larger request
    alone); each gets its own vectors, in its order."""
    import threading

    from forgegrad.serve.embeddings import Embedder
    from forgegrad.serve.encoder_app import EncoderQueue
    model = _sentence_transformer(bert_dir, tmp_path / "st", "mean", True)
    want = model.encode(TEXTS, convert_to_numpy=True)
    embedder = Embedder(str(tmp_path / "st"))
    ids = [embedder.token_ids(t, i) for i, t in enumerate(TEXTS)]
    gate, calls, real = threading.Event(), [], embedder.embed

    def gated(rows):  # the real embed, held at its first call until the others are queued
        calls.append(len(rows))
        if len(calls) == 1:
            gate.wait(30)
        return real(rows)

    embedder.embed = gated
    q = EncoderQueue(embedder, max_batch=3)
    try:
        first = q.submit(ids[:1])
        while not calls:
            threading.Event().wait(0.01)
        rest = [q.submit(ids[1:2]), q.submit(ids[2:4]), q.submit(ids[3:4]), q.submit(ids * 2)]
        gate.set()
        got = [f.result(30) for f in [first] + rest]
    finally:
        q.close()
    assert calls == [1, 3, 1, 8]  # [1], [1] + [2] (3 rows), [1] (a fourth row would pass 3), 8 alone
    for vectors, rows in zip(got, ([0], [1], [2, 3], [3], [0, 1, 2, 3] * 2)):
        np.testing.assert_allclose(vectors, want[rows], rtol=1e-4, atol=2e-5)
    # over HTTP, all at once: each response holds its own texts' vectors
    bodies = [{"input": [TEXTS[i % 4], TEXTS[(i + 1) % 4]]} for i in range(12)]
    with running_app(create_encoder_app(EncoderServeConfig(str(tmp_path / "st"), max_batch=8))) as url:
        responses = post_all(url, bodies, route="/v1/embeddings")
        batches = metric(httpx.get(url + "/metrics").text, "forgegrad_batch_size_count")
    for i, r in enumerate(responses):
        assert r.status_code == 200, r.text
        np.testing.assert_allclose([d["embedding"] for d in r.json()["data"]], want[[i % 4, (i + 1) % 4]],
                                   rtol=1e-4, atol=2e-5)
    assert 3 <= batches <= 12  # at most 8 inputs (4 requests) a batch


def test_modernbert_sentence_transformer(bert_dir, tmp_path):
    """A ModernBERT encoder (sliding-window layers; the window narrower than the texts), CLS-pooled and
    normalized as sentence-transformers saves it: encode's vectors."""
    import shutil
    base = tmp_path / "base"
    shutil.copytree(bert_dir, base)
    for f in ("config.json", "model.safetensors"):
        (base / f).unlink()
    torch.manual_seed(0)
    transformers.ModernBertModel(transformers.ModernBertConfig(
        vocab_size=128, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=40,
        max_position_embeddings=64, local_attention=4, pad_token_id=0, bos_token_id=2, eos_token_id=3,
        cls_token_id=2, sep_token_id=3)).save_pretrained(base)
    model = _sentence_transformer(base, tmp_path / "st", "cls", True)
    want = model.encode(TEXTS, convert_to_numpy=True)
    with running_app(create_encoder_app(EncoderServeConfig(str(tmp_path / "st")))) as url, \
            httpx.Client(base_url=url, timeout=60) as c:
        vectors = np.array([d["embedding"] for d in _post(c, {"input": TEXTS})["data"]], np.float32)
    np.testing.assert_allclose(vectors, want, rtol=1e-4, atol=2e-5)


def test_deberta_v3_sentence_transformer(bert_dir, tmp_path):
    """A DeBERTa-v3-style encoder (relative attention over log buckets shorter than the texts, no absolute positions),
    mean-pooled and normalized as sentence-transformers saves it: encode's vectors, the texts of different lengths
    run together (``DebertaV2Model.encode_packed``) and one at a time."""
    import shutil
    base = tmp_path / "base"
    shutil.copytree(bert_dir, base)
    for f in ("config.json", "model.safetensors"):
        (base / f).unlink()
    torch.manual_seed(0)
    transformers.DebertaV2Model(transformers.DebertaV2Config(
        vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
        max_position_embeddings=64, relative_attention=True, position_buckets=4, max_relative_positions=8,
        pos_att_type=["p2c", "c2p"], share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False,
        type_vocab_size=0, pad_token_id=0)).save_pretrained(base)
    model = _sentence_transformer(base, tmp_path / "st", "mean", True)
    want = model.encode(TEXTS, convert_to_numpy=True)
    with running_app(create_encoder_app(EncoderServeConfig(str(tmp_path / "st"), max_batch=4))) as url, \
            httpx.Client(base_url=url, timeout=60) as c:
        vectors = np.array([d["embedding"] for d in _post(c, {"input": TEXTS})["data"]], np.float32)
        one = [_post(c, {"input": t})["data"][0]["embedding"] for t in TEXTS]
        assert c.get("/v1/models").json()["data"][0]["max_model_len"] == 64
    np.testing.assert_allclose(vectors, want, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(np.array(one, np.float32), want, rtol=1e-4, atol=2e-5)


def test_a_plain_transformers_directory_is_mean_pooled(bert_dir):
    from sentence_transformers import SentenceTransformer
    want = SentenceTransformer(str(bert_dir), device="cpu").encode(TEXTS, convert_to_numpy=True)
    with running_app(create_encoder_app(EncoderServeConfig(str(bert_dir)))) as url, \
            httpx.Client(base_url=url, timeout=60) as c:
        vectors = np.array([d["embedding"] for d in _post(c, {"input": TEXTS})["data"]], np.float32)
        models = c.get("/v1/models").json()["data"][0]
        assert models["id"] == "tiny-bert" and models["max_model_len"] == 64
    np.testing.assert_allclose(vectors, want, rtol=1e-4, atol=2e-5)
    assert not np.allclose(np.linalg.norm(vectors, axis=1), 1.0)  # not normalized: the check can fail


def test_bad_requests_get_400_naming_the_field(bert_dir, tmp_path):
    model = _sentence_transformer(bert_dir, tmp_path / "st", "mean", True, max_seq_length=8)
    fits = "hello world of words"
    assert len(model.tokenizer(fits)["input_ids"]) <= 8
    long_text = " ".join(["tiny"] * 20)
    with running_app(create_encoder_app(EncoderServeConfig(str(tmp_path / "st")))) as url, \
            httpx.Client(base_url=url, timeout=60) as c:
        for body, status, param, message in (
                ({"input": long_text}, 400, "input", "takes at most 8"),
                # 10 MB: tokenized only from its beginning (a 14 MB input held the event loop 49 s to be refused)
                ({"input": ["hi", "tiny " * 2_000_000]}, 400, "input", "input 1 has more than"),
                ({"input": ""}, 400, "input", "non-empty string"),
                ({"input": []}, 400, "input", "non-empty string"),
                ({"input": [["x"]]}, 400, "input", "token-id lists"),
                ({"input": [[5, 999]]}, 400, "input", "outside the vocabulary [0, 128)"),
                ({"input": "hi", "encoding_format": "int8"}, 400, "encoding_format", '"float" or "base64"'),
                ({"input": "hi", "dimensions": 16}, 400, "dimensions", "this model's size, 32"),
                ({"input": "hi", "model": "other"}, 404, "model", "does not exist"),
                ({"input": "hi", "temperature": 1}, 400, "temperature", "unknown field"),
                ({}, 400, "input", "input is required")):
            r = c.post("/v1/embeddings", json=body)
            error = r.json()["error"]
            assert r.status_code == status and error["param"] == param and message in error["message"], (body, r.text)
        assert c.post("/v1/embeddings", content=b"{oops").status_code == 400
        assert c.post("/v1/completions", json={"prompt": "x"}).status_code == 404
        used = _post(c, {"input": fits, "dimensions": 32})["usage"]["prompt_tokens"]
        assert used == len(model.tokenizer(fits)["input_ids"])
        spaced = " " * 1000 + fits  # longer than 8 tokens could need, in characters, and fits: tokenized whole
        assert _post(c, {"input": spaced})["usage"]["prompt_tokens"] == used


def test_unsupported_pipelines_fail_at_startup_saying_why(bert_dir, tmp_path):
    from forgegrad.serve.embeddings import read_pipeline
    _sentence_transformer(bert_dir, tmp_path / "st", "mean", True)
    modules = json.loads((tmp_path / "st" / "modules.json").read_text())
    (tmp_path / "st" / "modules.json").write_text(json.dumps(modules + [
        {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"}]))
    with pytest.raises(ValueError, match="Dense here, which forgegrad does not run yet"):
        read_pipeline(str(tmp_path / "st"))
    (tmp_path / "st" / "modules.json").write_text(json.dumps(modules))
    (tmp_path / "st" / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": "median"}))
    with pytest.raises(ValueError, match="pooling_mode must be one or more of"):
        read_pipeline(str(tmp_path / "st"))
    # the older sentence-transformers layout: per-mode flags, sentence_bert_config.json's max_seq_length
    (tmp_path / "st" / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True}))
    (tmp_path / "st" / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 12}))
    assert read_pipeline(str(tmp_path / "st")) == (("cls", "mean"), True, 12)


def test_forgegrad_serve_cli_serves_an_encoder_directory(bert_dir):
    proc, url = start_cli_server(bert_dir, "--threads", "1", "--log-level", "warning")
    try:
        r = httpx.post(url + "/v1/embeddings", json={"input": ["hello world"]}, timeout=60)
        assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 32
    finally:
        proc.terminate()
        proc.wait(30)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    bad = subprocess.run([sys.executable, "-m", "forgegrad.cli", "serve", str(bert_dir), "--prefill-chunk", "4"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "is an encoder (served at /v1/embeddings)" in bad.stderr


@pytest.mark.parametrize("weights", ["bfloat16", "int8"])
def test_bfloat16_and_int8_weights_give_the_vectors_to_their_rounding(bert_dir, tmp_path, weights):
    model = _sentence_transformer(bert_dir, tmp_path / "st", "mean", True)
    want = model.encode(TEXTS, convert_to_numpy=True)
    with running_app(create_encoder_app(EncoderServeConfig(str(tmp_path / "st"), weights=weights))) as url, \
            httpx.Client(base_url=url, timeout=60) as c:
        got = np.array([d["embedding"] for d in _post(c, {"input": TEXTS})["data"]], np.float32)
    cosine = (got * want).sum(1)  # both normalized
    assert cosine.min() > 0.9999, cosine
    assert np.abs(got - want).max() > 1e-6  # the weights were rounded: the check can fail


def test_decoder_embedding_model_last_token_pooled(tmp_path):
    """A decoder saved as its base model (transformers' Qwen3Model: no LM head), last-token pooled and normalized
    as sentence-transformers saves a Qwen3-Embedding-style model: encode's vectors; the base model saves back as
    one; a tokenizer with a chat template (which sentence-transformers 6 renders texts with) is refused."""
    from hf_conformance import chat_tokenizer

    from forgegrad.models import from_pretrained
    from forgegrad.models.hf import save_pretrained
    tok = chat_tokenizer("{{ messages }}")
    tok.pad_token, tok.chat_template = "<|im_end|>", None
    tok.save_pretrained(tmp_path / "base")
    torch.manual_seed(0)
    hf = transformers.Qwen3Model(transformers.Qwen3Config(
        vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=48, max_position_embeddings=128, head_dim=8)).eval()
    hf.save_pretrained(tmp_path / "base")
    model = _sentence_transformer(tmp_path / "base", tmp_path / "st", "lasttoken", True)
    want = model.encode(TEXTS, convert_to_numpy=True)
    with running_app(create_encoder_app(EncoderServeConfig(str(tmp_path / "st")))) as url, \
            httpx.Client(base_url=url, timeout=60) as c:
        vectors = np.array([d["embedding"] for d in _post(c, {"input": TEXTS})["data"]], np.float32)
    np.testing.assert_allclose(vectors, want, rtol=1e-4, atol=2e-5)
    base = from_pretrained(tmp_path / "base")
    with pytest.raises(ValueError, match="base model without an LM head"):
        base(np.array([[5, 6]]))
    save_pretrained(base, tmp_path / "again")
    back = transformers.AutoModel.from_pretrained(tmp_path / "again").eval()
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        np.testing.assert_array_equal(back(ids).last_hidden_state.numpy(), hf(ids).last_hidden_state.numpy())
    chat = tmp_path / "chat"
    tok.chat_template = "{{ messages }}"
    tok.save_pretrained(tmp_path / "base")
    _sentence_transformer(tmp_path / "base", chat, "lasttoken", True)
    from forgegrad.serve.embeddings import Embedder
    with pytest.raises(ValueError, match="'message' modality"):
        Embedder(str(chat))


def test_the_queue_closes_after_the_requests_it_took(bert_dir):
    """A close queued behind requests ends the queue's thread once they are done (it is not lost when it arrives
    while a batch is being made)."""
    import threading

    from forgegrad.serve.embeddings import Embedder
    from forgegrad.serve.encoder_app import EncoderQueue
    embedder = Embedder(str(bert_dir))
    ids = embedder.token_ids(TEXTS[0], 0)
    gate, real = threading.Event(), embedder.embed
    embedder.embed = lambda rows: (gate.wait(30), real(rows))[1]
    q = EncoderQueue(embedder, max_batch=4)
    first = q.submit([ids])
    second = q.submit([ids])
    q.close()
    gate.set()
    assert first.result(30).shape == second.result(30).shape == (1, 32)
    q._thread.join(30)
    assert not q._thread.is_alive()
