"""``POST /v1/rerank`` on the real server for cross-encoder checkpoints transformers wrote (one-label BERT and
XLM-RoBERTa sequence classifiers): the scores are sentence-transformers' ``CrossEncoder.predict``'s (text pairs,
longest-first truncation, the sigmoid), best first; top_n, return_documents, document objects, bad requests."""
from __future__ import annotations

import json

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
st = pytest.importorskip("sentence_transformers")
transformers.logging.set_verbosity_error()

from hf_conformance import tiny_bert_cross_encoder, tiny_roberta_tokenizer  # noqa: E402
from serve_helpers import running_app  # noqa: E402

from forgegrad.serve.encoder_app import EncoderServeConfig, create_encoder_app  # noqa: E402

QUERY = "tiny words"
DOCS = ["hello world", "a tiny corpus for a tiny tokenizer of sentences and words, a tiny corpus of tiny words",
        "sentences", "hello tiny world of words", "world"]
CORPUS = ["hello world, a tiny corpus for a tiny tokenizer of sentences and words"] * 10


def _bert(path, max_len=None):
    return tiny_bert_cross_encoder(path, CORPUS, max_len)


def _xlmr(path):
    tiny_roberta_tokenizer(path, CORPUS)
    transformers.PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"), bos_token="<s>",
                                         eos_token="</s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
                                         model_max_length=32).save_pretrained(path)
    torch.manual_seed(0)
    transformers.XLMRobertaForSequenceClassification(transformers.XLMRobertaConfig(
        vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=34, pad_token_id=1, bos_token_id=0, eos_token_id=2, num_labels=1,
        initializer_range=0.5)).save_pretrained(path)
    return path


def _modernbert(path):
    _bert(path)  # its tokenizer (ModernBERT's own is another BPE; the pair template is the same)
    torch.manual_seed(0)
    transformers.ModernBertForSequenceClassification(transformers.ModernBertConfig(
        vocab_size=128, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=40,
        max_position_embeddings=64, local_attention=8, pad_token_id=0, bos_token_id=2, eos_token_id=3,
        cls_token_id=2, sep_token_id=3, num_labels=1, initializer_range=0.5)).save_pretrained(path)
    return path


def _deberta(path):
    _bert(path)  # its tokenizer (DeBERTa-v3's is a SentencePiece one; the pair template is the same)
    torch.manual_seed(0)
    transformers.DebertaV2ForSequenceClassification(transformers.DebertaV2Config(
        vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
        max_position_embeddings=64, relative_attention=True, position_buckets=8, max_relative_positions=16,
        pos_att_type=["p2c", "c2p"], share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False,
        num_labels=1, initializer_range=0.5)).save_pretrained(path)
    return path


@pytest.mark.parametrize("make,max_len", [(_bert, None), (_bert, 12), (_xlmr, None), (_modernbert, None),
                                          (_deberta, None)])
def test_scores_are_cross_encoder_predict(tmp_path, make, max_len):
    from sentence_transformers import CrossEncoder
    path = make(tmp_path / "ce", max_len) if make is _bert else make(tmp_path / "ce")
    want = CrossEncoder(str(path), device="cpu").predict([(QUERY, d) for d in DOCS])
    assert np.ptp(want) > 1e-3  # the documents score differently: the order is a check
    best = list(np.argsort(-want, kind="stable"))
    with running_app(create_encoder_app(EncoderServeConfig(str(path), max_batch=2))) as url, \
            httpx.Client(base_url=url, timeout=60) as c:
        r = c.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, "model": "ce"})
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["model"] == "ce" and got["id"].startswith("rerank-") and got["usage"]["total_tokens"] > 0
        assert [x["index"] for x in got["results"]] == best
        np.testing.assert_allclose([x["relevance_score"] for x in got["results"]], want[best], rtol=1e-4, atol=1e-5)
        assert [x["document"]["text"] for x in got["results"]] == [DOCS[i] for i in best]
        # /rerank too; top_n, documents as objects, without the documents
        two = c.post("/rerank", json={"query": QUERY, "documents": [{"text": d} for d in DOCS], "top_n": 2,
                                      "return_documents": False}).json()["results"]
        assert [x["index"] for x in two] == best[:2] and all("document" not in x for x in two)
        # the score API (vLLM's): one text against a list, and two lists pair by pair, in the request's order
        scored = c.post("/v1/score", json={"text_1": QUERY, "text_2": DOCS}).json()
        assert scored["object"] == "list" and [d["index"] for d in scored["data"]] == list(range(len(DOCS)))
        np.testing.assert_allclose([d["score"] for d in scored["data"]], want, rtol=1e-4, atol=1e-5)
        zipped = c.post("/score", json={"text_1": [QUERY, DOCS[0]], "text_2": [DOCS[1], QUERY]}).json()["data"]
        np.testing.assert_allclose([d["score"] for d in zipped], CrossEncoder(str(path), device="cpu").predict(
            [(QUERY, DOCS[1]), (DOCS[0], QUERY)]), rtol=1e-4, atol=1e-5)
        r = c.post("/v1/score", json={"text_1": [QUERY, QUERY], "text_2": DOCS})
        assert r.status_code == 400 and r.json()["error"]["param"] == "text_2"


