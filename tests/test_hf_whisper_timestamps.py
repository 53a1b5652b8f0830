"""Whisper generate with timestamps and on long-form audio (several windows) against transformers' generate, token for
token and segment for segment: short-form with timestamps, long-form of one input and of a batch of different
lengths (attention_mask), audio to segments through the feature extractor, and the errors."""

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained
from forgegrad.models.hf import WhisperFeatureExtractor
from forgegrad.models.hf.whisper_fallback import compression_ratio, log_softmax, mean_logprob
from forgegrad.models.hf.whisper_timestamps import window_segments

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from whisper_helpers import build_whisper  # noqa: E402

# the tiny vocabulary: text below 100, Whisper's special tokens in their order, then the timestamps of a 1-second
# window, <|0.00|> to <|1.00|> (time_precision 0.02)
EOS, START, EN, FR, DE, TRANSLATE, TRANSCRIBE, LM, PREV, NOCAPTIONS, NO_TIMESTAMPS = range(100, 111)
T0 = NO_TIMESTAMPS + 1
MELS, FRAMES = 16, 100  # one window: 100 frames, 50 encoder positions


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A multilingual tiny Whisper (random weights, std 0.3) with the real checkpoints' generation settings for
    timestamps (no_timestamps_token_id, max_initial_timestamp_index, prev_sot_token_id); it predicts timestamps."""
    path = build_whisper(tmp_path_factory.mktemp("whisper_ts") / "tiny", vocab_size=T0 + 51, max_target_positions=64,
                         suppress_tokens=[1, 5, TRANSLATE, TRANSCRIBE, LM, PREV, NOCAPTIONS])
    hf = transformers.WhisperForConditionalGeneration.from_pretrained(path).eval()
    return from_pretrained(path), hf, path


def _features(batch, frames, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, MELS, frames)).astype(np.float32)


def _same(ours, theirs):
    """Our rows and segments are transformers': tokens, and start and end times to the last bit."""
    np.testing.assert_array_equal(ours["sequences"], theirs["sequences"].numpy())
    assert len(ours["segments"]) == len(theirs["segments"])
    for mine, ref in zip(ours["segments"], theirs["segments"]):
        assert [(s["start"], s["end"], s["tokens"].tolist()) for s in mine] == \
            [(float(s["start"]), float(s["end"]), s["tokens"].tolist()) for s in ref]


@pytest.mark.parametrize("kwargs", [
    dict(language="en", max_new_tokens=12),
    dict(max_new_tokens=12),  # the language detected per input
    dict(language=["fr", "de", "en"], task="translate"),  # the config's max_length
], ids=["en", "detect", "translate-max-length"])
def test_short_form_timestamps_match_transformers(pair, kwargs):
    model, hf, _ = pair
    x = _features(3, FRAMES, seed=1)
    ours = model.generate(x, return_timestamps=True, return_segments=True, **kwargs)
    theirs = hf.generate(torch.tensor(x), return_timestamps=True, return_segments=True, **kwargs)
    _same(ours, theirs)
    assert (ours["sequences"] >= T0).any()  # the model does predict timestamps
    plain = model.generate(x, return_timestamps=True, **kwargs)
    np.testing.assert_array_equal(plain, ours["sequences"])
    np.testing.assert_array_equal(plain, hf.generate(torch.tensor(x), return_timestamps=True, **kwargs).numpy())


def test_short_form_fewer_frames_and_default_timestamps(pair):
    """Features shorter than a window are padded with zeros, as transformers pads them; generation_config.json's
    return_timestamps is the default."""
    model, hf, _ = pair
    x = _features(2, 70, seed=2)
    kwargs = dict(language="de", max_new_tokens=10)
    np.testing.assert_array_equal(model.generate(x, return_timestamps=True, **kwargs),
                                  hf.generate(torch.tensor(x), return_timestamps=True, **kwargs).numpy())
    model.generation_config = dict(model.generation_config, return_timestamps=True)
    try:
        assert (model.generate(x, **kwargs) >= T0).any()
    finally:
        model.generation_config.pop("return_timestamps")


