"""Whisper from a checkpoint transformers wrote: log-mel features, logits, gradients and generate (prompt, language
detection, tasks, suppressed tokens, end tokens) against transformers; save_pretrained; bfloat16 and int8 weights."""
import copy
import json

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained, save_pretrained
from forgegrad.models.hf import WhisperFeatureExtractor, WhisperForConditionalGeneration

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from hf_conformance import weight_variant  # noqa: E402
from whisper_helpers import build_whisper  # noqa: E402

# token ids of the tiny vocabulary: text below 100, then Whisper's special tokens in their order
EOS, START, EN, FR, DE, TRANSLATE, TRANSCRIBE, NO_TIMESTAMPS = 100, 101, 102, 103, 104, 105, 106, 107
MELS, FRAMES = 16, 100  # one 1-second window: 100 frames, 50 encoder positions


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A multilingual tiny Whisper (random weights, std 0.3 so that outputs depend on the audio) with the generation
    settings of the real checkpoints: lang_to_id, task_to_id, <|notimestamps|>, suppressed tokens (timestamps too)."""
    path = build_whisper(tmp_path_factory.mktemp("whisper") / "tiny", vocab_size=120, max_target_positions=40,
                         suppress_tokens=[1, 5] + list(range(108, 120)), timestamps=False)
    hf = transformers.WhisperForConditionalGeneration.from_pretrained(path).eval()
    return from_pretrained(path), hf, path


def _features(batch=3, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, MELS, FRAMES)).astype(np.float32)


def _speech(seconds, seed):
    """Tones and noise: something with a spectrum."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    tone = sum(rng.uniform(0.05, 0.3) * np.sin(2 * np.pi * rng.uniform(80, 4000) * t) for _ in range(4))
    return (tone + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)


def test_architecture_and_logits(pair):
    model, hf, _ = pair
    assert isinstance(model, WhisperForConditionalGeneration)
    x, dec = _features(), np.array([[START, FR, TRANSCRIBE, NO_TIMESTAMPS, 7, 9, 11]] * 3)
    with fg.no_grad():
        ours = model(x, decoder_input_ids=dec).numpy()
        states = model.encode(x).numpy()
    with torch.no_grad():
        out = hf(torch.tensor(x), decoder_input_ids=torch.tensor(dec))
    np.testing.assert_allclose(states, out.encoder_last_hidden_state.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours, out.logits.numpy(), rtol=1e-4, atol=1e-4)


def test_gradients_match_transformers_float64(pair):
    model, hf, path = pair
    model = from_pretrained(path).train()
    ref = copy.deepcopy(hf).double().train()
    x, dec = _features(2, seed=4), np.array([[START, EN, 7, 9, 11]] * 2)
    w = np.random.RandomState(1).standard_normal(dec.shape + (120,))
    (ref(torch.tensor(x, dtype=torch.float64), decoder_input_ids=torch.tensor(dec)).logits
     * torch.tensor(w)).sum().backward()
    (model(x, decoder_input_ids=dec) * fg.tensor(w.astype(np.float32))).sum().backward()
    theirs = dict(ref.named_parameters())
    for name, p in model.named_parameters():
        g = theirs["model." + name].grad.numpy()
        np.testing.assert_allclose(p.grad.numpy(), g, rtol=2e-3, atol=2e-4 * np.abs(g).max(), err_msg=name)


@pytest.mark.parametrize("kwargs", [
    dict(max_new_tokens=8),  # the language detected per input
    dict(language="fr", task="translate", max_new_tokens=8),
    dict(language=["fr", "german", "<|en|>"], max_new_tokens=8),  # one per input: code, name, token
    dict(),  # the config's max_length (20) new tokens
    dict(task="transcribe"),
    dict(eos_token_id=68, max_new_tokens=10, language="en"),  # rows end: the end token dropped, padded
    dict(eos_token_id=53, pad_token_id=53, max_new_tokens=6),  # pad == end
    dict(eos_token_id=[53, 32], pad_token_id=0, max_new_tokens=10, language="de"),
], ids=["detect", "fr-translate", "per-row", "max-length", "transcribe", "end", "pad-is-end", "end-list"])
def test_greedy_generate_matches_transformers(pair, kwargs):
    model, hf, _ = pair
    x = _features()
    ours = model.generate(x, **kwargs)
    theirs = hf.generate(torch.tensor(x), **kwargs).numpy()
    np.testing.assert_array_equal(ours, theirs)


