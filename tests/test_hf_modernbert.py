"""ModernBERT (``ModernBertModel``, ``ModernBertForSequenceClassification``) read from checkpoints transformers
wrote: hidden states and logits equal transformers' on a padded batch longer than the local window (so the sliding
layers' window matters), with configs in transformers 5's layout and the older one, and the packed path."""
from __future__ import annotations

import json

import numpy as np
import pytest

from forgegrad.models import from_pretrained
from hf_conformance import check_encoder_export, padded_batch

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

VOCAB = 99
LENGTHS = [21, 6, 1, 17]


def _config(**kw):
    cfg = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=40,
               max_position_embeddings=64, local_attention=8, pad_token_id=0, bos_token_id=1, eos_token_id=2,
               cls_token_id=1, sep_token_id=2, initializer_range=0.3)
    cfg.update(kw)
    return transformers.ModernBertConfig(**cfg)


@pytest.mark.parametrize("layout", ["transformers5", "older"])
def test_hidden_states_match_transformers(tmp_path, layout):
    torch.manual_seed(0)
    hf = transformers.ModernBertModel(_config()).eval()
    hf.save_pretrained(tmp_path)
    if layout == "older":  # as configs on the Hub still read: the pattern as an int, the thetas by name
        cfg = json.loads((tmp_path / "config.json").read_text())
        for key in ("layer_types", "rope_parameters"):
            cfg.pop(key, None)
        cfg.update(global_attn_every_n_layers=3, global_rope_theta=160000.0, local_rope_theta=10000.0)
        (tmp_path / "config.json").write_text(json.dumps(cfg))
    ids, mask = padded_batch(LENGTHS, VOCAB)
    with torch.no_grad():
        ref = hf(torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
    model = from_pretrained(tmp_path)
    assert model.layer_types == ["full_attention", "sliding_attention", "sliding_attention", "full_attention"]
    real = mask.astype(bool)
    out = model(ids, attention_mask=mask).last_hidden_state.numpy()
    np.testing.assert_allclose(out[real], ref[real], rtol=1e-4, atol=1e-4)
    packed = model.encode_packed([list(ids[i, :n]) for i, n in enumerate(LENGTHS)])
    np.testing.assert_allclose(packed, ref[real], rtol=1e-4, atol=1e-4)
    # a window as wide as the sequence would change the sliding layers' outputs: the check can fail
    model.window = 100
    assert not np.allclose(model(ids, attention_mask=mask).last_hidden_state.numpy()[real], ref[real], atol=1e-3)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_sequence_classifier_matches_transformers(tmp_path, pooling):
    torch.manual_seed(0)
    hf = transformers.ModernBertForSequenceClassification(_config(num_labels=1, classifier_pooling=pooling)).eval()
    hf.save_pretrained(tmp_path)
    ids, mask = padded_batch(LENGTHS, VOCAB)
    with torch.no_grad():
        ref = hf(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    model = from_pretrained(tmp_path)
    np.testing.assert_allclose(model(ids, attention_mask=mask).numpy(), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.score_packed([list(ids[i, :n]) for i, n in enumerate(LENGTHS)]), ref,
                               rtol=1e-4, atol=1e-4)


def test_bad_configs_and_inputs_raise_clear_errors(tmp_path):
    torch.manual_seed(0)
    transformers.ModernBertModel(_config()).save_pretrained(tmp_path)
    model = from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="exceed max_position_embeddings 64"):
        model(np.full((1, 65), 5))
    with pytest.raises(ValueError, match="input_ids must be in"):
        model.encode_packed([[VOCAB]])
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(cfg, layer_types=["full_attention"] * 3)))
    with pytest.raises(ValueError, match="layer_types must name"):
        from_pretrained(tmp_path)


def test_onnx_export_computes_the_masks_in_the_graph(tmp_path):
    """The sliding layers' window and the padding come from the graph's inputs: onnxruntime gives transformers'
    hidden states at lengths inside and past the window."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    hf = transformers.ModernBertModel(_config()).eval()
    hf.save_pretrained(tmp_path / "ckpt")
    batches = [np.random.RandomState(sum(s)).randint(3, VOCAB, s).astype(np.int64) for s in ((1, 3), (3, 17), (2, 40))]
    check_encoder_export(from_pretrained(tmp_path / "ckpt"), hf, tmp_path / "m.onnx", batches)
