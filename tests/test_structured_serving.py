"""Structured outputs in the completions server beyond the JSON of a decoder (test_structured_outputs.py): vLLM's
guided_regex / guided_choice / guided_grammar, an encoder-decoder's constrained completions (batched, one at a time,
streamed), and a request whose grammar cannot go on mid-generation failing alone (a 400 naming its field, an error
event when streamed) while the requests batched with it decode on and return what they return alone. Real uvicorn
on loopback; tiny random checkpoints transformers wrote.

The decoder's tokenizer here is a byte-level BPE whose alphabet is only its corpus's characters: it spells JSON
of the corpus's words but not "~", so a schema whose constant ends in "~" dies a few tokens in."""
from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("llguidance")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
transformers.logging.set_verbosity_error()

from serve_helpers import metric, post_all, running_app  # noqa: E402

END = 1  # <|im_end|> of hf_conformance.chat_tokenizer
CORPUS = ('{"name": "red", "color": "green", "age": 12, "member": true, "note": false} hello world 0123456789 blue '
          'yes no [1, 2]')
SMALL = {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]},
                                          "age": {"type": "integer", "minimum": 0, "maximum": 99}},
         "required": ["color", "age"], "additionalProperties": False}
SMALLS = {"type": "array", "items": SMALL, "minItems": 6, "maxItems": 6}
WORDS = "(red|green|blue|yes|no)( (red|green|blue|yes|no)){30,40}"
DOOMED = {"type": "object", "properties": {"note": {"const": "hello world, yes no blue green red~"}},
          "required": ["note"]}


def _app(path, **kw):
    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    return create_completions_app(GenerationServeConfig(str(path), **kw))


def _small(value) -> bool:
    return (isinstance(value, dict) and set(value) == {"color", "age"} and value["color"] in ("red", "green", "blue")
            and type(value["age"]) is int and 0 <= value["age"] <= 99)


def _parses(text):
    try:
        return json.loads(text)
    except ValueError:
        return None


@pytest.fixture(scope="module")
def narrow_gpt2(tmp_path_factory):
    from hf_conformance import chat_tokenizer
    path = tmp_path_factory.mktemp("guided") / "narrow-gpt2"
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=300, n_positions=512, initializer_range=0.3,
        eos_token_id=END)).save_pretrained(path)
    chat_tokenizer("{% for m in messages %}{{ m['content'] }} {% endfor %}", CORPUS, every_byte=False).save_pretrained(
        path)
    return path


@pytest.fixture(scope="module")
def decoder(narrow_gpt2):
    with running_app(_app(narrow_gpt2)) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client, url


def _choice(client, body, route="/v1/completions"):
    r = client.post(route, json=body)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]


def test_guided_regex_choice_and_grammar(decoder):
    client, _ = decoder
    base = {"prompt": "hello world", "max_tokens": 40, "temperature": 0}
    cases = [({"guided_regex": "[0-9]{3} (red|blue)"}, lambda t: re.fullmatch("[0-9]{3} (red|blue)", t)),
             ({"guided_choice": ["green", "hello world", "no"]}, lambda t: t in ("green", "hello world", "no")),
             ({"guided_grammar": 'root ::= "yes " [0-9] [0-9]? | "no"'},
              lambda t: re.fullmatch("yes [0-9]{1,2}|no", t)),
             ({"guided_grammar": 'start: "age" ":" " " NUMBER\nNUMBER: /[1-9][0-9]/'},
              lambda t: re.fullmatch("age: [1-9][0-9]", t))]
    for extra, ok in cases:
        for settings in ({"temperature": 0}, {"temperature": 1, "seed": 4}):
            got = _choice(client, dict(base, **extra, **settings))
            assert got["finish_reason"] == "stop" and ok(got["text"]), (extra, got)
        chat = _choice(client, {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 40,
                                "temperature": 0, **extra}, "/v1/chat/completions")
        assert chat["finish_reason"] == "stop" and ok(chat["message"]["content"]), (extra, chat)


