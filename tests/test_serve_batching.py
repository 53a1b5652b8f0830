"""Continuous batching in the completions server: concurrent completions decode in one batched step and
join it while others run, and each still gets the text it gets alone (real uvicorn, httpx, a checkpoint
transformers wrote)."""
from __future__ import annotations

import concurrent.futures
import json
import threading

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

from serve_helpers import metric, post_all, running_app, start_stream  # noqa: E402

PROMPTS = ["Hi", "Hello there, how are you today? Tell me a story about forty robots.", "abc", "The quick brown fox"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("batching") / "tiny-llama"
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=300, max_position_embeddings=512,
                                   initializer_range=0.3, eos_token_id=299, bos_token_id=298)
    transformers.LlamaForCausalLM(cfg).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model(checkpoint):
    return from_pretrained(checkpoint)


def _solo(model, prompt, n, **kw):
    """generate's continuation of one prompt alone, as text (cut at the end-of-sequence token)."""
    ids = list(prompt.encode())
    new = [int(t) for t in generate(model, [ids], max_new_tokens=n, **kw)[0, len(ids):]]
    return ByteTokenizer().decode(new[:new.index(299)] if 299 in new else new)


def _app(checkpoint, **kw):
    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    return create_completions_app(GenerationServeConfig(str(checkpoint), **kw))


def test_concurrent_completions_decode_together_with_their_solo_text(checkpoint, model):
    lengths = [40, 7, 25, 33]
    want = [_solo(model, p, n) for p, n in zip(PROMPTS, lengths)]

    bodies = [{"prompt": p, "max_tokens": n, "temperature": 0} for p, n in zip(PROMPTS, lengths)]
    with running_app(_app(checkpoint)) as url:
        answers = post_all(url, bodies)
        text = httpx.get(url + "/metrics").text
    assert [a.json()["choices"][0]["text"] for a in answers] == want
    steps = metric(text, "forgegrad_batch_size_count", model="tiny-llama")
    single = metric(text, "forgegrad_batch_size_bucket", model="tiny-llama", le="1.0")
    assert steps > 0 and single < steps, "no decode step ran more than one completion"


def test_requests_join_a_running_batch_and_leave_it(checkpoint, model):
    """A long completion streams; a long prompt (longer than the batch's cache so far) and a short one
    join it mid-way and finish first; every text is its solo text."""
    # "abc" runs 380 tokens before its end-of-sequence token (so the others join while it runs)
    first = {"prompt": PROMPTS[2], "max_tokens": 380, "temperature": 0, "stream": True}
    joiners = [{"prompt": PROMPTS[1], "max_tokens": 10, "temperature": 0},
               {"prompt": PROMPTS[0], "max_tokens": 5, "temperature": 0, "stop": "never"}]
    with running_app(_app(checkpoint)) as url, httpx.Client(base_url=url, timeout=120) as c:
        t, pieces = start_stream(c, first)
        with httpx.Client(base_url=url, timeout=120) as c2:
            answers = [c2.post("/v1/completions", json=j).json()["choices"][0]["text"] for j in joiners]
            text = c2.get("/metrics").text
        t.join(120)
    steps = metric(text, "forgegrad_batch_size_count", model="tiny-llama")
    assert metric(text, "forgegrad_batch_size_bucket", model="tiny-llama", le="1.0") < steps, "nobody joined"
    assert answers == [_solo(model, j["prompt"], j["max_tokens"]) for j in joiners]
    assert "".join(pieces) == _solo(model, first["prompt"], 380)


@pytest.mark.parametrize("max_batch", [1, 8])
def test_seeded_sampling_alone_is_generate_s_on_either_path(checkpoint, model, max_batch):
    body = {"prompt": PROMPTS[3], "max_tokens": 20, "temperature": 0.9, "top_k": 50, "seed": 11}
    with running_app(_app(checkpoint, max_batch=max_batch)) as url:
        got = [httpx.post(url + "/v1/completions", json=body, timeout=120).json()["choices"][0]["text"]
               for _ in range(2)]
        # vLLM's min_p on either path: generate's draws with the same setting
        min_p = httpx.post(url + "/v1/completions", json={**body, "min_p": 0.2, "temperature": 1.5},
                           timeout=120).json()["choices"][0]["text"]
    fg.manual_seed(11)
    assert got[0] == got[1] == _solo(model, PROMPTS[3], 20, do_sample=True, temperature=0.9, top_k=50)
    fg.manual_seed(11)
    assert min_p == _solo(model, PROMPTS[3], 20, do_sample=True, temperature=1.5, top_k=50, min_p=0.2)


