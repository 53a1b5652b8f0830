"""Word timestamps on the audio API (verbose_json with ``timestamp_granularities[]=word``) on the real server: the
words and times of transformers' token timestamps (generate(..., return_token_timestamps=True)) grouped by
transformers' ``_combine_tokens_into_words``; the grouping itself (spaces, punctuation, unicode pieces) against it."""
from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("python_multipart")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
transformers.logging.set_verbosity_error()
from transformers.models.whisper.tokenization_whisper import _combine_tokens_into_words  # noqa: E402

from serve_helpers import running_app  # noqa: E402
from whisper_helpers import EOS, MAX_NEW, SPECIAL, WAVS, WORDS, tiny_whisper  # noqa: E402
from whisper_helpers import expected_features as _expected_features  # noqa: E402

from forgegrad.serve.speech_app import SpeechServeConfig, create_speech_app  # noqa: E402
from forgegrad.serve.speech_words import combine_tokens_into_words  # noqa: E402

# the tiny vocabulary's words as a byte-level tokenizer spells them: most after a space (Ġ), some pieces that
# continue a word, some punctuation (closing, and opening after a space)
PUNCT = {7: ".", 13: ",", 29: "Ġ(", 31: ")", 41: "?", 53: "Ġ\""}
SPELLED = [PUNCT.get(i, w if i % 4 == 3 else "Ġ" + w) for i, w in enumerate(WORDS)]


class _Decoder:
    """What transformers' grouping calls on a tokenizer: decode and eos_token_id."""

    def __init__(self, tok):
        self.tok, self.eos_token_id = tok, EOS

    def decode(self, ids, **_):
        return self.tok.decode(list(ids), skip_special_tokens=False)


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    path = tiny_whisper(tmp_path_factory.mktemp("whisper_words") / "tiny-whisper")
    vocab = {w: i for i, w in enumerate(SPELLED)} | {t: 100 + i for i, t in enumerate(SPECIAL)}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.decoder = tokenizers.decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL)
    tok.save(str(path / "tokenizer.json"))
    file = path / "generation_config.json"
    settings = json.loads(file.read_text())
    settings["alignment_heads"] = [[0, 1], [1, 0]]
    file.write_text(json.dumps(settings))
    return path


@pytest.fixture(scope="module")
def url(whisper_dir):
    with running_app(create_speech_app(SpeechServeConfig(str(whisper_dir), max_body_bytes=256 * 1024))) as u:
        yield u


