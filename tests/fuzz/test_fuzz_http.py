"""forgegrad's HTTP servers under hostile input (hypothesis): the completions and chat server (a tiny GPT-2 with a
chat template that renders tools), the model-serving app (an MLP: JSON and .npy tensors), the encoder server's
embeddings, rerank / score and classify routes (tiny BERTs), and the speech server (a tiny Whisper: multipart
uploads). Each request breaks one to three fields (wrong JSON types, huge / negative / NaN numbers, thousands of
stop strings, logit_bias keys that are not token ids, deep nesting, catastrophic regexes, broken schemas and
grammars, tools and messages of wrong shapes) or the body itself (truncated, not UTF-8, wrong content type); every
answer must be a 4xx JSON error naming the field, or a 2xx, never a 5xx, an error inside a 200 stream, or a hang
(http_probe.py). After each run the server must still answer a good request, and its gauges (queue depth, KV cache
blocks held and reserved) must go back to idle, also after clients that went away mid-stream.

CI runs a bounded, derandomized run; FORGEGRAD_FUZZ_EXAMPLES (the total over this file's targets) and
FORGEGRAD_FUZZ_SEED make a longer one (docs/reliability.md)."""
from __future__ import annotations

import asyncio
import json
import os
import socket
import time

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("python_multipart")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
transformers.logging.set_verbosity_error()

from hypothesis import given, strategies as st  # noqa: E402

import fuzz_util  # noqa: E402
import http_probe as P  # noqa: E402
from serve_helpers import metric, running_app, running_server, write_checkpoint  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _errors_file():
    yield
    if os.environ.get("FORGEGRAD_FUZZ_HTTP_ERRORS"):
        P.write_errors(os.environ["FORGEGRAD_FUZZ_HTTP_ERRORS"])


TARGETS = 9  # the hypothesis tests below, among which FORGEGRAD_FUZZ_EXAMPLES is shared
N = fuzz_util.examples_per_target(TARGETS, 40)
CHAT = ("{% if tools %}<|im_start|>system\nCall with <tool_call>{...}</tool_call>: {{ tools | tojson }}<|im_end|>\n"
        "{% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
COMPLETION = {"prompt": "hello world", "max_tokens": 4, "temperature": 0}
CHAT_BODY = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
    "x": {"type": "integer"}}}}}


def _idle(client, deadline_s: float = 60):
    """Waits until the server's gauges are idle (no request queued, no KV block reserved or held by a row: what is
    held is the prefix cache's); fails with the gauges after ``deadline_s`` (a leaked slot or block)."""
    end = time.monotonic() + deadline_s
    while True:
        text = client.get("/metrics").text
        gauges = {name: metric(text, name) for name in ("forgegrad_queue_depth", "forgegrad_kv_cache_reserved",
                                                        "forgegrad_kv_cache_in_use", "forgegrad_prefix_cache_blocks")}
        if (gauges["forgegrad_queue_depth"] == 0 and gauges["forgegrad_kv_cache_reserved"] == 0
                and gauges["forgegrad_kv_cache_in_use"] <= gauges["forgegrad_prefix_cache_blocks"]):
            return gauges
        assert time.monotonic() < end, f"the server did not go back to idle: {gauges}"
        time.sleep(0.05)