def test_batched_logits_equal_solo_logits_to_rounding(checkpoint, model):
    """The engine's rows against solo decode steps, at the array level: right-aligned keys behind padding
    give the solo logits within float32 rounding."""
    from forgegrad.models.hf._decode import LeanDecoder
    lean = LeanDecoder(model)
    prompts = [list(p.encode()) for p in PROMPTS]
    L = max(map(len, prompts))
    cache = model.new_cache(len(prompts), L + 1)
    mask = np.zeros((len(prompts), L), bool)
    solo = []
    with fg.no_grad():
        for b, ids in enumerate(prompts):
            one = model.new_cache(1, len(ids) + 1)
            model(np.array([ids]), np.ones((1, len(ids)), bool), np.arange(len(ids))[None], cache=one)
            for layer in range(len(cache.keys)):
                cache.keys[layer][b, :, L - len(ids):L] = one.keys[layer][0, :, :len(ids)]
                cache.values[layer][b, :, L - len(ids):L] = one.values[layer][0, :, :len(ids)]
            mask[b, L - len(ids):] = True
            solo.append(lean.step(np.array([7]), np.array([len(ids)]), np.ones((1, len(ids) + 1), bool), one))
        cache.length = L
        batched = lean.step(np.full(len(prompts), 7), np.array([len(p) for p in prompts]),
                            np.concatenate([mask, np.ones((len(prompts), 1), bool)], axis=1), cache)
    np.testing.assert_allclose(batched, np.concatenate(solo), rtol=1e-5, atol=1e-5)


def test_a_row_that_leaves_mid_batch_does_not_disturb_the_others(checkpoint, model):
    """Two long completions decode together; one client hangs up after its first piece: the other still
    gets its solo text, and the batch shrank to one row."""
    keep = {"prompt": PROMPTS[2], "max_tokens": 300, "temperature": 0}
    with running_app(_app(checkpoint)) as url, httpx.Client(base_url=url, timeout=120) as c:
        result = {}
        t = threading.Thread(target=lambda: result.update(c.post("/v1/completions", json=keep).json()))
        t.start()
        with httpx.Client(base_url=url, timeout=120) as c2, c2.stream(
                "POST", "/v1/completions", json={"prompt": PROMPTS[3], "max_tokens": 300, "temperature": 0,
                                                 "stream": True}) as r:
            next(line for line in r.iter_lines() if line.startswith("data: {"))
        t.join(120)
        text = c.get("/metrics").text
    assert result["choices"][0]["text"] == _solo(model, keep["prompt"], 300)
    steps = metric(text, "forgegrad_batch_size_count", model="tiny-llama")
    single = metric(text, "forgegrad_batch_size_bucket", model="tiny-llama", le="1.0")
    assert 0 < single < steps  # two rows for a while, then one


def _penalized_solo(model, prompt, n, presence=0.0, frequency=0.0, repetition=1.0, bias=None):
    """generate's greedy continuation with the penalties computed here from their published formulas
    (vLLM's order: logit_bias, repetition on prompt + output, then frequency and presence on the output)."""
    ids = list(prompt.encode())

    def penalize(sequences, scores):
        s = scores.astype(np.float64)[0]
        for t, b in (bias or {}).items():
            s[t] += b
        out = sequences[0, len(ids):]
        for t in set(ids) | set(out.tolist()):
            s[t] = s[t] * repetition if s[t] < 0 else s[t] / repetition
        counts = np.bincount(out, minlength=s.shape[0])
        return (s - frequency * counts - presence * (counts > 0))[None]

    new = [int(t) for t in generate(model, [ids], max_new_tokens=n, logits_processor=penalize)[0, len(ids):]]
    return ByteTokenizer().decode(new[:new.index(299)] if 299 in new else new)


