"""MPNet (``MPNetModel``, ``MPNetForSequenceClassification``, ``MPNetForMaskedLM``) read from checkpoints transformers
wrote: the relative-position buckets, hidden states and logits equal transformers' on a right-padded batch long
enough to reach the logarithmic buckets, the packed path, a frozen copy, the save round trip, the ONNX export
(buckets computed in the graph) and the embeddings server on a directory sentence-transformers wrote."""
from __future__ import annotations

import numpy as np
import pytest

from forgegrad.models import from_pretrained
from hf_conformance import padded_batch
from hf_encoder_checks import (TOL, check_classifier, check_encoder, check_export_with_mask, hf_outputs,
                               sentence_transformer_dir, word_piece_dir)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

VOCAB = 99
LENGTHS = [40, 4, 1, 17]  # past 16 and 32 tokens: the distances reach the logarithmic buckets


def _config(**kw):
    return transformers.MPNetConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=48, max_position_embeddings=80, **kw)


def _saved(cls, path, **kw):
    torch.manual_seed(0)
    hf = cls(_config(**kw)).eval()
    with torch.no_grad():  # transformers initializes the bias table small: make the buckets matter
        hf.mpnet.encoder.relative_attention_bias.weight.normal_(0, 1) if hasattr(hf, "mpnet") else \
            hf.encoder.relative_attention_bias.weight.normal_(0, 1)
    hf.save_pretrained(path)
    return hf


def _batch():
    return padded_batch(LENGTHS, VOCAB, pad=1)  # MPNet's padding id


def test_buckets_are_transformers_at_every_distance():
    from forgegrad.models.hf.mpnet import relative_buckets
    bucket = transformers.models.mpnet.modeling_mpnet.MPNetEncoder.relative_position_bucket
    d = torch.arange(-400, 401)
    np.testing.assert_array_equal(relative_buckets()[np.clip(d.numpy(), -128, 128) + 128], bucket(d).numpy())


def test_hidden_states_pooler_save_round_trip_and_export(tmp_path):
    hf = _saved(transformers.MPNetModel, tmp_path / "a")
    ids, mask = _batch()
    model = check_encoder(hf, tmp_path / "a", ids, mask, tmp_path, architecture="MPNetModel")
    pytest.importorskip("onnxruntime")
    check_export_with_mask(model, hf, tmp_path / "m.onnx", padded_batch([9, 5], VOCAB, pad=1),
                           [_batch(), padded_batch([3], VOCAB, pad=1), padded_batch([70, 70, 12], VOCAB, pad=1)])


@pytest.mark.parametrize("labels", [1, 3])
def test_sequence_classifier_matches_transformers(tmp_path, labels):
    hf = _saved(transformers.MPNetForSequenceClassification, tmp_path / "a", num_labels=labels)
    ids, mask = _batch()
    check_classifier(hf, tmp_path / "a", ids, mask, tmp_path)


def test_masked_lm_matches_transformers_and_saves_back(tmp_path):
    from forgegrad.models import save_pretrained
    hf = _saved(transformers.MPNetForMaskedLM, tmp_path / "a")
    with torch.no_grad():
        hf.lm_head.bias.normal_()
    hf.save_pretrained(tmp_path / "a")
    ids, mask = _batch()
    ref = hf_outputs(hf, ids, mask).logits.numpy()
    model = from_pretrained(tmp_path / "a")
    real = mask.astype(bool)
    np.testing.assert_allclose(model(ids, attention_mask=mask).numpy()[real], ref[real], **TOL)
    save_pretrained(model, tmp_path / "b")
    back = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "b").eval()
    np.testing.assert_array_equal(hf_outputs(back, ids, mask).logits.numpy(), ref)


def test_unsupported_config_options_are_named(tmp_path):
    from forgegrad.models.hf import MPNetForMaskedLM, MPNetModel
    with pytest.raises(ValueError, match="relative_attention_num_buckets"):
        MPNetModel(_config(relative_attention_num_buckets=16).to_dict())
    with pytest.raises(ValueError, match="tie_word_embeddings"):
        MPNetForMaskedLM(_config(tie_word_embeddings=False).to_dict())
    model = MPNetModel(_config().to_dict())
    with pytest.raises(ValueError, match="78"):  # max_position_embeddings - 2 tokens
        model(np.full((1, 79), 5))


def test_embeddings_server_gives_sentence_transformers_vectors(tmp_path):
    """all-mpnet-base-v2's pipeline (MPNet, mean pooling, Normalize) as sentence-transformers itself saves it,
    served by ``forgegrad serve``: encode's vectors, the texts of different lengths run together."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    pytest.importorskip("sentence_transformers")
    from serve_helpers import start_cli_server
    base = word_piece_dir(tmp_path / "base")
    torch.manual_seed(0)
    hf = transformers.MPNetModel(transformers.MPNetConfig(
        vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=64))
    with torch.no_grad():
        hf.encoder.relative_attention_bias.weight.normal_(0, 1)
    hf.save_pretrained(base)
    texts = ["hello world", "a tiny corpus for a tiny tokenizer of sentences and words, words and sentences of "
             "a tiny world", "sentences", "hello tiny world of words"]
    want = sentence_transformer_dir(base, tmp_path / "st", 32).encode(texts, convert_to_numpy=True)
    proc, url = start_cli_server(tmp_path / "st", "--threads", "1", "--log-level", "warning")
    try:
        r = httpx.post(url + "/v1/embeddings", json={"input": texts}, timeout=60)
    finally:
        proc.terminate()
        proc.wait(30)
    assert r.status_code == 200, r.text
    got = np.array([d["embedding"] for d in r.json()["data"]], np.float32)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_gradients_reach_the_bias_table_as_in_torch(tmp_path):
    """Training: the relative-position table's and a projection's gradients of a weighted sum of the hidden states
    equal torch's (dropout off)."""
    import forgegrad as fg
    hf = _saved(transformers.MPNetModel, tmp_path / "a", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ids, mask = _batch()
    w = np.random.RandomState(0).standard_normal(ids.shape + (32,)).astype(np.float32) * mask[..., None]
    hf.train()
    (hf(torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state * torch.tensor(w)).sum().backward()
    model = from_pretrained(tmp_path / "a").train()
    (model(ids, attention_mask=mask).last_hidden_state * fg.tensor(w)).sum().backward()
    ours = dict(model.named_parameters())
    theirs = dict(hf.named_parameters())
    for name, mine in (("encoder.relative_attention_bias.weight", "encoder.relative_attention_bias.weight"),
                       ("encoder.layer.0.attention.attn.q.weight", "encoder.layer.0.attention.self.query.weight")):
        np.testing.assert_allclose(ours[mine].grad.numpy(), theirs[name].grad.numpy(), rtol=1e-4, atol=1e-4)
