"""Log-probabilities while streaming (``stream: true`` with completions' ``logprobs`` / chat's ``logprobs`` +
``top_logprobs``) on the real server (uvicorn on a loopback port, httpx), on both decoding paths (the batched
engine and one request at a time): each chunk carries the entries of the tokens whose text it completes, and
the chunks' entries put together are the non-streamed answer's (the same tokens, offsets, and values to 1e-5),
also across incomplete UTF-8 characters, a stop string held back and then cut, and a stream that shares its
batch with one that asks for none."""
from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from forgegrad.models import from_pretrained, generate
from forgegrad.models.hf.tokenizer import ByteTokenizer
from forgegrad.serve.text_stream import TextStream

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from serve_helpers import metric, running_app  # noqa: E402

PROMPT = "Hi there"
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
MESSAGES = [{"role": "user", "content": "hello world"}]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from hf_conformance import tiny_byte_gpt2
    return tiny_byte_gpt2(tmp_path_factory.mktemp("stream-logprobs") / "tiny-gpt2", n_positions=1024)


@pytest.fixture(scope="module")
def chat_checkpoint(tmp_path_factory):
    pytest.importorskip("jinja2")
    pytest.importorskip("tokenizers")
    from hf_conformance import tiny_chat_gpt2
    return tiny_chat_gpt2(tmp_path_factory.mktemp("stream-logprobs-chat") / "tiny-chat", CHATML)


def _app(path, **kw):
    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    return create_completions_app(GenerationServeConfig(str(path), **kw))


@pytest.fixture(scope="module", params=[32, 1], ids=["batched", "one-at-a-time"])
def server(request, checkpoint):
    with running_app(_app(checkpoint, max_batch=request.param)) as url:
        yield url


@pytest.fixture(scope="module", params=[32, 1], ids=["batched", "one-at-a-time"])
def chat_server(request, chat_checkpoint):
    with running_app(_app(chat_checkpoint, max_batch=request.param)) as url:
        yield url


def _chunks(client, route, body):
    """The streamed chunks (data payloads before [DONE])."""
    with client.stream("POST", route, json=dict(body, stream=True)) as r:
        assert r.status_code == 200, r.read()
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[6:]) for line in lines[:-1]]


def _joined(chunks, index=0):
    """A choice's streamed text and its chunks' completions logprobs put together; each piece's logprobs."""
    text, pieces = "", []
    for c in chunks:
        if not c["choices"] or c["choices"][0]["index"] != index or c["choices"][0]["finish_reason"] is not None:
            continue
        ch = c["choices"][0]
        assert ch["logprobs"] is not None or not ch["text"], "a piece of text came without its tokens' logprobs"
        text += ch["text"]
        pieces.append(ch["logprobs"])
    joined = {k: [v for p in pieces if p for v in p[k]] for k in ("tokens", "token_logprobs", "top_logprobs",
                                                                    "text_offset")}
    return text, joined, pieces


def _assert_same_completion_logprobs(got, want):
    """The same numbers: streamed or not, each token's entry is the log-softmax of the logits it was drawn from."""
    assert got["tokens"] == want["tokens"] and got["text_offset"] == want["text_offset"]
    assert got["token_logprobs"] == want["token_logprobs"]
    assert got["top_logprobs"] == want["top_logprobs"] and all(list(g) == list(w) for g, w in
                                                              zip(got["top_logprobs"], want["top_logprobs"]))


BODIES = {
    "greedy": {"prompt": PROMPT, "max_tokens": 24, "temperature": 0, "logprobs": 3},
    # sampled with a seed, with penalties: the log-probabilities are the model's own, before either
    "sampled": {"prompt": PROMPT, "max_tokens": 24, "temperature": 0.8, "seed": 3, "logprobs": 2,
                "presence_penalty": 0.5, "logit_bias": {"65": 2}},
    # pushed towards two-byte characters' bytes: characters left incomplete, held back until their next byte
    "utf8": {"prompt": PROMPT, "max_tokens": 24, "temperature": 0, "logprobs": 1,
             "logit_bias": {"208": 4, "170": 4, "195": 4}},
    "n": {"prompt": [PROMPT, "abc"], "max_tokens": 10, "temperature": 0.7, "seed": 1, "n": 2, "logprobs": 0},
}


