"""Regression tests of the HTTP fuzz probe (tests/fuzz/test_fuzz_http.py): each request below once got a 500 (or
worse) from a forgegrad server; each now gets a 4xx JSON error naming its field, or the answer it asked for, and
the server answers the next request."""
from __future__ import annotations

import json

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from serve_helpers import running_app  # noqa: E402

GOOD = {"prompt": "Hi there", "max_tokens": 3, "temperature": 0}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from hf_conformance import tiny_byte_gpt2

    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    path = tiny_byte_gpt2(tmp_path_factory.mktemp("hostile") / "tiny-gpt2", n_positions=64)
    with running_app(create_completions_app(GenerationServeConfig(str(path), max_batch=4))) as url:
        with httpx.Client(base_url=url, timeout=60) as c:
            yield c


def _error(r, status, param):
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error", err
    return err["message"]


@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions"])
def test_json_nested_too_deep_is_a_400(client, route):
    # json.loads raised RecursionError (a 500); the body is under the size limit
    for body in (b"[" * 100000 + b"]" * 100000, b'{"prompt": ' + b"[" * 5000 + b"]" * 5000 + b"}"):
        r = client.post(route, content=body, headers={"content-type": "application/json"})
        assert "not valid JSON" in _error(r, 400, None)
    assert client.post("/v1/completions", json=GOOD).status_code == 200


@pytest.mark.parametrize("key", ["\u00b2", "1" * 5000, "\u0661", "99999999999999999999"])
def test_logit_bias_keys_that_are_not_ascii_token_ids(client, key):
    # "²" passed str.isdigit and int() refused it; 5000 digits passed and int() refused them (both 500s); "١" (an
    # Arabic-Indic one) was taken as token 1
    message = _error(client.post("/v1/completions", json=dict(GOOD, logit_bias={key: 1})), 400, "logit_bias")
    assert "token ids" in message and len(message) < 300


def test_logit_bias_token_ids_still_apply(client):
    r = client.post("/v1/completions", json=dict(GOOD, max_tokens=2, logit_bias={" 65 ": 100}))
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == "AA", r.text


@pytest.mark.parametrize("n", [1, 2])
def test_negative_seeds_are_their_64_bit_twos_complement(client, n):
    # a negative seed reached numpy's generator, which refused it (a 500)
    body = dict(GOOD, temperature=1.0, max_tokens=6, n=n)
    got = [client.post("/v1/completions", json=dict(body, seed=s)) for s in (-5, 2 ** 64 - 5)]
    assert [r.status_code for r in got] == [200, 200], got[0].text
    assert got[0].json()["choices"] == got[1].json()["choices"]
    for seed in (-2 ** 63 - 1, 2 ** 64, 10 ** 30, 1.5, "7"):
        assert "[-2**63, 2**64)" in _error(client.post("/v1/completions", json=dict(body, seed=seed)), 400, "seed")


