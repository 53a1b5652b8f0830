"""Structured outputs: ``generate`` with a grammar (a JSON schema, any JSON object, a Lark grammar) through
llguidance, and the completions server's ``response_format`` / ``guided_json`` / ``tool_choice`` "required" or a
named function, on a tiny random GPT-2 that transformers made, with a real byte-level BPE tokenizer and chat
template, on the real server. The same requests without the constraint give text that is not JSON, so each check
can fail."""
from __future__ import annotations

import concurrent.futures
import json
import sys

import numpy as np
import pytest

pytest.importorskip("llguidance")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("jinja2")
pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
transformers.logging.set_verbosity_error()

import forgegrad as fg  # noqa: E402
from forgegrad.models import from_pretrained, generate  # noqa: E402
from forgegrad.models.hf.constrained import Grammar, GrammarLogitsProcessor  # noqa: E402
from forgegrad.models.hf.tokenizer import load_tokenizer  # noqa: E402

# a Hermes template (tools in the system turn, calls as <tool_call> blocks), short enough for 512 positions
TINY = ("{% if tools %}<|im_start|>system\n<tools>{% for t in tools %}{{ t['function']['name'] }} {% endfor %}</tools>"
        "<tool_call></tool_call><|im_end|>\n{% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
        "{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# bounded strings and numbers: a random model's answer ends within max_tokens
PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 8}, "color": {"enum": ["red", "green", "blue"]},
    "age": {"type": "integer", "minimum": 0, "maximum": 120}, "member": {"type": "boolean"}},
    "required": ["name", "color", "age", "member"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}, "days": {"type": "integer", "minimum": 1,
                                                                                   "maximum": 7}},
    "required": ["city", "days"], "additionalProperties": False}}},
         {"type": "function", "function": {"name": "get_time", "parameters": {
             "type": "object", "properties": {"zone": {"type": "string", "maxLength": 5}}, "required": ["zone"],
             "additionalProperties": False}}}]
ASK = [{"role": "user", "content": "hello world"}]


def satisfies(value, schema) -> bool:
    """The JSON-schema subset these tests use: type, properties, required, additionalProperties false, enum, const,
    maxLength, minimum, maximum, anyOf."""
    if "anyOf" in schema:
        return any(satisfies(value, s) for s in schema["anyOf"])
    if "const" in schema and value != schema["const"]:
        return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    kind = schema.get("type")
    types = {"object": dict, "string": str, "boolean": bool, "array": list}
    if kind == "integer" and (not isinstance(value, int) or isinstance(value, bool)):
        return False
    if kind in types and not isinstance(value, types[kind]):
        return False
    if isinstance(value, str) and len(value) > schema.get("maxLength", len(value)):
        return False
    if kind == "integer" and not schema.get("minimum", value) <= value <= schema.get("maximum", value):
        return False
    if kind == "object":
        props = schema.get("properties", {})
        if any(k not in value for k in schema.get("required", [])):
            return False
        if schema.get("additionalProperties") is False and set(value) - set(props):
            return False
        return all(satisfies(value[k], props[k]) for k in value if k in props)
    return True


def parses(text):
    try:
        return json.loads(text)
    except ValueError:
        return None


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from hf_conformance import tiny_chat_gpt2
    return tiny_chat_gpt2(tmp_path_factory.mktemp("structured") / "tiny", TINY)


@pytest.fixture(scope="module")
def server(checkpoint):
    from serve_helpers import running_app

    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    with running_app(create_completions_app(GenerationServeConfig(str(checkpoint)))) as url, \
            httpx.Client(base_url=url, timeout=60) as client:
        yield client


def test_generate_with_a_grammar(checkpoint):
    model = from_pretrained(checkpoint)
    end = 1  # <|im_end|>
    tok = load_tokenizer(checkpoint, model.vocab_size, end)
    ids = [tok.encode("hello world, a tiny")]
    P = len(ids[0])
    plain = tok.decode(generate(model, ids, max_new_tokens=40, do_sample=False, eos_token_id=end)[0, P:])
    assert parses(plain) is None  # the model alone writes no JSON

    def run(grammar, **kw):
        process = GrammarLogitsProcessor(tok, grammar, end, model.vocab_size)
        return generate(model, ids, max_new_tokens=80, logits_processor=process, eos_token_id=end, **kw)[:, P:]

    for sampled in (False, True):
        fg.manual_seed(0)
        out = run(Grammar.json_schema(PERSON), do_sample=sampled, num_return_sequences=3 if sampled else 1)
        for row in out:
            assert end in row  # it ends (finished rows are padded with the end token), once the JSON is complete
            row = row[:list(row).index(end)]
            assert satisfies(parses(tok.decode(row)), PERSON), tok.decode(row)
        if sampled:
            assert len({tok.decode(r) for r in out}) > 1  # draws, each constrained
    obj = run(Grammar.json_object(), do_sample=False)[0]
    assert obj[-1] == end and isinstance(parses(tok.decode(obj[:-1])), dict)
    choice = run(Grammar.lark('start: "yes" | "no" | "maybe so"'), do_sample=False)[0]
    assert tok.decode(choice[:-1]) in ("yes", "no", "maybe so") and choice[-1] == end
    with pytest.raises(ValueError, match="invalid JSON schema"):
        Grammar.json_schema({"type": "objekt"})
    with pytest.raises(ValueError, match="invalid Lark grammar"):
        Grammar.lark("start: undefined_rule")


