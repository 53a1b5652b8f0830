"""Whisper exported to ONNX (export_seq2seq: encoder.onnx with input_features, decoder.onnx with its cache and the
generation settings in its metadata) from a checkpoint transformers wrote, run in onnxruntime: encoder outputs and
decoder logits equal forgegrad's at batch 1 and 3 from one export, and generate_onnx_whisper's tokens equal
model.generate's and transformers' (language and task given, or the language detected; on a checkpoint that
predicts timestamps: short-form timestamps, long-form windows of a batch, a text prompt, beam search, the
temperature fallback, condition_on_prev_tokens over a batch of different lengths), segments and times included; the
CLI export; bad input and token timestamps on a decoder graph exported without the alignment heads'
cross_attentions (tests/test_onnx_whisper_padding_times.py has those)."""

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained
from forgegrad.models.hf import export_seq2seq, generate_onnx_seq2seq, generate_onnx_whisper
from test_hf_whisper_timestamps import PREV, T0, _same, pair  # noqa: F401 (pair: the timestamps checkpoint)
from whisper_helpers import build_whisper

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
transformers.logging.set_verbosity_error()

# the tiny vocabulary of test_hf_whisper.py: text below 100, then Whisper's special tokens in their order
EOS, START, EN, FR, DE, TRANSLATE, TRANSCRIBE, NO_TIMESTAMPS = 100, 101, 102, 103, 104, 105, 106, 107
MELS, FRAMES = 16, 100  # one 1-second window: 100 frames, 50 encoder positions


