"""Whisper's generate with the processors and warpers of transformers' generic generate that its Whisper generate
applies too (whisper_settings.py): repetition_penalty, no_repeat_ngram_size, min_length, min_new_tokens,
bad_words_ids, sequence_bias, exponential_decay_length_penalty, forced_eos_token_id before Whisper's processors;
typical_p and epsilon_cutoff in sampled attempts; renormalize_logits (which beam search ranks on). The tokens equal
transformers' greedy, with timestamps (several windows), in beam search, in the temperature fallback and in
long-form windows conditioned on the previous tokens (the repetition penalty skipping their left padding), and
differ from those without the setting; bad values named.

Sampled attempts use warpers that keep one token a step here (typical_p: the token closest to the entropy, not the
most likely), so transformers' draws (torch's generator) and forgegrad's give the same tokens."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from whisper_helpers import EOS, MELS, build_whisper  # noqa: E402

import forgegrad as fg  # noqa: E402
from forgegrad.models import from_pretrained  # noqa: E402
from forgegrad.models.hf.whisper_settings import READ  # noqa: E402

PENALTIES = dict(repetition_penalty=1.5, no_repeat_ngram_size=2)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    path = build_whisper(tmp_path_factory.mktemp("generic") / "whisper")
    return from_pretrained(path), transformers.WhisperForConditionalGeneration.from_pretrained(path).eval()


def _short():
    return np.random.default_rng(0).standard_normal((2, MELS, 100)).astype(np.float32)


def _theirs(hf, x, **kw):
    kw = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    torch.manual_seed(0)
    with torch.no_grad():
        return hf.generate(torch.tensor(x), language="en", **kw).numpy()


CASES = {
    "repetition": dict(repetition_penalty=1.5),
    "repetition-below-1-beams": dict(repetition_penalty=0.7, num_beams=2),
    "ngram-timestamps": dict(PENALTIES, return_timestamps=True),
    "bad-words-sequence-bias": dict(bad_words_ids=[[58], [79, 45]], sequence_bias={(45,): -3.0, (79, 79): 5.0}),
    "decay-beams-timestamps": dict(exponential_decay_length_penalty=(3, 1.3), num_beams=2, return_timestamps=True),
    "min-new-tokens-timestamps": dict(min_new_tokens=14, return_timestamps=True),
    "min-length-timestamps": dict(min_length=17, return_timestamps=True),
    "forced-eos-beams": dict(forced_eos_token_id=EOS, num_beams=2),
    "renormalize-beams-timestamps": dict(renormalize_logits=True, num_beams=3, return_timestamps=True),
    "fallback": dict(PENALTIES, temperature=(0.0, 0.6), logprob_threshold=-1.0, top_h=0.05),
    "typical-p": dict(do_sample=True, temperature=1.0, typical_p=0.02),
    "epsilon-cutoff": dict(do_sample=True, temperature=1.0, epsilon_cutoff=0.5),
}


@pytest.mark.parametrize("case", list(CASES))
def test_short_form_matches_transformers(pair, case):
    model, hf = pair
    kw = dict(CASES[case], max_new_tokens=16 if CASES[case].get("return_timestamps") else 10)
    want = _theirs(hf, _short(), **kw)
    fg.manual_seed(0)
    got = model.generate(_short(), language="en", **kw)
    np.testing.assert_array_equal(got, want)
    fg.manual_seed(0)
    assert not np.array_equal(got, model.generate(_short(), language="en",
                                                  **{k: v for k, v in kw.items() if k not in READ}))


@pytest.mark.parametrize("beams", [1, 2])
def test_long_form_conditioned_matches_transformers(pair, beams):
    """Each window's prompt holds the previous tokens, left-padded where they differ in length: the penalty reads
    the prompt's tokens but its padding, the n-gram rule all of it, as transformers' do."""
    model, hf = pair
    mask = np.ones((2, 260), np.int64)
    mask[1, 200:] = 0
    x = np.random.default_rng(1).standard_normal((2, MELS, 260)).astype(np.float32)
    kw = dict(PENALTIES, condition_on_prev_tokens=True, num_beams=beams)
    got = model.generate(x, language="en", attention_mask=mask, **kw)
    np.testing.assert_array_equal(got, _theirs(hf, x, attention_mask=mask, **kw))
    assert not np.array_equal(got, model.generate(x, language="en", attention_mask=mask, condition_on_prev_tokens=True,
                                                  num_beams=beams))


def test_bad_settings_are_named(pair):
    model, _ = pair
    for kw, message in ((dict(repetition_penalty=0), "repetition_penalty must be a number > 0"),
                        (dict(no_repeat_ngram_size=-1), "no_repeat_ngram_size must be an int >= 0"),
                        (dict(min_new_tokens=1.5), "min_new_tokens must be an int >= 0"),
                        (dict(forced_eos_token_id=10 ** 6), "forced_eos_token_id must be a token id"),
                        (dict(bad_words_ids=[[]]), "bad_words_ids must be a list of non-empty lists"),
                        (dict(temperature=0.5, typical_p=2.0), "typical_p must be a number in")):
        with pytest.raises(ValueError, match=message):
            model.generate(_short(), max_new_tokens=4, **kw)
    with pytest.raises(TypeError, match="unexpected keyword argument 'guidance_scale'"):
        model.generate(_short(), guidance_scale=1.5)
