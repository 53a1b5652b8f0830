"""forgegrad's extension fields of the audio API: ``num_beams`` (beam search per request; requests of different
widths taken together each get transformers' generate with their own beams) and the structured-output fields
``guided_regex`` / ``guided_choice`` / ``guided_json`` / ``guided_grammar`` (each window's transcript text matches
the grammar: transformers' generate under test_hf_whisper_grammar's brute-force reference), a grammar that cannot go
on failing its request alone with a 400, and each bad field a 400 naming it."""
from __future__ import annotations

import asyncio
import json
import re

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("python_multipart")
pytest.importorskip("llguidance")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("scipy.signal")
transformers.logging.set_verbosity_error()

import whisper_helpers  # noqa: E402
from serve_helpers import running_app  # noqa: E402
from test_hf_whisper_grammar import ANSWERS, DIGITS, Replayed, clean_copy, grammar_whisper  # noqa: E402
from whisper_helpers import EOS, MAX_NEW, WAVS  # noqa: E402

from forgegrad.models.hf.constrained import Grammar, GrammarLogitsProcessor  # noqa: E402
from forgegrad.serve.completion_request import CompletionError  # noqa: E402
from forgegrad.serve.speech_app import SpeechServeConfig, Transcriber, create_speech_app  # noqa: E402
from forgegrad.serve.speech_request import SpeechRequest  # noqa: E402

whisper_dir, reference = whisper_helpers.whisper_dir, whisper_helpers.reference  # the word-level checkpoint
ROUTE = "/v1/audio/transcriptions"


@pytest.fixture(scope="module")
def grammar_dir(tmp_path_factory):
    """test_hf_whisper_grammar's clean checkpoint (text only) with its byte-level BPE, which llguidance reads."""
    raw = grammar_whisper(tmp_path_factory.mktemp("speech_grammar") / "raw")
    return clean_copy(raw, raw.parent / "clean")


@pytest.fixture(scope="module")
def transcriber(whisper_dir):
    return Transcriber(str(whisper_dir))


@pytest.fixture(scope="module")
def grammar_transcriber(grammar_dir):
    return Transcriber(str(grammar_dir))


@pytest.fixture(scope="module")
def server(whisper_dir):
    """One server of the word-level checkpoint for the module's HTTP tests."""
    with running_app(create_speech_app(SpeechServeConfig(str(whisper_dir)))) as url:
        yield url


@pytest.fixture(scope="module")
def grammar_server(grammar_dir):
    with running_app(create_speech_app(SpeechServeConfig(str(grammar_dir)))) as url:
        yield url


@pytest.fixture(scope="module")
def hf_text(reference, transcriber):
    """transformers' text for (WAVS name, num_beams), each made once for the module."""
    made = {}

    def text(name, beams=1):
        if (name, beams) not in made:
            job = transcriber.prepare(SpeechRequest("transcribe", WAVS[name]()[0], "a.wav"), "<|en|>")
            made[name, beams] = _hf_text(reference, job.features, language="en", max_new_tokens=MAX_NEW,
                                         num_beams=beams)
        return made[name, beams]
    return text


def _post(client, file, fields=()):
    return client.post(ROUTE, files={"file": ("a.wav", file, "audio/wav")}, data=dict(fields))


def _error(r, param):
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param, err
    return err["message"]


def _hf_text(reference, features, **kwargs):
    """transformers' generate and tokenizer on the server's features: the text a request should get."""
    hf, _, tokenizer = reference
    with torch.no_grad():
        ids = hf.generate(torch.tensor(features), task="transcribe", **kwargs)[0].tolist()
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


def test_mixed_beam_widths_in_one_batch_each_get_their_own(transcriber, hf_text):
    """One transcribe call (what the model's thread runs for the requests waiting) over requests of 1, 3, 2 and 3
    beams: each text is transformers' generate with that request's beams, and the beams change some of them."""
    tr = transcriber
    names = [list(WAVS)[i % 3] for i in range(4)]
    widths = (1, 3, 2, 3)
    jobs = [tr.prepare(SpeechRequest("transcribe", WAVS[n]()[0], "a.wav", language="en", num_beams=k), "<|en|>")
            for n, k in zip(names, widths)]
    got = [t.text for t in tr.transcribe(jobs)]
    want = [hf_text(n, k) for n, k in zip(names, widths)]
    assert got == want
    assert [hf_text(n) for n in names] != want


