"""Whisper generate with beam search (``num_beams`` > 1) against transformers' generate, token for token: short-form
batches of two with 2 and 3 beams, without and with timestamps (Whisper's processors on the log-probabilities),
length_penalty and early_stopping, a text prompt, long-form windows (with the temperature fallback's thresholds on
the best hypothesis' log-probabilities), and the errors."""
import numpy as np
import pytest
from test_hf_whisper_timestamps import FRAMES, PREV, T0, _features, _same, pair  # noqa: F401 (pair: the fixture)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("num_beams,kwargs", [
    (2, dict(language="en", max_new_tokens=12)),
    (3, dict(language="en", max_new_tokens=12)),
    (2, dict(language=["fr", "de"], max_new_tokens=14, return_timestamps=True)),
    (3, dict(language=["fr", "de"], max_new_tokens=14, return_timestamps=True)),
    (3, dict(language="de", length_penalty=0.3, early_stopping=True)),  # the config's max_length
    (2, dict(language="en", max_new_tokens=10, prompt_ids=[PREV, 7, 42, 13])),
], ids=["plain-2", "plain-3", "timestamps-2", "timestamps-3", "penalty-early-stop-3", "prompt-2"])
def test_short_form_beams_match_transformers(pair, num_beams, kwargs):  # noqa: F811
    model, hf, _ = pair
    x = _features(2, FRAMES, seed=1)
    ours = model.generate(x, num_beams=num_beams, **kwargs)
    theirs = {k: torch.tensor(v) if k == "prompt_ids" else v for k, v in kwargs.items()}
    want = hf.generate(torch.tensor(x), num_beams=num_beams, **theirs).numpy()
    np.testing.assert_array_equal(ours, want)
    greedy = model.generate(x, **kwargs)
    assert greedy.shape != ours.shape or (greedy != ours).any()  # the beams found other tokens
    if kwargs.get("return_timestamps"):
        assert (ours >= T0).any()


@pytest.mark.parametrize("num_beams,extra", [
    (2, dict(condition_on_prev_tokens=True)),  # the previous tokens left padded across the batch
    (2, dict(temperature=(0.0, 0.0), compression_ratio_threshold=1.4)),  # failing windows decoded again with beams
    # the fallback's thresholds on the best hypothesis' mean log-probability: <|nocaptions|> above 0.0001 in every
    # window, so the windows whose beam's mean is below -0.5 (and those only) are skipped as silence
    (2, dict(temperature=(0.0, 0.0), logprob_threshold=-0.5, no_speech_threshold=0.0001)),
    (3, dict(temperature=(0.0, 0.0), logprob_threshold=-0.5, no_speech_threshold=0.0001)),
    # some windows decoded again (mean below -0.5), some skipped (and <|nocaptions|> above 0.0028)
    (3, dict(temperature=(0.0, 0.0, 0.0), logprob_threshold=-0.5, no_speech_threshold=0.0028)),
    (2, dict(temperature=(0.0, 0.0), compression_ratio_threshold=1.4, logprob_threshold=-0.5)),
], ids=["conditioned", "fallback", "skip-2", "skip-3", "retry-and-skip-3", "retry-2"])
def test_long_form_beams_match_transformers(pair, num_beams, extra):  # noqa: F811
    """Every window by beam search."""
    model, hf, _ = pair
    x = _features(2, 350, seed=0)
    mask = np.ones((2, 350), np.int64)
    mask[1, 230:] = 0
    kwargs = dict(language="en", max_new_tokens=16, num_beams=num_beams, return_segments=True, **extra)
    ours = model.generate(x, attention_mask=mask, **kwargs)
    theirs = hf.generate(torch.tensor(x), attention_mask=torch.tensor(mask), return_timestamps=True, **kwargs)
    _same(ours, theirs)
    if "no_speech_threshold" in extra:  # some windows skipped, not all
        plain = model.generate(x, attention_mask=mask, language="en", max_new_tokens=16, num_beams=num_beams,
                               return_segments=True)
        assert 0 < sum(map(len, ours["segments"])) < sum(map(len, plain["segments"]))
    else:  # (the windows left after skipping may be greedy's too)
        greedy = model.generate(x, attention_mask=mask, **dict(kwargs, num_beams=1))["sequences"]
        assert greedy.shape != ours["sequences"].shape or (greedy != ours["sequences"]).any()


def test_beam_errors(pair):  # noqa: F811
    model, _, _ = pair
    x = _features(1, FRAMES)
    with pytest.raises(ValueError, match="num_beams must be a positive int"):
        model.generate(x, num_beams=0)
    with pytest.raises(ValueError, match="length_penalty must be a number"):
        model.generate(x, num_beams=2, length_penalty="long")