def test_the_server_still_serves(client):
    r = client.post("/v1/chat/completions", content=json.dumps({"messages": []}).encode(),
                    headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert client.post("/v1/completions", json=GOOD).status_code == 200


@pytest.fixture(scope="module")
def model_app(tmp_path_factory):
    from serve_helpers import running_server, write_checkpoint
    root = tmp_path_factory.mktemp("hostile-models")
    write_checkpoint("mlp", str(root / "mlp" / "1"))
    (root / "mlp" / "\u00b2").mkdir()  # a version folder int() cannot read: skipped (it stopped the repository load)
    with running_server(str(root), poll_s=0) as (url, _):
        with httpx.Client(base_url=url, timeout=60) as c:
            yield c


@pytest.mark.parametrize("method, path", [("POST", "/v1/models/mlp/versions/{}:predict"),
                                          ("POST", "/predictions/mlp/{}"), ("GET", "/v1/models/mlp/versions/{}"),
                                          ("GET", "/v1/models/mlp/versions/{}/metadata")])
def test_versions_are_ascii_digits(model_app, method, path):
    # "²" passed str.isdigit and int() refused it (a 500); "١" was version 1
    rows = [[0.5] * 64] if path.startswith("/predictions") else {"instances": [[0.5] * 64]}
    for version in ("\u00b2", "\u0661"):
        r = model_app.request(method, path.format(version), json=rows)
        assert r.status_code == 400 and "version must be a non-negative integer" in r.json()["error"], r.text
    ok = model_app.request(method, path.format(1), json=rows)
    assert ok.status_code == 200, ok.text


SURROGATE = "a\ud800b"  # json.dumps writes it as the escape \ud800, which json.loads reads back as a lone surrogate


@pytest.mark.parametrize("route, field, body", [
    ("/v1/completions", "prompt", dict(GOOD, prompt=SURROGATE)),
    ("/v1/completions", "prompt", dict(GOOD, prompt=["x", SURROGATE])),
    ("/v1/completions", "bad_words", dict(GOOD, bad_words=[SURROGATE])),
    ("/v1/completions", "stop", dict(GOOD, stop=SURROGATE)),
    ("/v1/completions", "prompt", dict(GOOD, prompt=SURROGATE, max_tokens=0, echo=True, logprobs=1)),
    ("/v1/chat/completions", "messages", {"messages": [{"role": "user", "content": SURROGATE}]}),
    ("/v1/chat/completions", "tools", {"messages": [{"role": "user", "content": "x"}], "tools": [
        {"type": "function", "function": {"name": "f", "description": SURROGATE}}]}),
    ("/v1/chat/completions", "messages", {"messages": [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "1", "type": "function", "function": {"name": "f", "arguments": json.dumps({"a": SURROGATE})}}]}]}),
])
def test_lone_surrogates_are_a_400_naming_the_field(client, route, field, body):
    # the tokenizer refused the string (TypeError / UnicodeEncodeError: a 500)
    r = client.post(route, content=json.dumps(body).encode(), headers={"content-type": "application/json"})
    message = _error(r, 400, field)
    assert "surrogate" in message or "arguments" in message
    # a surrogate pair is a character (U+1F600), taken as text
    ok = client.post("/v1/completions", content=json.dumps(dict(GOOD, prompt="a\U0001F600")).encode(),
                     headers={"content-type": "application/json"})
    assert ok.status_code == 200, ok.text


def test_a_temperature_below_1e_5_is_greedy(client):
    # 5e-324: the logits over it overflowed to inf and the sampler drew the vocabulary's last token each time
    greedy = client.post("/v1/completions", json=dict(GOOD, max_tokens=6)).json()["choices"]
    for t in (5e-324, 1e-9, 9.9e-6):
        r = client.post("/v1/completions", json=dict(GOOD, max_tokens=6, temperature=t, n=2))
        assert r.status_code == 200 and [c["text"] for c in r.json()["choices"]] == [greedy[0]["text"]] * 2, r.text


@pytest.mark.parametrize("body", [{"allowed_token_ids": [299], "min_tokens": 2},
                                  {"allowed_token_ids": [299, 65], "min_tokens": 1, "bad_words": ["A"]},
                                  {"allowed_token_ids": [65], "bad_words": ["A"]}])
def test_settings_that_rule_out_every_token_are_a_400(client, body):
    # the scores were all -inf, and the sampler drew a token from NaN probabilities (the same garbage every time)
    r = client.post("/v1/completions", json=dict(GOOD, temperature=1.0, max_tokens=4, **body))
    assert "rule" in _error(r, 400, "allowed_token_ids")
    ok = client.post("/v1/completions", json=dict(GOOD, temperature=1.0, max_tokens=3, allowed_token_ids=[299, 65],
                                                  min_tokens=1))
    assert ok.status_code == 200 and ok.json()["choices"][0]["text"].startswith("A"), ok.text


