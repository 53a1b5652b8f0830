"""Whisper's generate with ``top_h`` and ``watermarking_config`` as transformers' Whisper generate applies them
(through its generic generate: top-h after the temperature when sampling, the watermark after every processor and
warper, seeded by the decoder's tokens): the tokens equal transformers' greedy, with timestamps, in beam search, in a
sampled attempt, in the temperature fallback (whose log-probabilities are read under the watermark: the threshold
below is one where reading them without it decides otherwise) and in long-form windows conditioned on the previous
tokens; from arguments and from generation_config.json; bad settings named.

Sampled attempts use a top_h small enough to keep one token a step, so transformers' draws (torch's generator) and
forgegrad's (its own) give the same tokens; without top-h they differ."""
from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from whisper_helpers import MELS, build_whisper  # noqa: E402

import forgegrad as fg  # noqa: E402
from forgegrad.models import from_pretrained  # noqa: E402

LEFT = {"bias": 4.0, "greenlist_ratio": 0.3}
SELF = dict(LEFT, seeding_scheme="selfhash", context_width=2)
FALLBACK = dict(temperature=(0.0, 0.6), logprob_threshold=-1.8)
MARKS = ("top_h", "watermarking_config")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    path = build_whisper(tmp_path_factory.mktemp("toph_wm") / "whisper")
    return path, from_pretrained(path), transformers.WhisperForConditionalGeneration.from_pretrained(path).eval()


def _short():
    return np.random.default_rng(0).standard_normal((2, MELS, 100)).astype(np.float32)


def _long():
    """Two inputs of 2.6 and 2 windows' audio: long-form, with an attention mask of each one's frames."""
    mask = np.ones((2, 260), np.int64)
    mask[1, 200:] = 0
    return np.random.default_rng(1).standard_normal((2, MELS, 260)).astype(np.float32), mask


def _theirs(hf, x, **kw):
    kw = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    torch.manual_seed(0)
    with torch.no_grad():
        return hf.generate(torch.tensor(x), language="en", **kw).numpy()


CASES = {
    "greedy-lefthash": dict(watermarking_config=LEFT),
    "timestamps": dict(return_timestamps=True, watermarking_config=LEFT),
    "beams": dict(num_beams=3, watermarking_config=LEFT),
    "sampled-top-h": dict(do_sample=True, temperature=1.0, top_h=0.05),
    "fallback-beams": dict(FALLBACK, num_beams=2, top_h=0.05, watermarking_config=LEFT),
}


@pytest.mark.parametrize("case", list(CASES))
def test_short_form_matches_transformers(pair, case):
    """The tokens equal transformers' and differ from those without the settings."""
    _, model, hf = pair
    kw = dict(CASES[case], max_new_tokens=10)
    want = _theirs(hf, _short(), **kw)
    fg.manual_seed(0)
    got = model.generate(_short(), language="en", **kw)
    np.testing.assert_array_equal(got, want)
    fg.manual_seed(0)
    assert not np.array_equal(got, model.generate(_short(), language="en", **{k: v for k, v in kw.items()
                                                                               if k not in MARKS}))


def test_fallback_reads_log_probabilities_under_the_watermark(pair):
    """At this threshold the greedy attempt's rows pass under the watermark (green tokens are likelier) and would
    fail without it; the fallback's log-probabilities include the watermark as transformers' processed scores do."""
    _, model, hf = pair
    kw = dict(FALLBACK, max_new_tokens=10, top_h=0.05, watermarking_config=LEFT)
    greedy = model.generate(_short(), language="en", max_new_tokens=10, watermarking_config=LEFT)
    np.testing.assert_array_equal(model.generate(_short(), language="en", **kw), greedy)
    np.testing.assert_array_equal(_theirs(hf, _short(), **kw), greedy)
    # a stricter threshold: the rows are sampled again (top-h keeps one token, so the watermark is moot there)
    strict = dict(kw, logprob_threshold=-1.0)
    got = model.generate(_short(), language="en", **strict)
    np.testing.assert_array_equal(got, _theirs(hf, _short(), **strict))
    assert not np.array_equal(got, greedy)


def test_long_form_matches_transformers(pair):
    """Window after window, each window's watermark seeded by its prompt (the previous tokens, left-padded) and its
    new tokens, with the fallback."""
    _, model, hf = pair
    kw = dict(FALLBACK, watermarking_config=LEFT, top_h=0.05, condition_on_prev_tokens=True)
    x, mask = _long()
    want = _theirs(hf, x, attention_mask=mask, **kw)
    got = model.generate(x, language="en", attention_mask=mask, **kw)
    np.testing.assert_array_equal(got, want)
    assert not np.array_equal(got, model.generate(x, language="en", attention_mask=mask,
                                                  **{k: v for k, v in kw.items() if k not in MARKS}))


def test_settings_from_generation_config(pair, tmp_path):
    """generation_config.json's top_h and watermarking_config (selfhash) apply without a warning; None given
    turns them off."""
    path, model, _ = pair
    marked = tmp_path / "marked"
    shutil.copytree(path, marked)
    file = marked / "generation_config.json"
    file.write_text(json.dumps(dict(json.loads(file.read_text()), top_h=0.05, watermarking_config=SELF)))
    hf = transformers.WhisperForConditionalGeneration.from_pretrained(marked).eval()
    kw = dict(FALLBACK, max_new_tokens=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = from_pretrained(marked).generate(_short(), language="en", **kw)
    np.testing.assert_array_equal(got, _theirs(hf, _short(), **kw))
    fg.manual_seed(1)
    off = from_pretrained(marked).generate(_short(), language="en", top_h=None, watermarking_config=None, **kw)
    fg.manual_seed(1)
    np.testing.assert_array_equal(off, model.generate(_short(), language="en", **kw))
    assert not np.array_equal(got, off)


def test_bad_settings_are_named(pair):
    _, model, _ = pair
    with pytest.raises(ValueError, match="watermarking_config's greenlist_ratio must be a number in"):
        model.generate(_short(), watermarking_config={"greenlist_ratio": 1.5})
    with pytest.raises(ValueError, match="watermarking_config has unknown keys"):
        model.generate(_short(), watermarking_config={"strength": 2})
    with pytest.raises(ValueError, match="top_h must be a number in"):
        model.generate(_short(), temperature=(0.0, 0.5), top_h=1.5)