def _chat(client, body, path="/v1/chat/completions"):
    r = client.post(path, json=body)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]


def _streamed(client, body):
    with client.stream("POST", "/v1/chat/completions", json=dict(body, stream=True)) as s:
        assert s.status_code == 200
        events = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
    return [e["choices"][0] for e in events if e["choices"]]


def test_response_format_json_schema_greedy_sampled_streamed(server):
    base = {"messages": ASK, "max_tokens": 80, "temperature": 0}
    plain = _chat(server, base)["message"]["content"]
    assert parses(plain) is None
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    for settings in ({"temperature": 0}, {"temperature": 1, "seed": 3}, {"temperature": 0.8, "top_p": 0.9, "seed": 5}):
        body = dict(base, response_format=fmt, **settings)
        choice = _chat(server, body)
        assert choice["finish_reason"] == "stop", choice
        assert satisfies(parses(choice["message"]["content"]), PERSON), choice
        streamed = "".join(c["delta"].get("content", "") for c in _streamed(server, body))
        assert streamed == choice["message"]["content"]
    any_object = _chat(server, dict(base, response_format={"type": "json_object"}))
    assert isinstance(parses(any_object["message"]["content"]), dict) and any_object["finish_reason"] == "stop"
    assert _chat(server, dict(base, response_format={"type": "text"}))["message"]["content"] == plain


def test_constrained_and_unconstrained_requests_batched_together(server, checkpoint):
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    free = {"messages": [{"role": "user", "content": "a tiny corpus"}], "max_tokens": 60, "temperature": 0}
    tied = {"messages": ASK, "max_tokens": 80, "temperature": 0.7, "seed": 11, "response_format": fmt}
    solo_free, solo_tied = _chat(server, free), _chat(server, tied)
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        got = list(pool.map(lambda b: _chat(server, b), [free, tied] * 3))
    for i, choice in enumerate(got):
        assert choice["message"] == (solo_free if i % 2 == 0 else solo_tied)["message"]
    assert satisfies(parses(solo_tied["message"]["content"]), PERSON)
    # one request at a time (generate, not the batched engine): the same answer
    from serve_helpers import running_app

    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    with running_app(create_completions_app(GenerationServeConfig(str(checkpoint), max_batch=1))) as url, \
            httpx.Client(base_url=url, timeout=60) as alone:
        assert _chat(alone, tied)["message"] == solo_tied["message"]
        assert _chat(alone, dict(tied, n=2))["message"] == solo_tied["message"]


