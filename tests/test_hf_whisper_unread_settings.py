"""Whisper's generate and the generation settings of generation_config.json it does not read: transformers' Whisper
generate hands its generation config to the generic generate, which applies its processors and warpers (read by
forgegrad's Whisper too, whisper_settings.py) and a few more (a time limit, guidance); forgegrad's Whisper names those
in one warning, as forgegrad's generate names the settings it does not read, instead of dropping them unnoticed. A
checkpoint that leaves them at their defaults (as the Hub's Whisper checkpoints do) gets no warning."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from whisper_helpers import MELS, build_whisper  # noqa: E402

from forgegrad.models import from_pretrained  # noqa: E402


def _checkpoint(path, **settings):
    build_whisper(path)
    file = path / "generation_config.json"
    file.write_text(json.dumps(dict(json.loads(file.read_text()), **settings)))
    return path


def _features():
    return np.random.default_rng(0).standard_normal((1, MELS, 100)).astype(np.float32)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """build_whisper's checkpoint with the settings written at their defaults (as older transformers wrote them)."""
    return _checkpoint(tmp_path_factory.mktemp("unread") / "plain", repetition_penalty=1.0, typical_p=1.0,
                       epsilon_cutoff=0.0, no_repeat_ngram_size=0, num_beam_groups=1, diversity_penalty=0.0,
                       remove_invalid_values=False, guidance_scale=None, top_h=None, watermarking_config=None)


def _tokens(path, warns=None):
    model = from_pretrained(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = model.generate(_features(), language="en", max_new_tokens=8)
    hf = transformers.WhisperForConditionalGeneration.from_pretrained(path).eval()
    with torch.no_grad():
        theirs = hf.generate(torch.tensor(_features()), language="en", max_new_tokens=8).numpy()
    return ours.tolist(), theirs.tolist(), [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def test_settings_transformers_applies_are_read(tmp_path, plain):
    """The same weights with an n-gram rule, a repetition penalty, a watermark and top-h (each applied by Whisper's
    generate, whisper_settings.py): transformers' greedy tokens change, forgegrad's equal them, without a warning."""
    ours, theirs, warned = _tokens(_checkpoint(tmp_path / "marked", top_h=0.5, repetition_penalty=1.5, typical_p=1.0,
                                               watermarking_config={"bias": 50.0, "greenlist_ratio": 0.3},
                                               no_repeat_ngram_size=2))
    plain_ours, plain_theirs, plain_warned = _tokens(plain)
    assert plain_ours == plain_theirs != theirs == ours
    assert plain_warned == warned == []


def test_settings_it_does_not_read_are_named(tmp_path, plain):
    """A time limit and classifier-free guidance (which transformers' Whisper generate fails on) are named; the
    encoder's repetition settings, which transformers cannot apply to Whisper's features, are not."""
    model = from_pretrained(_checkpoint(tmp_path / "unread", max_time=100.0, guidance_scale=1.5,
                                        encoder_repetition_penalty=1.5, encoder_no_repeat_ngram_size=2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = model.generate(_features(), language="en", max_new_tokens=8)
    assert [str(w.message) for w in caught if issubclass(w.category, UserWarning)] == [
        "generate: generation_config.json sets guidance_scale, max_time, which forgegrad's Whisper generate does not "
        "read (the tokens can differ from transformers')"]
    assert ours.tolist() == _tokens(plain)[0]