@pytest.mark.parametrize("seed,kwargs", [
    (0, dict(language="en", max_new_tokens=20)),
    (3, dict(max_new_tokens=16)),  # detected from the first window
    (4, dict(language="fr")),  # the config's max_length, grown by the prompt at every window as transformers does
], ids=["en", "detect", "max-length"])
def test_long_form_matches_transformers(pair, seed, kwargs):
    model, hf, _ = pair
    x = _features(1, 350, seed=seed)  # three and a half windows
    ours = model.generate(x, return_segments=True, **kwargs)  # timestamps are implied
    theirs = hf.generate(torch.tensor(x), return_timestamps=True, return_segments=True, **kwargs)
    _same(ours, theirs)
    assert ours["segments"][0][-1]["end"] > 3.0


def test_long_form_batch_of_different_lengths(pair):
    model, hf, _ = pair
    x = _features(2, 350, seed=0)
    mask = np.ones((2, 350), np.int64)
    mask[1, 230:] = 0  # the second input is 2.3 seconds long
    x[1, :, 230:] = 0.0
    kwargs = dict(language="en", max_new_tokens=20)
    ours = model.generate(x, attention_mask=mask, return_segments=True, **kwargs)
    theirs = hf.generate(torch.tensor(x), attention_mask=torch.tensor(mask), return_timestamps=True,
                         return_segments=True, **kwargs)
    _same(ours, theirs)
    assert ours["segments"][1][-1]["end"] <= 2.3 + 1e-9 < ours["segments"][0][-1]["end"]


@pytest.mark.parametrize("batch,limit", [(1, dict(max_new_tokens=16)), (2, dict(max_new_tokens=16)), (2, dict())])
def test_condition_on_previous_tokens(pair, batch, limit):
    """Each window after the first starts with <|startofprev|> and the last tokens so far; in a batch of different
    lengths, those prompts are left padded (masked, positions counted from the first real token). Without
    max_new_tokens, the limit grows with those prompts, window after window."""
    model, hf, _ = pair
    x = _features(2, 450, seed=5)[:batch]
    mask = np.ones((batch, 450), np.int64)
    mask[1:, 310:] = 0
    kwargs = dict(language="en", condition_on_prev_tokens=True, return_segments=True, **limit)
    ours = model.generate(x, attention_mask=mask, **kwargs)
    theirs = hf.generate(torch.tensor(x), attention_mask=torch.tensor(mask), return_timestamps=True, **kwargs)
    _same(ours, theirs)
    plain = model.generate(x, attention_mask=mask, language="en", **limit)
    assert plain.shape != ours["sequences"].shape or (plain != ours["sequences"]).any()  # the prompts mattered


@pytest.mark.parametrize("kwargs", [
    # every window decoded again (greedy again: the same tokens, on the rows that failed)
    dict(temperature=(0.0, 0.0), compression_ratio_threshold=1.4, logprob_threshold=-0.5),
    # windows skipped as silence: mean log-probability below -0.5 and <|nocaptions|> above 0.0028
    dict(temperature=0.0, logprob_threshold=-0.5, no_speech_threshold=0.0028),
    dict(temperature=(0.0, 0.0, 0.0), logprob_threshold=-0.5, no_speech_threshold=0.0028),
], ids=["retry", "skip", "retry-and-skip"])
def test_fallback_matches_transformers(pair, kwargs):
    model, hf, _ = pair
    x = _features(2, 350, seed=0)
    mask = np.ones((2, 350), np.int64)
    mask[1, 230:] = 0
    kwargs = dict(language="en", max_new_tokens=16, return_segments=True, **kwargs)
    ours = model.generate(x, attention_mask=mask, **kwargs)
    theirs = hf.generate(torch.tensor(x), attention_mask=torch.tensor(mask), return_timestamps=True, **kwargs)
    _same(ours, theirs)
    plain = model.generate(x, attention_mask=mask, language="en", max_new_tokens=16, return_segments=True)
    if "no_speech_threshold" in kwargs:  # some windows skipped, not all
        assert 0 < sum(map(len, ours["segments"])) < sum(map(len, plain["segments"]))


def test_sampled_fallback_is_seeded(pair):
    """Windows that fail the thresholds greedily are sampled at the next temperature (no token-for-token oracle:
    transformers draws with torch's generator); a row sampled at 0.5 or above is not conditioned on its previous
    tokens in the next window (<|startofprev|> alone), the others are."""
    model, _, _ = pair
    x = _features(2, 350, seed=0)
    mask = np.ones((2, 350), np.int64)
    mask[1, 260:] = 0
    kwargs = dict(language="en", max_new_tokens=16, temperature=(0.0, 0.8), compression_ratio_threshold=1.4,
                  attention_mask=mask)
    for extra in (dict(), dict(condition_on_prev_tokens=True)):
        fg.manual_seed(2)
        a = model.generate(x, **kwargs, **extra)
        fg.manual_seed(2)
        np.testing.assert_array_equal(a, model.generate(x, **kwargs, **extra))
        greedy = model.generate(x, language="en", max_new_tokens=16, attention_mask=mask, **extra)
        assert a.shape != greedy.shape or (a != greedy).any()