def test_completions_guided_json_and_response_format(server):
    body = {"prompt": "hello world, a tiny", "max_tokens": 80, "temperature": 0}
    assert parses(_chat(server, body, "/v1/completions")["text"]) is None
    for extra in ({"guided_json": PERSON}, {"guided_json": json.dumps(PERSON)},
                  {"response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}}}):
        choice = _chat(server, dict(body, **extra), "/v1/completions")
        assert choice["finish_reason"] == "stop" and satisfies(parses(choice["text"]), PERSON), choice


@pytest.mark.parametrize("choice,names", [("required", {"get_weather", "get_time"}),
                                          ({"type": "function", "function": {"name": "get_time"}}, {"get_time"})])
def test_tool_choice_forces_a_call(server, choice, names):
    base = {"messages": ASK, "tools": TOOLS, "max_tokens": 120, "temperature": 0}
    assert "tool_calls" not in _chat(server, base)["message"]  # left alone, the model calls nothing
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    for settings in ({"parallel_tool_calls": False}, {"temperature": 1, "seed": 2, "parallel_tool_calls": False},
                     {"temperature": 1, "seed": 3}):  # parallel calls allowed: this draw stops after one
        body = dict(base, tool_choice=choice, **settings)
        got = _chat(server, body)
        calls = got["message"]["tool_calls"]
        assert got["finish_reason"] == "tool_calls" and got["message"]["content"] is None, got
        assert len(calls) >= 1 and (len(calls) == 1 or settings.get("parallel_tool_calls", True))
        for call in calls:
            fn = call["function"]
            assert fn["name"] in names and satisfies(json.loads(fn["arguments"]), schemas[fn["name"]]), call
        deltas = _streamed(server, body)
        streamed = [d["delta"]["tool_calls"][0]["function"] for d in deltas if "tool_calls" in d["delta"]]
        assert streamed == [c["function"] for c in calls] and deltas[-1]["finish_reason"] == "tool_calls"


BAD = [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "objekt"}}}},
     "response_format.json_schema.schema", "invalid JSON schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": []}}},
     "response_format.json_schema.schema", "a JSON schema object"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema", '"name": ...'),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": PERSON}}},
     "response_format.json_schema.name", "letters, digits"),
    ({"response_format": {"type": "yaml"}}, "response_format", '{"type": "json_object"}'),
    ({"response_format": {"type": "json_object", "schema": {}}}, "response_format", "unknown field 'schema'"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice",
     "not among the tools (get_weather, get_time)"),
    ({"tool_choice": "required"}, "tool_choice", "needs tools"),
    ({"tools": TOOLS, "tool_choice": "always"}, "tool_choice", '"required"'),
    ({"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}}, "response_format",
     "give one"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}],
      "tool_choice": "required"}, "tools", "cannot be enforced"),
]