def test_bad_requests_get_400_naming_the_field(tmp_path):
    path = _bert(tmp_path / "ce")
    with running_app(create_encoder_app(EncoderServeConfig(str(path)))) as url, \
            httpx.Client(base_url=url, timeout=60) as c:
        for body, status, param in (({"documents": DOCS}, 400, "query"),
                                    ({"query": "", "documents": DOCS}, 400, "query"),
                                    ({"query": QUERY, "documents": []}, 400, "documents"),
                                    ({"query": QUERY, "documents": ["ok", 3]}, 400, "documents"),
                                    ({"query": QUERY, "documents": [{"txt": "x"}]}, 400, "documents"),
                                    ({"query": QUERY, "documents": DOCS, "top_n": 0}, 400, "top_n"),
                                    ({"query": QUERY, "documents": DOCS, "return_documents": "yes"}, 400,
                                     "return_documents"),
                                    ({"query": QUERY, "documents": DOCS, "model": "x"}, 404, "model"),
                                    ({"query": QUERY, "documents": DOCS, "input": "x"}, 400, "input")):
            r = c.post("/v1/rerank", json=body)
            assert r.status_code == status and r.json()["error"]["param"] == param, (body, r.text)
        assert c.post("/v1/embeddings", json={"input": "x"}).status_code == 404


def test_classifiers_with_more_labels_or_another_activation_are_refused(tmp_path):
    from forgegrad.serve.rerank import Reranker
    path = _bert(tmp_path / "ce")
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(dict(cfg, sentence_transformers={"activation_fn": "torch.nn.Tanh"})))
    with pytest.raises(ValueError, match="activation 'torch.nn.Tanh'"):
        Reranker(str(path))
    (path / "config.json").write_text(json.dumps(dict(cfg, sbert_ce_default_activation_function=(
        "torch.nn.modules.linear.Identity"))))
    assert Reranker(str(path)).sigmoid is False
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=128, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=64, num_labels=3)).save_pretrained(tmp_path / "three")
    (tmp_path / "three" / "tokenizer.json").write_text((path / "tokenizer.json").read_text())
    with pytest.raises(ValueError, match="one label; this classifier has 3"):
        Reranker(str(tmp_path / "three"))


def _long_text(seed, chars):
    """Words of the corpus (and some outside it) joined by spaces, newlines, tabs and punctuation."""
    rng = np.random.default_rng(seed)
    words = " ".join(CORPUS + DOCS).replace(",", "").split() + ["x9", "Zebra", "2024", "don't", "end.", "(so)"]
    seps = [" ", " ", " ", "  ", "\n", "\t", ", ", ". ", "\n\n"]
    out, n = [], 0
    while n < chars:
        out.append(str(rng.choice(words)) + str(rng.choice(seps)))
        n += len(out[-1])
    return "".join(out)


@pytest.mark.parametrize("make", [_bert, _xlmr])
def test_a_long_text_is_cut_before_tokenizing_to_the_same_pair(tmp_path, make):
    # a 14 MB document was tokenized whole on the event loop (37 s) to keep its first few hundred tokens: a text longer
    # than the context could need is now cut at a word's end first, where the tokens before the cut are the whole's
    from sentence_transformers import CrossEncoder

    from forgegrad.serve.rerank import Reranker
    path = make(tmp_path / "ce", 12) if make is _bert else make(tmp_path / "ce")
    rr = Reranker(str(path))
    texts = [_long_text(seed, 6000) for seed in range(6)]
    for i, text in enumerate(texts):
        assert len(rr.head(text)) < len(text)
        for pair in ((QUERY, text), (text, QUERY), (text, texts[i - 1]), (text[:40], text)):
            assert rr.pair(*pair) == rr.tokenizer.encode_pair(*pair, rr.context)
    assert rr.head("ab" * 10_000) == "ab" * 10_000  # no word's end to cut at: tokenized whole, as before
    huge = texts[0] * 1300  # 7.8 MB
    want = CrossEncoder(str(path), device="cpu").predict([(QUERY, texts[0]), (texts[0], QUERY), (texts[0], "world")])
    with running_app(create_encoder_app(EncoderServeConfig(str(path)))) as url, \
            httpx.Client(base_url=url, timeout=60) as c:
        r = c.post("/v1/rerank", json={"query": QUERY, "documents": [huge], "return_documents": False})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["results"][0]["relevance_score"], want[0], rtol=1e-4, atol=1e-5)
        r = c.post("/v1/score", json={"text_1": huge, "text_2": [QUERY, "world"]})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose([d["score"] for d in r.json()["data"]], want[1:], rtol=1e-4, atol=1e-5)