BAD = [({"guided_regex": "[a-"}, "guided_regex", "invalid regex"),
       ({"guided_regex": 5}, "guided_regex", "must be a regex"),
       ({"guided_choice": []}, "guided_choice", "non-empty list"),
       ({"guided_choice": "yes"}, "guided_choice", "non-empty list"),
       ({"guided_grammar": "root ::= missing"}, "guided_grammar", "invalid grammar"),
       ({"guided_grammar": "start: <|nope|>"}, "guided_grammar", "nope"),
       ({"guided_regex": "~+"}, "guided_regex", "after the start: the tokenizer cannot spell"),
       ({"guided_json": {"type": "objekt"}}, "guided_json", "invalid JSON schema"),
       ({"guided_regex": "a", "guided_choice": ["a"]}, "guided_choice", "guided_regex and guided_choice"),
       ({"response_format": {"type": "json_object"}, "guided_grammar": 'start: "a"'}, "guided_grammar", "give one")]


@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions"])
def test_bad_guided_fields_get_400_naming_the_field(decoder, route):
    """Checked at the request boundary, the tokenizer's part too (a special token it lacks, a first character it
    cannot spell)."""
    client, _ = decoder
    body = {"prompt": "hello"} if route == "/v1/completions" else {"messages": [{"role": "user", "content": "hello"}]}
    for extra, param, message in BAD:
        r = client.post(route, json=dict(body, max_tokens=4, **extra))
        error = r.json()["error"]
        assert r.status_code == 400 and error["param"] == param and message in error["message"], (extra, r.text)


def test_a_row_whose_grammar_dies_fails_alone(decoder):
    """Three requests decode in one batch; the second's grammar dies a few tokens in (the tokenizer cannot spell "~").
    It alone gets a 400 naming guided_json; the others return what each returns alone; streamed, it ends with the
    error as an event. The three are sent at once, but a loaded machine can deliver one after the doomed row has
    died: the metrics say whether a step decoded all three, and a run where none did is run again."""
    client, url = decoder
    good = [{"prompt": "hello world", "max_tokens": 200, "temperature": 0, "guided_json": SMALLS},
            {"prompt": "blue yes", "max_tokens": 200, "temperature": 0.9, "seed": 7, "guided_regex": WORDS}]
    bad = {"prompt": "hello", "max_tokens": 60, "temperature": 0, "guided_json": DOOMED}
    alone = [_choice(client, b) for b in good]
    assert all(_small(v) for v in _parses(alone[0]["text"])) and re.fullmatch(WORDS, alone[1]["text"])

    def three_row_steps():
        scrape = client.get("/metrics").text
        return metric(scrape, "forgegrad_batch_size_count") - metric(scrape, "forgegrad_batch_size_bucket", le="2.0")

    for _ in range(5):
        steps = three_row_steps()
        together = post_all(url, [good[0], bad, good[1]])
        assert [r.status_code for r in together] == [200, 400, 200], [r.text for r in together]
        error = together[1].json()["error"]
        assert error["param"] == "guided_json" and error["code"] == "grammar_failed", error
        assert re.search("after '.*red': the tokenizer cannot spell", error["message"]), error
        for r, want in zip((together[0], together[2]), alone):
            assert r.json()["choices"][0]["text"] == want["text"] and r.json()["choices"][0]["finish_reason"] == "stop"
        if three_row_steps() > steps:  # a step decoded all three
            break
    else:
        pytest.fail("in five runs no decode step ran the three requests together")
    with client.stream("POST", "/v1/completions", json=dict(bad, stream=True)) as s:
        events = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
    assert events[-1]["error"]["param"] == "guided_json" and "cannot spell" in events[-1]["error"]["message"]
    assert _choice(client, good[0])["text"] == alone[0]["text"]  # the server goes on


def _bart(path):
    """bart-large-cnn's kind of settings, scaled down (forced first and last tokens, a minimum length) over
    hf_conformance's byte-level BPE tokenizer."""
    from hf_conformance import chat_tokenizer
    torch.manual_seed(0)
    hf = transformers.BartForConditionalGeneration(transformers.BartConfig(
        vocab_size=300, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=40, max_position_embeddings=512, dropout=0.0,
        init_std=0.3, eos_token_id=END, decoder_start_token_id=END, pad_token_id=2, bos_token_id=0,
        forced_eos_token_id=END))
    hf.generation_config.forced_bos_token_id = 0
    hf.generation_config.min_length = 6
    hf.save_pretrained(path)
    chat_tokenizer("").save_pretrained(path)
    return path


