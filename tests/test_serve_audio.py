"""OpenAI's ``POST /v1/audio/transcriptions`` and ``/v1/audio/translations`` on the real server (uvicorn on a loopback
port, httpx multipart uploads) for a tiny Whisper that transformers made: WAV files at 8, 16 and 44.1 kHz (stereo
int16, mono float32, 24-bit) give the text transformers' generate and tokenizer give for the same audio (resampled
by scipy, features by transformers' extractor); the response formats; the CLI; each bad request a 4xx naming its
field."""
from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("python_multipart")  # python-multipart: Starlette's form parser
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
scipy_signal = pytest.importorskip("scipy.signal")
transformers.logging.set_verbosity_error()

from serve_helpers import metric, running_app, start_cli_server  # noqa: E402
from whisper_helpers import (DE, EN, EOS, FR, MAX_NEW, NO_SPEECH, NO_TIMESTAMPS, POSITIONS, PREV, START,  # noqa: E402
                             WAVS, WORDS)
import whisper_helpers  # noqa: E402
from whisper_helpers import expected_features as _expected_features  # noqa: E402
from whisper_helpers import pcm_wav as _pcm_wav  # noqa: E402
from whisper_helpers import signal as _signal  # noqa: E402

from forgegrad.models import from_pretrained  # noqa: E402
from forgegrad.serve.speech_app import SpeechServeConfig, create_speech_app  # noqa: E402

whisper_dir, reference = whisper_helpers.whisper_dir, whisper_helpers.reference  # the checkpoint's fixtures


@pytest.fixture(scope="module")
def ours(whisper_dir):
    return from_pretrained(whisper_dir)


@pytest.fixture(scope="module")
def url(whisper_dir):
    with running_app(create_speech_app(SpeechServeConfig(str(whisper_dir), max_body_bytes=256 * 1024))) as u:
        yield u


@pytest.fixture()
def client(url):
    with httpx.Client(base_url=url, timeout=60) as c:
        yield c


@pytest.mark.parametrize("name", list(WAVS))
def test_the_servers_features_are_the_reference_pipelines(whisper_dir, reference, name):
    """The random tiny model's words depend little on the audio, so the audio path is checked on its features: the
    server's (its WAV decoder, resampler and extractor) against scipy's resampling and transformers' extractor."""
    from forgegrad.serve.speech_app import Transcriber
    from forgegrad.serve.speech_request import SpeechRequest
    file, stored, rate = WAVS[name]()
    job = Transcriber(str(whisper_dir)).prepare(SpeechRequest("transcribe", file, "a.wav"), None)
    assert job.duration == pytest.approx(len(stored) / rate, abs=1 / rate) and not job.timestamps
    np.testing.assert_allclose(job.features, _expected_features(reference, stored, rate), rtol=0, atol=2e-4)


def _post(client, route, file, fields=(), filename="audio.wav"):
    return client.post(route, files={"file": (filename, file, "audio/wav")}, data=dict(fields))


@pytest.mark.parametrize("name,route,fields,kwargs", [
    ("8k-stereo-int16", "/v1/audio/transcriptions", {}, dict(task="transcribe")),  # the language detected
    ("44k-stereo-int24", "/v1/audio/transcriptions", {"language": "fr", "model": "tiny-whisper"},
     dict(task="transcribe", language="fr")),
    ("16k-mono-float32", "/v1/audio/translations", {"response_format": "text"}, dict(task="translate")),
], ids=["8k-detect", "44k-french", "16k-translate-text"])
def test_text_is_transformers_generate_and_decode(client, ours, reference, name, route, fields, kwargs):
    hf, _, tokenizer = reference
    file, stored, rate = WAVS[name]()
    features = _expected_features(reference, stored, rate)
    with torch.no_grad():
        ids = hf.generate(torch.tensor(features), max_new_tokens=MAX_NEW, **kwargs)[0].tolist()
    want = tokenizer.decode(ids, skip_special_tokens=True).strip()
    assert want  # the tiny model says something, and it depends on the audio
    assert ours.generate(features, max_new_tokens=MAX_NEW, **kwargs)[0].tolist() == ids
    r = _post(client, route, file, fields)
    assert r.status_code == 200, r.text
    if fields.get("response_format") == "text":
        assert r.headers["content-type"].startswith("text/plain")
        assert r.text == want + "\n"
    else:
        assert r.headers["content-type"] == "application/json"
        assert r.json() == {"text": want}


