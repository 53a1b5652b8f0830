"""``forgegrad serve`` on a Hugging Face decoder directory: OpenAI's completions API on the real server
(uvicorn on a loopback port, httpx), answers compared with ``generate`` on the same checkpoint, which
transformers itself wrote."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained, generate
from forgegrad.models.hf.tokenizer import ByteTokenizer

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from serve_helpers import free_port, metric, post_all, running_app  # noqa: E402

PROMPT = "Hi there"
EOS = 299


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from hf_conformance import tiny_byte_gpt2
    return tiny_byte_gpt2(tmp_path_factory.mktemp("completions") / "tiny-gpt2", n_positions=1024)


@pytest.fixture(scope="module")
def server(checkpoint):
    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    with running_app(create_completions_app(GenerationServeConfig(str(checkpoint), max_queue=64))) as url:
        yield url


def _direct(checkpoint, prompt_ids, n, **kw):
    """generate's own continuation (the new token ids), without an end-of-sequence stop."""
    return [int(t) for t in generate(from_pretrained(checkpoint), [prompt_ids], max_new_tokens=n, **kw)[0,
                                                                                                        len(prompt_ids):]]


def _events(client, body):
    """The data payloads of a streamed completion, [DONE] last."""
    with client.stream("POST", "/v1/completions", json=dict(body, stream=True)) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    return [line[6:] if line == "data: [DONE]" else json.loads(line[6:]) for line in lines]


def test_greedy_completion_is_generate_s_continuation(server, checkpoint):
    ids = list(PROMPT.encode())
    want = ByteTokenizer().decode(_direct(checkpoint, ids, 12))
    with httpx.Client(base_url=server, timeout=60) as c:
        r = c.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 12, "temperature": 0})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "text_completion" and body["model"] == "tiny-gpt2" and body["id"].startswith("cmpl-")
        assert body["choices"] == [{"index": 0, "text": want, "finish_reason": "length", "logprobs": None}]
        assert body["usage"] == {"prompt_tokens": len(ids), "completion_tokens": 12, "total_tokens": len(ids) + 12,
                                 "prompt_tokens_details": {"cached_tokens": 0}}  # shorter than a prefix cache block
        # token ids as the prompt, and two prompts in one request (one choice each, in order)
        same = c.post("/v1/completions", json={"prompt": ids, "max_tokens": 12, "temperature": 0}).json()
        assert same["choices"][0]["text"] == want
        two = c.post("/v1/completions", json={"prompt": ["abc", PROMPT], "max_tokens": 12, "temperature": 0,
                                               "model": "tiny-gpt2"}).json()
        assert [ch["index"] for ch in two["choices"]] == [0, 1] and two["choices"][1]["text"] == want
        assert two["usage"]["completion_tokens"] == 24
        assert c.get("/v1/models").json()["data"][0]["id"] == "tiny-gpt2"
        assert c.get("/ping").status_code == 200 and c.get("/health").status_code == 200


def test_streamed_pieces_add_up_to_the_completion(server):
    body = {"prompt": PROMPT, "max_tokens": 20, "temperature": 0}
    with httpx.Client(base_url=server, timeout=60) as c:
        whole = c.post("/v1/completions", json=body).json()["choices"][0]["text"]
        events = _events(c, dict(body, stream_options={"include_usage": True}))
    assert events[-1] == "[DONE]"
    usage, finish = events[-2], events[-3]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 20
    assert finish["choices"][0]["finish_reason"] == "length" and finish["choices"][0]["text"] == ""
    pieces = [e["choices"][0]["text"] for e in events[:-3]]
    assert all(p for p in pieces) and all(e["choices"][0]["finish_reason"] is None for e in events[:-3])
    assert "".join(pieces) == whole
    assert len({e["id"] for e in events[:-1]}) == 1


def test_stop_string_ends_the_completion_before_it_and_is_never_streamed(server):
    body = {"prompt": PROMPT, "max_tokens": 30, "temperature": 0}
    with httpx.Client(base_url=server, timeout=60) as c:
        whole = c.post("/v1/completions", json=body).json()["choices"][0]["text"]
        # a two-character stop string from inside the completion (no replacement characters)
        starts = [i for i in range(1, len(whole) - 1) if "\ufffd" not in whole[i:i + 2]]
        assert starts, f"the greedy completion has no clean two-character piece: {whole!r}"
        stop = whole[starts[0]:starts[0] + 2]
        want = whole[:whole.find(stop)]
        got = c.post("/v1/completions", json=dict(body, stop=[stop, "never appears"])).json()["choices"][0]
        assert got == {"index": 0, "text": want, "finish_reason": "stop", "logprobs": None}
        events = _events(c, dict(body, stop=stop))
    pieces = [e["choices"][0]["text"] for e in events[:-1]]
    assert "".join(pieces) == want and events[-2]["choices"][0]["finish_reason"] == "stop"
    assert not any(stop in p for p in pieces)