def test_encoder_decoder_structured_outputs(tmp_path):
    """BART's completions under a schema: batched, one at a time (generate) and streamed alike; a row whose grammar
    ends before the checkpoint's min_length allows the end token fails alone."""
    path = _bart(tmp_path / "bart")
    base = {"prompt": "hello world, a tiny corpus", "max_tokens": 60, "temperature": 0}
    shaped = dict(base, response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": SMALL}})
    sampled = dict(base, temperature=1.0, seed=3, guided_json=SMALL)
    doomed = dict(base, guided_choice=["yes"])
    answers = {}
    for max_batch in (8, 1):
        with running_app(_app(path, max_batch=max_batch)) as url, httpx.Client(base_url=url, timeout=60) as client:
            assert _parses(_choice(client, base)["text"]) is None  # unconstrained: no JSON
            got = post_all(url, [shaped, doomed, sampled])
            assert [r.status_code for r in got] == [200, 400, 200], [r.text for r in got]
            error = got[1].json()["error"]
            assert error["param"] == "guided_choice" and "rule out every token the grammar allows after 'yes'" in \
                error["message"], error
            texts = [got[0].json()["choices"][0]["text"], got[2].json()["choices"][0]["text"]]
            assert all(_small(_parses(t)) for t in texts), texts
            assert texts == [_choice(client, shaped)["text"], _choice(client, sampled)["text"]]  # as alone
            with client.stream("POST", "/v1/completions", json=dict(shaped, stream=True)) as s:
                events = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
            assert "".join(e["choices"][0]["text"] for e in events if e.get("choices")) == texts[0]
            beams = dict(shaped, use_beam_search=True, n=2)  # beam search under the schema: generate's hypotheses
            got = [c["text"] for c in client.post("/v1/completions", json=beams).json()["choices"]]
            assert got == _seq2seq_beams(path, base["prompt"]) and all(_small(_parses(t)) for t in got)
            answers[max_batch] = texts
    assert answers[8] == answers[1]  # the batched engine and generate agree


def _seq2seq_beams(path, prompt):
    """The texts of BART's 2-beam search under SMALL in Python (the checkpoint's forced tokens and min_length)."""
    from forgegrad.models import from_pretrained, generate
    from forgegrad.models.hf.constrained import Grammar, GrammarLogitsProcessor
    from forgegrad.models.hf.tokenizer import load_tokenizer
    model = from_pretrained(path)
    tok = load_tokenizer(path, model.vocab_size, END)
    ids = tok.encode(prompt, add_special_tokens=True)
    out = generate(model, [ids], max_new_tokens=60, num_beams=2, num_return_sequences=2, do_sample=False,
                   eos_token_id=END, logits_processor=GrammarLogitsProcessor(tok, Grammar.json_schema(SMALL), END,
                                                                             model.vocab_size))[:, 1:]
    rows = [[int(t) for t in row] for row in out]
    return [tok.decode(r[:r.index(END)] if END in r else r, skip_special_tokens=True) for r in rows]


def _beams_in_python(path, ids, beams, n, grammar=None, max_tokens=40):
    """The texts of ``generate(..., num_beams=beams, num_return_sequences=n)`` under ``grammar`` (a Grammar or
    None), each up to its end token: what the server's beam search must return."""
    from forgegrad.models import from_pretrained, generate
    from forgegrad.models.hf.constrained import GrammarLogitsProcessor
    from forgegrad.models.hf.tokenizer import load_tokenizer
    model = from_pretrained(path)
    tok = load_tokenizer(path, model.vocab_size, END)
    process = None if grammar is None else GrammarLogitsProcessor(tok, grammar, END, model.vocab_size)
    out = generate(model, [ids], max_new_tokens=max_tokens, num_beams=beams, num_return_sequences=n,
                   do_sample=False, eos_token_id=END, logits_processor=process)[:, len(ids):]
    rows = [[int(t) for t in row] for row in out]
    return [tok.decode(r[:r.index(END)] if END in r else r) for r in rows]


def _streamed(client, body, route="/v1/completions"):
    """Each choice's streamed text (and the events)."""
    with client.stream("POST", route, json=dict(body, stream=True)) as s:
        events = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
    texts = {}
    for e in events:
        for c in e.get("choices", []):
            piece = c.get("text") if route == "/v1/completions" else c.get("delta", {}).get("content")
            texts[c["index"]] = texts.get(c["index"], "") + (piece or "")
    return [texts[i] for i in sorted(texts)], events


def test_beam_search_with_a_grammar_over_http(decoder, narrow_gpt2):
    """use_beam_search (vLLM's): the n best hypotheses of an n-beam search (best_of beams where given), under the
    request's grammar or none, are generate's with num_beams and the same grammar, streamed or not, completions
    and chat. "red~" or "blue": the beams that took "red" die (the tokenizer cannot spell "~") and the survivors'
    hypotheses come back; with two beams both die, and the request fails with a 400 naming the field."""
    from forgegrad.models.hf.constrained import Grammar
    client, _ = decoder
    ids = [98, 99]  # "hello world": the prompt as token ids, the same in Python
    few = "(red|green|blue|yes|no)( (red|green|blue|yes|no)){2,4}"
    cases = [({"guided_json": SMALL}, Grammar.json_schema(SMALL), 3, None),
             ({"guided_regex": few}, Grammar.regex(few), 2, 4),
             ({"guided_choice": ["red~", "blue"]}, Grammar.choice(["red~", "blue"]), 3, None),
             ({}, None, 2, None)]
    for extra, grammar, n, best_of in cases:
        body = dict({"prompt": ids, "max_tokens": 60, "use_beam_search": True, "n": n, "temperature": 0}, **extra)
        if best_of:
            body["best_of"] = best_of
        want = _beams_in_python(narrow_gpt2, ids, best_of or n, n, grammar, 60)
        r = client.post("/v1/completions", json=body)
        assert r.status_code == 200, r.text
        got = r.json()["choices"]
        assert [c["text"] for c in got] == want and [c["index"] for c in got] == list(range(n)), (extra, got)
        if grammar is not None:
            assert all(c["finish_reason"] == "stop" for c in got)
        if extra.get("guided_choice"):
            assert want == ["blue"] * n  # the red beams died
        assert _streamed(client, body)[0] == want, extra
    # logprobs: the beams' tokens scored, streamed (each choice's text and entries once the search is done) or not
    logged = {"prompt": ids, "max_tokens": 12, "use_beam_search": True, "n": 2, "logprobs": 2, "guided_json": SMALL}
    whole = client.post("/v1/completions", json=logged).json()["choices"]
    texts, events = _streamed(client, logged)
    assert texts == [c["text"] for c in whole]
    for i, c in enumerate(whole):
        streamed = [t for e in events for ch in e.get("choices", []) if ch["index"] == i and ch.get("logprobs")
                    for t in ch["logprobs"]["tokens"]]
        assert streamed == c["logprobs"]["tokens"] and "".join(streamed) == c["text"]
    chat = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 40, "use_beam_search": True, "n": 2,
            "guided_json": SMALL, "length_penalty": 0.5}
    r = client.post("/v1/chat/completions", json=chat)
    assert r.status_code == 200, r.text
    texts = [c["message"]["content"] for c in r.json()["choices"]]
    assert all(_small(_parses(t)) for t in texts) and _streamed(client, chat, "/v1/chat/completions")[0] == texts
    doomed = {"prompt": ids, "max_tokens": 40, "use_beam_search": True, "n": 2, "guided_choice": ["red~", "blue"]}
    r = client.post("/v1/completions", json=doomed)
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == "guided_choice" and error["code"] == "grammar_failed", r.text
    assert "after 'red': the tokenizer cannot spell" in error["message"]
    _, events = _streamed(client, doomed)
    assert events[-1]["error"]["param"] == "guided_choice" and "cannot spell" in events[-1]["error"]["message"]


@pytest.mark.parametrize("extra, param", [({"length_penalty": 2}, "length_penalty"),
                                          ({"use_beam_search": True, "temperature": 0.7}, "temperature"),
                                          ({"use_beam_search": True, "top_p": 0.9}, "top_p"),
                                          ({"use_beam_search": True, "top_k": 5}, "top_k"),
                                          ({"use_beam_search": "yes"}, "use_beam_search"),
                                          ({"use_beam_search": True, "length_penalty": "long"}, "length_penalty")])
def test_bad_beam_fields_get_400_naming_the_field(decoder, extra, param):
    client, _ = decoder
    r = client.post("/v1/completions", json=dict({"prompt": "hello", "max_tokens": 4}, **extra))
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
