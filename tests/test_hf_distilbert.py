"""DistilBERT (``DistilBertModel``, ``DistilBertForSequenceClassification``) read from checkpoints transformers
wrote, as BERT's network under DistilBERT's names: hidden states and logits equal transformers' on a padded batch,
the packed path, the save round trip (transformers loads it back), ONNX export."""
from __future__ import annotations

import numpy as np
import pytest

from forgegrad.models import from_pretrained
from hf_conformance import check_encoder_export, padded_batch

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

VOCAB = 99
LENGTHS = [9, 4, 1, 7]


def _config(**kw):
    return transformers.DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=48,
                                         max_position_embeddings=40, **kw)


def test_hidden_states_save_round_trip_and_export(tmp_path):
    torch.manual_seed(0)
    hf = transformers.DistilBertModel(_config()).eval()
    hf.save_pretrained(tmp_path / "a")
    ids, mask = padded_batch(LENGTHS, VOCAB, low=1)
    with torch.no_grad():
        ref = hf(torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
    model = from_pretrained(tmp_path / "a")
    real = mask.astype(bool)
    out = model(ids, attention_mask=mask)
    assert out.pooler_output is None
    np.testing.assert_allclose(out.last_hidden_state.numpy()[real], ref[real], rtol=1e-4, atol=1e-4)
    packed = model.encode_packed([list(ids[i, :n]) for i, n in enumerate(LENGTHS)])
    np.testing.assert_allclose(packed, ref[real], rtol=1e-4, atol=1e-4)
    from forgegrad.models.hf import save_pretrained
    save_pretrained(model, tmp_path / "b")
    back = transformers.AutoModel.from_pretrained(tmp_path / "b").eval()
    assert type(back).__name__ == "DistilBertModel"
    with torch.no_grad():
        again = back(torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
    np.testing.assert_array_equal(again, hf(torch.tensor(ids), attention_mask=torch.tensor(mask))
                                  .last_hidden_state.detach().numpy())
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    check_encoder_export(model, hf, tmp_path / "m.onnx", [ids[:2, :5]])


@pytest.mark.parametrize("labels", [1, 3])
def test_sequence_classifier_matches_transformers(tmp_path, labels):
    torch.manual_seed(0)
    hf = transformers.DistilBertForSequenceClassification(_config(num_labels=labels)).eval()
    hf.save_pretrained(tmp_path)
    ids, mask = padded_batch(LENGTHS, VOCAB, low=1)
    with torch.no_grad():
        ref = hf(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    model = from_pretrained(tmp_path)
    np.testing.assert_allclose(model(ids, attention_mask=mask).numpy(), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.score_packed([list(ids[i, :n]) for i, n in enumerate(LENGTHS)]), ref,
                               rtol=1e-4, atol=1e-4)
