"""ONNX export of the encoder-decoders with their KV caches (forgegrad.models.hf.export_seq2seq): T5, BART,
Marian, mBART and M2M100 checkpoints written by transformers itself, exported as an encoder graph (with every
decoder layer's cross-attention keys and values) and a decoder graph (with its own cache), then run in onnxruntime:
logits equal transformers' at every step, greedy tokens equal transformers' generate on a right-padded batch,
forced first/last tokens and end tokens included."""
import numpy as np
import pytest

from forgegrad.models import from_pretrained
from forgegrad.models.hf import export_seq2seq, generate, generate_onnx_seq2seq
from hf_conformance import seq2seq_logits

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
transformers.logging.set_verbosity_error()

VOCAB = 120
_BART = dict(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=3, encoder_attention_heads=4,
             decoder_attention_heads=2, encoder_ffn_dim=48, decoder_ffn_dim=40, max_position_embeddings=64,
             dropout=0.0, init_std=0.3)
MODELS = {
    # relative-position buckets over distances past max_distance (12): the 10-token inputs and 20 new tokens
    "t5": lambda: transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=12, initializer_factor=3.0,
        dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)),
    # T5 v1.1 / Flan-T5's form: gated GELU, untied head (no d_model ** -0.5 on the output)
    "t5_gated": lambda: transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4, feed_forward_proj="gated-gelu",
        tie_word_embeddings=False, initializer_factor=3.0, dropout_rate=0.0, decoder_start_token_id=0,
        pad_token_id=0, eos_token_id=1)),
    # learned positions offset by 2, scaled embeddings, the config's forced last token
    "bart": lambda: transformers.BartForConditionalGeneration(transformers.BartConfig(**_BART, scale_embedding=True)),
    # fixed sinusoidal positions, the pad token as the decoder's start
    "marian": lambda: transformers.MarianMTModel(transformers.MarianConfig(
        **_BART, scale_embedding=True, activation_function="swish", pad_token_id=VOCAB - 1,
        decoder_start_token_id=VOCAB - 1, eos_token_id=2, forced_eos_token_id=2)),
    # Marian with separate source and target vocabularies (120 and 90 tokens: its own decoder table and head)
    "marian_separate": lambda: transformers.MarianMTModel(transformers.MarianConfig(
        **_BART, scale_embedding=True, activation_function="swish", share_encoder_decoder_embeddings=False,
        decoder_vocab_size=90, pad_token_id=89, decoder_start_token_id=89, eos_token_id=2, forced_eos_token_id=2)),
    # pre-norm layers and a LayerNorm after each stack, the end token as the decoder's start
    "mbart": lambda: transformers.MBartForConditionalGeneration(transformers.MBartConfig(
        **_BART, scale_embedding=True, decoder_start_token_id=2)),
    # M2M100 / NLLB: mBART's layers, a fixed position table counted over non-padding tokens
    "m2m100": lambda: transformers.M2M100ForConditionalGeneration(transformers.M2M100Config(
        **_BART, decoder_start_token_id=2)),
}
IDS = np.random.RandomState(0).randint(3, VOCAB - 1, (3, 10))
MASK = np.ones((3, 10), np.int64)
MASK[1, 6:] = 0  # right padding, as T5's and BART's tokenizers pad
MASK[2, 2:] = 0


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{name: (transformers model, forgegrad model, encoder session, decoder session)}."""
    out = {}
    torch.manual_seed(0)
    for name, make in MODELS.items():
        hf = make().eval()
        if hasattr(hf, "final_logits_bias"):
            with torch.no_grad():  # a non-zero final_logits_bias, so that it is checked too
                hf.final_logits_bias.normal_()
        root = tmp_path_factory.mktemp("s2s_" + name)
        hf.save_pretrained(root / "ckpt")
        model = from_pretrained(root / "ckpt")
        # activations of magnitude 10-100 (initializer_factor 3, init_std 0.3): onnxruntime's sums in another
        # order differ by ~1e-5 of that
        enc, dec = export_seq2seq(model, root / "onnx", atol=1e-3)
        assert enc.ok and dec.ok
        out[name] = (hf, model, *(ort.InferenceSession(str(root / "onnx" / f), providers=["CPUExecutionProvider"])
                                  for f in ("encoder.onnx", "decoder.onnx")))
    return out


@pytest.mark.parametrize("name", list(MODELS))
def test_graph_inputs_and_outputs(exported, name):
    _, model, enc, dec = exported[name]
    n = len(model.new_cache(1, 1).keys)
    assert [i.name for i in enc.get_inputs()] == ["input_ids", "attention_mask"]
    assert [o.name for o in enc.get_outputs()] == ["last_hidden_state"] + [
        f"present.{i}.encoder.{kv}" for i in range(n) for kv in ("key", "value")]
    assert [i.name for i in dec.get_inputs()] == ["input_ids", "encoder_attention_mask"] + [
        f"past_key_values.{i}.{side}.{kv}" for i in range(n) for side in ("decoder", "encoder")
        for kv in ("key", "value")]
    shapes = {i.name: i.shape for i in dec.get_inputs() + dec.get_outputs()}
    assert shapes["past_key_values.0.decoder.key"][::2] == ["batch", "past_sequence"]
    assert shapes["past_key_values.0.encoder.value"][::2] == ["batch", "encoder_sequence"]
    assert shapes["present.1.decoder.key"][::2] == ["batch", "past_sequence+sequence"]


@pytest.mark.parametrize("name", list(MODELS))
def test_each_step_gives_transformers_logits(exported, name):
    """Encoder once; the decoder on 3 tokens with no past, then 1, 1 and 2 tokens on its own cache: each call's
    logits equal transformers' forward over all decoder tokens so far (right-padded inputs)."""
    hf, model, enc, dec = exported[name]
    enc_out = enc.run(None, {"input_ids": IDS, "attention_mask": MASK})
    assert np.allclose(enc_out[0], model.encode(IDS, MASK).numpy(), rtol=1e-4, atol=1e-4)
    names = [i.name for i in dec.get_inputs()[2:]]
    cross = iter(enc_out[1:])
    past = {n: next(cross) if ".encoder." in n else np.zeros((3, s[1], 0, s[3]), np.float32)
            for n, s in ((i.name, i.shape) for i in dec.get_inputs()[2:])}
    rng = np.random.RandomState(1)
    seq = np.empty((3, 0), np.int64)
    for new in (3, 1, 1, 2):
        ids = rng.randint(3, min(VOCAB, model.decoder_vocab_size) - 1, (3, new))  # the decoder's vocabulary
        if seq.shape[1] == 0:
            ids[:, 0] = model.decoder_start_token_id
        seq = np.concatenate([seq, ids], 1)
        logits, *present = dec.run(None, {"input_ids": ids, "encoder_attention_mask": MASK, **past})
        want = seq2seq_logits(hf, IDS, MASK, seq)[:, -new:]
        # logits of magnitude 20-90 (initializer_factor 3): within 1e-4 of their scale
        np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-4 * np.abs(want).max(),
                                   err_msg=f"after {seq.shape[1] - new} tokens")
        past.update(zip([n for n in names if ".decoder." in n], present))


