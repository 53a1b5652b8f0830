"""``best_of`` on ``POST /v1/completions`` (real uvicorn on a loopback port, httpx): a seeded request generates
best_of candidates per prompt, the ones a request with n = best_of and the same seed returns, and answers the n
with the highest sum of their tokens' log-probabilities, best first; usage counts every candidate's tokens;
logprobs and echo describe the returned choices; greedy decoding generates only the n returned; a decoder on both
decoding paths and an encoder-decoder (T5) on both too; the requests it refuses name best_of."""
from __future__ import annotations

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from serve_helpers import running_app  # noqa: E402

PROMPTS = ["Hi there", "abc"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from hf_conformance import tiny_byte_gpt2
    return tiny_byte_gpt2(tmp_path_factory.mktemp("best-of") / "tiny-gpt2")


def _app(path, **kw):
    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    return create_completions_app(GenerationServeConfig(str(path), **kw))


def _best(candidates, n):
    """The n candidates (choices of an n = best_of request with logprobs) with the highest sum of token_logprobs,
    best first; checks that the sums are far enough apart for the server's own values (its decode steps' logits,
    equal to the scoring forward's to float32 rounding) to rank them the same."""
    sums = [sum(ch["logprobs"]["token_logprobs"]) for ch in candidates]
    order = sorted(range(len(sums)), key=lambda i: -sums[i])
    ranked = sorted(sums, reverse=True)
    assert min(a - b for a, b in zip(ranked, ranked[1:])) > 1e-3, sums
    return [candidates[i] for i in order[:n]]


def _check_best_of(c, body, k, n, echo_prefix=None):
    """best_of = k, n against the n = k request with the same seed (each prompt's k candidates)."""
    every = c.post("/v1/completions", json=dict(body, n=k, logprobs=0)).json()
    r = c.post("/v1/completions", json=dict(body, n=n, best_of=k, logprobs=0))
    assert r.status_code == 200, r.text
    got = r.json()
    prompts = len(every["choices"]) // k
    assert len(got["choices"]) == prompts * n
    for p in range(prompts):
        want = _best(every["choices"][p * k:(p + 1) * k], n)
        mine = got["choices"][p * n:(p + 1) * n]
        assert [ch["text"] for ch in mine] == [ch["text"] for ch in want]
        for a, b in zip(mine, want):  # the returned choices' logprobs are what n = k reports for them
            assert a["logprobs"]["tokens"] == b["logprobs"]["tokens"]
            np.testing.assert_allclose(a["logprobs"]["token_logprobs"], b["logprobs"]["token_logprobs"], atol=1e-5)
    assert [ch["index"] for ch in got["choices"]] == list(range(prompts * n))
    assert got["usage"] == every["usage"]  # every candidate's tokens, each prompt's once
    assert len({ch["text"] for ch in every["choices"][:k]}) == k, "the candidates should differ"
    return every, got


@pytest.mark.parametrize("max_batch", [8, 1], ids=["batched", "one-at-a-time"])
def test_best_of_returns_the_most_likely_of_the_n_candidates(checkpoint, max_batch):
    body = {"prompt": PROMPTS, "max_tokens": 10, "temperature": 1.0, "seed": 11}
    with running_app(_app(checkpoint, max_batch=max_batch)) as url, httpx.Client(base_url=url, timeout=60) as c:
        every, got = _check_best_of(c, body, 4, 2)
        assert got["usage"]["completion_tokens"] == sum(len(ch["logprobs"]["tokens"]) for ch in every["choices"])
        # repeatable; echo puts each returned choice's prompt in front, its scores as n = k's
        again = c.post("/v1/completions", json=dict(body, n=2, best_of=4)).json()
        assert [ch["text"] for ch in again["choices"]] == [ch["text"] for ch in got["choices"]]
        echo = c.post("/v1/completions", json=dict(body, prompt=PROMPTS[0], n=1, best_of=4, echo=True,
                                                   logprobs=1)).json()["choices"]
        assert echo[0]["text"] == PROMPTS[0] + got["choices"][0]["text"]
        assert echo[0]["logprobs"]["token_logprobs"][0] is None
        # n = best_of: the same choices, ranked best first
        same = c.post("/v1/completions", json=dict(body, prompt=PROMPTS[0], n=4, best_of=4)).json()
        assert [ch["text"] for ch in same["choices"]] == [ch["text"] for ch in _best(every["choices"][:4], 4)]
        # greedy: the candidates would be the same text; only the n returned are generated (and counted)
        greedy = dict(body, temperature=0, prompt=PROMPTS[0])
        one = c.post("/v1/completions", json=dict(greedy, n=1)).json()
        best = c.post("/v1/completions", json=dict(greedy, n=2, best_of=5)).json()
        assert [ch["text"] for ch in best["choices"]] == [one["choices"][0]["text"]] * 2
        assert best["usage"]["completion_tokens"] == 2 * one["usage"]["completion_tokens"]


def test_requests_best_of_refuses_name_it(checkpoint):
    with running_app(_app(checkpoint, max_batch=8)) as url, httpx.Client(base_url=url, timeout=60) as c:
        for body in [{"best_of": 1, "n": 2}, {"best_of": 3, "n": 4}, {"best_of": 17}, {"best_of": 17, "n": 16},
                     {"best_of": 0}, {"best_of": True}, {"best_of": 2.0}, {"best_of": "2"},
                     {"best_of": 2, "stream": True}, {"best_of": 4, "n": 2, "stream": True}]:
            r = c.post("/v1/completions", json=dict(body, prompt="a", max_tokens=2))
            assert r.status_code == 400 and r.json()["error"]["param"] == "best_of", (body, r.text)
        # chat completions has no best_of
        r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "a"}], "best_of": 2})
        assert r.status_code == 400 and r.json()["error"]["param"] == "best_of", r.text
        # accepted: the defaults, best_of = n with a stream (as n alone), best_of = 16
        for body in [{"best_of": None}, {"best_of": 1}, {"best_of": 2, "n": 2, "stream": True}, {"best_of": 16}]:
            r = c.post("/v1/completions", json=dict(body, prompt="a", max_tokens=2))
            assert r.status_code == 200, (body, r.text)
        r = c.post("/v1/completions", json={"prompt": "a", "max_tokens": 2, "best_of": 16, "temperature": 0.8}).json()
        assert len(r["choices"]) == 1 and r["usage"]["completion_tokens"] == 32


@pytest.mark.parametrize("max_batch", [8, 1], ids=["batched", "one-at-a-time"])
def test_best_of_on_an_encoder_decoder(tmp_path, max_batch):
    """T5: the candidates are its n = best_of choices (on the batched engine sharing one encoder pass)."""
    pytest.importorskip("tokenizers")
    from test_serve_seq2seq_batching import PROMPTS as IDS, _write
    _write("t5", tmp_path / "tiny-t5")
    body = {"prompt": [IDS[3], IDS[0]], "max_tokens": 8, "temperature": 1.0, "seed": 3}
    with running_app(_app(tmp_path / "tiny-t5", max_batch=max_batch)) as url, httpx.Client(base_url=url,
                                                                                           timeout=60) as c:
        _check_best_of(c, body, 4, 2)
