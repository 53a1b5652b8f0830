"""ELECTRA (``ElectraModel``, ``ElectraForSequenceClassification``, ``ElectraForPreTraining``) read from checkpoints
transformers wrote, embeddings narrower than the hidden size (``embeddings_project``) and as wide: hidden states and
logits equal transformers' on a right-padded batch with token types, the packed path, a frozen copy, the save round
trip, the ONNX export and the embeddings server."""
from __future__ import annotations

import numpy as np
import pytest

from forgegrad.models import from_pretrained, save_pretrained
from hf_conformance import padded_batch
from hf_encoder_checks import (TOL, check_classifier, check_embeddings_server, check_encoder, check_export_with_mask,
                               hf_outputs)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

VOCAB = 99
LENGTHS = [9, 4, 1, 7]


def _config(embedding_size=16, **kw):
    return transformers.ElectraConfig(vocab_size=VOCAB, embedding_size=embedding_size, hidden_size=32,
                                      num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                                      max_position_embeddings=40, **kw)


def _saved(cls, path, **kw):
    torch.manual_seed(0)
    hf = cls(_config(**kw)).eval()
    hf.save_pretrained(path)
    return hf


@pytest.mark.parametrize("embedding_size", [16, 32])
def test_hidden_states_save_round_trip_and_export(tmp_path, embedding_size):
    hf = _saved(transformers.ElectraModel, tmp_path / "a", embedding_size=embedding_size)
    ids, mask = padded_batch(LENGTHS, VOCAB)
    model = check_encoder(hf, tmp_path / "a", ids, mask, tmp_path, architecture="ElectraModel")
    assert (model.embeddings_project is None) == (embedding_size == 32)
    pytest.importorskip("onnxruntime")
    check_export_with_mask(model, hf, tmp_path / "m.onnx", padded_batch([9, 5], VOCAB),
                           [(ids, mask), padded_batch([30, 2, 17], VOCAB)])


def test_a_config_without_embedding_size_takes_transformers_default(tmp_path):
    """ElectraConfig's embedding_size defaults to 128 (not the hidden size): a config.json without the key loads
    the 128-wide embeddings and their projection, as transformers reads it."""
    import json
    torch.manual_seed(0)
    hf = transformers.ElectraModel(_config(embedding_size=128)).eval()
    hf.save_pretrained(tmp_path / "a")
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    del cfg["embedding_size"]
    (tmp_path / "a" / "config.json").write_text(json.dumps(cfg))
    assert transformers.ElectraConfig.from_pretrained(tmp_path / "a").embedding_size == 128
    ids, mask = padded_batch(LENGTHS, VOCAB)
    model = from_pretrained(tmp_path / "a")
    assert model.embeddings_project is not None
    got = model(ids, attention_mask=mask).last_hidden_state.numpy()
    real = mask.astype(bool)
    np.testing.assert_allclose(got[real], hf_outputs(hf, ids, mask).last_hidden_state.numpy()[real], **TOL)


def test_token_types_reach_the_encoder(tmp_path):
    hf = _saved(transformers.ElectraModel, tmp_path / "a")
    ids, mask = padded_batch(LENGTHS, VOCAB)
    types = (np.arange(ids.shape[1])[None] >= 3).astype(np.int64) * mask
    with torch.no_grad():
        ref = hf(torch.tensor(ids), attention_mask=torch.tensor(mask), token_type_ids=torch.tensor(types))
    got = from_pretrained(tmp_path / "a")(ids, attention_mask=mask, token_type_ids=types).last_hidden_state.numpy()
    real = mask.astype(bool)
    np.testing.assert_allclose(got[real], ref.last_hidden_state.numpy()[real], **TOL)


@pytest.mark.parametrize("labels", [1, 3])
def test_sequence_classifier_matches_transformers(tmp_path, labels):
    hf = _saved(transformers.ElectraForSequenceClassification, tmp_path / "a", num_labels=labels)
    ids, mask = padded_batch(LENGTHS, VOCAB)
    check_classifier(hf, tmp_path / "a", ids, mask, tmp_path)


def test_discriminator_logits_and_its_encoder(tmp_path):
    """ElectraForPreTraining (a released discriminator's architecture): per-token logits, the save round trip; its
    checkpoint also loads as the encoder alone (``ElectraModel.from_pretrained`` of it)."""
    hf = _saved(transformers.ElectraForPreTraining, tmp_path / "a")
    ids, mask = padded_batch(LENGTHS, VOCAB)
    ref = hf_outputs(hf, ids, mask).logits.numpy()
    model = from_pretrained(tmp_path / "a")
    real = mask.astype(bool)
    np.testing.assert_allclose(model(ids, attention_mask=mask).numpy()[real], ref[real], **TOL)
    save_pretrained(model, tmp_path / "b")
    back = transformers.ElectraForPreTraining.from_pretrained(tmp_path / "b").eval()
    np.testing.assert_array_equal(hf_outputs(back, ids, mask).logits.numpy(), ref)
    import json
    import shutil
    shutil.copytree(tmp_path / "a", tmp_path / "encoder")  # the discriminator's files named as the bare encoder
    cfg = json.loads((tmp_path / "encoder" / "config.json").read_text())
    (tmp_path / "encoder" / "config.json").write_text(json.dumps(dict(cfg, architectures=["ElectraModel"])))
    encoder = from_pretrained(tmp_path / "encoder")
    np.testing.assert_allclose(encoder(ids, attention_mask=mask).last_hidden_state.numpy()[real],
                               hf_outputs(hf.electra, ids, mask).last_hidden_state.numpy()[real], **TOL)


def test_unsupported_config_options_are_named():
    from forgegrad.models.hf import ElectraModel
    with pytest.raises(ValueError, match="embedding_size"):
        ElectraModel(dict(_config().to_dict(), embedding_size=0))
    with pytest.raises(ValueError, match="hidden_act"):
        ElectraModel(dict(_config().to_dict(), hidden_act="mish"))


def test_embeddings_server_gives_sentence_transformers_vectors(tmp_path):
    torch.manual_seed(0)
    check_embeddings_server(transformers.ElectraModel(transformers.ElectraConfig(
        vocab_size=128, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=48, max_position_embeddings=64)), tmp_path, 32)
