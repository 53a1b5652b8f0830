"""DeBERTa-v2 / v3 (``DebertaV2Model`` and its sequence classifier, masked LM and token classifier) read from
checkpoints transformers wrote: hidden states and logits equal transformers' on a padded batch (padding rows
included) over the disentangled-attention variants (log-bucketed positions shorter than the sequence, shared and own
position projections, c2p / p2c / both / none, the ConvLayer, an embedding projection), gradients equal
transformers' (float64), the save_pretrained round trip, bfloat16 and int8 weights, and clear errors."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained
from forgegrad.models.hf import CheckpointError
from forgegrad.models.hf._files import write_checkpoint
from hf_conformance import check_save_pretrained_round_trip, padded_batch, weight_variant

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

VOCAB = 99
LENGTHS = [13, 7, 1, 10]  # the longest past position_buckets: the log buckets are reached


def _config(**kw):
    """A v3-shaped tiny config: relative attention only, 8 buckets over 16 positions, the table's LayerNorm."""
    cfg = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
               max_position_embeddings=64, relative_attention=True, position_buckets=8, max_relative_positions=16,
               pos_att_type=["p2c", "c2p"], share_att_key=True, norm_rel_ebd="layer_norm",
               position_biased_input=False, initializer_range=0.3, hidden_dropout_prob=0.0,
               attention_probs_dropout_prob=0.0)
    cfg.update(kw)
    return transformers.DebertaV2Config(**cfg)


def _saved(tmp_path, cls, **kw):
    torch.manual_seed(0)
    hf = getattr(transformers, cls)(_config(**kw)).eval()
    hf.save_pretrained(tmp_path)
    return hf, from_pretrained(tmp_path)


def _hf_out(hf, ids, mask=None, field="logits"):
    with torch.no_grad():
        out = hf(torch.tensor(ids), attention_mask=None if mask is None else torch.tensor(mask))
    return getattr(out, field).numpy()