@pytest.mark.parametrize("case", list(BODIES))
def test_streamed_completion_logprobs_are_the_non_streamed_ones(server, case):
    body = BODIES[case]
    with httpx.Client(base_url=server, timeout=60) as c:
        whole = c.post("/v1/completions", json=body).json()
        chunks = _chunks(c, "/v1/completions", body)
    assert len(whole["choices"]) == (4 if case == "n" else 1)
    held = 0
    for want in whole["choices"]:
        text, got, pieces = _joined(chunks, want["index"])
        assert text == want["text"]
        _assert_same_completion_logprobs(got, want["logprobs"])
        assert case == "n" or len(got["tokens"]) == whole["usage"]["completion_tokens"]  # no stop string: all
        held += sum(len(p["tokens"]) > 1 for p in pieces)
        assert all(len(t) <= body["logprobs"] + 1 for t in got["top_logprobs"])
    finish = [c["choices"][0] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert all(f["logprobs"] is None and f["text"] == "" for f in finish)
    if case == "utf8":  # some tokens waited for a later one (their character's other bytes) and came with it
        assert held > 0 and any(ord(ch) > 127 and ch != "\ufffd" for ch in whole["choices"][0]["text"])


def test_a_stop_string_s_tokens_are_held_back_then_cut(server):
    """A stop string's first character is held back (it could start the stop string) and then cut with the
    rest: its tokens are reported neither streamed nor not, and the chunks' entries are the answer's."""
    body = {"prompt": PROMPT, "max_tokens": 30, "temperature": 0, "logprobs": 2}
    with httpx.Client(base_url=server, timeout=60) as c:
        full = c.post("/v1/completions", json=body).json()["choices"][0]
        text = full["text"]
        starts = [i for i in range(1, len(text) - 1) if "\ufffd" not in text[i:i + 2] and text[i] != text[i - 1]]
        assert starts, f"the greedy completion has no clean two-character piece: {text!r}"
        stop = text[starts[0]:starts[0] + 2]
        want = text[:text.find(stop)]
        body = dict(body, stop=[stop], stream_options={"include_usage": True})
        whole = c.post("/v1/completions", json=dict(body, stream_options=None)).json()
        chunks = _chunks(c, "/v1/completions", body)
    got_text, got, pieces = _joined(chunks)
    answer = whole["choices"][0]
    assert answer["text"] == got_text == want and answer["finish_reason"] == "stop"
    _assert_same_completion_logprobs(got, answer["logprobs"])
    # byte tokens: the reported ones spell the text up to the stop string; the stop string's were generated
    # (usage counts them) but not reported
    n = len(want.encode("utf-8", errors="surrogatepass")) if "\ufffd" not in want else len(got["tokens"])
    assert len(got["tokens"]) == n and chunks[-1]["usage"]["completion_tokens"] == n + len(stop)
    assert got["tokens"] == full["logprobs"]["tokens"][:n]
    np.testing.assert_allclose(got["token_logprobs"], full["logprobs"]["token_logprobs"][:n], atol=1e-5)
    assert not any(stop in p for p in got["tokens"])


def test_streamed_chat_logprobs_are_the_non_streamed_ones(chat_server):
    bodies = [{"messages": MESSAGES, "max_tokens": 24, "temperature": 0, "logprobs": True, "top_logprobs": 3},
              {"messages": MESSAGES, "max_tokens": 24, "temperature": 0.8, "seed": 1, "logprobs": True},
              {"messages": MESSAGES, "max_tokens": 24, "temperature": 0, "logprobs": True, "top_logprobs": 2,
               "stop": ["'\""]}]
    for k, body in enumerate(bodies):
        with httpx.Client(base_url=chat_server, timeout=60) as c:
            whole = c.post("/v1/chat/completions", json=body).json()["choices"][0]
            chunks = _chunks(c, "/v1/chat/completions", body)
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert chunks[0]["choices"][0]["logprobs"] is None and chunks[-1]["choices"][0]["logprobs"] is None
        assert chunks[-1]["choices"][0]["finish_reason"] == whole["finish_reason"]
        text, content, held = "", [], 0
        for c in chunks[1:-1]:
            ch = c["choices"][0]
            assert ch["logprobs"] is not None and ch["logprobs"]["refusal"] is None
            text += ch["delta"]["content"]
            content += ch["logprobs"]["content"]
            held += len(ch["logprobs"]["content"]) > 1
        assert text == whole["message"]["content"]
        want = whole["logprobs"]["content"]
        assert [(e["token"], e["bytes"]) for e in content] == [(e["token"], e["bytes"]) for e in want]
        assert content == want  # the same numbers, streamed or not
        assert all(len(g["top_logprobs"]) == body.get("top_logprobs", 0) for g in content)
        if k == 0:  # byte tokens of a two-byte character: the first waited for the second
            assert held > 0 and any(ord(ch) > 127 and ch != "\ufffd" for ch in text), text
        if k == 2:
            assert whole["finish_reason"] == "stop", "the stop string should end this completion"


def test_two_streams_in_one_batch_only_one_asking_for_logprobs(checkpoint):
    """A stream with logprobs and one without decode in the same batched steps: the first gets its
    non-streamed logprobs, the second none (no field, no cost) and its own text."""
    asking = {"prompt": PROMPT, "max_tokens": 60, "temperature": 0, "logprobs": 2}
    plain = {"prompt": "The quick brown fox", "max_tokens": 60, "temperature": 0}

    async def both(url):
        async def one(c, body):
            async with c.stream("POST", "/v1/completions", json=dict(body, stream=True)) as r:
                return [json.loads(line[6:]) async for line in r.aiter_lines() if line.startswith("data: {")]

        async with httpx.AsyncClient(base_url=url, timeout=120) as c:
            return await asyncio.gather(one(c, asking), one(c, plain))

    with running_app(_app(checkpoint)) as url:
        with httpx.Client(base_url=url, timeout=60) as c:
            want_asking = c.post("/v1/completions", json=asking).json()["choices"][0]
            want_plain = c.post("/v1/completions", json=plain).json()["choices"][0]
            text = c.get("/metrics").text
            before = [metric(text, "forgegrad_batch_size_count", model="tiny-gpt2"),
                      metric(text, "forgegrad_batch_size_bucket", model="tiny-gpt2", le="1.0")]
        for _ in range(3):  # the two streams share steps only if the second joins before the first ends: retry
            got_asking, got_plain = asyncio.run(both(url))
            text = httpx.get(url + "/metrics").text
            steps = metric(text, "forgegrad_batch_size_count", model="tiny-gpt2") - before[0]
            single = metric(text, "forgegrad_batch_size_bucket", model="tiny-gpt2", le="1.0") - before[1]
            if single < steps:
                break
            before = [steps + before[0], single + before[1]]
    assert steps > 0 and single < steps, "the two streams never decoded in the same step (3 tries)"
    assert "".join(c["choices"][0]["text"] for c in got_plain) == want_plain["text"]
    assert all(c["choices"][0]["logprobs"] is None for c in got_plain)
    text, got, _ = _joined(got_asking)
    assert text == want_asking["text"]
    _assert_same_completion_logprobs(got, want_asking["logprobs"])


def test_bad_logprobs_requests_name_the_field(server):
    with httpx.Client(base_url=server, timeout=60) as c:
        for route, body, param in (
                ("/v1/completions", {"prompt": "x", "logprobs": -1, "stream": True}, "logprobs"),
                ("/v1/completions", {"prompt": "x", "logprobs": 6, "stream": True}, "logprobs"),
                ("/v1/completions", {"prompt": "x", "logprobs": 1, "echo": True, "stream": True}, "echo"),
                ("/v1/completions", {"prompt": "x", "echo": True, "max_tokens": 0, "stream": True}, "echo")):
            r = c.post(route, json=body)
            assert r.status_code == 400 and r.json()["error"]["param"] == param, (body, r.text)
            assert param in r.json()["error"]["message"]


def test_text_stream_sends_each_token_s_entry_with_the_text_it_completes():
    """The stream's own rule on byte tokens: a partial character waits for its other bytes, a possible stop
    string's start waits for the next token, tokens wholly in the stop string are dropped, a token straddling
    it goes with the last piece."""
    sent = []
    s = TextStream(ByteTokenizer(), {299}, ["xy"], 20, 3, lambda t, e: sent.append((t, e)), top=1)
    for t in [ord("a"), 0xC3, 0xA9, ord("x"), 290, ord("y"), ord("z")]:
        if s.push(t, ("entry", t)):
            break
    r = s.result()
    assert sent == [("a", [("entry", 97)]), ("é", [("entry", 0xC3), ("entry", 0xA9)])]
    assert r.text == "aé" and r.finish_reason == "stop" and r.text_tokens == 3 and r.completion_tokens == 6
    assert r.reported_ids == [97, 0xC3, 0xA9]

    class Pairs(ByteTokenizer):  # tokens of two characters: 1000 is "ab", 1001 "cd", 1002 "ef"
        def decode(self, ids, skip_special_tokens=False):
            return "".join(["ab", "cd", "ef"][i - 1000] if i >= 1000 else chr(i) for i in ids)

    sent.clear()
    s = TextStream(Pairs(), {299}, ["de"], 20, 3, lambda t, e: sent.append((t, e)), top=0)
    for t in [1000, 1001, 1002]:  # "ab", "cd", "ef": the stop string "de" straddles the last two
        if s.push(t, t):
            break
    r = s.result()
    assert r.text == "abc" and r.text_tokens == 2 and r.reported_ids == [1000, 1001]
    # "c" goes out as soon as "d" might start the stop string, its token once the stop string decided it
    assert sent == [("ab", [1000]), ("c", []), ("", [1001])]
    no_logprobs = []
    s = TextStream(Pairs(), {299}, [], 2, 3, lambda t, e: no_logprobs.append((t, e)))
    s.push(1000)
    s.push(1001)
    s.result()
    assert no_logprobs == [("ab", None), ("cd", None)]


def test_generate_passes_the_raw_logits_of_every_step(checkpoint):
    """generate's on_logits gets each step's logits before any processor: greedy picks their argmax (with a
    repetition penalty the picks differ from them, the logits do not)."""
    model = from_pretrained(checkpoint)
    ids = list(PROMPT.encode())
    seen = []
    out = generate(model, [ids], max_new_tokens=6, do_sample=False, eos_token_id=None,
                   on_logits=lambda x: seen.append(x[0].copy()))
    assert len(seen) == 6 and [int(np.argmax(x)) for x in seen] == [int(t) for t in out[0, len(ids):]]
    penalized = []
    generate(model, [ids], max_new_tokens=6, do_sample=False, eos_token_id=None, repetition_penalty=50.0,
             logits_processor=lambda seq, s: s, on_logits=lambda x: penalized.append(x[0].copy()))
    np.testing.assert_allclose(penalized[0], seen[0], atol=1e-5)
    with pytest.raises(ValueError, match="on_logits"):
        generate(model, [ids], max_new_tokens=2, num_beams=2, on_logits=seen.append)


@pytest.mark.parametrize("max_batch", [32, 1], ids=["batched", "one-at-a-time"])
def test_an_encoder_decoder_streams_its_logprobs_too(tmp_path, max_batch):
    """T5 on both paths (the batched engine's step, or generate's seq2seq loop handing over its raw logits): the
    streamed logprobs are the non-streamed ones."""
    torch.manual_seed(0)
    cfg = transformers.T5Config(vocab_size=300, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                decoder_start_token_id=0, eos_token_id=299, pad_token_id=0)
    transformers.T5ForConditionalGeneration(cfg).save_pretrained(tmp_path / "tiny-t5")
    body = {"prompt": "hello world", "max_tokens": 12, "temperature": 0, "logprobs": 2}
    with running_app(_app(tmp_path / "tiny-t5", max_batch=max_batch)) as url, httpx.Client(base_url=url,
                                                                                           timeout=60) as c:
        whole = c.post("/v1/completions", json=body).json()["choices"][0]
        text, got, _ = _joined(_chunks(c, "/v1/completions", body))
    assert text == whole["text"] and len(got["tokens"]) == 12
    _assert_same_completion_logprobs(got, whole["logprobs"])


def test_top_ids_is_a_stable_argsort_s_head():
    """The top-k selection (a partition over a bound from a subsample, not a sort of the vocabulary) picks what a
    stable sort picks, ties included."""
    from forgegrad.serve.token_logprobs import top_ids
    rng = np.random.default_rng(0)
    for V in (5, 300, 2000, 50_000):
        for x in (rng.standard_normal(V), np.round(rng.standard_normal(V), 1), np.zeros(V)):
            for k in (0, 1, 3, 20, V, V + 3):
                np.testing.assert_array_equal(top_ids(x, k), np.argsort(-x, kind="stable")[:k])
