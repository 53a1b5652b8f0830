"""``forgegrad transcribe``'s structured outputs (``--guided-regex``, ``--guided-choice``, ``--guided-json FILE``,
``--guided-grammar FILE``: the audio API's guided_* fields as flags) and ``--num-beams``, run as the command on a tiny
Whisper with a byte-level BPE (test_hf_whisper_grammar's text-only checkpoint, which llguidance reads) and short
generated WAV files: the text is forgegrad's Python API's (``model.generate(..., logits_processor=
GrammarLogitsProcessor(...))`` on transformers' features, decoded by the checkpoint's tokenizer) and matches the
grammar; each bad flag an exit status 2 naming it (a missing or oversized file, a grammar that does not parse, two
grammars, a tokenizer llguidance cannot read, beams with sampling); a grammar that cannot go on skips its file."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("llguidance")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("scipy.signal")
transformers.logging.set_verbosity_error()

from test_hf_whisper_grammar import ANSWERS, DIGITS, SCHEMA, clean_copy, grammar_whisper  # noqa: E402
from whisper_helpers import EOS, WAVS, expected_features, tiny_whisper  # noqa: E402

import forgegrad  # noqa: E402
from forgegrad.cli import main  # noqa: E402
from forgegrad.models import from_pretrained  # noqa: E402
from forgegrad.models.hf.constrained import Grammar, GrammarLogitsProcessor  # noqa: E402
from forgegrad.models.hf.tokenizer import load_tokenizer  # noqa: E402

LARK = 'start: " " ("yes" | "no" | "maybe") (" " ("yes" | "no"))*'


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(checkpoint dir, the Python API's text of (WAVS name, Grammar, num_beams), {WAVS name: wav path})."""
    root = tmp_path_factory.mktemp("cli_grammar")
    path = clean_copy(grammar_whisper(root / "raw"), root / "clean")
    model = from_pretrained(path)
    tok = load_tokenizer(path, model.vocab_size, EOS)
    extractor = transformers.WhisperFeatureExtractor.from_pretrained(path)
    wavs = {}
    for name in WAVS:
        wavs[name] = root / f"{name}.wav"
        wavs[name].write_bytes(WAVS[name]()[0])

    def api(name, grammar, num_beams=1):
        _, stored, rate = WAVS[name]()
        x = expected_features((None, extractor, None), stored, rate)
        ids = model.generate(x, language="en", task="transcribe", max_new_tokens=model.max_positions - 4,
                             num_beams=num_beams,
                             logits_processor=GrammarLogitsProcessor(tok, grammar, EOS, model.vocab_size))
        return tok.decode(ids[0].tolist(), skip_special_tokens=True).strip()
    return path, api, wavs


def _cli(*args):
    """The command in a new process: (exit status, stdout, stderr)."""
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(forgegrad.__file__)))
    r = subprocess.run([sys.executable, "-m", "forgegrad.cli", "transcribe", *map(str, args)], capture_output=True,
                       env=env, timeout=120)
    return r.returncode, r.stdout.decode("utf-8"), r.stderr.decode("utf-8")


def test_regex_and_grammar_file_with_beams(setup, tmp_path):
    """--guided-regex greedy, --guided-grammar FILE (Lark) with --num-beams 2 as JSON: the Python API's texts."""
    path, api, wavs = setup
    code, out, err = _cli(wavs["8k-stereo-int16"], "--model", path, "--language", "en", "--guided-regex", DIGITS)
    assert code == 0, err
    want = api("8k-stereo-int16", Grammar.regex(DIGITS))
    assert out == want + "\n" and re.fullmatch(DIGITS.lstrip(" ?"), want)
    lark = tmp_path / "answers.lark"
    lark.write_text(LARK)
    code, out, err = _cli(wavs["16k-mono-float32"], "--model", path, "--language", "en", "--guided-grammar", lark,
                          "--num-beams", "2", "--format", "json")
    assert code == 0, err
    want = api("16k-mono-float32", Grammar.ebnf(LARK), num_beams=2)
    assert json.loads(out) == {"text": want} and re.fullmatch(r"(yes|no|maybe)( (yes|no))*", want)


def test_choice_and_json_schema(setup, tmp_path, capsys):
    path, api, wavs = setup
    name = "44k-stereo-int24"
    choices = [a.strip() for a in ANSWERS]
    args = [wavs[name], "--model", path, "--language", "en"]
    assert main(["transcribe", *map(str, args), *[f"--guided-choice= {c}" for c in choices]]) == 0
    out = capsys.readouterr().out
    assert out == api(name, Grammar.choice(ANSWERS)) + "\n" and out.strip() in choices
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    assert main(["transcribe", *map(str, args), "--guided-json", str(schema)]) == 0
    out = capsys.readouterr().out
    assert out == api(name, Grammar.json_schema(SCHEMA)) + "\n" and set(json.loads(out)) == {"n"}


def _error(capsys, *args) -> str:
    assert main(["transcribe", *map(str, args)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_errors_name_the_flag(setup, tmp_path, capsys):
    path, _, wavs = setup
    wav = wavs["8k-stereo-int16"]
    run = (wav, "--model", path, "--language", "en")
    assert "--guided-grammar 'nosuch.lark': no such file" in _error(capsys, *run, "--guided-grammar", "nosuch.lark")
    assert "is a directory" in _error(capsys, *run, "--guided-json", tmp_path)
    bad = tmp_path / "bad.lark"
    bad.write_text('start: ("yes" | ')
    assert "--guided-grammar: " in _error(capsys, *run, "--guided-grammar", bad)
    bad.write_text("{not json")
    assert "bad.lark' is not JSON" in _error(capsys, *run, "--guided-json", bad)
    bad.write_text('{"type": "nonsense"}')
    assert "--guided-json: " in _error(capsys, *run, "--guided-json", bad)
    big = tmp_path / "big.lark"
    big.write_text('start: "' + "ab" * 35000 + '"')
    assert "--guided-grammar has 70009 characters" in _error(capsys, *run, "--guided-grammar", big)
    big.write_bytes(b"x" * 300000)  # not read: more bytes than four times the limit
    assert "has 300000 bytes" in _error(capsys, *run, "--guided-grammar", big)
    big.write_bytes(b'start: "\xff"')
    assert "is not UTF-8 text" in _error(capsys, *run, "--guided-grammar", big)
    assert "not allowed with argument" in _error(capsys, *run, "--guided-regex", "1", "--guided-choice", "a")
    assert "--num-beams: beam search decodes at temperature 0" in _error(capsys, *run, "--num-beams", "2",
                                                                          "--temperature", "0.5")
    words = tiny_whisper(tmp_path / "words")  # a word-level tokenizer.json: llguidance cannot read it
    assert "--guided-regex: " in _error(capsys, wav, "--model", words, "--guided-regex", "[0-9]+")
    # a grammar that cannot go on ("Z" is not in the alphabet): each file reported and skipped
    err = _error(capsys, wav, wavs["16k-mono-float32"], "--model", path, "--language", "en", "--guided-regex", "4Z")
    assert err.count("cannot spell what it requires next") == 2 and "2 of 2 files" in err