@pytest.mark.parametrize("max_batch", [1, 8])
def test_penalties_and_logit_bias_on_either_path(checkpoint, model, max_batch):
    plain = _solo(model, PROMPTS[3], 30)
    first = int(generate(model, [list(PROMPTS[3].encode())], max_new_tokens=1)[0, -1])
    cases = [({"presence_penalty": 1.5, "frequency_penalty": 0.7}, {"presence": 1.5, "frequency": 0.7}),
             ({"repetition_penalty": 1.8}, {"repetition": 1.8}),
             ({"frequency_penalty": -2}, {"frequency": -2.0}),
             ({"logit_bias": {str(first): -100, "101": 5}}, {"bias": {first: -100, 101: 5}})]
    with running_app(_app(checkpoint, max_batch=max_batch)) as url:
        for body, kw in cases:
            want = _penalized_solo(model, PROMPTS[3], 30, **kw)
            assert want != plain, f"{body} changes nothing: the case does not test it"
            r = httpx.post(url + "/v1/completions", json={"prompt": PROMPTS[3], "max_tokens": 30, "temperature": 0,
                                                           **body}, timeout=120)
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["text"] == want, body
        for body, param in [({"presence_penalty": 2.5}, "presence_penalty"), ({"frequency_penalty": "1"},
                                                                              "frequency_penalty"),
                            ({"repetition_penalty": 0}, "repetition_penalty"), ({"logit_bias": {"x": 1}}, "logit_bias"),
                            ({"logit_bias": {"5": 101}}, "logit_bias"), ({"logit_bias": [1]}, "logit_bias"),
                            ({"logit_bias": {"300": -1}}, "logit_bias")]:
            r = httpx.post(url + "/v1/completions", json={"prompt": "a", **body}, timeout=60)
            assert r.status_code == 400 and r.json()["error"]["param"] == param, (body, r.text)