def test_forced_decoder_ids_and_english_only(pair, tmp_path):
    model, hf, path = pair
    x = _features(2, seed=5)
    model.generation_config = dict(model.generation_config, forced_decoder_ids=[[1, DE], [2, TRANSLATE]])
    hf_forced = copy.deepcopy(hf)
    hf_forced.generation_config.forced_decoder_ids = [[1, DE], [2, TRANSLATE]]
    try:
        np.testing.assert_array_equal(model.generate(x, max_new_tokens=6),
                                      hf_forced.generate(torch.tensor(x), max_new_tokens=6).numpy())
        model.generation_config["is_multilingual"] = False
        with pytest.raises(ValueError, match="multilingual"):
            model.generate(x, language="fr")
    finally:
        model.generation_config = from_pretrained(path).generation_config


def test_generate_errors(pair):
    model, _, _ = pair
    x = _features(1)
    with pytest.raises(ValueError, match=r"input_features must be float \(batch, 16, frames\)"):
        model.generate(x[:, :12])
    with pytest.raises(ValueError, match="unsupported language 'klingon'"):
        model.generate(x, language="klingon")
    with pytest.raises(ValueError, match="not in this checkpoint's lang_to_id"):
        model.generate(x, language="japanese")
    with pytest.raises(ValueError, match="task must be"):
        model.generate(x, task="summarize")
    with pytest.raises(ValueError, match="exceed max_target_positions 40"):
        model.generate(x, max_new_tokens=40)
    with pytest.raises(ValueError, match="one \\(not None\\) per input"):
        model.generate(np.concatenate([x, x]), language=["fr"])


def test_sampling_is_seeded(pair):
    model, _, _ = pair
    x = _features(2, seed=7)
    fg.manual_seed(3)
    a = model.generate(x, do_sample=True, temperature=1.5, max_new_tokens=12, language="en")
    fg.manual_seed(3)
    b = model.generate(x, do_sample=True, temperature=1.5, max_new_tokens=12, language="en")
    np.testing.assert_array_equal(a, b)
    assert a.shape[0] == 2 and not np.isin(a, list(range(108, 120)) + [1, 5]).any()  # suppressed tokens never drawn


def test_feature_extractor_matches_transformers(pair):
    _, _, path = pair
    ours = WhisperFeatureExtractor.from_pretrained(path)
    theirs = transformers.WhisperFeatureExtractor.from_pretrained(path)
    audio = [_speech(0.7, 1), _speech(1.4, 2), _speech(0.05, 3)]  # short, cut to the window, very short
    a = ours(audio, sampling_rate=16000, return_attention_mask=True)
    b = theirs(audio, sampling_rate=16000, return_attention_mask=True, return_tensors="np")
    assert a["input_features"].shape == (3, MELS, FRAMES) and a["input_features"].dtype == np.float32
    np.testing.assert_allclose(a["input_features"], b["input_features"], atol=2e-5)
    np.testing.assert_array_equal(a["attention_mask"], b["attention_mask"])
    # the whole 30-second window of the real checkpoints, normalized, and one waveform as a plain array
    full, ref = WhisperFeatureExtractor(), transformers.WhisperFeatureExtractor()
    for args in (dict(do_normalize=True), dict()):
        got = full(_speech(3.2, 4), **args)["input_features"]
        want = ref(_speech(3.2, 4), sampling_rate=16000, return_tensors="np", **args)["input_features"]
        assert got.shape == (1, 80, 3000)
        np.testing.assert_allclose(got, want, atol=2e-5)
    longest = ours(audio[:1] + audio[2:], padding="longest")["input_features"]
    want = theirs(audio[:1] + audio[2:], sampling_rate=16000, padding="longest", return_tensors="np")
    np.testing.assert_allclose(longest, want["input_features"], atol=2e-5)


