"""ProphetNet (models/hf/prophetnet.py) from checkpoints transformers wrote: ngram 2 (gelu, tied head) and ngram 3
(relu, untied head, label smoothing), odd widths and head counts, padding on the right, on the left and in the
middle: encoder states, the logits and the ngram streams' logits, transformers' loss and its float64 gradients,
greedy / beam / seeded sampling generation, float64 gradients of every parameter, save_pretrained, the relative-
position buckets, a pad token other than 0 (the positions' rows), bfloat16 and int8 weights, dropout in training,
and the errors of a bad config and of too long a decoder input (the ONNX export: test_hf_prophetnet_onnx.py)."""
import json

import numpy as np
import pytest

import forgegrad as fg

from forgegrad.models import from_pretrained, save_pretrained

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
pytestmark = pytest.mark.usefixtures("torch_one_thread")

from hf_conformance import check_seq2seq_generation, seq2seq_logits, weight_variant  # noqa: E402

VOCAB = 90
# hidden_size 30: 5 encoder heads of 6, 3 decoder heads of 10
_COMMON = dict(vocab_size=VOCAB, hidden_size=30, encoder_ffn_dim=37, decoder_ffn_dim=29, num_encoder_layers=2,
               num_decoder_layers=2, num_encoder_attention_heads=5, num_decoder_attention_heads=3,
               max_position_embeddings=64, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, init_std=0.3,
               pad_token_id=0, eos_token_id=1, bos_token_id=2, decoder_start_token_id=0)
CONFIGS = {"ngram2": dict(ngram=2, num_buckets=8, relative_max_distance=12),
           "ngram3": dict(ngram=3, num_buckets=6, relative_max_distance=9, activation_function="relu",
                          tie_word_embeddings=False, eps=0.1)}


def _hf(kind, **extra):
    """A transformers model with every LayerNorm random (a misplaced or missing one is seen)."""
    torch.manual_seed(0)
    hf = transformers.ProphetNetForConditionalGeneration(
        transformers.ProphetNetConfig(**{**_COMMON, **CONFIGS[kind], **extra})).eval()
    with torch.no_grad():
        for m in hf.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.normal_(1.0, 0.3)
                m.bias.normal_(0.0, 0.3)
    return hf


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request, tmp_path_factory):
    """(transformers model, forgegrad's from_pretrained of its checkpoint, the directory)."""
    hf = _hf(request.param)
    path = tmp_path_factory.mktemp("prophetnet") / request.param
    hf.save_pretrained(path)
    return hf, from_pretrained(path), path


def _inputs(dec_len=14):
    """dec_len 14: farther back than relative_max_distance (the logarithmic buckets and the last one)."""
    rng = np.random.RandomState(0)
    ids = rng.randint(3, VOCAB, (4, 11))
    mask = np.ones((4, 11), np.int64)
    mask[1, 7:] = 0  # right padding
    mask[2, :4] = 0  # left padding
    mask[3, 3:5] = 0  # a hole
    dec = rng.randint(3, VOCAB, (4, dec_len))
    dec[:, 0] = 0
    return ids, mask, dec


def _hf_out(hf, ids, mask, dec, **kw):
    with torch.no_grad():
        return hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), decoder_input_ids=torch.tensor(dec),
                  **kw)


def _close(got, want, tol=1e-4):
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())


def test_encoder_states_logits_ngram_logits_and_save_pretrained_are_transformers(pair, tmp_path):
    hf, model, path = pair
    assert type(model).__name__ == "ProphetNetForConditionalGeneration"
    ids, mask, dec = _inputs()
    with torch.no_grad():
        enc = hf.prophetnet.encoder(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    _close(model.encode(ids, mask).numpy(), enc.last_hidden_state.numpy())
    out = _hf_out(hf, ids, mask, dec)
    _close(model(ids, mask, dec).numpy(), out.logits.numpy())
    streams = model.ngram_logits(ids, mask, dec).numpy()
    assert streams.shape == (4, model.ngram, dec.shape[1], VOCAB)
    _close(streams[:, 0], out.logits.numpy())
    _close(streams[:, 1:], out.logits_ngram.numpy())
    save_pretrained(model, tmp_path / "saved")
    cfg = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert cfg["architectures"] == ["ProphetNetForConditionalGeneration"] and cfg["model_type"] == "prophetnet"
    back = transformers.ProphetNetForConditionalGeneration.from_pretrained(tmp_path / "saved").eval()
    _close(seq2seq_logits(back, ids, mask, dec), out.logits.numpy(), 1e-5)
    del cfg["architectures"]  # a config naming only its model_type
    (tmp_path / "saved" / "config.json").write_text(json.dumps(cfg))
    assert type(from_pretrained(tmp_path / "saved")).__name__ == "ProphetNetForConditionalGeneration"


def test_decoder_attention_mask_is_transformers(pair):
    """Padding among the decoder's tokens (right, a hole, the first place): its keys masked in the main stream and
    for the predicting streams, as transformers' decoder_attention_mask; the loss with it."""
    hf, model, _ = pair
    ids, mask, dec = _inputs()
    dec_mask = np.ones(dec.shape, np.int64)
    dec_mask[0, 9:] = 0
    dec_mask[2, 4:6] = 0
    dec_mask[3, 0] = 0
    out = _hf_out(hf, ids, mask, dec, decoder_attention_mask=torch.tensor(dec_mask))
    _close(model(ids, mask, dec, decoder_attention_mask=dec_mask).numpy(), out.logits.numpy())
    streams = model.ngram_logits(ids, mask, dec, decoder_attention_mask=dec_mask).numpy()
    _close(streams[:, 1:], out.logits_ngram.numpy())
    labels = np.where(dec_mask == 1, np.roll(dec, -1, axis=1), -100)
    with torch.no_grad():
        want = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), decoder_input_ids=torch.tensor(dec),
                  decoder_attention_mask=torch.tensor(dec_mask), labels=torch.tensor(labels)).loss
    got = model.loss(ids, mask, labels, decoder_input_ids=dec, decoder_attention_mask=dec_mask)
    np.testing.assert_allclose(float(got.numpy()), float(want), rtol=1e-5)