def test_a_prompt_far_past_the_context_is_refused_from_its_beginning(client):
    # a 14 MB prompt was tokenized whole on the event loop (45 s, the tokenizer holding the GIL) to be refused
    for prompt in ("ab" * 1_500_000, ["x", "ab" * 1_500_000, "y"]):
        r = client.post("/v1/completions", json=dict(GOOD, prompt=prompt))
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded", r.text
        message = r.json()["error"]["message"]
        assert "has more than" in message and "3000000 characters" in message and r.json()["error"]["param"] == "prompt"
    # a prompt that fits is tokenized whole, as before
    assert client.post("/v1/completions", json=dict(GOOD, prompt="ab" * 20)).status_code == 200


def test_bad_words_have_a_character_budget(client):
    # 4096 words of 3,600 characters took 22 s to tokenize (twice each), holding the GIL
    r = client.post("/v1/completions", json=dict(GOOD, bad_words=["hello world " * 300] * 4096))
    assert "65536 characters in all" in _error(r, 400, "bad_words")
    r = client.post("/v1/completions", json=dict(GOOD, bad_words=["hello world " * 300] * 18))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("stream", [False, True])
def test_long_stop_strings_do_not_hang_the_completion(client, stream):
    # a stop string of 3 MB had its 3 million beginnings compared with the text after every token (no answer in 600 s)
    stop = ["x" * 1_000_000, "Hi there" * 10000]
    body = dict(GOOD, prompt="Hi", stop=stop, max_tokens=20, stream=stream)
    want = client.post("/v1/completions", json=dict(GOOD, prompt="Hi", max_tokens=20)).json()["choices"][0]["text"]
    if not stream:
        r = client.post("/v1/completions", json=body)
        assert r.status_code == 200 and r.json()["choices"][0]["text"] == want, r.text
        return
    with client.stream("POST", "/v1/completions", json=body) as r:
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1]) == want


def test_guided_choice_has_at_most_1999_choices(client):
    # 2,000 choices failed after the prefill (llguidance's parser holds 2,000 items in a row); 200,000 took minutes
    # to build on the event loop (no answer in 120 s)
    choices = [f"x{i:04d}" for i in range(2000)]
    assert "up to 1999" in _error(client.post("/v1/completions", json=dict(GOOD, guided_choice=choices)), 400,
                                  "guided_choice")
    r = client.post("/v1/completions", json=dict(GOOD, max_tokens=8, guided_choice=choices[:1999]))
    assert r.status_code == 200 and r.json()["choices"][0]["text"] in choices, r.text


DEEP = "[" * 100_000 + "]" * 100_000


def test_json_inside_fields_nested_too_deep_is_a_400(client):
    # an earlier call's arguments and guided_json as a string were json.loads'ed without catching RecursionError
    calls = [{"id": "1", "type": "function", "function": {"name": "f", "arguments": DEEP}}]
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "assistant", "content": None,
                                                                  "tool_calls": calls}]})
    assert "arguments must be a JSON object" in _error(r, 400, "messages")
    assert "JSON schema" in _error(client.post("/v1/completions", json=dict(GOOD, guided_json=DEEP)), 400,
                                   "guided_json")


@pytest.mark.parametrize("fmt, text", [("hermes", "<tool_call>\n" + DEEP + "\n</tool_call>"),
                                       ("mistral", "[TOOL_CALLS]" + DEEP), ("llama3_json", DEEP)])
def test_a_reply_nested_too_deep_is_text_not_a_failed_request(fmt, text):
    # the model's reply is read for tool calls after generation: JSON nested too deep raised RecursionError (a 500)
    from forgegrad.serve.tool_calls import read_tool_calls
    content, calls = read_tool_calls(text, fmt=fmt)
    assert calls == [] and content == text


@pytest.mark.parametrize("body, param", [({"prompt": ["x"] * 50_000, "n": 2, "stream": True}, "prompt"),
                                         ({"prompt": ["x"] * 257}, "prompt"),
                                         ({"prompt": ["x"] * 17, "n": 16}, "n"),
                                         ({"prompt": ["x"] * 17, "n": 2, "best_of": 16, "temperature": 1.0}, "best_of"),
                                         ({"prompt": ["x"] * 17, "best_of": 16, "use_beam_search": True}, "best_of")])
