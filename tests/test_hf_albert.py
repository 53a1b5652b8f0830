"""ALBERT (``AlbertModel``, ``AlbertForSequenceClassification``) read from checkpoints transformers wrote: factorized
embeddings and layers shared across depths (one group, and several groups of several layers, with depths that do not
divide evenly into the groups): hidden states, pooler and logits equal transformers' on a right-padded batch with
token types, the packed path, a frozen copy, the save round trip, the ONNX export and the embeddings server."""
from __future__ import annotations

import numpy as np
import pytest

from forgegrad.models import from_pretrained
from hf_conformance import padded_batch
from hf_encoder_checks import TOL, check_classifier, check_embeddings_server, check_encoder, check_export_with_mask

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

VOCAB = 99
LENGTHS = [9, 4, 1, 7]


def _config(**kw):
    kw = dict(dict(num_hidden_layers=3, num_hidden_groups=1, inner_group_num=1), **kw)
    return transformers.AlbertConfig(vocab_size=VOCAB, embedding_size=16, hidden_size=32, num_attention_heads=4,
                                     intermediate_size=48, max_position_embeddings=40, **kw)


def _saved(cls, path, **kw):
    torch.manual_seed(0)
    hf = cls(_config(**kw)).eval()
    hf.save_pretrained(path)
    return hf


@pytest.mark.parametrize("layers,groups,inner", [(3, 1, 1), (5, 2, 2)])
def test_hidden_states_save_round_trip_and_export(tmp_path, layers, groups, inner):
    hf = _saved(transformers.AlbertModel, tmp_path / "a", num_hidden_layers=layers, num_hidden_groups=groups,
                inner_group_num=inner)
    ids, mask = padded_batch(LENGTHS, VOCAB)
    model = check_encoder(hf, tmp_path / "a", ids, mask, tmp_path, architecture="AlbertModel")
    assert len(model.encoder.layer) == layers * inner
    assert sum(1 for k in model.state_dict() if k.endswith("attention.self.query.weight")) == groups * inner
    pytest.importorskip("onnxruntime")
    check_export_with_mask(model, hf, tmp_path / "m.onnx", padded_batch([9, 5], VOCAB),
                           [(ids, mask), padded_batch([30, 2, 17], VOCAB)])


def test_token_types_reach_the_encoder(tmp_path):
    hf = _saved(transformers.AlbertModel, tmp_path / "a")
    ids, mask = padded_batch(LENGTHS, VOCAB)
    types = (np.arange(ids.shape[1])[None] >= 3).astype(np.int64) * mask
    with torch.no_grad():
        ref = hf(torch.tensor(ids), attention_mask=torch.tensor(mask), token_type_ids=torch.tensor(types))
    got = from_pretrained(tmp_path / "a")(ids, attention_mask=mask, token_type_ids=types)
    real = mask.astype(bool)
    np.testing.assert_allclose(got.last_hidden_state.numpy()[real], ref.last_hidden_state.numpy()[real], **TOL)
    np.testing.assert_allclose(got.pooler_output.numpy(), ref.pooler_output.numpy(), **TOL)


@pytest.mark.parametrize("labels", [1, 3])
def test_sequence_classifier_matches_transformers(tmp_path, labels):
    hf = _saved(transformers.AlbertForSequenceClassification, tmp_path / "a", num_labels=labels,
                num_hidden_groups=2, num_hidden_layers=4)
    ids, mask = padded_batch(LENGTHS, VOCAB)
    check_classifier(hf, tmp_path / "a", ids, mask, tmp_path)


def test_unsupported_config_options_are_named():
    from forgegrad.models.hf import AlbertModel
    for key, value in (("num_hidden_groups", 0), ("inner_group_num", -1), ("embedding_size", 1.5),
                       ("num_hidden_groups", 4), ("hidden_act", "mish")):
        with pytest.raises(ValueError, match=key):
            AlbertModel(dict(_config().to_dict(), **{key: value}))


def test_embeddings_server_gives_sentence_transformers_vectors(tmp_path):
    torch.manual_seed(0)
    check_embeddings_server(transformers.AlbertModel(transformers.AlbertConfig(
        vocab_size=128, embedding_size=16, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
        intermediate_size=48, max_position_embeddings=64)), tmp_path, 32)
