"""``forgegrad transcribe`` run as a command (``python -m forgegrad.cli transcribe``) on generated WAV and FLAC files
with a tiny Whisper that transformers wrote: the text, the JSON and the srt / vtt subtitles of transformers' generate
and tokenizer for the same audio (resampled by scipy, features by transformers' extractor); --output to a file and to
a directory; stdin; each user error an exit status 2 with a message naming the argument, without a traceback."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
pytest.importorskip("scipy.signal")
transformers.logging.set_verbosity_error()

from whisper_helpers import DE, EN, FR, MAX_NEW, NO_TIMESTAMPS, WAVS, expected_features  # noqa: E402
import whisper_helpers  # noqa: E402

import forgegrad  # noqa: E402
from forgegrad.cli import main  # noqa: E402

whisper_dir, reference = whisper_helpers.whisper_dir, whisper_helpers.reference  # the checkpoint's fixtures


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    """{name: (path, samples as stored, rate)}: the 8 kHz stereo int16 WAV, the 16 kHz mono float32 one."""
    root = tmp_path_factory.mktemp("audio")
    out = {}
    for name, stem in (("8k-stereo-int16", "first"), ("16k-mono-float32", "second")):
        data, stored, rate = WAVS[name]()
        path = root / f"{stem}.wav"
        path.write_bytes(data)
        out[stem] = (path, stored, rate)
    return out


def _cli(*args, stdin: bytes = None):
    """The command in a new process: (exit status, stdout, stderr)."""
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(forgegrad.__file__)))
    r = subprocess.run([sys.executable, "-m", "forgegrad.cli", "transcribe", *map(str, args)], input=stdin,
                       capture_output=True, env=env, timeout=120)
    return r.returncode, r.stdout.decode("utf-8"), r.stderr.decode("utf-8")


def _text(reference, stored, rate, **kwargs) -> str:
    """transformers' short-form generate and decode (the server's max_new_tokens: all the decoder's room)."""
    hf, _, tokenizer = reference
    with torch.no_grad():
        out = hf.generate(torch.tensor(expected_features(reference, stored, rate)), max_new_tokens=MAX_NEW, **kwargs)
    return tokenizer.decode(out[0], skip_special_tokens=True).strip()


def _subtitles(reference, stored, rate, fmt, **kwargs) -> str:
    """srt or vtt of transformers' timestamped generate: a cue per segment, its words without the timestamps."""
    hf, _, tokenizer = reference
    with torch.no_grad():
        out = hf.generate(torch.tensor(expected_features(reference, stored, rate)), return_timestamps=True,
                          return_segments=True, max_new_tokens=MAX_NEW, **kwargs)
    segments = [(float(s["start"]), float(s["end"]), s["tokens"].tolist()) for s in out["segments"][0]]
    assert segments

    def clock(t, sep):
        return f"00:00:{int(t):02d}{sep}{round(t * 1000) % 1000:03d}"

    def words(tokens):
        return tokenizer.decode([t for t in tokens if t < NO_TIMESTAMPS], skip_special_tokens=True).strip()

    sep = "," if fmt == "srt" else "."
    cues = [f"{clock(a, sep)} --> {clock(b, sep)}\n{words(tokens)}\n\n" for a, b, tokens in segments]
    if fmt == "srt":
        return "".join(f"{k}\n{cue}" for k, cue in enumerate(cues, start=1))
    return "WEBVTT\n\n" + "".join(cues)


def test_text_and_json_are_transformers_generate_and_decode(whisper_dir, reference, audio):
    """Text of one file (language given), JSON lines of two (the language detected), stdin, a FLAC file."""
    path, stored, rate = audio["first"]
    want = _text(reference, stored, rate, language="fr", task="transcribe")
    assert want
    code, out, err = _cli(path, "--model", whisper_dir, "--language", "fr")
    assert code == 0, err
    assert out == want + "\n" and "[1/" not in err  # progress only on a terminal

    second, stored2, rate2 = audio["second"]
    code, out, err = _cli(path, second, "--model", whisper_dir, "--format", "json")
    assert code == 0, err
    assert [json.loads(line) for line in out.splitlines()] == [
        {"text": _text(reference, stored, rate, task="transcribe")},
        {"text": _text(reference, stored2, rate2, task="transcribe")}]

    sf = pytest.importorskip("soundfile")  # FLAC: the audio extra
    flac = io.BytesIO()
    sf.write(flac, np.round(stored * 32768).astype(np.int16), rate, format="FLAC", subtype="PCM_16")
    code, out, err = _cli("-", "--model", whisper_dir, "--language", "french", stdin=flac.getvalue())
    assert code == 0, err
    assert out == want + "\n"  # lossless: the WAV's text