VARIANTS = {
    "v3": {},
    "own position projections": dict(share_att_key=False),
    "c2p only": dict(pos_att_type=["c2p"], share_att_key=False),
    "p2c only": dict(pos_att_type=["p2c"]),
    "no relative attention": dict(relative_attention=False),
    "clamped, no buckets": dict(position_buckets=-1, max_relative_positions=5, pos_att_type="p2c|c2p"),
    "v2 absolute positions, token types, conv": dict(position_biased_input=True, type_vocab_size=2,
                                                     conv_kernel_size=3, norm_rel_ebd="none"),
    "embedding projection": dict(embedding_size=24, layer_norm_eps=1e-5, hidden_act="gelu_new"),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_hidden_states_match_transformers(tmp_path, variant):
    hf, model = _saved(tmp_path, "DebertaV2Model", **VARIANTS[variant])
    ids, mask = padded_batch(LENGTHS, VOCAB)
    ref = _hf_out(hf, ids, mask, "last_hidden_state")
    out = model(ids, attention_mask=mask)
    assert out.pooler_output is None
    np.testing.assert_allclose(out.last_hidden_state.numpy(), ref, rtol=1e-4, atol=1e-4)  # padding rows too
    with fg.no_grad():  # no mask, an odd length
        np.testing.assert_allclose(model(ids[:1, :7]).last_hidden_state.numpy(),
                                   _hf_out(hf, ids[:1, :7], None, "last_hidden_state"), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", ["v3", "v2 absolute positions, token types, conv"])
def test_encode_packed_gives_each_sequence_its_own_hidden_states(tmp_path, variant):
    """encode_packed (the embeddings server's entry): sequences of different lengths run together give each one's
    transformers hidden states, alone and unpadded (the per-sequence relative-position bias, the ConvLayer and the
    absolute positions of the packed rows)."""
    hf, model = _saved(tmp_path, "DebertaV2Model", **VARIANTS[variant])
    rng = np.random.RandomState(1)
    seqs = [rng.randint(1, VOCAB, n).tolist() for n in (5, 19, 1, 12)]
    types = [(np.arange(len(s)) >= len(s) // 2).astype(int).tolist() for s in seqs]
    got = model.eval().encode_packed(seqs, types)
    assert got.shape == (sum(map(len, seqs)), 32)
    starts = np.cumsum([0] + [len(s) for s in seqs])
    for s, t, at in zip(seqs, types, starts):
        with torch.no_grad():
            ref = hf(torch.tensor([s]), token_type_ids=torch.tensor([t])).last_hidden_state[0].numpy()
        np.testing.assert_allclose(got[at:at + len(s)], ref, rtol=1e-4, atol=1e-4, err_msg=f"{len(s)} tokens")


def test_relative_positions_are_transformers():
    from transformers.models.deberta_v2.modeling_deberta_v2 import build_relative_position

    from forgegrad.models.hf.deberta import relative_positions
    for T in (1, 7, 13, 300, 600):
        for buckets, most in ((256, 512), (8, 16), (4, 5), (-1, 512)):
            x = torch.zeros(1, T, 1)
            np.testing.assert_array_equal(relative_positions(T, buckets, most),
                                          build_relative_position(x, x, buckets, most)[0].numpy())


def test_relative_positions_matter(tmp_path):
    """Turning the position terms off changes the outputs: the comparisons above can fail."""
    hf, model = _saved(tmp_path, "DebertaV2Model")
    ids, mask = padded_batch(LENGTHS, VOCAB)
    for layer in model.encoder.layer:
        layer.attention.self.relative = False
    assert not np.allclose(model(ids, attention_mask=mask).last_hidden_state.numpy(),
                           _hf_out(hf, ids, mask, "last_hidden_state"), atol=1e-2)


@pytest.mark.parametrize("variant", ["v3", "own position projections"])
def test_frozen_model_keeps_the_position_tables(tmp_path, variant):
    """nn.utils.freeze's copy computes each layer's projected position table once per row range: the same bits
    as the model, at several lengths, and a weight replaced on the copy is followed (a new array, a new key)."""
    hf, model = _saved(tmp_path, "DebertaV2Model", **VARIANTS[variant])
    frozen = fg.nn.utils.freeze(model)
    ids, mask = padded_batch(LENGTHS, VOCAB)
    with fg.no_grad():
        for _ in range(2):
            for batch in ((ids, mask), (ids[:1, :7], None), (ids[:2, :13], mask[:2, :13])):
                np.testing.assert_array_equal(frozen(batch[0], attention_mask=batch[1]).last_hidden_state.numpy(),
                                              model(batch[0], attention_mask=batch[1]).last_hidden_state.numpy())
        attention = frozen.encoder.layer[0].attention.self
        assert len(attention.__dict__["_frozen_tables"]) == 2 * len(attention.kinds)  # two row ranges, kept
        table = frozen.encoder.rel_embeddings
        doubled = table.weight.numpy() * 2
        doubled.setflags(write=False)  # read-only, as freeze leaves weights: kept under a new key
        table.weight = fg.nn.Parameter(doubled, requires_grad=False)
        model.encoder.rel_embeddings.weight = fg.nn.Parameter(model.encoder.rel_embeddings.weight.numpy() * 2)
        np.testing.assert_array_equal(frozen(ids, attention_mask=mask).last_hidden_state.numpy(),
                                      model(ids, attention_mask=mask).last_hidden_state.numpy())
        assert len(attention.__dict__["_frozen_tables"]) == 3 * len(attention.kinds)


HEADS = {
    "sequence classifier": ("DebertaV2ForSequenceClassification", dict(num_labels=3, pooler_hidden_act="tanh")),
    "token classifier": ("DebertaV2ForTokenClassification", dict(num_labels=5)),
    "masked LM (legacy, tied)": ("DebertaV2ForMaskedLM", {}),
    "masked LM (legacy, untied)": ("DebertaV2ForMaskedLM", dict(tie_word_embeddings=False, share_att_key=False)),
    "masked LM (lm_predictions)": ("DebertaV2ForMaskedLM", dict(legacy=False)),
}


@pytest.mark.parametrize("head", list(HEADS))
def test_heads_match_transformers_and_save_round_trip(tmp_path, head):
    cls, kw = HEADS[head]
    hf, model = _saved(tmp_path / "a", cls, **kw)
    assert type(model).__name__ == cls
    ids, mask = padded_batch(LENGTHS, VOCAB)
    np.testing.assert_allclose(model(ids, attention_mask=mask).numpy(), _hf_out(hf, ids, mask), rtol=1e-4, atol=1e-4)
    check_save_pretrained_round_trip(model, hf, getattr(transformers, cls), tmp_path / "b", ids,
                                     architecture=cls, model_type="deberta-v2")
    if cls == "DebertaV2ForSequenceClassification":  # the server's entry: sequences of any lengths
        rows = [list(ids[i, :n]) for i, n in enumerate(LENGTHS)]
        np.testing.assert_allclose(model.score_packed(rows), _hf_out(hf, ids, mask), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cls,kw", [("DebertaV2ForTokenClassification", dict(num_labels=3)),
                                    ("DebertaV2ForSequenceClassification",
                                     dict(num_labels=3, share_att_key=False, conv_kernel_size=3))])
def test_gradients_match_transformers(tmp_path, cls, kw):
    """Every parameter's gradient of a random weighted sum of the logits (the padding rows' too, for the token
    classifier: masked scores pass no gradient, as transformers' masked_fill) against transformers in float64."""
    hf, model = _saved(tmp_path, cls, **kw)
    ids, mask = padded_batch(LENGTHS, VOCAB)
    ref = copy.deepcopy(hf).double().train()
    model.train()
    out = ref(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits
    w = np.random.RandomState(1).standard_normal(tuple(out.shape))
    (out * torch.tensor(w)).sum().backward()
    (model(ids, attention_mask=mask) * fg.tensor(w.astype(np.float32))).sum().backward()
    theirs = dict(ref.named_parameters())
    ours = dict(model.named_parameters())
    assert set(ours) == set(theirs)
    for name, p in ours.items():
        want = theirs[name].grad.numpy()
        np.testing.assert_allclose(p.grad.numpy(), want, rtol=1e-3, atol=1e-4 * max(1.0, np.abs(want).max()),
                                   err_msg=name)


@pytest.mark.parametrize("weights", ["bfloat16", "int8"])
def test_bfloat16_and_int8_weights(tmp_path, weights):
    """bfloat16 weights (a bfloat16 checkpoint loaded as stored) give transformers' logits of those weights; int8
    weight-only layers stay near the float32 logits."""
    hf, model = _saved(tmp_path / "a", "DebertaV2ForSequenceClassification", num_labels=3)
    ids, mask = padded_batch(LENGTHS, VOCAB)
    got = weight_variant(hf, tmp_path / "a", weights, tmp_path)(ids, attention_mask=mask).numpy()
    if weights == "bfloat16":
        want = _hf_out(copy.deepcopy(hf).to(torch.bfloat16).float(), ids, mask)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    else:
        want = _hf_out(hf, ids, mask)
        np.testing.assert_allclose(got, want, atol=0.05 * np.abs(want).max())


def test_checkpoint_variants_load(tmp_path):
    """A classifier's checkpoint read as the bare encoder (its weights under ``deberta.``), and a v3 checkpoint
    carrying the unused absolute position table (as the released ones do) load as transformers does."""
    hf, _ = _saved(tmp_path / "cls", "DebertaV2ForSequenceClassification", num_labels=2)
    cfg = json.loads((tmp_path / "cls" / "config.json").read_text())
    (tmp_path / "cls" / "config.json").write_text(json.dumps(dict(cfg, architectures=["DebertaV2Model"])))
    ids, mask = padded_batch(LENGTHS, VOCAB)
    encoder = from_pretrained(tmp_path / "cls")
    assert type(encoder).__name__ == "DebertaV2Model"
    np.testing.assert_allclose(encoder(ids, attention_mask=mask).last_hidden_state.numpy(),
                               _hf_out(hf.deberta, ids, mask, "last_hidden_state"), rtol=1e-4, atol=1e-4)
    tensors = encoder.to_hf()
    tensors["embeddings.position_embeddings.weight"] = np.zeros((64, 32), np.float32)
    write_checkpoint(tmp_path / "v3", dict(cfg, architectures=["DebertaV2Model"]), tensors, None)
    again = from_pretrained(tmp_path / "v3")
    np.testing.assert_array_equal(again(ids, attention_mask=mask).last_hidden_state.numpy(),
                                  encoder(ids, attention_mask=mask).last_hidden_state.numpy())


def test_bad_configs_and_inputs_raise_clear_errors(tmp_path):
    hf, model = _saved(tmp_path / "ok", "DebertaV2Model", position_biased_input=True)
    with pytest.raises(ValueError, match="exceed max_position_embeddings 64"):
        model(np.full((1, 65), 5))
    with pytest.raises(ValueError, match="input_ids must be in"):
        model([[VOCAB]])
    cfg = json.loads((tmp_path / "ok" / "config.json").read_text())
    for change, message in ((dict(pos_att_type=["c2p", "p2q"]), "pos_att_type must list"),
                            (dict(num_attention_heads=5), "not a multiple of num_attention_heads"),
                            (dict(position_buckets=8, max_relative_positions=4), "must exceed position_buckets"),
                            (dict(pooler_hidden_size=16), "pooler_hidden_size"),
                            (dict(conv_kernel_size=-1), "conv_kernel_size")):
        (tmp_path / "ok" / "config.json").write_text(json.dumps(dict(cfg, **change)))
        with pytest.raises(ValueError, match=message):
            from_pretrained(tmp_path / "ok")
    # DeBERTa v1 is another architecture
    (tmp_path / "ok" / "config.json").write_text(json.dumps(dict(cfg, architectures=["DebertaModel"],
                                                                 model_type="deberta")))
    with pytest.raises(CheckpointError, match="unsupported architecture"):
        from_pretrained(tmp_path / "ok")


def test_mlm_head_layout_mismatch_names_the_setting(tmp_path):
    """A v3 MLM checkpoint (lm_predictions.lm_head) whose config.json lacks "legacy": false."""
    _saved(tmp_path, "DebertaV2ForMaskedLM", legacy=False)
    cfg = json.loads((tmp_path / "config.json").read_text())
    del cfg["legacy"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match='set "legacy": false'):
        from_pretrained(tmp_path)


def test_onnx_export_at_a_fixed_shape(tmp_path):
    """A static export (``dynamic_axes={}``) at the example's batch and length gives transformers' hidden states
    in onnxruntime (dynamic axes: test_onnx_deberta.py)."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from forgegrad.onnx import export
    hf, model = _saved(tmp_path, "DebertaV2Model")
    ids = padded_batch([13], VOCAB)[0]
    assert export(model, ids, str(tmp_path / "m.onnx"), dynamic_axes={}, rtol=1e-4, atol=1e-5).ok
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {sess.get_inputs()[0].name: ids})[0],
                               _hf_out(hf, ids, None, "last_hidden_state"), rtol=1e-4, atol=1e-4)


def test_trains_with_dropout(tmp_path):
    """Training mode applies the config's dropouts (hidden, attention, position table): two forwards differ; a few
    AdamW steps on four labelled sequences fit them."""
    torch.manual_seed(0)
    transformers.DebertaV2ForSequenceClassification(_config(num_labels=3, hidden_dropout_prob=0.1,
                                                            attention_probs_dropout_prob=0.1)).save_pretrained(tmp_path)
    model = from_pretrained(tmp_path).train()
    fg.manual_seed(0)
    ids, mask = padded_batch(LENGTHS, VOCAB)
    assert not np.allclose(model(ids, attention_mask=mask).numpy(), model(ids, attention_mask=mask).numpy())
    labels = fg.tensor(np.array([0, 1, 2, 1]))
    opt = fg.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(15):
        opt.zero_grad()
        fg.nn.functional.cross_entropy(model(ids, attention_mask=mask), labels).backward()
        opt.step()
    assert (model.eval()(ids, attention_mask=mask).numpy().argmax(-1) == [0, 1, 2, 1]).all()


def test_deep_copy_of_a_frozen_model_keeps_no_position_tables(tmp_path):
    """The kept tables are keyed by their weights' arrays: a deep copy (other arrays) starts without them, and its
    outputs follow its own weights."""
    hf, model = _saved(tmp_path, "DebertaV2Model")
    frozen = fg.nn.utils.freeze(model)
    ids = np.arange(1, 14)[None]
    with fg.no_grad():
        frozen(ids)
        copied = copy.deepcopy(frozen)
        assert len(copied.encoder.layer[0].attention.self.__dict__["_frozen_tables"]) == 0
        refrozen = fg.nn.utils.freeze(copied)
        np.testing.assert_array_equal(refrozen(ids).last_hidden_state.numpy(), model(ids).last_hidden_state.numpy())


def test_encode_packed_refuses_ids_that_are_not_integers(tmp_path):
    """encode_packed's sequences and token types: floats and bools are refused (not cast to int64, which would
    truncate them), and a flat list of ids (not a list of sequences) is refused, not read as 1-token sequences."""
    hf, model = _saved(tmp_path, "DebertaV2Model", position_biased_input=True, type_vocab_size=2)
    model.eval()
    with pytest.raises(TypeError, match="must hold integers, got dtype float64"):
        model.encode_packed([[5, 6], [7.5]])
    with pytest.raises(TypeError, match="must hold integers, got dtype bool"):
        model.encode_packed([[True, False]])
    with pytest.raises(ValueError, match="sequences must be a list of sequences"):
        model.encode_packed([5, 6, 7])
    with pytest.raises(TypeError, match=r"\(token_types\): input_ids must hold integers"):
        model.encode_packed([[5, 6]], [[0.0, 1.5]])
    with pytest.raises(ValueError, match="token_types must give one type id per token"):
        model.encode_packed([[5, 6]], [[0]])
    np.testing.assert_array_equal(model.encode_packed([[5, 6]], [[0, 1]]),
                                  model.encode_packed([np.array([5, 6], np.int32)], [np.array([0, 1], np.uint8)]))