def test_num_beams_over_http(server, hf_text):
    """Requests of different widths sent at once: each answer is its own beams' text; bad values are 400s naming
    num_beams (a form's text: ASCII digits only); the guided fields need a tokenizer llguidance reads (a word-level
    one is a 400 naming the field)."""
    cases = [(name, k) for name in list(WAVS)[:2] for k in (1, 3)]
    want = [hf_text(n, k) for n, k in cases]

    async def burst():
        async with httpx.AsyncClient(base_url=server, timeout=120) as c:
            return await asyncio.gather(*(c.post(ROUTE, files={"file": ("a.wav", WAVS[n]()[0])},
                                                 data={"language": "en", "num_beams": str(k)}) for n, k in cases))

    responses = asyncio.run(burst())
    assert [r.json()["text"] for r in responses] == want
    with httpx.Client(base_url=server, timeout=60) as client:
        file = WAVS["16k-mono-float32"]()[0]
        for value in ("0", "17", "two", "2.5", "3.0", "1e1", "-3", "9" * 5000, "1_6", "+3", "\uff13", "\u0663"):
            assert "a whole number from 1 to 16" in _error(_post(client, file, {"num_beams": value}), "num_beams")
        assert "temperature 0" in _error(_post(client, file, {"num_beams": "2", "temperature": "0.5"}),
                                         "num_beams")
        assert "cannot read this tokenizer" in _error(_post(client, file, {"guided_regex": "[0-9]+"}),
                                                      "guided_regex")
        assert _post(client, file, {"num_beams": "1", "temperature": "0.5"}).status_code == 200
        r = _post(client, WAVS[cases[1][0]]()[0], {"language": "en", "num_beams": " 03 "})
        assert r.status_code == 200 and r.json()["text"] == want[1]


def test_guided_fields_constrain_the_transcript(grammar_dir, grammar_transcriber, grammar_server):
    tr = grammar_transcriber
    model, tok = tr.model, tr.tokenizer
    hf = transformers.WhisperForConditionalGeneration.from_pretrained(grammar_dir).eval()
    files = [WAVS[n]()[0] for n in WAVS]
    features = [tr.prepare(SpeechRequest("transcribe", f, "a.wav"), "<|en|>").features for f in files]
    max_new = tr.context - 4  # <|startoftranscript|> <|en|> <|transcribe|> <|notimestamps|>

    def ours(x, grammar, **kwargs):
        ids = model.generate(x, language="en", task="transcribe", max_new_tokens=max_new,
                             logits_processor=GrammarLogitsProcessor(tok, grammar, EOS, model.vocab_size), **kwargs)
        return tok.decode(ids[0].tolist(), skip_special_tokens=True).strip()

    with httpx.Client(base_url=grammar_server, timeout=60) as client:
        # guided_regex: transformers' generate under the brute-force reference, greedy and with beams
        for k in (1, 3):
            with torch.no_grad():
                ids = hf.generate(torch.tensor(features[0]), language="en", task="transcribe", max_new_tokens=max_new,
                                  num_beams=k, logits_processor=transformers.LogitsProcessorList(
                                      [Replayed(tok, Grammar.regex(DIGITS))]))[0].tolist()
            want = tok.decode(ids, skip_special_tokens=True).strip()
            assert re.fullmatch(DIGITS.lstrip(" ?"), want)
            r = _post(client, files[0], {"language": "en", "guided_regex": DIGITS, "num_beams": str(k)})
            assert r.status_code == 200 and r.json() == {"text": want}, r.text
        # guided_choice (a JSON list), as text; guided_json (a schema's text)
        r = _post(client, files[1], {"language": "en", "guided_choice": json.dumps(ANSWERS), "response_format": "text"})
        assert r.status_code == 200 and r.text == ours(features[1], Grammar.choice(ANSWERS)) + "\n"
        assert r.text.strip() in [a.strip() for a in ANSWERS]
        schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 99}},
                  "required": ["n"]}
        r = _post(client, files[2], {"language": "en", "guided_json": json.dumps(schema)})
        assert r.status_code == 200 and r.json()["text"] == ours(features[2], Grammar.json_schema(schema)), r.text
        assert set(json.loads(r.json()["text"])) == {"n"}
        # guided_grammar (Lark)
        r = _post(client, files[0], {"language": "en", "guided_grammar": 'start: " " ("yes" | "no")'})
        assert r.status_code == 200 and r.json()["text"] in ("yes", "no"), r.text
        # bad fields
        file = files[0]
        _error(_post(client, file, {"guided_choice": "yes"}), "guided_choice")
        _error(_post(client, file, {"guided_choice": "[]"}), "guided_choice")
        # nested too deep for json.loads (a form field holds up to 64 KB): its RecursionError was a 500
        deep = "[" * 20_000 + "]" * 20_000
        assert "a JSON list of strings" in _error(_post(client, file, {"guided_choice": deep}), "guided_choice")
        _error(_post(client, file, {"guided_json": deep}), "guided_json")
        assert "invalid regex" in _error(_post(client, file, {"guided_regex": "("}), "guided_regex")
        _error(_post(client, file, {"guided_json": "{"}), "guided_json")
        assert "both constrain" in _error(_post(client, file, {"guided_regex": "1", "guided_choice": '["a"]'}),
                                          "guided_choice")
        # a grammar that cannot go on ("Z" is not in the alphabet): its request alone gets a 400
        dead = _post(client, file, {"language": "en", "guided_regex": "4Z"})
        assert "cannot spell what it requires next" in _error(dead, "guided_regex")
        assert dead.json()["error"]["code"] == "grammar_failed"
        assert _post(client, file, {"language": "en"}).status_code == 200