def _cut_off(client, route, content_type, start: bytes, times: int = 3):
    """Bodies that promise 100,000 bytes and end after ``start`` (the client goes away mid-upload)."""
    host, port = str(client.base_url).rstrip("/").rsplit("/", 1)[1].split(":")
    for _ in range(times):
        with socket.create_connection((host, int(port))) as s:
            s.sendall(f"POST {route} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                      "Content-Length: 100000\r\n\r\n".encode() + start)


def _still_serves(client, route, body):
    r = client.post(route, json=body, timeout=P.TIMEOUT)
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    from hf_conformance import tiny_chat_gpt2
    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    path = tiny_chat_gpt2(tmp_path_factory.mktemp("http-fuzz") / "tiny-chat", CHAT)
    with running_app(create_completions_app(GenerationServeConfig(str(path), max_batch=8))) as url:
        with httpx.Client(base_url=url, timeout=P.TIMEOUT) as client:
            yield client
            _idle(client)


def _generation_requests(route, base, fields):
    bases = st.sampled_from([base, dict(base, stream=True), dict(base, stream=True, n=2, logprobs=2)
                             if route == "/v1/completions" else dict(base, stream=True, n=2, logprobs=True)])
    return bases.flatmap(lambda b: P.json_requests(route, b, fields, stream_field=True))


@fuzz_util.fuzz_settings(N)
@given(request=st.data())
def test_completions(gpt2, request):
    from forgegrad.serve.completion_request import _FIELDS
    req = request.draw(_generation_requests("/v1/completions", COMPLETION, _FIELDS))
    P.check(req, P.send(gpt2, req))


@fuzz_util.fuzz_settings(N)
@given(request=st.data())
def test_chat_completions(gpt2, request):
    from forgegrad.serve.chat_request import _FIELDS
    base = request.draw(st.sampled_from([CHAT_BODY, dict(CHAT_BODY, tools=[TOOL]),
                                         dict(CHAT_BODY, tools=[TOOL], tool_choice="required")]))
    req = request.draw(_generation_requests("/v1/chat/completions", base, _FIELDS))
    P.check(req, P.send(gpt2, req))


@fuzz_util.fuzz_settings(max(1, N // 8))
@given(data=st.data())
def test_concurrent_requests_and_clients_that_go_away(gpt2, data):
    """Bursts of requests (good, hostile, streamed), some of whose clients go away after a few chunks or before an
    answer: every answer that arrives keeps the rule, and the server goes back to idle afterwards."""
    from forgegrad.serve.chat_request import _FIELDS as CHAT_FIELDS
    from forgegrad.serve.completion_request import _FIELDS
    requests = data.draw(st.lists(st.one_of(
        _generation_requests("/v1/completions", dict(COMPLETION, max_tokens=40), _FIELDS),
        _generation_requests("/v1/chat/completions", dict(CHAT_BODY, max_tokens=40), CHAT_FIELDS)),
        min_size=2, max_size=12))
    leave = data.draw(st.lists(st.sampled_from([None, None, 0, 1, 3]), min_size=len(requests), max_size=len(requests)))
    url = str(gpt2.base_url).rstrip("/")

    async def one(c, request, after):
        route, body, ctype, _, _ = request
        P.SENT[route] += 1
        headers = {} if ctype is None else {"content-type": ctype}
        async with c.stream("POST", route, content=body, headers=headers) as r:
            fuzz_util.STATS[f"http {r.status_code // 100}xx"] += 1
            if after is None:
                await r.aread()
                lines = r.text.splitlines() if r.headers.get("content-type", "").startswith("text/event") else None
                P.check(request, (r.status_code, r.headers.get("content-type", ""), r.content,
                                  None if lines is None else [line for line in lines if line]))
                return
            assert r.status_code < 500, (request, await r.aread())
            seen = 0
            async for _ in r.aiter_lines():  # then the client goes away (the connection closes)
                seen += 1
                if seen > after:
                    return

    async def burst():
        async with httpx.AsyncClient(base_url=url, timeout=P.TIMEOUT) as c:
            await asyncio.gather(*(one(c, r, a) for r, a in zip(requests, leave)))
    asyncio.run(burst())
    _idle(gpt2)


def test_generation_server_is_idle_and_serves_after_the_probe(gpt2):
    _idle(gpt2)
    _still_serves(gpt2, "/v1/completions", COMPLETION)
    _still_serves(gpt2, "/v1/chat/completions", CHAT_BODY)


def test_clients_that_go_away_free_their_rows(gpt2):
    """Streams closed after their first chunk, requests whose client timed out, and bodies cut off mid-upload: the
    rows, KV blocks and queue places come back, and the server answers the next request."""
    url = str(gpt2.base_url).rstrip("/")

    async def go_away():
        async with httpx.AsyncClient(base_url=url, timeout=P.TIMEOUT) as c:
            async def stream(route, body):
                async with c.stream("POST", route, json=dict(body, stream=True, max_tokens=300)) as r:
                    async for line in r.aiter_lines():
                        if line.startswith("data: {"):
                            return  # closes the connection mid-stream

            async def impatient(route, body):
                with pytest.raises(httpx.TimeoutException):
                    await c.post(route, json=dict(body, max_tokens=300, n=4), timeout=0.05)
            await asyncio.gather(*[stream("/v1/completions", dict(COMPLETION, n=3)) for _ in range(4)],
                                 *[stream("/v1/chat/completions", CHAT_BODY) for _ in range(4)],
                                 *[impatient("/v1/completions", COMPLETION) for _ in range(2)])
    asyncio.run(go_away())
    _cut_off(gpt2, "/v1/completions", P.JSON_TYPE, b'{"prompt": "hello wo')
    _idle(gpt2)
    _still_serves(gpt2, "/v1/completions", dict(COMPLETION, max_tokens=8))


# --- the model-serving app ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    root = tmp_path_factory.mktemp("http-fuzz-models")
    write_checkpoint("mlp", str(root / "mlp" / "1"))
    with running_server(str(root), poll_s=0) as (url, _):
        with httpx.Client(base_url=url, timeout=P.TIMEOUT) as client:
            yield client


SEGMENTS = ["mlp", "1", "\u00b2", "\u0661", "-1", "1" * 30, "0", "", "%00", "..", "%2e%2e", "MLP", "a" * 300,
            "1:predict"]
TENSOR_ROUTES = st.one_of(st.sampled_from(["/v1/models/mlp:predict", "/predictions/mlp",
                                           "/v1/models/mlp/versions/1:predict"]),
                          st.tuples(st.sampled_from(["/v1/models/{}/versions/{}:predict", "/predictions/{}/{}",
                                                     "/v1/models/{}/versions/{}/metadata", "/v1/models/{}:{}"]),
                                    st.sampled_from(SEGMENTS), st.sampled_from(SEGMENTS)).map(
                              lambda t: t[0].format(t[1], t[2])))


@fuzz_util.fuzz_settings(N)
@given(route=TENSOR_ROUTES, body=st.data(), accept=st.sampled_from([None, "application/x-npy"]))
def test_tensor_bodies(mlp, route, body, accept):
    kind = body.draw(st.sampled_from(["npy", "json", "raw"]))
    if kind == "npy":
        data, ctype = body.draw(P.npy_bodies(64)), "application/x-npy"
    elif kind == "json":
        value = body.draw(P.tensor_json(64))
        envelope = body.draw(st.sampled_from(["instances", "inputs", "data", None, "signature_name"]))
        obj = value if envelope is None else {envelope: value}
        if body.draw(st.booleans()) and isinstance(obj, dict):
            obj[body.draw(st.sampled_from(["inputs", "instances", "signature_name", "x"]))] = body.draw(P.VALUES)
        data, ctype = json.dumps(obj).encode(), P.JSON_TYPE
    else:
        good = json.dumps({"instances": [[0.5] * 64]}).encode()
        data, ctype = P.raw_body(good, body.draw(st.sampled_from(P.RAW)), body.draw(st.integers(0, 4)))
    req = (route, data, ctype, (), False)
    answer = P.send(mlp, req, {} if accept is None else {"accept": accept})
    P.check(req, answer, openai=False)
    status, _, content, _ = answer
    if status == 200 and accept is None:
        assert isinstance(json.loads(content), (dict, list))


def test_model_app_serves_after_the_probe(mlp):
    _cut_off(mlp, "/v1/models/mlp:predict", P.JSON_TYPE, b'{"instances": [[0.5, ')
    _cut_off(mlp, "/predictions/mlp", "application/x-npy", P.npy(np.zeros((2, 64), np.float32))[:100])
    r = mlp.post("/v1/models/mlp:predict", json={"instances": [[0.5] * 64]})
    assert r.status_code == 200 and np.asarray(r.json()["predictions"]).shape == (1, 10), r.text
    assert metric(mlp.get("/metrics").text, "forgegrad_queue_depth") == 0


# --- the encoder server ---------------------------------------------------------------------------------------------
def _bert(path, head):
    import torch
    from tokenizers import BertWordPieceTokenizer
    path.mkdir()
    tok = BertWordPieceTokenizer(lowercase=True)
    tok.train_from_iterator(["hello world, a tiny corpus for a tiny tokenizer of sentences and words"] * 10,
                            vocab_size=120)
    tok.save(str(path / "tokenizer.json"))
    transformers.PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"), unk_token="[UNK]",
                                         sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
                                         mask_token="[MASK]").save_pretrained(path)
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                  intermediate_size=48, max_position_embeddings=64, num_labels=max(head, 1))
    model = transformers.BertModel(cfg) if head == 0 else transformers.BertForSequenceClassification(cfg)
    model.save_pretrained(path)
    return path


ENCODERS = {0: ("/v1/embeddings", {"input": ["hello world", "words"]}),
            1: ("/v1/rerank", {"query": "hello", "documents": ["a tiny world", "words"], "top_n": 1}),
            3: ("/v1/classify", {"input": ["hello world"]})}


@pytest.fixture(scope="module", params=sorted(ENCODERS), ids=["embeddings", "rerank", "classify"])
def encoder(request, tmp_path_factory):
    from forgegrad.serve.encoder_app import EncoderServeConfig, create_encoder_app
    path = _bert(tmp_path_factory.mktemp("http-fuzz-bert") / "tiny-bert", request.param)
    with running_app(create_encoder_app(EncoderServeConfig(str(path)))) as url:
        with httpx.Client(base_url=url, timeout=P.TIMEOUT) as client:
            yield client, request.param


@fuzz_util.fuzz_settings(N // 2)
@given(data=st.data())
def test_encoder_routes(encoder, data):
    client, head = encoder
    route, base = ENCODERS[head]
    if head == 1 and data.draw(st.booleans()):
        route, base = "/v1/score", {"text_1": "hello", "text_2": ["a tiny world", "words"]}
    fields = set(base) | {"model", "user", "encoding_format", "dimensions", "return_documents", "input", "documents"}
    req = data.draw(P.json_requests(route, base, fields))
    P.check(req, P.send(client, req))
    if data.draw(st.integers(0, 9)) == 0:
        _still_serves(client, route, base)


# --- the speech server ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def whisper(tmp_path_factory):
    from whisper_helpers import tiny_whisper

    from forgegrad.serve.speech_app import SpeechServeConfig, create_speech_app
    path = tiny_whisper(tmp_path_factory.mktemp("http-fuzz-whisper") / "tiny-whisper")
    with running_app(create_speech_app(SpeechServeConfig(str(path), max_body_bytes=256 * 1024))) as url:
        with httpx.Client(base_url=url, timeout=P.TIMEOUT) as client:
            yield client


SPEECH_FIELDS = ("model", "language", "prompt", "response_format", "temperature", "timestamp_granularities[]",
                 "stream", "user", "file", "tempreature")


@fuzz_util.fuzz_settings(N)
@given(data=st.data())
def test_audio_uploads(whisper, data):
    route = data.draw(st.sampled_from(["/v1/audio/transcriptions", "/v1/audio/translations"]))
    fields = data.draw(st.dictionaries(st.sampled_from(SPEECH_FIELDS), st.one_of(
        P.STRINGS, P.NUMBERS, st.sampled_from(["json", "text", "srt", "verbose_json", "vtt", "word", "segment", "en",
                                               "fr", "english", "true", "0.5", "tiny-whisper", "<|en|>"])),
        max_size=3))
    audio = data.draw(st.one_of(P.audio_files(), st.none()))
    body, ctype = P.multipart(fields, audio, data.draw(st.sampled_from(["a.wav", "", "a.mp3", "../../x", "a\x00.wav"])))
    how = data.draw(st.sampled_from([None, None, None, "truncate", "no boundary", "json", "empty"]))
    if how == "truncate":
        body = body[:data.draw(st.integers(0, len(body)))]
    elif how == "no boundary":
        ctype = "multipart/form-data"
    elif how == "json":
        body, ctype = json.dumps({"file": "a.wav", **fields}).encode(), P.JSON_TYPE
    elif how == "empty":
        body = b""
    req = (route, body, ctype, tuple(fields) if how is None else (), False)
    P.check(req, P.send(whisper, req))


def test_speech_server_serves_after_the_probe(whisper):
    body, ctype = P.multipart({}, P.wav(16000, 1, 2, 4000))
    _cut_off(whisper, "/v1/audio/transcriptions", ctype, body[:300])

    async def go_away():  # clients whose wait for the transcript ends first
        async with httpx.AsyncClient(base_url=str(whisper.base_url), timeout=0.02) as c:
            for r in await asyncio.gather(*(c.post("/v1/audio/transcriptions", content=body,
                                                   headers={"content-type": ctype}) for _ in range(4)),
                                          return_exceptions=True):
                assert isinstance(r, httpx.TimeoutException) or r.status_code == 200, r
    asyncio.run(go_away())
    end = time.monotonic() + 60
    while metric(whisper.get("/metrics").text, "forgegrad_queue_depth") != 0:
        assert time.monotonic() < end, "the speech server's queue did not empty"
        time.sleep(0.05)
    r = whisper.post("/v1/audio/transcriptions", content=body, headers={"content-type": ctype})
    assert r.status_code == 200 and isinstance(r.json()["text"], str), r.text
    assert metric(whisper.get("/metrics").text, "forgegrad_queue_depth") == 0