def _sf_file(x, rate, fmt, subtype):
    sf = pytest.importorskip("soundfile")
    buf = io.BytesIO()
    sf.write(buf, x, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def test_flac_mp3_and_ogg_uploads(client, whisper_dir, reference):
    """The 8 kHz stereo int16 audio as FLAC: the same features (lossless) and the same text as its WAV upload. A
    44.1 kHz stereo MP3 and a 48 kHz Ogg Vorbis: the features of what soundfile decodes from them by itself, through
    scipy and transformers' extractor; they transcribe. Broken ones are 400s naming the format."""
    sf = pytest.importorskip("soundfile")
    from forgegrad.serve.speech_app import Transcriber
    from forgegrad.serve.speech_request import SpeechRequest
    transcriber = Transcriber(str(whisper_dir))
    wav, stored, rate = WAVS["8k-stereo-int16"]()
    flac = _sf_file(np.round(stored * 32768).astype(np.int16), rate, "FLAC", "PCM_16")
    route = "/v1/audio/transcriptions"
    job = transcriber.prepare(SpeechRequest("transcribe", flac, "a.flac"), None)
    np.testing.assert_array_equal(job.features, transcriber.prepare(SpeechRequest("transcribe", wav, "a.wav"),
                                                                    None).features)
    by_wav, by_flac = _post(client, route, wav), _post(client, route, flac, filename="audio.flac")
    assert by_wav.status_code == by_flac.status_code == 200, by_flac.text
    assert by_flac.json() == by_wav.json() and by_flac.json()["text"]
    for fmt, subtype, file_rate in (("MP3", "MPEG_LAYER_III", 44100), ("OGG", "VORBIS", 48000)):
        data = _sf_file(_signal(0.7, file_rate, 2, 7), file_rate, fmt, subtype)
        decoded, decoded_rate = sf.read(io.BytesIO(data), dtype="float64", always_2d=True)
        assert decoded_rate == file_rate and decoded.shape == (int(0.7 * file_rate), 2)
        job = transcriber.prepare(SpeechRequest("transcribe", data, "a"), None)
        np.testing.assert_allclose(job.features, _expected_features(reference, decoded, file_rate), rtol=0,
                                   atol=2e-4)
        r = _post(client, route, data, {"response_format": "verbose_json"}, filename=f"audio.{fmt.lower()}")
        assert r.status_code == 200, r.text
        assert r.json()["duration"] == pytest.approx(0.7, abs=1e-3) and r.json()["text"]
    assert "FLAC: libsndfile could not decode" in _error(_post(client, route, flac[:len(flac) // 2]), 400, "file")
    assert "MP3: libsndfile could not decode" in _error(_post(client, route, b"ID3\x03" + bytes(100)), 400, "file")


def test_without_soundfile_other_formats_are_a_415_naming_the_extra(whisper_dir, monkeypatch):
    from forgegrad.serve.completion_request import CompletionError
    from forgegrad.serve.speech_app import Transcriber
    from forgegrad.serve.speech_request import SpeechRequest
    transcriber = Transcriber(str(whisper_dir))
    flac = _sf_file(_signal(0.2, 16000, 1, 8), 16000, "FLAC", "PCM_16")
    monkeypatch.setitem(sys.modules, "soundfile", None)  # `import soundfile` fails, as when it is not installed
    with pytest.raises(CompletionError) as e:
        transcriber.prepare(SpeechRequest("transcribe", flac, "a.flac"), None)
    assert e.value.status == 415 and e.value.param == "file"
    assert "FLAC, decoded with the soundfile package" in e.value.message
    assert 'pip install "forgegrad[audio]"' in e.value.message


def _segments(reference, stored, rate, longform=False, **kwargs):
    """transformers' timestamped generate on the audio: [(start, end, tokens)] and the text of all its tokens."""
    hf, extractor, tokenizer = reference
    if longform:
        mono = stored.mean(axis=1)
        g = np.gcd(rate, 16000)
        mono = scipy_signal.resample_poly(mono, 16000 // g, rate // g) if rate != 16000 else mono
        inputs = extractor(mono.astype(np.float32), sampling_rate=16000, return_tensors="pt", truncation=False,
                           padding="longest", return_attention_mask=True)
        features, extra = inputs["input_features"], {"attention_mask": inputs["attention_mask"]}
        assert features.shape[-1] > 100
    else:
        features, extra = torch.tensor(_expected_features(reference, stored, rate)), {}
    with torch.no_grad():
        out = hf.generate(features, return_timestamps=True, return_segments=True, **extra,
                          **{"max_new_tokens": MAX_NEW, **kwargs})
    segments = [(float(s["start"]), float(s["end"]), s["tokens"].tolist()) for s in out["segments"][0]]
    assert segments
    return segments, tokenizer.decode(out["sequences"][0], skip_special_tokens=True).strip()


def test_verbose_json_srt_and_vtt_have_whispers_timestamped_segments(client, reference):
    hf, _, tokenizer = reference
    file, stored, rate = WAVS["8k-stereo-int16"]()
    features = torch.tensor(_expected_features(reference, stored, rate))
    with torch.no_grad():
        start = hf(features, decoder_input_ids=torch.tensor([[START]])).logits[0, -1]
    lang = [EN, FR, DE][int(start[[EN, FR, DE]].argmax())]
    segments, text = _segments(reference, stored, rate, task="transcribe")

    r = _post(client, "/v1/audio/transcriptions", file, {"response_format": "verbose_json",
                                                         "timestamp_granularities[]": "segment"})
    assert r.status_code == 200, r.text
    v = r.json()
    assert v["task"] == "transcribe" and v["language"] == {EN: "english", FR: "french", DE: "german"}[lang]
    assert v["duration"] == pytest.approx(0.8) and v["text"] == text
    assert [(g["start"], g["end"], g["tokens"]) for g in v["segments"]] == \
        [(round(a, 3), round(b, 3), tokens) for a, b, tokens in segments]
    for k, g in enumerate(v["segments"]):
        words = tokenizer.decode([t for t in g["tokens"] if t < NO_TIMESTAMPS], skip_special_tokens=True)
        assert g["id"] == k and g["text"] == words and g["temperature"] == 0 and g["compression_ratio"] > 0
        assert g["seek"] == round(g["start"] * 100)

    def clock(t, sep):
        return f"00:00:{int(t):02d}{sep}{round(t * 1000) % 1000:03d}"

    def words(tokens):
        return tokenizer.decode([t for t in tokens if t < NO_TIMESTAMPS], skip_special_tokens=True).strip()

    srt = _post(client, "/v1/audio/transcriptions", file, {"response_format": "srt"})
    assert srt.status_code == 200
    assert srt.text == "".join(f"{k}\n{clock(a, ',')} --> {clock(b, ',')}\n{words(tokens)}\n\n"
                               for k, (a, b, tokens) in enumerate(segments, start=1))
    vtt = _post(client, "/v1/audio/translations", file, {"response_format": "vtt", "language": "de"})
    assert vtt.status_code == 200 and vtt.headers["content-type"].startswith("text/vtt")
    segments, _ = _segments(reference, stored, rate, task="translate", language="de")
    assert vtt.text == "WEBVTT\n\n" + "".join(f"{clock(a, '.')} --> {clock(b, '.')}\n{words(tokens)}\n\n"
                                               for a, b, tokens in segments)


def test_long_audio_is_decoded_window_after_window(client, reference):
    """2.6 s of audio: 1-second windows, each starting where the last one's final timestamp pair put it, as
    transformers' long-form generate."""
    file, stored, rate = _pcm_wav(_signal(2.6, 8000, 2, 6), 8000, 2) + (8000,)
    segments, text = _segments(reference, stored, rate, longform=True, task="transcribe", language="fr")
    assert segments[-1][1] > 1.0
    r = _post(client, "/v1/audio/transcriptions", file, {"language": "fr"})
    assert r.status_code == 200, r.text
    assert r.json() == {"text": text}
    v = _post(client, "/v1/audio/transcriptions", file, {"language": "fr", "response_format": "verbose_json"}).json()
    assert v["duration"] == pytest.approx(2.6) and v["text"] == text and v["language"] == "french"
    assert [(g["start"], g["end"], g["tokens"]) for g in v["segments"]] == \
        [(round(a, 3), round(b, 3), tokens) for a, b, tokens in segments]


def test_prompt_is_transformers_generate_with_prompt_ids(client, reference, whisper_dir):
    """The prompt field: WhisperTokenizer.get_prompt_ids(text) passed as generate's prompt_ids (the decoder keeps
    room for them); the answer is transformers' text after the prompt, for one window (json, and verbose_json's
    timestamped segments) and for long audio (the prompt before every window)."""
    hf, _, tokenizer = reference
    whisper_tokenizer = transformers.WhisperTokenizerFast(tokenizer_file=str(whisper_dir / "tokenizer.json"))
    text = "  the water of time "
    ids = whisper_tokenizer.get_prompt_ids(text)
    assert ids.tolist() == [PREV] + [WORDS.index(w) for w in text.split()]
    prompt = dict(prompt_ids=torch.tensor(ids), max_new_tokens=MAX_NEW - len(ids), task="transcribe", language="fr")
    route = "/v1/audio/transcriptions"
    file, stored, rate = WAVS["44k-stereo-int24"]()
    with torch.no_grad():
        out = hf.generate(torch.tensor(_expected_features(reference, stored, rate)), **prompt)[0].tolist()
    want = tokenizer.decode(out, skip_special_tokens=True).strip()
    assert want
    r = _post(client, route, file, {"language": "fr", "prompt": text})
    assert r.status_code == 200, r.text
    assert r.json() == {"text": want}
    assert _post(client, route, file, {"language": "fr"}).json()["text"] != want  # the prompt mattered

    segments, want = _segments(reference, stored, rate, **prompt)
    v = _post(client, route, file, {"language": "fr", "prompt": text, "response_format": "verbose_json"}).json()
    assert v["text"] == want
    assert [(g["start"], g["end"], g["tokens"]) for g in v["segments"]] == \
        [(round(a, 3), round(b, 3), tokens) for a, b, tokens in segments]

    file, stored, rate = _pcm_wav(_signal(2.6, 8000, 2, 6), 8000, 2) + (8000,)
    segments, want = _segments(reference, stored, rate, longform=True, **prompt)
    assert segments[-1][1] > 1.0
    r = _post(client, route, file, {"language": "fr", "prompt": text})
    assert r.status_code == 200, r.text
    assert r.json() == {"text": want}


def test_prompt_tokens(whisper_dir, tmp_path):
    """A long prompt keeps its last max_target_positions // 2 - 1 tokens, as OpenAI's Whisper; a tokenizer without
    <|startofprev|> refuses the prompt field, naming it."""
    import shutil

    from forgegrad.serve.completion_request import CompletionError
    from forgegrad.serve.speech_app import Transcriber
    from forgegrad.serve.speech_request import SpeechRequest
    words = WORDS[:30]
    assert Transcriber(str(whisper_dir)).prompt_ids(" ".join(words), "transcribe") == \
        (PREV,) + tuple(range(30 - (POSITIONS // 2 - 1), 30))
    path = tmp_path / "tiny-whisper"
    shutil.copytree(whisper_dir, path)
    file = path / "tokenizer.json"
    file.write_text(file.read_text().replace("<|startofprev|>", "<|previous|>"))
    wav, _, _ = WAVS["16k-mono-float32"]()
    with pytest.raises(CompletionError, match="no <\\|startofprev\\|> token") as e:
        Transcriber(str(path)).prepare(SpeechRequest("transcribe", wav, "a.wav", prompt="the water"), None)
    assert e.value.status == 400 and e.value.param == "prompt"


@pytest.mark.parametrize("prompt", ["", "the water of time"], ids=["no-prompt", "prompt"])
def test_without_timestamp_tokens_verbose_json_is_one_segment_with_whispers_scores(whisper_dir, tmp_path, prompt):
    """A checkpoint without no_timestamps_token_id: verbose_json's one segment is the whole clip, with Whisper's
    avg_logprob (the chosen tokens' log-probabilities under the processed scores, the end token's too, over
    tokens + 1) and no_speech_prob (<|nocaptions|>'s probability after the start token), checked against
    transformers' scores, behind the prompt where there is one; long audio is refused."""
    import shutil
    path = tmp_path / "tiny-whisper"
    shutil.copytree(whisper_dir, path)
    file = path / "generation_config.json"
    settings = json.loads(file.read_text())
    del settings["no_timestamps_token_id"]
    file.write_text(json.dumps(settings))
    hf = transformers.WhisperForConditionalGeneration.from_pretrained(path).eval()
    extractor = transformers.WhisperFeatureExtractor.from_pretrained(path)
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"))
    wav, stored, rate = WAVS["16k-mono-float32"]()
    features = torch.tensor(_expected_features((hf, extractor, tokenizer), stored, rate))
    ids = transformers.WhisperTokenizerFast(tokenizer_file=str(path / "tokenizer.json")).get_prompt_ids(prompt)
    ids = ids.tolist() if prompt else []
    max_new = POSITIONS - 3 - len(ids)  # no <|notimestamps|> in the prompt
    with torch.no_grad():
        out = hf.generate(features, max_new_tokens=max_new, task="transcribe", return_dict_in_generate=True,
                          output_scores=True, prompt_ids=torch.tensor(ids) if ids else None)
        start = hf(features, decoder_input_ids=torch.tensor([ids + [START]])).logits[0, -1]
    tokens = out.sequences[0].tolist()[len(ids) + 3:]  # after the prompt, start, language, task
    text_ids = tokens[:-1] if tokens[-1] == EOS else tokens
    logp = [torch.log_softmax(s[0].double(), -1) for s in out.scores]
    total = sum(float(lp[t]) for lp, t in zip(logp, tokens))
    raw = tokenizer.decode(text_ids, skip_special_tokens=True)
    with running_app(create_speech_app(SpeechServeConfig(str(path)))) as url, \
            httpx.Client(base_url=url, timeout=60) as c:
        r = _post(c, "/v1/audio/transcriptions", wav, {"response_format": "verbose_json", "prompt": prompt})
        long_file, _ = _pcm_wav(_signal(1.5, 8000, 1, 4), 8000, 2)
        assert "1.50 s" in _error(_post(c, "/v1/audio/transcriptions", long_file), 400, "file")
    assert r.status_code == 200, r.text
    [seg] = r.json()["segments"]
    assert seg["start"] == 0 and seg["end"] == pytest.approx(0.9) and seg["text"] == raw
    assert seg["tokens"] == text_ids
    assert seg["avg_logprob"] == pytest.approx(total / (len(text_ids) + 1), abs=1e-4)
    assert seg["no_speech_prob"] == pytest.approx(float(torch.softmax(start.double(), -1)[NO_SPEECH]), abs=1e-5)


def test_concurrent_requests_share_batches_with_their_solo_text(url, ours, reference):
    """Requests sent at once wait together; the model's thread runs those of one task, temperature, kind of language
    and use of timestamps through one generate. Each answer is forgegrad's solo text for its audio (the tests above
    check it is transformers')."""
    import asyncio
    _, _, tokenizer = reference
    cases = [(name, route, fields, kwargs) for name in list(WAVS)[:2] for route, fields, kwargs in [
        ("/v1/audio/transcriptions", {}, dict(task="transcribe")),
        ("/v1/audio/transcriptions", {"language": "de"}, dict(task="transcribe", language="de")),
        ("/v1/audio/translations", {"language": "fr", "response_format": "verbose_json"},
         dict(task="translate", language="fr", return_timestamps=True))]]
    want = []
    for name, _, _, kwargs in cases:
        _, stored, rate = WAVS[name]()
        ids = ours.generate(_expected_features(reference, stored, rate), max_new_tokens=MAX_NEW, **kwargs)[0]
        want.append(tokenizer.decode(ids.tolist(), skip_special_tokens=True).strip())

    async def burst():
        async with httpx.AsyncClient(base_url=url, timeout=120) as c:
            return await asyncio.gather(*(c.post(route, files={"file": ("a.wav", WAVS[name]()[0])}, data=fields)
                                          for name, route, fields, _ in cases))

    before = httpx.get(url + "/metrics").text
    responses = asyncio.run(burst())
    after = httpx.get(url + "/metrics").text
    for r, w, (_, _, fields, _) in zip(responses, want, cases):
        assert r.status_code == 200, r.text
        assert r.json()["text"] == w
        if fields.get("response_format") == "verbose_json":
            assert r.json()["language"] == "french"
    batches = [metric(after, "forgegrad_batch_size_count") - metric(before, "forgegrad_batch_size_count"),
               metric(after, "forgegrad_batch_size_bucket", le="1.0")
               - metric(before, "forgegrad_batch_size_bucket", le="1.0")]
    assert batches[0] < len(cases) and batches[1] < batches[0], f"no batch of several requests: {batches}"


def test_sampling_and_models_and_metrics(client):
    file, _, _ = WAVS["16k-mono-float32"]()
    r = _post(client, "/v1/audio/transcriptions", file, {"temperature": "0.8", "language": "en"})
    assert r.status_code == 200, r.text
    assert r.json()["text"] and set(r.json()["text"].split()) <= set(WORDS)
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["tiny-whisper"]
    assert models["data"][0]["max_model_len"] == POSITIONS
    text = client.get("/metrics").text
    assert metric(text, "forgegrad_audio_seconds_total", model="tiny-whisper") > 0
    assert metric(text, "forgegrad_requests_total", route="/v1/audio/transcriptions", code="200") >= 1


def _error(r, status, param):
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert err["param"] == param, err
    return err["message"]


def test_bad_requests_name_their_field(client):
    file, _, _ = WAVS["16k-mono-float32"]()
    route = "/v1/audio/transcriptions"
    assert "unknown field 'file2'" in _error(client.post(route, files={"file2": ("a.wav", file)}), 400, "file2")
    assert "required" in _error(client.post(route, files={"prompt": (None, "")}), 400, "file")
    mp4 = b"\x00\x00\x00\x20ftypM4A " + bytes(100)
    assert "MP4/M4A, which is not decoded; accepted: WAV" in _error(_post(client, route, mp4, filename="a.m4a"), 415,
                                                                    "file")
    assert "WAV" in _error(_post(client, route, b"not audio at all"), 415, "file")
    empty, _ = _pcm_wav(np.zeros((0, 1)), 16000, 2)
    assert "no samples" in _error(_post(client, route, empty), 400, "file")
    broken = file[:30]
    assert "truncated" in _error(_post(client, route, broken), 400, "file")
    assert "srtx" in _error(_post(client, route, file, {"response_format": "srtx"}), 400, "response_format")
    assert "number" in _error(_post(client, route, file, {"temperature": "warm"}), 400, "temperature")
    _error(_post(client, route, file, {"temperature": "1.5"}), 400, "temperature")
    assert "klingon" in _error(_post(client, route, file, {"language": "klingon"}), 400, "language")
    _error(_post(client, route, file, {"language": "ja"}), 400, "language")  # not in this checkpoint's lang_to_id
    long = _error(_post(client, route, file, {"language": "x" * 5000}), 400, "language")
    assert "5000 characters" in long and len(long) < 300  # (the value is not echoed whole)
    assert "special token '<|en|>'" in _error(_post(client, route, file, {"prompt": "the <|en|> water"}), 400, "prompt")
    _error(_post(client, route, file, {"temprature": "0"}), 400, "temprature")
    _error(_post(client, route, file, {"stream": "true"}), 400, "stream")
    _error(_post(client, route, file, {"timestamp_granularities[]": "word", "response_format": "verbose_json"}),
           400, "timestamp_granularities[]")
    _error(_post(client, route, file, {"model": "whisper-1"}), 404, "model")
    _error(client.post(route, json={"file": "audio.wav"}), 415, "file")
    _error(client.post(route, content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data"}), 400, "file")
    big = _pcm_wav(_signal(1.2, 44100, 2, 5), 44100, 3)[0]  # 318 kB: over the 256 KiB limit
    assert "larger than 262144" in _error(_post(client, route, big), 413, None)
    # the server keeps serving
    assert _post(client, route, file).status_code == 200


def test_cli_serves_a_whisper_directory(whisper_dir, reference):
    hf, _, tokenizer = reference
    file, stored, rate = WAVS["44k-stereo-int24"]()
    with torch.no_grad():
        ids = hf.generate(torch.tensor(_expected_features(reference, stored, rate)), max_new_tokens=MAX_NEW,
                          task="translate", language="de")[0].tolist()
    proc, url = start_cli_server(whisper_dir, "--model-name", "whisper-1", output="stderr")
    try:
        with httpx.Client(base_url=url, timeout=60) as c:
            assert [m["id"] for m in c.get("/v1/models").json()["data"]] == ["whisper-1"]
            r = _post(c, "/v1/audio/translations", file, {"model": "whisper-1", "language": "german"})
            assert r.status_code == 200, r.text
            assert r.json()["text"] == tokenizer.decode(ids, skip_special_tokens=True).strip()
    finally:
        proc.terminate()
        proc.wait(30)