def test_one_decoder_token_reads_the_first_stream_alone(pair):
    """A single decoder place (generate's steps): the logits computed from the first predicting stream alone equal
    transformers' (the full forward, every stream, at length 1)."""
    hf, model, _ = pair
    ids, mask, dec = _inputs(1)
    _close(model(ids, mask, dec).numpy(), _hf_out(hf, ids, mask, dec).logits.numpy())


def test_greedy_beam_sampled_generation_is_transformers(pair):
    """transformers' generate runs its cache (the main stream's keys), as ours does."""
    hf, model, _ = pair
    ids, mask, _ = _inputs()
    check_seq2seq_generation(hf, model, ids, mask, new_tokens=12)


def _float64_reference(hf, ids, mask, disable_ngram_loss=False, **kw):
    """transformers' model in float64 (training mode) run on ids, its output. The mask goes in as float64: an integer
    one makes transformers' (1 - mask) float32, whose product with float64's lowest value is -inf, and 0 * -inf NaN
    at every kept key (a transformers bug of float64 ProphetNet)."""
    import copy
    ref = copy.deepcopy(hf).double().train()
    ref.config.disable_ngram_loss = ref.disable_ngram_loss = disable_ngram_loss
    out = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask, dtype=torch.float64), **kw)
    return ref, out


def _check_gradients(model, ref):
    theirs = dict(ref.named_parameters())
    want = {n: theirs.get("prophetnet." + n, theirs.get(n)).grad.numpy() for n, _ in model.named_parameters()}
    scale = max(float(np.abs(g).max()) for g in want.values())
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), want[name], rtol=1e-3, atol=1e-5 * scale, err_msg=name)


def test_gradients_of_every_parameter_are_transformers_in_float64(pair):
    """The gradient of the same random weighted sum of the logits (the relative-position projections, the ngram
    embeddings, the position tables, the untied head)."""
    hf, _, path = pair
    model = from_pretrained(path).train()
    ids, mask, dec = _inputs()
    ref, out = _float64_reference(hf, ids, mask, decoder_input_ids=torch.tensor(dec))
    w = np.random.RandomState(1).standard_normal(dec.shape + (VOCAB,))
    (out.logits * torch.tensor(w)).sum().backward()
    (model(ids, mask, dec) * fg.tensor(w.astype(np.float32))).sum().backward()
    _check_gradients(model, ref)


@pytest.mark.parametrize("disable_ngram_loss", [False, True])
def test_loss_and_its_gradients_are_transformers(pair, disable_ngram_loss):
    """transformers' loss of labels with ignored (-100) places: every stream scored on the same labels (or the first
    alone), label smoothing eps (the ngram3 config's 0.1); its float64 gradients."""
    hf, _, path = pair
    model = from_pretrained(path)
    model.config["disable_ngram_loss"] = disable_ngram_loss
    ids, mask, dec = _inputs()
    labels = dec.copy()
    labels[:, 0] = np.arange(4) + 5
    labels[1, 9:] = -100
    labels[3, 2] = -100
    ref, out = _float64_reference(hf, ids, mask, disable_ngram_loss, labels=torch.tensor(labels))
    out.loss.backward()
    model.train()
    got = model.loss(ids, mask, labels)
    got.backward()
    np.testing.assert_allclose(float(got.numpy()), float(out.loss.detach()), rtol=1e-5)
    _check_gradients(model, ref)


def test_relative_buckets_are_transformers():
    from transformers.models.prophetnet.modeling_prophetnet import compute_relative_buckets

    from forgegrad.models.hf.prophetnet import relative_buckets
    distance = np.arange(-40, 600)
    for buckets, far in [(32, 128), (8, 12), (6, 9), (5, 7), (2, 3)]:
        want = compute_relative_buckets(buckets, far, torch.tensor(distance), False).numpy()
        np.testing.assert_array_equal(relative_buckets(distance, buckets, far), want, err_msg=f"{buckets} {far}")


