"""RoBERTa and XLM-RoBERTa encoders (``RobertaModel``, ``XLMRobertaModel``) read from checkpoints transformers wrote:
hidden states and pooled outputs equal transformers' on a padded batch (positions counted from pad_token_id + 1 over
the non-padding tokens), the packed path, a checkpoint saved without its pooler, and the length limit."""
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


def _config(cls, **kw):
    cfg = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
               max_position_embeddings=20, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    cfg.update(kw)
    return cls(**cfg)


@pytest.mark.parametrize("arch", ["RobertaModel", "XLMRobertaModel"])
def test_outputs_match_transformers_on_a_padded_batch(tmp_path, arch):
    torch.manual_seed(0)
    config_cls = transformers.RobertaConfig if arch == "RobertaModel" else transformers.XLMRobertaConfig
    hf = getattr(transformers, arch)(_config(config_cls)).eval()
    hf.save_pretrained(tmp_path)
    ids, mask = padded_batch(LENGTHS, VOCAB, pad=1)
    with torch.no_grad():
        ref = hf(torch.tensor(ids), attention_mask=torch.tensor(mask))
    model = from_pretrained(tmp_path)
    assert type(model).__name__ == arch and model.max_tokens == 20 - 1 - 1
    out = model(ids, attention_mask=mask)
    real = mask.astype(bool)
    np.testing.assert_allclose(out.last_hidden_state.numpy()[real], ref.last_hidden_state.numpy()[real],
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out.pooler_output.numpy(), ref.pooler_output.numpy(), rtol=1e-4, atol=1e-4)
    packed = model.encode_packed([list(ids[i, :n]) for i, n in enumerate(LENGTHS)])
    np.testing.assert_allclose(packed, ref.last_hidden_state.numpy()[real], rtol=1e-4, atol=1e-4)
    # BERT's numbering (0..T-1) would differ: the check can fail
    types = np.zeros_like(ids)
    bert_like, own = model.embeddings(ids, types).numpy(), model.embeddings(ids, types, model.positions(ids)).numpy()
    assert not np.allclose(bert_like[real], own[real])
    with pytest.raises(ValueError, match="exceed the 18 its position table holds"):
        model(np.full((1, 19), 5))


def test_a_checkpoint_without_its_pooler_loads_without_one(tmp_path):
    torch.manual_seed(0)
    hf = transformers.RobertaModel(_config(transformers.RobertaConfig), add_pooling_layer=False).eval()
    hf.save_pretrained(tmp_path)
    ids, mask = padded_batch(LENGTHS, VOCAB, pad=1)
    with torch.no_grad():
        ref = hf(torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
    model = from_pretrained(tmp_path)
    out = model(ids, attention_mask=mask)
    assert model.pooler is None and out.pooler_output is None
    np.testing.assert_allclose(out.last_hidden_state.numpy()[mask.astype(bool)], ref[mask.astype(bool)],
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", ["RobertaModel", "XLMRobertaModel"])
def test_onnx_export_computes_the_positions_in_the_graph(tmp_path, arch):
    """The position rows come from the ids in the graph: onnxruntime gives transformers' hidden states at other
    batch sizes and lengths, padding ids included (their rows stay at pad_token_id's)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    config_cls = transformers.RobertaConfig if arch == "RobertaModel" else transformers.XLMRobertaConfig
    hf = getattr(transformers, arch)(_config(config_cls)).eval()
    hf.save_pretrained(tmp_path / "ckpt")
    ids, _ = padded_batch(LENGTHS, VOCAB, pad=1)  # padded with pad_token_id
    check_encoder_export(from_pretrained(tmp_path / "ckpt"), hf, tmp_path / "m.onnx", [ids, ids[:1, :3]])


def test_save_pretrained_round_trip_loads_in_transformers(tmp_path):
    from forgegrad.models.hf import save_pretrained
    torch.manual_seed(0)
    transformers.XLMRobertaModel(_config(transformers.XLMRobertaConfig)).save_pretrained(tmp_path / "a")
    save_pretrained(from_pretrained(tmp_path / "a"), tmp_path / "b")
    back = transformers.AutoModel.from_pretrained(tmp_path / "b").eval()
    assert type(back).__name__ == "XLMRobertaModel"
    ids, mask = padded_batch(LENGTHS, VOCAB, pad=1)
    with torch.no_grad():
        a = transformers.XLMRobertaModel.from_pretrained(tmp_path / "a").eval()(torch.tensor(ids),
                                                                                attention_mask=torch.tensor(mask))
        b = back(torch.tensor(ids), attention_mask=torch.tensor(mask))
    np.testing.assert_array_equal(a.last_hidden_state.numpy(), b.last_hidden_state.numpy())


@pytest.mark.parametrize("arch", ["RobertaForSequenceClassification", "XLMRobertaForSequenceClassification",
                                  "BertForSequenceClassification"])
@pytest.mark.parametrize("labels", [1, 3])
def test_sequence_classifiers_match_transformers(tmp_path, arch, labels):
    """Logits of a padded batch of text pairs (token types 0 / 1), and score_packed's on the same pairs."""
    torch.manual_seed(0)
    config_cls = {"RobertaForSequenceClassification": transformers.RobertaConfig,
                  "XLMRobertaForSequenceClassification": transformers.XLMRobertaConfig,
                  "BertForSequenceClassification": transformers.BertConfig}[arch]
    extra = {"type_vocab_size": 2} if arch.startswith("Bert") else {}
    hf = getattr(transformers, arch)(_config(config_cls, num_labels=labels, **extra)).eval()
    hf.save_pretrained(tmp_path)
    ids, mask = padded_batch(LENGTHS, VOCAB, pad=1)
    types = np.zeros_like(ids)
    if arch.startswith("Bert"):
        types[:, 3:] = mask[:, 3:]  # a second text from token 3 on
    with torch.no_grad():
        ref = hf(torch.tensor(ids), attention_mask=torch.tensor(mask), token_type_ids=torch.tensor(types)).logits
    model = from_pretrained(tmp_path)
    assert type(model).__name__ == arch
    np.testing.assert_allclose(model(ids, attention_mask=mask, token_type_ids=types).numpy(), ref.numpy(),
                               rtol=1e-4, atol=1e-4)
    packed = model.score_packed([list(ids[i, :n]) for i, n in enumerate(LENGTHS)],
                                [list(types[i, :n]) for i, n in enumerate(LENGTHS)])
    np.testing.assert_allclose(packed, ref.numpy(), rtol=1e-4, atol=1e-4)