def test_end_of_sequence_token_stops_with_reason_stop(checkpoint, tmp_path):
    ids = list(PROMPT.encode())
    tokens = _direct(checkpoint, ids, 6)
    path = tmp_path / "eos-model"
    shutil.copytree(checkpoint, path)
    config = json.loads((path / "config.json").read_text())
    config["eos_token_id"] = tokens[3]  # the fourth greedy token ends the completion
    (path / "config.json").write_text(json.dumps(config))
    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    with running_app(create_completions_app(GenerationServeConfig(str(path)))) as url:
        body = httpx.post(url + "/v1/completions", json={"prompt": PROMPT, "max_tokens": 6, "temperature": 0},
                          timeout=60).json()
    first = tokens[:tokens.index(tokens[3])]
    assert body["choices"][0]["text"] == ByteTokenizer().decode(first)
    assert body["choices"][0]["finish_reason"] == "stop" and body["usage"]["completion_tokens"] == len(first)


def test_seeded_sampling_is_repeatable_and_is_generate_s(server, checkpoint):
    body = {"prompt": PROMPT, "max_tokens": 16, "temperature": 0.8, "top_k": 40, "top_p": 0.95, "seed": 7}
    with httpx.Client(base_url=server, timeout=60) as c:
        a = c.post("/v1/completions", json=body).json()["choices"][0]["text"]
        b = c.post("/v1/completions", json=body).json()["choices"][0]["text"]
    fg.manual_seed(7)
    want = _direct(checkpoint, list(PROMPT.encode()), 16, do_sample=True, temperature=0.8, top_k=40, top_p=0.95)
    assert a == b == ByteTokenizer().decode(want)