def _checkpoint(path):
    """A multilingual tiny Whisper (random weights, std 0.3 so that outputs depend on the audio) with the generation
    settings of the real checkpoints, saved by transformers; returns transformers' model loaded back."""
    build_whisper(path, vocab_size=120, max_target_positions=40, suppress_tokens=[1, 5] + list(range(108, 120)),
                  timestamps=False, language_rows=True, feature_extractor=False)
    return transformers.WhisperForConditionalGeneration.from_pretrained(path).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(forgegrad model, transformers model, encoder session, decoder session, checkpoint path), exported once."""
    root = tmp_path_factory.mktemp("onnx_whisper")
    hf = _checkpoint(root / "ckpt")
    model = from_pretrained(root / "ckpt")
    enc, dec = export_seq2seq(model, root / "onnx")
    assert enc.ok and dec.ok
    sessions = (ort.InferenceSession(str(root / "onnx" / f), providers=["CPUExecutionProvider"])
                for f in ("encoder.onnx", "decoder.onnx"))
    return (model, hf, *sessions, root / "ckpt")


def _features(batch, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, MELS, FRAMES)).astype(np.float32)


def test_graph_inputs_and_outputs(exported):
    _, _, enc, dec, _ = exported
    assert [(i.name, i.shape) for i in enc.get_inputs()] == [("input_features", ["batch", MELS, FRAMES])]
    assert [o.name for o in enc.get_outputs()] == ["last_hidden_state"] + [
        f"present.{i}.encoder.{kv}" for i in range(2) for kv in ("key", "value")]
    assert [i.name for i in dec.get_inputs()] == ["input_ids", "decoder_attention_mask"] + [
        f"past_key_values.{i}.{side}.{kv}" for i in range(2) for side in ("decoder", "encoder")
        for kv in ("key", "value")]
    assert [o.name for o in dec.get_outputs()] == ["logits"] + [
        f"present.{i}.decoder.{kv}" for i in range(2) for kv in ("key", "value")]


@pytest.mark.parametrize("batch", [1, 3])
def test_encoder_and_decoder_steps_equal_forgegrad(exported, batch):
    """One export, run at batch 1 and 3: the encoder's states and cross keys/values, then the decoder on the 4-token
    prompt with no past and on 1 and 2 tokens after its own cache, each call's logits equal forgegrad's decode."""
    model, _, enc, dec, _ = exported
    x = _features(batch, seed=batch)
    states, *cross = enc.run(None, {"input_features": x})
    with fg.no_grad():
        want_states = model.encode(x)
        want_cross = [t.numpy() for kv in model.cross_kv(want_states) for t in kv]
    np.testing.assert_allclose(states, want_states.numpy(), rtol=1e-4, atol=1e-4)
    for got, want in zip(cross, want_cross, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    names = [i.name for i in dec.get_inputs()[2:]]
    self_names = [n for n in names if ".decoder." in n]
    it = iter(cross)
    past = {n: next(it) if ".encoder." in n else np.zeros((batch, 2, 0, 16), np.float32) for n in names}
    rng = np.random.default_rng(5)
    seq = np.empty((batch, 0), np.int64)
    for new in (4, 1, 2):
        ids = rng.integers(0, 100, (batch, new))
        if not seq.shape[1]:
            ids[:, :4] = [START, FR, TRANSCRIBE, NO_TIMESTAMPS]
        seq = np.concatenate([seq, ids], 1)
        logits, *present = dec.run(None, {"input_ids": ids, **past,
                                          "decoder_attention_mask": np.ones(seq.shape, np.int64)})
        with fg.no_grad():
            want = model.decode(seq, want_states).numpy()[:, -new:]
        np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-4, err_msg=f"after {seq.shape[1] - new} tokens")
        past.update(zip(self_names, present))


@pytest.mark.parametrize("kwargs", [dict(language="fr", task="transcribe", max_new_tokens=12),
                                    dict(language="de", task="translate", max_new_tokens=12),
                                    dict(language=["de", "french", "<|en|>"], max_new_tokens=12),
                                    dict(max_new_tokens=12), dict()],
                         ids=["fr-transcribe", "de-translate", "per-row", "detect", "max-length"])
def test_generate_onnx_whisper_equals_generate_and_transformers(exported, kwargs):
    """Forced language and task, one language per row, the language detected per row (max_new_tokens given, or
    the config's max_length): the tokens of model.generate and transformers' generate, end tokens trimmed."""
    model, hf, enc, dec, _ = exported
    x = _features(3, seed=3)
    got = generate_onnx_whisper(enc, dec, x, **kwargs)
    np.testing.assert_array_equal(got, model.generate(x, **kwargs))
    with torch.no_grad():
        np.testing.assert_array_equal(got, hf.generate(torch.tensor(x), **kwargs).numpy())


def test_detected_languages_differ_per_row(exported):
    """The three inputs detect three languages (transformers' first step says which): detection gives the tokens
    of those languages given per row, not those of one language for all."""
    _, hf, enc, dec, _ = exported
    x = _features(3, seed=3)
    with torch.no_grad():
        first = hf(torch.tensor(x), decoder_input_ids=torch.full((3, 1), START)).logits[:, -1, [EN, FR, DE]]
    detected = [["en", "fr", "de"][i] for i in first.argmax(-1).tolist()]
    assert len(set(detected)) == 3
    kw = dict(task="transcribe", max_new_tokens=12)
    got = generate_onnx_whisper(enc, dec, x, **kw)
    np.testing.assert_array_equal(got, generate_onnx_whisper(enc, dec, x, language=detected, **kw))
    assert not np.array_equal(got, generate_onnx_whisper(enc, dec, x, language="en", **kw))


def test_forgegrad_export_cli_writes_whisper_graphs(exported, tmp_path):
    """`forgegrad export WHISPER_DIR --out DIR`: encoder.onnx and decoder.onnx, verified, and the checkpoint's
    generation_config.json beside them (as every export writes it); generate_onnx_whisper on the paths gives
    model.generate's tokens; a file path is refused."""
    from forgegrad.cli import main
    model, _, _, _, ckpt = exported
    assert main(["export", str(ckpt), "--out", str(tmp_path / "onnx")]) == 0
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == ["decoder.onnx", "encoder.onnx",
                                                                      "generation_config.json"]
    x = _features(2, seed=7)
    got = generate_onnx_whisper(tmp_path / "onnx" / "encoder.onnx", tmp_path / "onnx" / "decoder.onnx", x,
                                language="en", max_new_tokens=8)
    np.testing.assert_array_equal(got, model.generate(x, language="en", max_new_tokens=8))
    (tmp_path / "file.onnx").write_bytes(b"")
    assert main(["export", str(ckpt), "--out", str(tmp_path / "file.onnx")]) == 2


def test_bad_input_and_wrong_graphs(exported):
    model, _, enc, dec, _ = exported
    x = _features(2)
    with pytest.raises(ValueError, match=r"input_features must be float \(batch, 16, frames\).*shape \(2, 12, 100\)"):
        generate_onnx_whisper(enc, dec, x[:, :12])  # mel bins
    with pytest.raises(ValueError, match=r"input_features must be.*shape \(16, 100\)"):
        generate_onnx_whisper(enc, dec, x[0])  # rank
    with pytest.raises(ValueError, match=r"input_features must be.*int64"):
        generate_onnx_whisper(enc, dec, x.astype(np.int64))
    with pytest.raises(ValueError, match=r"long-form audio needs attention_mask"):  # as model.generate
        generate_onnx_whisper(enc, dec, np.concatenate([x, x[:, :, :1]], axis=2))
    # fewer frames are padded with zeros, as transformers and model.generate pad them
    short = _features(2, seed=4)[:, :, :60]
    np.testing.assert_array_equal(generate_onnx_whisper(enc, dec, short, language="fr", max_new_tokens=8),
                                  model.generate(short, language="fr", max_new_tokens=8))
    with pytest.raises(ValueError, match="unsupported language 'klingon'"):
        generate_onnx_whisper(enc, dec, x, language="klingon")
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_onnx_whisper(enc, dec, x, language="en", max_new_tokens=40)
    with pytest.raises(ValueError, match="not export_seq2seq's encoder and decoder of a Whisper model"):
        generate_onnx_whisper(dec, enc, x)
    with pytest.raises(ValueError, match="generate_onnx_whisper"):  # the text models' loop names Whisper's
        generate_onnx_seq2seq(enc, dec, np.ones((1, 3), np.int64), decoder_start_token_id=START)


@pytest.fixture(scope="module")
def stamped(pair, tmp_path_factory):  # noqa: F811
    """(forgegrad model, transformers model, encoder session, decoder session) of test_hf_whisper_timestamps'
    checkpoint (it predicts timestamps; 1-second windows), exported once."""
    model, hf, _ = pair
    out = tmp_path_factory.mktemp("onnx_whisper_ts")
    enc, dec = export_seq2seq(model, out)
    assert enc.ok and dec.ok
    return (model, hf, *(ort.InferenceSession(str(out / f), providers=["CPUExecutionProvider"])
                         for f in ("encoder.onnx", "decoder.onnx")))


def _long(batch, frames=350, seed=0):
    """Long-form features (batch, 16, frames) and their attention_mask: the second input 2.3 seconds long."""
    x = np.random.default_rng(seed).standard_normal((batch, MELS, frames)).astype(np.float32)
    mask = np.ones((batch, frames), np.int64)
    mask[1:, 230:] = 0
    x[1:, :, 230:] = 0.0
    return x, mask


@pytest.mark.parametrize("case", [
    dict(frames=FRAMES, batch=2, kw=dict(language=["fr", "de"], max_new_tokens=14, return_timestamps=True)),
    dict(frames=350, batch=2, kw=dict(language="en", max_new_tokens=20)),
    dict(frames=FRAMES, batch=2, kw=dict(language="en", max_new_tokens=10, prompt_ids=[PREV, 7, 42, 13])),
    dict(frames=350, batch=1, kw=dict(language="en", max_new_tokens=16, prompt_ids=[PREV, 7, 42, 13, 99, 5],
                                      condition_on_prev_tokens=True)),
    dict(frames=FRAMES, batch=2, kw=dict(language="en", max_new_tokens=12, num_beams=2)),
    dict(frames=350, batch=2, kw=dict(language="en", max_new_tokens=16, num_beams=2)),
    dict(frames=350, batch=2, kw=dict(language="en", max_new_tokens=16, temperature=(0.0, 0.0),
                                      compression_ratio_threshold=1.4, logprob_threshold=-0.5)),
], ids=["timestamps", "long-form", "prompt", "long-form-prompt-conditioned", "beams-2", "long-form-beams-2",
        "fallback"])
def test_onnx_generate_equals_generate_and_transformers(stamped, case):
    """The same settings through model.generate, generate_onnx_whisper and transformers' generate (timestamps
    implied by long-form audio or asked for): the same rows, segments and times."""
    model, hf, enc, dec = stamped
    x, mask = _long(case["batch"], case["frames"], seed=1)
    kw = dict(case["kw"], return_segments=True, return_timestamps=True)
    if case["frames"] > FRAMES:
        kw["attention_mask"] = mask
    ours = generate_onnx_whisper(enc, dec, x, **kw)
    want = model.generate(x, **kw)
    np.testing.assert_array_equal(ours["sequences"], want["sequences"])
    assert [[(s["start"], s["end"], s["tokens"].tolist()) for s in row] for row in ours["segments"]] == \
        [[(s["start"], s["end"], s["tokens"].tolist()) for s in row] for row in want["segments"]]
    theirs = {k: torch.tensor(v) for k, v in kw.items() if k in ("attention_mask", "prompt_ids")}
    with torch.no_grad():
        _same(ours, hf.generate(torch.tensor(x), **{**kw, **theirs}))
    assert (ours["sequences"] >= T0).any()  # timestamps predicted
    if case["frames"] > FRAMES:
        assert ours["segments"][0][-1]["end"] > 2.0  # several windows


def test_onnx_generate_left_padded_and_without_cross_attentions(stamped, tmp_path):
    """Previous tokens of different lengths across the batch decode on the graphs' decoder_attention_mask as
    model.generate decodes them; token timestamps need a decoder exported with cross_attentions=True (this one was
    not: the error names the export), which needs the checkpoint's alignment_heads (it has none: refused before
    anything is written)."""
    model, _, enc, dec = stamped
    x, mask = _long(2, 450, seed=5)
    with pytest.raises(ValueError, match=r"export_seq2seq\(model, DIR, cross_attentions=True\)"):
        generate_onnx_whisper(enc, dec, x[:, :, :FRAMES], language="en", return_token_timestamps=True)
    kw = dict(attention_mask=mask, language="en", max_new_tokens=16, condition_on_prev_tokens=True)
    np.testing.assert_array_equal(generate_onnx_whisper(enc, dec, x, **kw), model.generate(x, **kw))
    with pytest.raises(ValueError, match="cross_attentions=True.*alignment_heads"):
        export_seq2seq(model, tmp_path / "onnx", cross_attentions=True)
    assert not (tmp_path / "onnx").exists()