def _expected_words(whisper_dir, name, **kwargs):
    """transformers' token timestamps of the audio's timestamped generate, its text tokens grouped by its tokenizer
    code, each word from the time of the token before it to its last token's (its ASR pipeline's rule)."""
    hf = transformers.WhisperForConditionalGeneration.from_pretrained(whisper_dir).eval()
    extractor = transformers.WhisperFeatureExtractor.from_pretrained(whisper_dir)
    _, stored, rate = WAVS[name]()
    features = _expected_features((None, extractor, None), stored, rate)
    frames = -(-round(len(stored) * 16000 / rate) // 160)
    mask = (np.arange(features.shape[2])[None] < frames).astype(np.int64)
    with torch.no_grad():
        out = hf.generate(torch.tensor(features), return_timestamps=True, return_segments=True,
                          return_token_timestamps=True, attention_mask=torch.tensor(mask), max_new_tokens=MAX_NEW,
                          **kwargs)
    tokens = [t for s in out["segments"][0] for t in s["tokens"].tolist()]
    times = [float(v) for s in out["segments"][0] for v in s["token_timestamps"]]
    keep = [i for i, t in enumerate(tokens) if t < EOS]
    tok = _Decoder(tokenizers.Tokenizer.from_file(str(whisper_dir / "tokenizer.json")))
    words, _, places = _combine_tokens_into_words(tok, [tokens[i] for i in keep], "english")
    assert len(words) > 1
    return [{"word": w.strip(), "start": round(times[keep[p[0]] - 1], 2) if keep[p[0]] else 0.0,
             "end": round(times[keep[p[-1]]], 2)} for w, p in zip(words, places)]


@pytest.mark.parametrize("granularities", [["word"], ["word", "segment"]])
def test_verbose_json_words_are_transformers_token_timestamps_grouped(url, whisper_dir, granularities):
    file, _, _ = WAVS["16k-mono-float32"]()
    want = _expected_words(whisper_dir, "16k-mono-float32", language="en", task="transcribe")
    fields = {"response_format": "verbose_json", "language": "en", "timestamp_granularities[]": granularities}
    with httpx.Client(base_url=url, timeout=60) as c:
        r = c.post("/v1/audio/transcriptions", files={"file": ("a.wav", file, "audio/wav")}, data=fields)
    assert r.status_code == 200, r.text
    v = r.json()
    assert v["words"] == want
    assert ("segments" in v) == ("segment" in granularities)  # words alone: no segments, as OpenAI's API
    assert max(w["end"] for w in v["words"]) > 0
    assert " ".join(w["word"] for w in v["words"]).replace(" ,", ",") != ""


def test_words_need_alignment_heads_and_verbose_json(url, tmp_path):
    file, _, _ = WAVS["16k-mono-float32"]()
    with httpx.Client(base_url=url, timeout=60) as c:
        r = c.post("/v1/audio/transcriptions", files={"file": ("a.wav", file, "audio/wav")},
                   data={"timestamp_granularities[]": "word", "response_format": "json"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "timestamp_granularities[]"
        r = c.post("/v1/audio/transcriptions", files={"file": ("a.wav", file, "audio/wav")},
                   data={"timestamp_granularities[]": "letter", "response_format": "verbose_json"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "timestamp_granularities[]"
    plain = tiny_whisper(tmp_path / "plain")  # no alignment_heads
    with running_app(create_speech_app(SpeechServeConfig(str(plain)))) as u, httpx.Client(base_url=u) as c:
        r = c.post("/v1/audio/transcriptions", files={"file": ("a.wav", file, "audio/wav")},
                   data={"timestamp_granularities[]": "word", "response_format": "verbose_json"})
        assert r.status_code == 400 and "alignment_heads" in r.json()["error"]["message"]
    # the request's settings are refused before its audio is decoded (no decode and features for a refused request)
    from forgegrad.serve.completion_request import CompletionError
    from forgegrad.serve.speech_app import Transcriber
    from forgegrad.serve.speech_request import SpeechRequest
    req = SpeechRequest("transcribe", b"RIFF", "a.wav", response_format="verbose_json", granularities=("word",))
    with pytest.raises(CompletionError) as e:
        Transcriber(str(plain)).prepare(req, None)
    assert e.value.param == "timestamp_granularities[]"


def test_words_with_beam_search(whisper_dir, tmp_path):
    """A checkpoint that decodes with beams (generation_config.json's num_beams): the words of transformers' token
    timestamps by beam search; two requests at once get each its own (word times by beams are decoded alone)."""
    beams = tmp_path / "beams"
    shutil.copytree(whisper_dir, beams)
    file = beams / "generation_config.json"
    file.write_text(json.dumps(dict(json.loads(file.read_text()), num_beams=3)))
    names = ["8k-stereo-int16", "16k-mono-float32"]
    want = [_expected_words(beams, name, language="en", task="transcribe") for name in names]
    assert want[0] != _expected_words(whisper_dir, names[0], language="en", task="transcribe")  # the beams' own
    fields = {"response_format": "verbose_json", "language": "en", "timestamp_granularities[]": "word"}
    with running_app(create_speech_app(SpeechServeConfig(str(beams), max_body_bytes=256 * 1024))) as u, \
            httpx.Client(base_url=u, timeout=60) as c, ThreadPoolExecutor(2) as pool:
        replies = list(pool.map(lambda name: c.post("/v1/audio/transcriptions", data=fields,
                                                     files={"file": ("a.wav", WAVS[name]()[0], "audio/wav")}), names))
    for r, words in zip(replies, want):
        assert r.status_code == 200, r.text
        assert r.json()["words"] == words


class _Bytes:
    """A byte-level vocabulary: each id a few UTF-8 bytes (some cut inside a character)."""
    eos_token_id = 1000

    def __init__(self, pieces):
        self.pieces = pieces

    def decode(self, ids, **_):
        return b"".join(self.pieces[i] for i in ids).decode("utf-8", errors="replace")


@pytest.mark.parametrize("language", ["english", "japanese", "chinese", "thai"])
def test_grouping_is_transformers(language):
    text = " Hello, world! (\"Quoted\") 今日は 晴れ. ไทย? 'ok' - yes"
    data = text.encode()
    rng = np.random.default_rng(0)
    pieces, at = [], 0
    while at < len(data):  # cut anywhere, inside characters too
        n = int(rng.integers(1, 4))
        pieces.append(data[at:at + n])
        at += n
    tok = _Bytes(pieces)
    ids = list(range(len(pieces)))
    want = _combine_tokens_into_words(tok, ids, language)
    got = combine_tokens_into_words(tok.decode, ids, language, tok.eos_token_id)
    assert got == want
    words = [w.strip() for w in combine_tokens_into_words(tok.decode, ids, language, tok.eos_token_id)[0]]
    assert "".join(words).replace(" ", "") == text.replace(" ", "")