@pytest.mark.parametrize("body,status,param", [
    ({"prompt": "x", "max_tokens": 2000}, 400, "max_tokens"),
    ({"prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
    ({"prompt": "x", "temperature": 2.5}, 400, "temperature"),
    ({"prompt": "x", "temperature": "hot"}, 400, "temperature"),
    ({"prompt": "x", "top_p": 0}, 400, "top_p"),
    ({"prompt": "x", "top_k": 0}, 400, "top_k"),
    ({"prompt": "x", "min_p": 1.5}, 400, "min_p"),
    ({"prompt": "x", "min_p": "low"}, 400, "min_p"),
    ({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ({"prompt": "x", "stop": [""]}, 400, "stop"),
    ({"prompt": "x", "n": 17}, 400, "n"),
    ({"prompt": "x", "best_of": 1, "n": 2}, 400, "best_of"),
    ({"prompt": "x", "presence_penalty": -3}, 400, "presence_penalty"),
    ({"prompt": "x", "n": True}, 400, "n"),
    ({"prompt": "x", "logprobs": 6}, 400, "logprobs"),
    ({"prompt": "x", "logprobs": True}, 400, "logprobs"),
    ({"prompt": "x", "echo": "yes"}, 400, "echo"),
    ({"prompt": "x", "logprobs": -1, "stream": True}, 400, "logprobs"),
    ({"prompt": "x", "logprobs": 1, "echo": True, "stream": True}, 400, "echo"),
    ({"prompt": "x", "max_token": 3}, 400, "max_token"),
    ({"prompt": "x", "stream_options": {"include_usage": True}}, 400, "stream_options"),
    ({"prompt": "x", "stream": "yes"}, 400, "stream"),
    ({"prompt": [1, 2, 300]}, 400, "prompt"),
    ({"prompt": []}, 400, "prompt"),
    ({"prompt": ""}, 400, "prompt"),
    ({"prompt": [[1], "a", 3]}, 400, "prompt"),
    ({}, 400, "prompt"),
    ({"prompt": "x", "model": "gpt-4"}, 404, "model"),
])
def test_bad_requests_get_an_openai_error_naming_the_field(server, body, status, param):
    r = httpx.post(server + "/v1/completions", json=body, timeout=60)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["message"] and err["type"]


def test_bodies_that_are_not_requests_and_unknown_routes(server):
    with httpx.Client(base_url=server, timeout=60) as c:
        for content in (b"{bad", b"[1, 2]", b"\xff\xfe"):
            r = c.post("/v1/completions", content=content)
            assert r.status_code == 400 and r.json()["error"]["message"]
        assert c.get("/v1/completions").status_code == 405
        assert c.get("/v1/chat").status_code == 404 and "no such route" in c.get("/v1/chat").json()["error"]["message"]
        assert c.post("/v1/completions", content=b" " * (17 * 1024 * 1024)).status_code == 413
        assert c.post("/v1/completions", json={"prompt": "x", "max_tokens": 1}).status_code == 200  # still serving


def test_a_client_that_disconnects_stops_its_generation(server):
    with httpx.Client(base_url=server, timeout=60) as c:
        before = metric(c.get("/metrics").text, "forgegrad_generated_tokens_total", model="tiny-gpt2") or 0
        with c.stream("POST", "/v1/completions", json={"prompt": PROMPT, "max_tokens": 1000, "temperature": 0,
                                                       "stream": True}) as r:
            next(line for line in r.iter_lines() if line)  # the first piece, then hang up
        deadline = time.monotonic() + 60
        while metric(c.get("/metrics").text, "forgegrad_queue_depth", model="tiny-gpt2") != 0:
            assert time.monotonic() < deadline, "the cancelled generation never finished"
            time.sleep(0.02)
        after = metric(c.get("/metrics").text, "forgegrad_generated_tokens_total", model="tiny-gpt2")
        assert 1 <= after - before < 1000
        assert c.post("/v1/completions", json={"prompt": "x", "max_tokens": 2}).status_code == 200


def test_a_full_queue_answers_503_with_retry_after(checkpoint):
    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    app = create_completions_app(GenerationServeConfig(str(checkpoint), max_queue=1))

    body = {"prompt": PROMPT, "max_tokens": 400, "temperature": 0}
    with running_app(app) as url:
        answers = post_all(url, [body] * 4, timeout=60)
    codes = sorted(r.status_code for r in answers)
    assert codes[0] == 200 and 503 in codes
    busy = next(r for r in answers if r.status_code == 503)
    assert busy.headers["retry-after"] == "1" and busy.json()["error"]["type"] == "server_error"


def test_forgegrad_serve_command_serves_a_checkpoint_directory(checkpoint):
    """The command as a user runs it, with bfloat16 weights: the completion is the bfloat16 model's."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(fg.__path__[0]),
                                                        os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "forgegrad.cli", "serve", str(checkpoint), "--port", str(port),
                             "--threads", "1", "--weights", "bfloat16", "--log-level", "warning"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                if httpx.get(url + "/ping", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        got = httpx.post(url + "/v1/completions", json={"prompt": PROMPT, "max_tokens": 8, "temperature": 0},
                         timeout=60).json()["choices"][0]["text"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    ids = list(PROMPT.encode())
    want = generate(from_pretrained(checkpoint, dtype="bfloat16"), [ids], max_new_tokens=8)[0, len(ids):]
    assert got == ByteTokenizer().decode(want)


def test_weights_flag_needs_a_checkpoint_directory(tmp_path, capsys):
    from forgegrad.cli import main
    from serve_helpers import write_checkpoint
    write_checkpoint("mlp", str(tmp_path / "ckpt"))
    assert main(["serve", str(tmp_path / "ckpt"), "--weights", "int8"]) == 2
    assert "Hugging Face checkpoint directory" in capsys.readouterr().err
    from forgegrad.serve.completions import GenerationServeConfig, is_checkpoint_dir
    assert not is_checkpoint_dir(str(tmp_path / "ckpt"))
    with pytest.raises(ValueError, match="weights"):
        GenerationServeConfig(str(tmp_path), weights="fp8").validate()
    assert main(["serve", str(tmp_path / "ckpt"), "--prefill-chunk", "64"]) == 2
    assert "--prefill-chunk applies to a Hugging Face checkpoint directory" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "ckpt"), "--prefill-chunk", "-1"]) == 2
    assert "expected an integer >= 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="prefill_chunk must be an integer >= 0"):
        GenerationServeConfig(str(tmp_path), prefill_chunk=-3).validate()
    np.testing.assert_equal(is_checkpoint_dir(str(tmp_path / "nowhere")), False)


def test_logprobs_and_echo_score_text_as_transformers(server, checkpoint):
    """echo with max_tokens 0 scores the prompt (lm-eval's loglikelihood request); logprobs on a completion give
    each generated token's log-probability: both as transformers' log-softmax of its logits."""
    ids = list(PROMPT.encode())
    hf = transformers.GPT2LMHeadModel.from_pretrained(checkpoint).eval()
    with httpx.Client(base_url=server, timeout=60) as c:
        scored = c.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 0, "echo": True, "logprobs": 2}).json()
        body = {"prompt": PROMPT, "max_tokens": 6, "temperature": 0, "logprobs": 3}
        done = c.post("/v1/completions", json=body).json()
    choice = scored["choices"][0]
    assert choice["text"] == PROMPT and scored["usage"]["completion_tokens"] == 0
    lp = choice["logprobs"]
    assert lp["tokens"] == list(PROMPT) and lp["text_offset"] == list(range(len(PROMPT)))
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    with torch.no_grad():
        ref = torch.log_softmax(hf(torch.tensor([ids])).logits[0].double(), -1).numpy()
    np.testing.assert_allclose(lp["token_logprobs"][1:], [ref[i, ids[i + 1]] for i in range(len(ids) - 1)], atol=1e-4)
    assert all(2 <= len(top) <= 3 for top in lp["top_logprobs"][1:])
    gen = done["choices"][0]
    new = [int(t) for t in generate(from_pretrained(checkpoint), [ids], max_new_tokens=6)[0, len(ids):]]
    with torch.no_grad():
        ref = torch.log_softmax(hf(torch.tensor([ids + new])).logits[0].double(), -1).numpy()
    want = [ref[len(ids) - 1 + j, t] for j, t in enumerate(new)]
    np.testing.assert_allclose(gen["logprobs"]["token_logprobs"], want, atol=1e-4)
    # greedy: each chosen token is the most likely one, so it heads its top list
    for top, chosen in zip(gen["logprobs"]["top_logprobs"], gen["logprobs"]["token_logprobs"]):
        assert abs(max(top.values()) - chosen) < 1e-9
    assert gen["logprobs"]["text_offset"][0] == len(PROMPT)