def test_subtitles_and_output_dir(whisper_dir, reference, audio, tmp_path):
    """srt of two files into a new directory (<stem>.srt each), vtt of a translation with 2 beams to stdout,
    verbose_json to a file: transformers' timestamped segments."""
    (first, stored, rate), (second, stored2, rate2) = audio["first"], audio["second"]
    out_dir = tmp_path / "subs"
    code, out, err = _cli(first, second, "--model", whisper_dir, "--format", "srt", "--output", out_dir)
    assert code == 0, err
    assert out == "" and sorted(os.listdir(out_dir)) == ["first.srt", "second.srt"]
    assert (out_dir / "first.srt").read_text() == _subtitles(reference, stored, rate, "srt", task="transcribe")
    assert (out_dir / "second.srt").read_text() == _subtitles(reference, stored2, rate2, "srt", task="transcribe")

    code, out, err = _cli(first, "--model", whisper_dir, "--format", "vtt", "--task", "translate", "--language",
                          "de", "--num-beams", "2")
    assert code == 0, err
    assert out == _subtitles(reference, stored, rate, "vtt", task="translate", language="de", num_beams=2)

    hf, _, _ = reference
    with torch.no_grad():
        start = hf(torch.tensor(expected_features(reference, stored, rate)),
                   decoder_input_ids=torch.tensor([[hf.config.decoder_start_token_id]])).logits[0, -1]
    lang = {EN: "english", FR: "french", DE: "german"}[[EN, FR, DE][int(start[[EN, FR, DE]].argmax())]]
    target = tmp_path / "one.json"
    assert main(["transcribe", str(first), "--model", str(whisper_dir), "--format", "verbose_json",
                 "--output", str(target)]) == 0
    v = json.loads(target.read_text())
    assert v["task"] == "transcribe" and v["language"] == lang and v["duration"] == pytest.approx(0.8)
    assert v["text"] == _text(reference, stored, rate, task="transcribe", return_timestamps=True)
    assert [s["id"] for s in v["segments"]] == list(range(len(v["segments"]))) and v["segments"]


def _error(capsys, *args) -> str:
    assert main(["transcribe", *map(str, args)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_errors_exit_2_naming_the_argument(whisper_dir, audio, tmp_path, capsys, monkeypatch):
    path = audio["first"][0]
    code, _, err = _cli(tmp_path / "nosuch.wav", "--model", whisper_dir)
    assert code == 2 and "AUDIO" in err and "nosuch.wav" in err and "no such file" in err
    assert "Traceback" not in err
    assert "--model" in _error(capsys, path, "--model", tmp_path / "nothere")
    (tmp_path / "gpt").mkdir()
    (tmp_path / "gpt" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    assert "no Whisper checkpoint" in _error(capsys, path, "--model", tmp_path / "gpt")
    assert "--language: " in _error(capsys, path, "--model", whisper_dir, "--language", "klingon")
    assert "--temperature" in _error(capsys, path, "--model", whisper_dir, "--temperature", "-1")
    assert "--format" in _error(capsys, path, "--model", whisper_dir, "--format", "docx")
    assert "--prompt: " in _error(capsys, path, "--model", whisper_dir, "--prompt", "the <|en|> water")
    assert "stdin" in _error(capsys, "-", "-", "--model", whisper_dir)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in "ab":
        (tmp_path / d / "x.wav").write_bytes(path.read_bytes())
    err = _error(capsys, tmp_path / "a" / "x.wav", tmp_path / "b" / "x.wav", "--model", whisper_dir,
                 "--output", tmp_path / "out")
    assert "--output" in err and "x.txt" in err and not (tmp_path / "out").exists()

    # a file that is not audio, among good ones: reported by name, the others still transcribed, exit 2
    text = tmp_path / "notes.txt"
    text.write_bytes(b"hello, not audio" * 4)
    out_dir = tmp_path / "mixed"
    err = _error(capsys, text, path, "--model", whisper_dir, "--output", out_dir)
    assert "notes.txt" in err and "not audio that is recognised" in err and "1 of 2 files" in err
    assert os.listdir(out_dir) == ["first.txt"]

    # FLAC without the audio extra: the message names it
    flac = tmp_path / "a.flac"
    flac.write_bytes(b"fLaC" + bytes(60))
    monkeypatch.setitem(sys.modules, "soundfile", None)  # `import soundfile` fails, as when it is not installed
    err = _error(capsys, flac, "--model", whisper_dir)
    assert "a.flac" in err and 'pip install "forgegrad[audio]"' in err