@pytest.mark.parametrize("max_batch", [1, 8])
def test_n_choices_per_prompt_on_either_path(checkpoint, model, max_batch):
    """n choices: prompt-major indices, each a seeded sample of its own (the first is the n = 1 text), one
    prefill's prompt tokens in usage per prompt, and the same texts streamed."""
    from forgegrad.serve.completion_request import CompletionRequest, choice_seed
    prompts = [PROMPTS[3], PROMPTS[0]]
    body = {"prompt": prompts, "max_tokens": 12, "temperature": 0.9, "seed": 5, "n": 3}
    req = CompletionRequest(prompts, seed=5, n=3)
    want = []
    for i in range(6):
        fg.manual_seed(choice_seed(req, i))
        # top_k=None: no top-k filter, as the server samples (left out, generate takes transformers' 50)
        want.append(_solo(model, prompts[i // 3], 12, do_sample=True, temperature=0.9, top_k=None))
    assert len(set(want[:3])) == 3, "the choices of one prompt should differ"
    with running_app(_app(checkpoint, max_batch=max_batch)) as url, httpx.Client(base_url=url, timeout=120) as c:
        r = c.post("/v1/completions", json=body).json()
        assert [ch["index"] for ch in r["choices"]] == list(range(6))
        assert [ch["text"] for ch in r["choices"]] == want
        assert r["usage"]["prompt_tokens"] == sum(len(p.encode()) for p in prompts)
        one = c.post("/v1/completions", json=dict(body, prompt=prompts[0], n=1)).json()
        assert one["choices"][0]["text"] == want[0]
        pieces = {}
        with c.stream("POST", "/v1/completions", json=dict(body, stream=True)) as s:
            for line in s.iter_lines():
                if line.startswith("data: {"):
                    ch = json.loads(line[6:])["choices"][0]
                    pieces[ch["index"]] = pieces.get(ch["index"], "") + ch["text"]
        assert [pieces[i] for i in range(6)] == want
        for bad in (0, 17, 1.5, True):
            r = c.post("/v1/completions", json={"prompt": "a", "n": bad})
            assert r.status_code == 400 and r.json()["error"]["param"] == "n", r.text


def test_a_long_prompt_is_prefilled_in_chunks_between_the_others_steps(checkpoint, model):
    """With --prefill-chunk 16, a 165-token prompt that arrives while another completion streams is prefilled
    in 11 calls between that completion's steps; both texts are their solo texts (the chunks attend to the
    cache of the ones before). With nobody decoding, a prompt is prefilled in the same chunks, so its logits do
    not depend on whether others were decoding.

    Whether the stream still decodes when the prompt has arrived depends on the machine's load (a busy machine
    may deliver the prompt after the stream's last step): the metrics say whether it did (a decode step ran both
    rows once the prompt joined, so the stream decoded through all its prefill), and a run where it did not is
    run again."""
    long_prompt = "Tell me a story about forty robots who learn to paint. " * 3  # 165 byte tokens
    first = {"prompt": PROMPTS[2], "max_tokens": 300, "temperature": 0, "stream": True}
    joiner = {"prompt": long_prompt, "max_tokens": 12, "temperature": 0}
    want = _solo(model, long_prompt, 12), _solo(model, first["prompt"], 300)

    def counts(client):  # (prefill calls, decode steps that ran more than one row)
        text = client.get("/metrics").text
        steps = metric(text, "forgegrad_batch_size_count", model="tiny-llama")
        return (metric(text, "forgegrad_prefill_chunks_total", model="tiny-llama"),
                steps - metric(text, "forgegrad_batch_size_bucket", model="tiny-llama", le="1.0"))

    # no prefix cache: the second prefill of the same prompt would start from the first's keys (prefix_cache.py)
    with running_app(_app(checkpoint, prefill_chunk=16, prefix_cache_mb=0)) as url, \
            httpx.Client(base_url=url, timeout=120) as c:
        alone = c.post("/v1/completions", json=joiner).json()["choices"][0]["text"]
        chunks = -(-len(long_prompt.encode()) // 16)
        assert counts(c) == (chunks, 0) and alone == want[0]
        for _ in range(5):
            calls, shared = counts(c)
            t, pieces = start_stream(c, first)
            with httpx.Client(base_url=url, timeout=120) as c2:
                joined = c2.post("/v1/completions", json=joiner).json()["choices"][0]["text"]
            t.join(120)
            assert joined == want[0] and "".join(pieces) == want[1]
            after = counts(c)
            if after[1] > shared:  # the two decoded together: the stream ran through the joiner's whole prefill
                break
        else:
            pytest.fail("in five runs the stream never decoded beside the joining prompt")
    # one call per chunk of 16: the stream's own prompt, then the joiner's
    assert after[0] - calls == -(-len(first["prompt"].encode()) // 16) + chunks


def test_a_prompt_that_cannot_join_the_batch_fails_its_request_not_the_engine(checkpoint, model, monkeypatch):
    """A prefilled prompt whose join into the batch breaks (here its row's blocks cannot be written: a MemoryError)
    gets a 500 and the engine goes on: the next request answers its solo text, and no block is left held. The failure
    had ended the engine's thread, and every request after it waited forever."""
    from forgegrad.serve.paged_batch import PagedBatchEngine
    real, failed = PagedBatchEngine._give_blocks, []

    def give_blocks(self, row, p, prompt):
        if not failed:
            failed.append(len(p.ids))
            real(self, row, p, prompt)  # the row holds blocks when it fails: they go back
            raise MemoryError("no room for the row's blocks")
        return real(self, row, p, prompt)

    monkeypatch.setattr(PagedBatchEngine, "_give_blocks", give_blocks)
    with running_app(_app(checkpoint)) as url, httpx.Client(base_url=url, timeout=30) as c:
        r = c.post("/v1/completions", json={"prompt": PROMPTS[1], "max_tokens": 5, "temperature": 0})
        assert r.status_code == 500 and "MemoryError" in r.json()["error"]["message"], r.text
        r = c.post("/v1/completions", json={"prompt": PROMPTS[3], "max_tokens": 8, "temperature": 0})
        assert r.status_code == 200 and r.json()["choices"][0]["text"] == _solo(model, PROMPTS[3], 8), r.text
        m = c.get("/metrics").text
    assert failed == [len(PROMPTS[1].encode())]
    # what is held: the prefix cache's blocks (the two prompts' full blocks), no row's
    assert metric(m, "forgegrad_kv_cache_in_use", model="tiny-llama") == metric(
        m, "forgegrad_prefix_cache_blocks", model="tiny-llama") > 0
    assert metric(m, "forgegrad_kv_cache_reserved", model="tiny-llama") == 0


class _CancelledWhileChecked(concurrent.futures.Future):
    """A request's future that the client's side cancels between the engine's done() check and its set_result (the
    asyncio wrapper cancels it from another thread when the client goes away): the interleaving, made certain."""

    def done(self):
        self.cancel()
        return False


def test_a_future_cancelled_between_check_and_set_does_not_fail_the_engine():
    from forgegrad.serve.generation_batch import settle
    for give in (lambda f: settle(f, [1, 2]), lambda f: settle(f, error=RuntimeError("x"))):
        f = _CancelledWhileChecked()
        if not f.done():  # the engine's check passes ...
            give(f)  # ... and the set meets a cancelled future: no InvalidStateError to fail the batch's other rows
        assert f.cancelled()
    done = concurrent.futures.Future()
    settle(done, "first")
    settle(done, error=RuntimeError("late"))  # a late error does not replace a delivered result
    assert done.result() == "first"
