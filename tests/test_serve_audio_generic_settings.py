"""The speech server on a checkpoint whose generation_config.json sets transformers' generic processors
(repetition_penalty, no_repeat_ngram_size, bad_words_ids, min_new_tokens) or a watermark, which Whisper's generate
applies (whisper_settings.py): the transcript's tokens are transformers' and ``model.generate``'s, and verbose_json's
avg_logprob reads them under the same processed scores transformers' ``output_scores`` gives (those settings
applied, not only the suppressed tokens' masks), end token included, over tokens + 1."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("scipy.signal")
transformers.logging.set_verbosity_error()

from whisper_helpers import EOS, POSITIONS, WAVS, expected_features, tiny_whisper  # noqa: E402

from forgegrad.models import from_pretrained  # noqa: E402
from forgegrad.serve.speech_app import Transcriber  # noqa: E402
from forgegrad.serve.speech_request import SpeechRequest  # noqa: E402

SETTINGS = {"processors": dict(repetition_penalty=1.8, no_repeat_ngram_size=2, bad_words_ids=[[45]]),
            "watermark": dict(min_new_tokens=4, watermarking_config=dict(greenlist_ratio=0.5, bias=4.0,
                                                                         seeding_scheme="lefthash", context_width=1))}


@pytest.fixture(scope="module", params=list(SETTINGS))
def checkpoint(tmp_path_factory, request):
    """tiny_whisper without timestamp tokens (verbose_json: one segment with Whisper's scores), a SETTINGS in its
    generation_config.json."""
    path = tiny_whisper(tmp_path_factory.mktemp("generic") / "whisper")
    file = path / "generation_config.json"
    settings = json.loads(file.read_text())
    del settings["no_timestamps_token_id"]
    file.write_text(json.dumps(dict(settings, **SETTINGS[request.param])))
    return path


@pytest.mark.parametrize("name", ["16k-mono-float32", "8k-stereo-int16"])
def test_tokens_and_avg_logprob_are_transformers(checkpoint, name):
    hf = transformers.WhisperForConditionalGeneration.from_pretrained(checkpoint).eval()
    extractor = transformers.WhisperFeatureExtractor.from_pretrained(checkpoint)
    wav, stored, rate = WAVS[name]()
    features = expected_features((None, extractor, None), stored, rate)
    max_new = POSITIONS - 3  # after <|startoftranscript|> <|en|> <|transcribe|>
    with torch.no_grad():
        out = hf.generate(torch.tensor(features), language="en", task="transcribe", max_new_tokens=max_new,
                          return_dict_in_generate=True, output_scores=True)
    tokens = out.sequences[0].tolist()[3:]
    text_ids = tokens[:-1] if tokens[-1] == EOS else tokens
    total = sum(float(torch.log_softmax(s[0].double(), -1)[t]) for s, t in zip(out.scores, tokens))
    ours = from_pretrained(checkpoint).generate(features, language="en", task="transcribe", max_new_tokens=max_new)
    assert ours[0].tolist()[:len(text_ids)] == text_ids

    transcriber = Transcriber(str(checkpoint))
    req = SpeechRequest("transcribe", wav, "a.wav", language="en", response_format="verbose_json")
    [transcript] = transcriber.transcribe([transcriber.prepare(req, transcriber.language_token(req))])
    [segment] = transcript.segments
    assert segment.tokens == text_ids
    assert segment.avg_logprob == pytest.approx(total / (len(text_ids) + 1), abs=1e-4)