@pytest.mark.parametrize("name", list(MODELS))
def test_greedy_tokens_in_onnxruntime_are_transformers(exported, name):
    hf, model, enc, dec = exported[name]
    cfg = model.config
    got = generate_onnx_seq2seq(enc, dec, IDS, MASK, decoder_start_token_id=model.decoder_start_token_id,
                                max_new_tokens=20, eos_token_id=cfg["eos_token_id"], pad_token_id=cfg["pad_token_id"],
                                forced_bos_token_id=cfg.get("forced_bos_token_id"),
                                forced_eos_token_id=cfg.get("forced_eos_token_id"))
    with torch.no_grad():
        want = hf.generate(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK), max_new_tokens=20,
                           do_sample=False, num_beams=1).numpy()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, generate(model, IDS, attention_mask=MASK, max_new_tokens=20, num_beams=1))
    if name.startswith("t5"):  # varied tokens (random BART weights repeat one: the logits test checks each step)
        assert len(set(got[:, 1:].ravel().tolist())) > 3


def test_sampling_and_argument_errors(exported, tmp_path):
    import forgegrad as fg
    _, model, enc, dec = exported["bart"]
    kw = dict(max_new_tokens=15, do_sample=True, temperature=1.5, top_k=30)
    fg.manual_seed(3)
    a = generate_onnx_seq2seq(enc, dec, IDS, MASK, decoder_start_token_id=2, **kw)
    fg.manual_seed(3)
    b = generate_onnx_seq2seq(enc, dec, IDS, MASK, decoder_start_token_id=2, **kw)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, generate_onnx_seq2seq(enc, dec, IDS, MASK, decoder_start_token_id=2,
                                                       max_new_tokens=15))
    with pytest.raises(ValueError, match="attention_mask must have"):
        generate_onnx_seq2seq(enc, dec, IDS, MASK[:, :4], decoder_start_token_id=2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_onnx_seq2seq(enc, dec, IDS, decoder_start_token_id=2, max_new_tokens=-1)
    with pytest.raises(ValueError, match="not export_seq2seq's"):
        generate_onnx_seq2seq(dec, enc, IDS, decoder_start_token_id=2)
    from forgegrad import nn
    with pytest.raises(TypeError, match="Linear is not an encoder-decoder"):
        export_seq2seq(nn.Linear(2, 2), tmp_path)


def test_forgegrad_export_cli_writes_both_graphs(tmp_path):
    """`forgegrad export T5_DIR --out DIR`: encoder.onnx and decoder.onnx, verified, and the checkpoint's
    generation_config.json beside them (the start, end and pad tokens generate_onnx_seq2seq reads); a file path is
    refused."""
    from forgegrad.cli import main
    torch.manual_seed(0)
    hf = MODELS["t5"]().eval()
    hf.save_pretrained(tmp_path / "ckpt")
    assert main(["export", str(tmp_path / "ckpt"), "--out", str(tmp_path / "onnx")]) == 0
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == ["decoder.onnx", "encoder.onnx",
                                                                      "generation_config.json"]
    got = generate_onnx_seq2seq(tmp_path / "onnx" / "encoder.onnx", tmp_path / "onnx" / "decoder.onnx", IDS, MASK,
                                max_new_tokens=8)
    with torch.no_grad():
        want = hf.generate(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK), max_new_tokens=8,
                           do_sample=False, num_beams=1).numpy()
    np.testing.assert_array_equal(got, want)
    (tmp_path / "file.onnx").write_bytes(b"")
    assert main(["export", str(tmp_path / "ckpt"), "--out", str(tmp_path / "file.onnx")]) == 2


def test_bench_generate_times_onnxruntime_on_the_exported_encoder_decoder(exported, monkeypatch):
    """The bench's T5 row: onnxruntime's generation on export_seq2seq's graphs yields forgegrad's tokens."""
    import forgegrad.bench.generate as bench
    monkeypatch.setattr(bench, "NEW", 9)
    _, model, _, _ = exported["t5"]
    run = bench._onnxruntime_seq2seq(model, IDS[:1], threads=1)
    np.testing.assert_array_equal(run(), generate(model, IDS[:1], max_new_tokens=9, eos_token_id=None))