def test_bad_structured_requests_get_400_naming_the_field(server):
    for change, param, message in BAD:
        r = server.post("/v1/chat/completions", json=dict({"messages": ASK, "max_tokens": 2}, **change))
        error = r.json()["error"]
        assert r.status_code == 400 and error["param"] == param and message in error["message"], (change, r.text)
    r = server.post("/v1/completions", json={"prompt": "a", "guided_json": [1]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "guided_json"
    r = server.post("/v1/completions", json={"prompt": "a", "guided_json": PERSON, "response_format": {
        "type": "json_object"}})
    assert r.status_code == 400 and "give one" in r.json()["error"]["message"]


def test_without_llguidance_the_error_names_the_extra(monkeypatch):
    from forgegrad.serve.chat_request import parse_chat
    from forgegrad.serve.completion_request import CompletionError
    monkeypatch.setitem(sys.modules, "llguidance", None)  # as if not installed: its import fails
    monkeypatch.setitem(sys.modules, "llguidance.numpy", None)
    with pytest.raises(ImportError, match=r"forgegrad\[structured\]"):
        Grammar.json_object()
    body = json.dumps({"messages": ASK, "response_format": {"type": "json_object"}}).encode()
    with pytest.raises(CompletionError, match=r"forgegrad\[structured\]") as e:
        parse_chat(body, "m")
    assert e.value.status == 400 and e.value.param == "response_format"
    assert parse_chat(json.dumps({"messages": ASK}).encode(), "m").grammar is None  # the rest works without it


def test_row_constraint_on_byte_tokens():
    """A checkpoint without tokenizer.json decodes byte tokens: the grammar runs on them too, and once it is
    complete only the end token is left."""
    from forgegrad.models.hf.constrained import RowConstraint, grammar_tokenizer
    from forgegrad.models.hf.tokenizer import ByteTokenizer
    row = RowConstraint(Grammar.lark('start: "ab" | "ac"'), grammar_tokenizer(ByteTokenizer(), 300, 299))
    for expected, token in (({ord("a")}, ord("a")), ({ord("b"), ord("c")}, ord("c"))):
        scores = np.zeros((1, 300), np.float32)
        row.mask(scores)
        assert set(np.flatnonzero(np.isfinite(scores))) == expected
        row.advance(token)
    scores = np.zeros(300, np.float32)
    assert row.done and set(np.flatnonzero(np.isfinite(row.mask(scores)))) == {299}


def _accepts(row, tokens) -> bool:
    """Whether the row's grammar allows ``tokens`` one after the other."""
    for t in tokens:
        scores = row.mask(np.zeros(300, np.float32))
        if not np.isfinite(scores[t]):
            return False
        row.advance(t)
    return True


@pytest.mark.parametrize("fmt,reply", [
    ("hermes", '<tool_call>\n{"name": "get_time", "arguments": {"zone": "CET"}}\n</tool_call>\n'
               '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome", "days": 2}}\n</tool_call>'),
    ("mistral", '[TOOL_CALLS][{"name": "get_time", "arguments": {"zone": "CET"}}, '
                '{"name": "get_weather", "arguments": {"city": "Rome", "days": 2}}]'),
    ("llama3_json", '{"name": "get_time", "parameters": {"zone": "CET"}}; '
                    '{"name": "get_weather", "parameters": {"city": "Rome", "days": 2}}')])
def test_tool_call_grammars_accept_what_the_readers_read(checkpoint, fmt, reply):
    """Each format's grammar takes a reply of calls that tool_calls.py reads as those calls, up to its end; a call
    of another function, or arguments outside the schema, it refuses."""
    from forgegrad.models.hf.constrained import RowConstraint, grammar_tokenizer
    from forgegrad.serve.structured import tool_call_grammar
    from forgegrad.serve.tool_calls import read_tool_calls
    tok = load_tokenizer(checkpoint, 300, 1)
    lltok = grammar_tokenizer(tok, 300, [1])
    content, calls = read_tool_calls(reply, fmt=fmt)
    assert content is None and [c.name for c in calls] == ["get_time", "get_weather"]

    def accepts(grammar, text):  # the text's tokens as they follow a prompt
        return _accepts(RowConstraint(grammar, lltok), lltok.tokenize_str(text) + [1])

    assert accepts(tool_call_grammar(TOOLS, ["get_time", "get_weather"], fmt, True, tok), reply)
    assert not accepts(tool_call_grammar(TOOLS, ["get_time", "get_weather"], fmt, False, tok), reply)  # two calls
    assert not accepts(tool_call_grammar(TOOLS, ["get_time"], fmt, True, tok), reply)  # get_weather not allowed
    assert not accepts(tool_call_grammar(TOOLS, ["get_time", "get_weather"], fmt, True, tok),
                       reply.replace("Rome", "Oslo"))  # not in the enum


def test_a_tag_that_is_a_special_token_is_forced_as_that_token(tmp_path):
    """Mistral's [TOOL_CALLS] is one special token in its tokenizers: the grammar wants that token (its text spelled
    in pieces would not be it)."""
    from hf_conformance import chat_tokenizer

    from forgegrad.models.hf.constrained import RowConstraint, grammar_tokenizer
    from forgegrad.serve.structured import tool_call_grammar
    fast = chat_tokenizer(TINY)
    fast.add_special_tokens({"additional_special_tokens": ["[TOOL_CALLS]"]})
    fast.save_pretrained(tmp_path)
    tok = load_tokenizer(tmp_path, 300, 1)
    tag = tok.token_id("[TOOL_CALLS]")
    assert tag is not None and tag in tok.special_ids()
    lltok = grammar_tokenizer(tok, 300, [1])
    grammar = tool_call_grammar(TOOLS, ["get_time"], "mistral", False, tok)
    calls = lltok.tokenize_str('[{"name": "get_time", "arguments": {"zone": "CET"}}]')
    assert _accepts(RowConstraint(grammar, lltok), [tag] + calls + [1])
    bracket = lltok.tokenize_str("[")  # the first piece of the tag spelled as text
    assert bracket != [tag] and not _accepts(RowConstraint(grammar, lltok), bracket)


def test_row_constraint_and_grammar_tokenizer_refuse_bad_arguments():
    """One row of float scores at least the vocabulary wide (a (2, V) batch would have had its second row masked
    out whole); a vocabulary size and end tokens that are ids (not bools, not negative, inside the vocabulary)."""
    from forgegrad.models.hf.constrained import RowConstraint, grammar_tokenizer
    from forgegrad.models.hf.tokenizer import ByteTokenizer
    row = RowConstraint(Grammar.lark('start: "ab"'), grammar_tokenizer(ByteTokenizer(), 300, 299))
    for scores, message in ((np.zeros(200, np.float32), "at least 300 wide"),
                            (np.zeros((2, 300), np.float32), "one row"),
                            (np.zeros(300, np.int64), "floating")):
        with pytest.raises(ValueError, match=f"RowConstraint.mask: scores .*{message}"):
            row.mask(scores)
    for args, message in (((300, True), "eos_token_id"), ((300, [1, 300]), "eos_token_id"),
                          ((300, -1), "eos_token_id"), ((-5, 299), "vocab_size"), ((True, 0), "vocab_size")):
        with pytest.raises(ValueError, match=f"grammar_tokenizer: {message}"):
            grammar_tokenizer(ByteTokenizer(), *args)