def test_a_request_has_at_most_max_rows_per_request_rows(client, body, param):
    # 50,000 prompts with n 2, streamed, were accepted (each row fits the KV cache alone) and decoded for hours
    message = _error(client.post("/v1/completions", json=dict(GOOD, **body)), 400, param)
    assert "at most 256 a request" in message and len(message) < 300
    r = client.post("/v1/completions", json=dict(GOOD, prompt=["x"] * 3, n=2, max_tokens=1))
    assert r.status_code == 200 and len(r.json()["choices"]) == 6, r.text


def test_the_row_cap_counts_prompts_times_candidates():
    from forgegrad.serve.completion_request import CompletionError, check_rows, parse
    for body, rows in (({"n": 2}, 256), ({"n": 2, "best_of": 4, "temperature": 1}, 512),
                       ({"n": 2, "best_of": 4, "temperature": 0}, 256), ({"best_of": 3, "use_beam_search": True}, 384)):
        req = parse(json.dumps(dict(body, prompt=["x"] * 128)).encode(), "m")
        check_rows(req, rows)
        with pytest.raises(CompletionError, match=f"is {rows} rows"):
            check_rows(req, rows - 1)


def test_max_rows_per_request_is_a_server_setting(tmp_path, capsys):
    from forgegrad.cli import build_parser
    from forgegrad.serve.completions import GenerationServeConfig
    for bad_value in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_rows_per_request"):
            GenerationServeConfig(str(tmp_path), max_rows_per_request=bad_value).validate()
    args = build_parser().parse_args(["serve", str(tmp_path), "--max-rows-per-request", "1000"])
    assert args.max_rows_per_request == 1000
    from forgegrad.cli import main
    from serve_helpers import write_checkpoint
    write_checkpoint("mlp", str(tmp_path / "ckpt"))  # a model-serving checkpoint: nothing decodes rows
    assert main(["serve", str(tmp_path / "ckpt"), "--max-rows-per-request", "8"]) == 2
    assert "--max-rows-per-request applies to a Hugging Face decoder directory" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "ckpt"), "--max-rows-per-request", "0"]) == 2


BIG = 70_000  # characters: past MAX_GRAMMAR_CHARS (65,536)


@pytest.mark.parametrize("route, body, param", [
    ("/v1/completions", {"guided_regex": "a" * BIG}, "guided_regex"),
    ("/v1/completions", {"guided_grammar": 'start: "' + "a" * BIG + '"'}, "guided_grammar"),
    ("/v1/completions", {"guided_json": {"type": "string", "pattern": "a" * BIG}}, "guided_json"),
    ("/v1/completions", {"guided_json": json.dumps({"type": "string", "pattern": "a" * BIG})}, "guided_json"),
    ("/v1/completions", {"guided_choice": ["a" * 1000] * 70}, "guided_choice"),
    ("/v1/chat/completions", {"response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "string", "pattern": "a" * BIG}}}}, "response_format.json_schema.schema"),
])
def test_grammar_sources_have_a_size_limit(client, route, body, param):
    # a 2 MB guided_regex took 26 s of the model's thread (every other row waiting) to fail after the prefill
    if route == "/v1/chat/completions":
        body = dict(body, messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
    else:
        body = dict(GOOD, **body)
    assert "may have at most 65536" in _error(client.post(route, json=body), 400, param)


def test_a_grammar_that_fails_on_its_first_token_is_refused_before_decoding(client):
    # llguidance builds (a{1000}){1000}'s lexer as it consumes the first token and gives up ("too many expressions
    # constructed"): that failed after the prefill, on the model's thread (5.6 s); now at the request's validation
    r = client.post("/v1/completions", json=dict(GOOD, guided_regex="(a{1000}){1000}"))
    assert "too many expressions" in _error(r, 400, "guided_regex") and r.json()["error"]["code"] is None
    r = client.post("/v1/completions", json=dict(GOOD, guided_regex="(a{10}){10}", max_tokens=4))
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == "aaaa", r.text