def test_a_grammar_that_cannot_go_on_fails_its_request_alone(grammar_transcriber):
    """Requests taken together: the one whose grammar dies gets its 400, the others their transcripts."""
    tr = grammar_transcriber
    file = WAVS["16k-mono-float32"]()[0]
    reqs = [SpeechRequest("transcribe", file, "a.wav", language="en", grammar=Grammar.regex("4Z"),
                          grammar_param="guided_regex"),
            SpeechRequest("transcribe", file, "a.wav", language="en", grammar=Grammar.regex(DIGITS),
                          grammar_param="guided_regex"),
            SpeechRequest("transcribe", file, "a.wav", language="en")]
    results = tr.transcribe([tr.prepare(r, "<|en|>") for r in reqs])
    assert isinstance(results[0], CompletionError) and results[0].status == 400
    assert re.fullmatch(DIGITS.lstrip(" ?"), results[1].text)
    assert results[2].text == tr.transcribe([tr.prepare(reqs[2], "<|en|>")])[0].text != results[1].text


@pytest.fixture(scope="module")
def plain_dir(grammar_dir):
    """grammar_dir without timestamp tokens (no no_timestamps_token_id): verbose_json scores its one window."""
    import shutil
    path = grammar_dir.parent / "plain"
    shutil.copytree(grammar_dir, path)
    file = path / "generation_config.json"
    settings = json.loads(file.read_text())
    del settings["no_timestamps_token_id"]
    file.write_text(json.dumps(settings))
    return path


@pytest.fixture(scope="module")
def plain_transcriber(plain_dir):
    return Transcriber(str(plain_dir))


def test_verbose_json_scores_the_tokens_under_the_grammar(plain_dir, plain_transcriber):
    """A checkpoint without timestamp tokens: verbose_json's avg_logprob reads the tokens' log-probabilities under the
    grammar's masks, as transformers' generate scores them with the reference processor (output_scores: the processed
    scores), the end token's included, over tokens + 1."""
    path, tr = plain_dir, plain_transcriber
    hf = transformers.WhisperForConditionalGeneration.from_pretrained(path).eval()
    req = SpeechRequest("transcribe", WAVS["16k-mono-float32"]()[0], "a.wav", language="en",
                        response_format="verbose_json", grammar=Grammar.choice(ANSWERS), grammar_param="guided_choice")
    job = tr.prepare(req, "<|en|>")
    [got] = tr.transcribe([job])
    with torch.no_grad():
        out = hf.generate(torch.tensor(job.features), language="en", task="transcribe", max_new_tokens=tr.context - 3,
                          return_dict_in_generate=True, output_scores=True,
                          logits_processor=transformers.LogitsProcessorList([Replayed(tr.tokenizer, req.grammar)]))
    tokens = out.sequences[0].tolist()[3:]
    assert tokens[-1] == EOS and got.text in [a.strip() for a in ANSWERS]
    total = sum(float(torch.log_softmax(s[0].double(), -1)[t]) for s, t in zip(out.scores, tokens))
    [segment] = got.segments
    assert segment.tokens == tokens[:-1]
    assert segment.avg_logprob == pytest.approx(total / len(tokens), abs=1e-4)


def test_verbose_json_of_a_text_cut_off_at_a_dead_end(plain_transcriber):
    """A window cut off by its length limit just where its grammar could not go on ("4" x the window's room, then a "Z"
    no token spells): generate stops there without asking the grammar further, and so does verbose_json's
    avg_logprob (it asked the grammar one step more and raised its GrammarError, failing every request taken
    together); it scores the tokens alone, as the window has no end token: each the one token the grammar allowed
    (log-probability 0)."""
    tr = plain_transcriber
    room = tr.context - 3  # <|startoftranscript|> <|en|> <|transcribe|>
    file = WAVS["16k-mono-float32"]()[0]
    grammar = Grammar.regex("4{%d}Z" % room)
    reqs = [SpeechRequest("transcribe", file, "a.wav", language="en", response_format=fmt, grammar=grammar,
                          grammar_param="guided_regex") for fmt in ("json", "verbose_json")]
    plain, verbose = [tr.transcribe([tr.prepare(r, "<|en|>")])[0] for r in reqs]
    assert plain.text == verbose.text == "4" * room
    [segment] = verbose.segments
    assert len(segment.tokens) == room and segment.avg_logprob == 0.0