def test_features_to_tokens(pair):
    """The whole path, audio to tokens, as transformers runs it."""
    model, hf, path = pair
    audio = [_speech(0.8, 11), _speech(0.5, 12)]
    x = WhisperFeatureExtractor.from_pretrained(path)(audio)["input_features"]
    y = transformers.WhisperFeatureExtractor.from_pretrained(path)(audio, sampling_rate=16000,
                                                                  return_tensors="pt").input_features
    np.testing.assert_array_equal(model.generate(x, language="en", max_new_tokens=10),
                                  hf.generate(y, language="en", max_new_tokens=10).numpy())


def test_feature_extractor_errors(tmp_path):
    fe = WhisperFeatureExtractor(feature_size=16, chunk_length=1)
    with pytest.raises(ValueError, match="sampling_rate 8000"):
        fe(np.zeros(100, np.float32), sampling_rate=8000)
    with pytest.raises(ValueError, match="non-empty 1-D array"):
        fe(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="NaN or infinite"):
        fe(np.array([0.0, np.nan], np.float32))
    with pytest.raises(ValueError, match="truncation=False"):
        fe(np.zeros(20000, np.float32), truncation=False)
    with pytest.raises(ValueError, match="padding must be"):
        fe(np.zeros(100, np.float32), padding="do_not_pad")
    with pytest.raises(ValueError, match="feature_size must be a positive int"):
        WhisperFeatureExtractor(feature_size=0)
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json"):
        WhisperFeatureExtractor.from_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"feature_extractor_type": "ViTImageProcessor"}))
    with pytest.raises(ValueError, match="ViTImageProcessor"):
        WhisperFeatureExtractor.from_pretrained(tmp_path)


def test_save_pretrained_round_trip(pair, tmp_path):
    model, hf, _ = pair
    save_pretrained(model, tmp_path / "again")
    back = transformers.WhisperForConditionalGeneration.from_pretrained(tmp_path / "again").eval()
    x, dec = _features(1, seed=8), np.array([[START, EN, TRANSCRIBE, 7, 8]])
    with torch.no_grad():
        a = back(torch.tensor(x), decoder_input_ids=torch.tensor(dec)).logits.numpy()
        b = hf(torch.tensor(x), decoder_input_ids=torch.tensor(dec)).logits.numpy()
    np.testing.assert_array_equal(a, b)
    assert json.loads((tmp_path / "again" / "config.json").read_text())["architectures"] == [
        "WhisperForConditionalGeneration"]


@pytest.mark.parametrize("weights", ["bfloat16", "int8"])
def test_lean_weights_generate(pair, tmp_path, weights):
    model, hf, path = pair
    variant = weight_variant(hf, path, weights, tmp_path)
    x = _features(2, seed=9)
    with fg.no_grad():
        dec = np.array([[START, EN, TRANSCRIBE, NO_TIMESTAMPS, 7]] * 2)
        full, lean = model(x, decoder_input_ids=dec).numpy(), variant(x, decoder_input_ids=dec).numpy()
    np.testing.assert_allclose(lean, full, atol=0.05 * np.abs(full).max())
    assert variant.generate(x, language="en", max_new_tokens=6).shape[0] == 2


def test_untied_head(tmp_path):
    """A checkpoint whose head proj_out is its own weight (tie_word_embeddings false) loads, computes transformers'
    logits and saves back under transformers' name."""
    torch.manual_seed(1)
    cfg = transformers.WhisperConfig(vocab_size=60, num_mel_bins=MELS, d_model=16, encoder_layers=1, decoder_layers=1,
                                     encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=24,
                                     decoder_ffn_dim=24, max_source_positions=FRAMES // 2, max_target_positions=20,
                                     tie_word_embeddings=False, decoder_start_token_id=50, pad_token_id=59,
                                     bos_token_id=59, eos_token_id=59)
    hf = transformers.WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        hf.proj_out.weight.normal_(0, 1.0)
    hf.save_pretrained(tmp_path / "untied")
    model = from_pretrained(tmp_path / "untied")
    assert not model.tied
    x, dec = _features(1, seed=2), np.array([[50, 3, 4]])
    with fg.no_grad():
        ours = model(x, decoder_input_ids=dec).numpy()
    with torch.no_grad():
        theirs = hf(torch.tensor(x), decoder_input_ids=torch.tensor(dec)).logits.numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    assert "proj_out.weight" in model.to_hf()