def test_fallback_measures_match_transformers():
    """The compression ratio and the mean log-probability (temperature undone, end token counted) of
    transformers' _need_fallback."""
    rng = np.random.default_rng(0)
    mixin = transformers.WhisperForConditionalGeneration
    for vocab, n in ((51865, 40), (200, 7)):
        tokens = rng.integers(0, vocab, n)
        tokens[n // 2:] = tokens[: n - n // 2]  # some repetition
        assert compression_ratio(tokens, vocab) == mixin._retrieve_compression_ratio(torch.tensor(tokens), vocab)
    scores = rng.standard_normal((9, 50)).astype(np.float32) * 3
    scores[:, 40:] = -np.inf
    tokens = rng.integers(0, 40, 7)
    for t in (0.0, 0.7):
        step = log_softmax(scores[:7] * (t or 1))[np.arange(7), tokens]
        theirs = mixin._retrieve_avg_logprobs(tuple(torch.tensor(scores)), torch.tensor(tokens), t)
        assert mean_logprob(step, 7) == np.float32(theirs.item())


def test_audio_to_segments_through_the_feature_extractor(pair):
    """transformers' long-form recipe: features of the whole audio (truncation=False, padding='longest') and their
    attention mask, then generate."""
    model, hf, path = pair
    rng = np.random.default_rng(5)
    audio = [rng.standard_normal(int(16000 * 2.6)).astype(np.float32) * 0.1,
             rng.standard_normal(int(16000 * 1.7)).astype(np.float32) * 0.1]
    args = dict(truncation=False, padding="longest", return_attention_mask=True)
    ours_in = WhisperFeatureExtractor.from_pretrained(path)(audio, **args)
    theirs_in = transformers.WhisperFeatureExtractor.from_pretrained(path)(audio, sampling_rate=16000,
                                                                          return_tensors="pt", **args)
    assert ours_in["input_features"].shape == (2, MELS, 260)
    kwargs = dict(language="en", max_new_tokens=16, return_segments=True)
    _same(model.generate(ours_in["input_features"], attention_mask=ours_in["attention_mask"], **kwargs),
          hf.generate(theirs_in.input_features, attention_mask=theirs_in.attention_mask, return_timestamps=True,
                      **kwargs))


def test_the_window_endings_are_exercised(pair):
    """The three ways a window ends, each moving the next one differently, happen in these inputs (the windows
    are transformers' own, whose segments ours equal): a closing timestamp pair before the end (the next window
    starts at its time), a lone final timestamp and no pair at all (the next window after the whole window)."""
    model, hf, _ = pair
    seen = set()
    for seed, kwargs in ((3, dict(max_new_tokens=16)), (5, dict(max_new_tokens=16))):
        x = _features(1, 350, seed=seed)
        theirs = hf.generate(torch.tensor(x), return_timestamps=True, return_segments=True, **kwargs)
        _same(model.generate(x, return_segments=True, **kwargs), theirs)
        windows = {id(s["result"]): s["result"] for s in theirs["segments"][0]}
        for result in windows.values():
            tokens = (result["sequences"] if isinstance(result, dict) else result).tolist()
            tokens = [t for t in tokens[2 if kwargs.get("language") is None else 3:] if t != EOS]  # no prompt
            stamps = [t >= T0 for t in tokens]
            pairs = [i for i in range(len(stamps) - 1) if stamps[i] and stamps[i + 1]]
            seen.add("no pair" if not pairs else "lone end" if stamps[-2:] == [False, True] else "seek to a pair")
    assert seen == {"seek to a pair", "lone end", "no pair"}


def test_window_segments_rules():
    """The cutting rules on hand-made windows (seek 100, a full window of 100 frames)."""
    seq = np.array([T0, 7, T0 + 10, T0 + 10, 8, T0 + 30])  # two segments, ended by a lone timestamp
    segments, moved = window_segments(seq, T0, 100, 100, 0.02, 2)
    assert [(s["start"], s["end"], s["tokens"].tolist()) for s in segments] == [
        (1.0, 1.2, [T0, 7, T0 + 10]), (1.2, 1.6, [T0 + 10, 8, T0 + 30])]
    assert moved == 100
    seq = np.array([T0, 7, T0 + 10, T0 + 10, 8, T0 + 30, T0 + 30, 9])  # cut off after a pair: seek to its time
    segments, moved = window_segments(seq, T0, 100, 100, 0.02, 2)
    assert segments[-1]["tokens"].tolist() == [T0 + 10, 8, T0 + 30, T0 + 30] and moved == 60
    segments, moved = window_segments(np.array([T0 + 2, 7, 8]), T0, 100, 40, 0.02, 2)  # no pair: the window
    assert [(s["start"], s["end"]) for s in segments] == [(1.0, 1.04)] and moved == 40
    segments, moved = window_segments(np.array([7, 8]), T0, 0, 40, 0.02, 2)  # no timestamp: the window's end
    assert [(s["start"], s["end"]) for s in segments] == [(0.0, 0.4)] and moved == 40


def test_sampling_with_timestamps_keeps_the_rules(pair):
    model, _, _ = pair
    x = _features(2, 250, seed=6)
    mask = np.ones((2, 250), np.int64)
    fg.manual_seed(4)
    a = model.generate(x, attention_mask=mask, do_sample=True, temperature=1.3, language="en", max_new_tokens=12,
                       return_segments=True)
    fg.manual_seed(4)
    b = model.generate(x, attention_mask=mask, do_sample=True, temperature=1.3, language="en", max_new_tokens=12)
    np.testing.assert_array_equal(a["sequences"], b)
    for row in a["segments"]:
        for s in row:
            stamps = s["tokens"][s["tokens"] >= T0]
            assert stamps[0] == s["tokens"][0] and (np.diff(stamps) >= 0).all() and s["start"] <= s["end"]


def test_timestamp_errors(pair):
    model, _, _ = pair
    long, short = _features(2, 150), _features(1, FRAMES)
    with pytest.raises(ValueError, match="long-form audio, which needs timestamps"):
        model.generate(long[:1], return_timestamps=False)
    with pytest.raises(ValueError, match="needs attention_mask"):
        model.generate(long, language="en")
    with pytest.raises(ValueError, match=r"attention_mask must be ones and zeros of shape \(batch, frames\)"):
        model.generate(long, attention_mask=np.ones((2, 100)), language="en")
    with pytest.raises(TypeError, match="return_timestamps must be a bool"):
        model.generate(short, return_timestamps="yes")
    with pytest.raises(TypeError, match="return_segments must be a bool"):
        model.generate(short, return_segments=1)
    with pytest.raises(ValueError, match="time_precision must be a positive number"):
        model.generate(short, return_timestamps=True, time_precision=0)
    with pytest.raises(ValueError, match="timestamps need one end token"):
        model.generate(short, return_timestamps=True, eos_token_id=[EOS, 7])
    with pytest.raises(ValueError, match="do_sample must be None with a sequence of temperatures"):
        model.generate(short, temperature=(0.0, 0.2, 0.4), do_sample=True)
    with pytest.raises(ValueError, match="non-empty sequence"):
        model.generate(short, temperature=())
    with pytest.raises(TypeError, match="temperature must be a number"):
        model.generate(short, temperature=(0.0, "hot"))
    with pytest.raises(TypeError, match="logprob_threshold must be a number or None"):
        model.generate(short, logprob_threshold="-1")
    with pytest.raises(ValueError, match="no_speech_threshold needs logprob_threshold"):
        model.generate(short, no_speech_threshold=0.6)
    with pytest.raises(TypeError, match="condition_on_prev_tokens must be a bool"):
        model.generate(long[:1], condition_on_prev_tokens="yes")
    with pytest.raises(ValueError, match="samples exactly when temperature > 0"):
        model.generate(short, do_sample=True)
    with pytest.raises(ValueError, match="return_dict_in_generate=True is supported with timestamps only"):
        model.generate(short, return_dict_in_generate=True)
    saved = model.generation_config
    model.generation_config = {k: v for k, v in saved.items() if k != "no_timestamps_token_id"}
    try:
        with pytest.raises(ValueError, match="no_timestamps_token_id"):
            model.generate(short, return_timestamps=True)
    finally:
        model.generation_config = saved