def test_a_pad_token_other_than_zero_moves_the_position_rows(tmp_path):
    """pad_token_id 3: the positions start at row 4 (transformers' cached generate needs pad 0: its forward only)."""
    hf = _hf("ngram2", pad_token_id=3)
    hf.save_pretrained(tmp_path)
    model = from_pretrained(tmp_path)
    ids, mask, dec = _inputs()
    dec[:, 0] = 3
    _close(model(ids, mask, dec).numpy(), _hf_out(hf, ids, mask, dec).logits.numpy())


@pytest.mark.parametrize("weights", ["bfloat16", "int8"])
def test_bfloat16_and_int8_weights_run_the_streams(pair, tmp_path, weights):
    """A bfloat16 checkpoint loaded as stored and an int8 weight-only model: every projection (the relative-position
    ones too) is their layer, the logits close to transformers' float32 ones, greedy generate's first steps the
    argmax of the variant's own full forward."""
    from forgegrad.models.hf.generation import generate
    hf, _, path = pair
    model = weight_variant(hf, path, weights, tmp_path)
    layer = model.decoder.layers[0].self_attn
    assert {type(layer.query_proj).__name__, type(layer.relative_pos_embeddings).__name__} <= {
        "WeightOnlyBF16Linear", "WeightOnlyInt8Linear"}
    ids, mask, dec = _inputs()
    want = _hf_out(hf, ids, mask, dec).logits.numpy()
    np.testing.assert_allclose(model(ids, mask, dec).numpy(), want, rtol=0, atol=0.06 * np.abs(want).max())
    out = generate(model, ids, attention_mask=mask, max_new_tokens=4, do_sample=False, num_beams=1,
                   no_repeat_ngram_size=0, repetition_penalty=1.0)
    # (its first step only: past it, a full forward's relative biases are transformers' permuted ones, generate's not)
    np.testing.assert_array_equal(out[:, 1], model(ids, mask, out[:, :1]).numpy()[:, -1].argmax(-1))


def test_bad_config_and_long_decoder_input_raise_naming_the_problem(pair, tmp_path):
    from forgegrad.models.hf import ProphetNetForConditionalGeneration
    cfg = {**_COMMON, **CONFIGS["ngram2"]}
    for key, value, message in [("ngram", 0, "ngram must be a positive integer"),
                                ("num_buckets", 1, "num_buckets must be at least 2"),
                                ("relative_max_distance", 4, "relative_max_distance must exceed"),
                                ("hidden_size", 31, "31 must be divisible by num_encoder_attention_heads 5"),
                                ("pad_token_id", 62, "pad_token_id must be an integer"),
                                ("eps", 1.5, "eps .* must be a number in"),
                                ("add_cross_attention", False, "add_cross_attention must be true")]:
        with pytest.raises(ValueError, match=message):
            ProphetNetForConditionalGeneration({**cfg, key: value})
    _, model, path = pair
    ids, mask, _ = _inputs()
    with pytest.raises(ValueError, match="max_position_embeddings 64"):
        model(ids, mask, np.zeros((4, 63), np.int64))
    model(ids, mask, np.zeros((4, 62), np.int64))  # pad 0: places 0..61 read rows up to 63
    from forgegrad.models.hf.generation import generate
    with pytest.raises(ValueError, match="62 positions"):  # the decoder's inputs: 1 + max_new_tokens - 1 places
        generate(model, ids, attention_mask=mask, max_new_tokens=63)
    saved = json.loads((path / "config.json").read_text())
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text(json.dumps({**saved, "num_buckets": 0}))
    (tmp_path / "bad" / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="num_buckets"):
        from_pretrained(tmp_path / "bad")


@pytest.mark.parametrize("key", ["dropout", "attention_dropout", "activation_dropout"])
def test_training_applies_the_configs_dropout(key):
    """Training: hidden, attention-weight (both attentions and the streams') and activation dropout draw from
    forgegrad's generator (a seed repeats the logits, another seed changes them); eval mode leaves them out."""
    from forgegrad.models.hf import ProphetNetForConditionalGeneration
    model = ProphetNetForConditionalGeneration({**_COMMON, **CONFIGS["ngram2"], key: 0.5})
    ids, mask, dec = _inputs()
    model.eval()
    plain = model(ids, mask, dec).numpy()
    np.testing.assert_array_equal(model(ids, mask, dec).numpy(), plain)
    model.train()
    logits = []
    for seed in (3, 3, 4):
        fg.manual_seed(seed)
        logits.append(model(ids, mask, dec).numpy())
    np.testing.assert_array_equal(logits[0], logits[1])
    assert np.abs(logits[0] - logits[2]).max() > 1e-4 and np.abs(logits[0] - plain).max() > 1e-4


def test_generate_to_the_end_of_the_position_table_is_transformers(pair):
    """62 new tokens (min_new_tokens: every step): the last input place reads the table's last row, the distances run
    far past relative_max_distance (the last bucket)."""
    from forgegrad.models.hf.generation import generate
    hf, model, _ = pair
    ids, mask, _ = _inputs()
    kw = dict(max_new_tokens=62, min_new_tokens=62)
    with torch.no_grad():
        want = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), **kw).numpy()
    np.testing.assert_array_equal(generate(model, ids, attention_mask=mask, **kw), want)
