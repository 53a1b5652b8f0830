"""``POST /v1/classify`` on the real server for sequence classifiers of several labels that transformers wrote
(BERT, ModernBERT, DistilBERT, DeBERTa-v3, MPNet, ELECTRA, ALBERT): the probabilities and labels of transformers'
text-classification pipeline, single- and multi-label; bad requests."""
from __future__ import annotations

import json

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
transformers.logging.set_verbosity_error()

from hf_conformance import tiny_bert_cross_encoder  # noqa: E402
from serve_helpers import running_app  # noqa: E402

from forgegrad.serve.encoder_app import EncoderServeConfig, create_encoder_app, encoder_kind  # noqa: E402

TEXTS = ["hello world", "a tiny corpus for a tiny tokenizer of sentences and words", "words"]
LABELS = {0: "negative", 1: "neutral", 2: "positive"}


def _classifier(path, arch, problem_type=None):
    tiny_bert_cross_encoder(path, [" ".join(TEXTS)] * 10)  # its tokenizer (and a one-label model, replaced here)
    torch.manual_seed(0)
    common = dict(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                  max_position_embeddings=64, id2label=LABELS, label2id={v: k for k, v in LABELS.items()},
                  initializer_range=0.5, problem_type=problem_type)
    if arch == "bert":
        model = transformers.BertForSequenceClassification(transformers.BertConfig(**common))
    elif arch == "distilbert":
        model = transformers.DistilBertForSequenceClassification(transformers.DistilBertConfig(
            vocab_size=128, dim=32, n_layers=2, n_heads=4, hidden_dim=48, max_position_embeddings=64, id2label=LABELS,
            label2id={v: k for k, v in LABELS.items()}, initializer_range=0.5, problem_type=problem_type))
    elif arch == "deberta":  # DeBERTa-v3's attention (relative positions in 8 log buckets)
        model = transformers.DebertaV2ForSequenceClassification(transformers.DebertaV2Config(
            relative_attention=True, position_buckets=8, max_relative_positions=16, pos_att_type=["p2c", "c2p"],
            share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False, **common))
    elif arch == "mpnet":  # relative-position buckets in every layer
        model = transformers.MPNetForSequenceClassification(transformers.MPNetConfig(**common))
    elif arch == "electra":  # embeddings narrower than the hidden size, projected
        model = transformers.ElectraForSequenceClassification(transformers.ElectraConfig(embedding_size=16, **common))
    elif arch == "albert":  # factorized embeddings, one layer shared by both depths
        model = transformers.AlbertForSequenceClassification(transformers.AlbertConfig(embedding_size=16, **common))
    else:
        model = transformers.ModernBertForSequenceClassification(transformers.ModernBertConfig(
            local_attention=8, pad_token_id=0, bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3,
            **common))
    model.save_pretrained(path)
    return path


@pytest.mark.parametrize("arch,problem_type", [("bert", None), ("modernbert", None), ("distilbert", None),
                                               ("deberta", None), ("mpnet", None), ("electra", None),
                                               ("albert", None), ("bert", "multi_label_classification")])
def test_probabilities_are_the_text_classification_pipeline_s(tmp_path, arch, problem_type):
    path = _classifier(tmp_path / "clf", arch, problem_type)
    assert encoder_kind(str(path)) == "classify"
    pipe = transformers.pipeline("text-classification", model=str(path), top_k=None, device="cpu")
    want = [{d["label"]: d["score"] for d in row} for row in pipe(TEXTS)]
    with running_app(create_encoder_app(EncoderServeConfig(str(path)))) as url, \
            httpx.Client(base_url=url, timeout=60) as c:
        r = c.post("/v1/classify", json={"input": TEXTS, "model": "clf"})
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["object"] == "list" and got["id"].startswith("classify-") and got["usage"]["prompt_tokens"] > 0
        one = c.post("/classify", json={"input": TEXTS[1]}).json()["data"][0]
        bad = c.post("/v1/classify", json={"input": [" ".join(["tiny"] * 80)]})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "input"
        # 10 MB: refused from its beginning, not tokenized whole on the event loop first
        bad = c.post("/v1/classify", json={"input": ["x", "tiny " * 2_000_000]})
        assert bad.status_code == 400 and "input 1 has more than" in bad.json()["error"]["message"], bad.text
        for body in ({"input": []}, {"input": [1, 2]}, {"input": ""}, {"text": "x"}):
            assert c.post("/v1/classify", json=body).status_code == 400, body
    for d, w in zip(got["data"], want):
        assert d["num_classes"] == 3 and d["label"] == max(w, key=w.get)
        np.testing.assert_allclose(d["probs"], [w[LABELS[i]] for i in range(3)], rtol=1e-4, atol=1e-6)
    assert one["probs"] == pytest.approx(got["data"][1]["probs"], abs=1e-6)
    sums = [sum(d["probs"]) for d in got["data"]]
    assert (np.allclose(sums, 1.0) if problem_type is None else not np.allclose(sums, 1.0))


def test_one_label_models_are_rerankers(tmp_path):
    path = tiny_bert_cross_encoder(tmp_path / "ce", [" ".join(TEXTS)] * 10)
    assert encoder_kind(str(path)) == "rerank"
    cfg = json.loads((path / "config.json").read_text())
    assert cfg.get("num_labels", len(cfg["id2label"])) == 1
