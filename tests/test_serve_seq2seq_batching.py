"""Continuous batching of encoder-decoders in the completions server (T5; BART with the checkpoint's forced first
and last tokens, no_repeat_ngram_size and min_length; M2M100): concurrent requests with sources of different
lengths share decode steps and each gets the tokens ``generate`` gives it alone; requests join a running batch
(a free slot, a rebuild, a wider source); streamed logprobs equal the non-streamed ones; a client that hangs up
frees its slot; every per-request setting gives what the one-at-a-time path gives (real uvicorn, httpx,
checkpoints transformers wrote)."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained, generate

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from serve_helpers import metric, post_all, running_app, start_stream, stream_all  # noqa: E402

EOS = 299
# token ids (a word-level tokenizer.json: token i is the word "t{i}", so a text is its tokens)
PROMPTS = [[72, 105], [int(t) for t in np.random.default_rng(0).integers(2, 290, 40)], [97, 98, 99],
           list(range(30, 42))]


def _write(kind: str, path) -> None:
    torch.manual_seed(0)
    if kind == "t5":
        cfg = transformers.T5Config(vocab_size=300, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                    decoder_start_token_id=0, eos_token_id=EOS, pad_token_id=0, initializer_factor=2.0)
        hf = transformers.T5ForConditionalGeneration(cfg)
    else:
        common = dict(vocab_size=300, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                      decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=40, max_position_embeddings=512,
                      dropout=0.0, init_std=0.3, eos_token_id=EOS, decoder_start_token_id=EOS, pad_token_id=1,
                      bos_token_id=0)
        if kind == "bart":  # bart-large-cnn's kind of settings: forced first / last tokens, no repeated trigrams
            hf = transformers.BartForConditionalGeneration(transformers.BartConfig(**common, forced_eos_token_id=EOS))
            hf.generation_config.forced_bos_token_id = 5
            hf.generation_config.no_repeat_ngram_size = 3
            hf.generation_config.min_length = 4
        else:  # (larger weights: tokens that vary with the source)
            hf = transformers.M2M100ForConditionalGeneration(transformers.M2M100Config(
                **dict(common, init_std=1.0), encoder_layerdrop=0.0, decoder_layerdrop=0.0, attention_dropout=0.0))
    hf.save_pretrained(path)
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({f"t{i}": i for i in range(300)}, unk_token="t2"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(path / "tokenizer.json"))


@pytest.fixture(scope="module", params=["t5", "bart", "m2m100"])
def pair(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("seq2seq-batching") / f"tiny-{request.param}"
    _write(request.param, path)
    return path, from_pretrained(path)


def _app(path, **kw):
    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    return create_completions_app(GenerationServeConfig(str(path), **kw))


def _solo(model, prompt, n, **kw):
    """generate's output for one prompt alone: (text, tokens before the end token)."""
    out = [int(t) for t in generate(model, [prompt], max_new_tokens=n, eos_token_id=[EOS], **kw)[0, 1:]]
    out = out[:out.index(EOS)] if EOS in out else out
    return " ".join(f"t{t}" for t in out), len(out)


def _answer(response):
    body = response.json()
    assert response.status_code == 200, body
    return body["choices"][0]["text"], body["usage"]["completion_tokens"]


def _shared_steps(url, name):
    text = httpx.get(url + "/metrics").text
    return (metric(text, "forgegrad_batch_size_count", model=name),
            metric(text, "forgegrad_batch_size_bucket", model=name, le="1.0"))


def test_concurrent_requests_decode_together_with_their_solo_tokens(pair):
    path, model = pair
    lengths = [40, 7, 25, 33]
    want = [_solo(model, p, n) for p, n in zip(PROMPTS, lengths)]
    assert len(set(want)) == 4

    bodies = [{"prompt": p, "max_tokens": n, "temperature": 0} for p, n in zip(PROMPTS, lengths)]
    with running_app(_app(path)) as url:
        got = [_answer(a) for a in post_all(url, bodies)]
        steps, single = _shared_steps(url, path.name)
    assert got == want
    assert steps > 0 and single < steps, "no decode step ran more than one completion"
    if path.name == "tiny-bart":  # the forced first token, and the forced end at the last place
        assert all(text.startswith("t5 ") for text, _ in got) and got[1][1] == lengths[1] - 1


@pytest.mark.parametrize("weights", ["bfloat16", "int8"])
def test_bfloat16_and_int8_weights_batch_too(pair, weights):
    """--weights bfloat16 / int8: the lean step runs those layers, so their requests share decode steps too, each
    with the tokens generate gives the same weights alone."""
    from forgegrad.quantization import quantize_weight_only
    path, model = pair
    model = (from_pretrained(path, dtype="bfloat16") if weights == "bfloat16" else quantize_weight_only(model))
    lengths = [12, 7, 9, 10]
    want = [_solo(model, p, n) for p, n in zip(PROMPTS, lengths)]

    bodies = [{"prompt": p, "max_tokens": n, "temperature": 0} for p, n in zip(PROMPTS, lengths)]
    with running_app(_app(path, weights=weights)) as url:
        got = [_answer(a) for a in post_all(url, bodies)]
        steps, single = _shared_steps(url, path.name)
    assert got == want
    assert steps > 0 and single < steps, "no decode step ran more than one completion"


def test_requests_join_a_running_batch(pair, monkeypatch):
    """A long completion streams; three requests join it one after another: into a new batch (a rebuild), into
    the slot the first of them freed, and with a source longer than the batch's (its encoder arrays widened).
    Every text is its solo text. (BART's family and T5 are served on the paged engine, test_serve_seq2seq_paged.py:
    here the contiguous engine serves them too.)"""
    from forgegrad.serve import completions
    from forgegrad.serve.seq2seq_batch import Seq2SeqBatchEngine
    path, model = pair
    monkeypatch.setattr(completions, "paged_seq2seq_applies", lambda model: False)
    calls = {"_rebuild": 0, "_widen": 0, "_decode": 0}
    for name in calls:
        real = getattr(Seq2SeqBatchEngine, name)

        def counted(self, *a, real=real, name=name):
            calls[name] += 1
            if name == "_decode":
                time.sleep(0.003)  # steps slow enough for the stream to outlast the joiners
            return real(self, *a)

        monkeypatch.setattr(Seq2SeqBatchEngine, name, counted)
    first = {"prompt": PROMPTS[2], "max_tokens": 300, "temperature": 0, "stream": True}
    joiners = [{"prompt": PROMPTS[0], "max_tokens": 6, "temperature": 0},
               {"prompt": PROMPTS[3], "max_tokens": 9, "temperature": 0, "stop": "never"},
               {"prompt": PROMPTS[1], "max_tokens": 12, "temperature": 0}]
    with running_app(_app(path)) as url, httpx.Client(base_url=url, timeout=120) as c:
        t, pieces = start_stream(c, first)
        with httpx.Client(base_url=url, timeout=120) as c2:
            answers = [_answer(c2.post("/v1/completions", json=j)) for j in joiners]
            done_before = not t.is_alive()
        t.join(120)
        steps, single = _shared_steps(url, path.name)
    assert not done_before, "the stream ended before the others joined: lengthen it"
    assert answers == [_solo(model, j["prompt"], j["max_tokens"]) for j in joiners]
    assert "".join(pieces) == _solo(model, first["prompt"], first["max_tokens"])[0]
    assert single < steps
    assert calls["_widen"] >= 1 and calls["_rebuild"] >= 2  # the stream's batch, the first joiner's


def test_streamed_logprobs_equal_the_non_streamed_ones_in_a_batch(pair):
    """Two streams asking for logprobs share their steps with one that asks for none: each stream's entries put
    together are the non-streamed answer's, the same numbers (both from the decode steps' logits)."""
    path, _ = pair
    bodies = [{"prompt": PROMPTS[1], "max_tokens": 14, "temperature": 0, "logprobs": 2},
              {"prompt": PROMPTS[3], "max_tokens": 10, "temperature": 0, "logprobs": 0},
              {"prompt": PROMPTS[0], "max_tokens": 30, "temperature": 0}]

    with running_app(_app(path)) as url:
        for _ in range(3):  # the streams share steps only if they join before the others end: retry
            before = _shared_steps(url, path.name)
            streamed = [chunks[0] for chunks in stream_all(url, bodies)]
            steps, single = (a - b for a, b in zip(_shared_steps(url, path.name), before))
            if single < steps:
                break
        whole = [httpx.post(url + "/v1/completions", json=b, timeout=120).json()["choices"][0] for b in bodies[:2]]
    assert single < steps, "the streams never decoded in the same step (3 tries)"
    assert all(c.get("logprobs") is None for c in streamed[2])
    for chunks, answer in zip(streamed, whole):
        assert "".join(c["text"] for c in chunks) == answer["text"]
        got = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for c in chunks:
            for key in got:
                got[key] += (c.get("logprobs") or {}).get(key, [])
        want = answer["logprobs"]
        assert got["tokens"] == want["tokens"] and got["text_offset"] == want["text_offset"]
        assert len(got["tokens"]) > 3
        assert got["token_logprobs"] == want["token_logprobs"]  # both the decode steps' numbers
        assert got["top_logprobs"] == want["top_logprobs"]


def test_a_client_that_hangs_up_frees_its_slot(pair, monkeypatch):
    """A long completion runs; a streamed one joins it and its client hangs up after the first chunk: the two share
    decode steps, then the long one decodes alone and gets its solo tokens. The engine's steps wait (gated, not timed:
    on a busy machine the long completion could otherwise end before the second request arrives) for the second
    request to arrive, and, once both rows have decoded together, for the server to see the second client gone; the
    hung-up row leaves at the next step, its blocks back in the pool."""
    from forgegrad.serve.paged_seq2seq import PagedSeq2SeqEngine
    path, model = pair
    jobs, arrived, shared = [], threading.Event(), []
    real_submit, real_step = PagedSeq2SeqEngine.submit, PagedSeq2SeqEngine._step

    def submit(self, job):
        future = real_submit(self, job)
        jobs.append(job)
        if len(jobs) == 2:
            arrived.set()
        return future

    def step(self):
        real_step(self)
        if len(jobs) == 1:
            arrived.wait(60)  # the next steps are the second request's too
        elif len(jobs) == 2 and len(self.rows) == 2:
            shared.append(1)
            jobs[1].cancelled.wait(60)  # its client reads a chunk and hangs up: it leaves at the next step

    monkeypatch.setattr(PagedSeq2SeqEngine, "submit", submit)
    monkeypatch.setattr(PagedSeq2SeqEngine, "_step", step)
    keep = {"prompt": PROMPTS[2], "max_tokens": 300, "temperature": 0}
    with running_app(_app(path)) as url, httpx.Client(base_url=url, timeout=120) as c:
        result = {}
        t = threading.Thread(target=lambda: result.update(r=c.post("/v1/completions", json=keep)))
        t.start()
        assert _wait_for(lambda: len(jobs) == 1)
        with httpx.Client(base_url=url, timeout=120) as c2, c2.stream(
                "POST", "/v1/completions", json={"prompt": PROMPTS[1], "max_tokens": 300, "temperature": 0,
                                                 "stream": True}) as r:
            next(line for line in r.iter_lines() if line.startswith("data: {"))
        t.join(120)
        steps, single = _shared_steps(url, path.name)
        # (the engine lets a finished row's blocks go just after its answer is settled: wait for that)
        freed = _wait_for(lambda: metric(httpx.get(url + "/metrics").text, "forgegrad_kv_cache_in_use",
                                         model=path.name) == 0)
        after = _answer(c.post("/v1/completions", json={"prompt": PROMPTS[3], "max_tokens": 8, "temperature": 0}))
    assert _answer(result["r"]) == _solo(model, keep["prompt"], 300)
    assert jobs[1].cancelled.is_set() and len(shared) == 1  # one step of both, then the long one's alone
    assert 0 < single == steps - 1
    assert freed, "the pool's blocks were not all given back"
    assert after == _solo(model, PROMPTS[3], 8)


def _wait_for(condition, seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.002)
    return condition()


def test_every_request_setting_matches_the_one_at_a_time_path(pair):
    """Sampling with seeds (n choices, top_p, top_k), penalties and logit_bias, stop strings and max_tokens, sent
    at once to the batched server, answer what the one-at-a-time server (generate) answers; a seeded request alone
    is generate's after manual_seed."""
    path, model = pair
    bodies = [{"prompt": PROMPTS[3], "max_tokens": 16, "temperature": 0.9, "seed": 7, "n": 3},
              {"prompt": PROMPTS[1], "max_tokens": 12, "temperature": 1.3, "top_p": 0.8, "top_k": 20, "seed": 3},
              {"prompt": PROMPTS[0], "max_tokens": 20, "temperature": 0, "presence_penalty": 1.5,
               "frequency_penalty": 0.7, "logit_bias": {"7": 3, "40": -100}},
              {"prompt": PROMPTS[2], "max_tokens": 20, "temperature": 0, "repetition_penalty": 1.8},
              {"prompt": PROMPTS[3], "max_tokens": 25, "temperature": 0, "stop": ["never", _stop(model)]},
              {"prompt": [PROMPTS[2], PROMPTS[0]], "max_tokens": 5, "temperature": 0}]

    def choices(r):
        assert r.status_code == 200, r.text
        body = r.json()
        return [(ch["text"], ch["finish_reason"]) for ch in body["choices"]], body["usage"]

    with running_app(_app(path, max_batch=1)) as url, httpx.Client(base_url=url, timeout=120) as c:
        want = [choices(c.post("/v1/completions", json=b)) for b in bodies]
    assert want[4][0][0][1] == "stop"

    with running_app(_app(path)) as url:
        got = [choices(r) for r in post_all(url, bodies)]
        steps, single = _shared_steps(url, path.name)
        alone = _answer(httpx.post(url + "/v1/completions", json=bodies[1], timeout=120))
    assert got == want
    assert single < steps
    assert len({text for text, _ in want[0][0]}) > 1, "the seeded choices should differ"
    fg.manual_seed(3)
    assert alone == _solo(model, PROMPTS[1], 12, do_sample=True, temperature=1.3, top_p=0.8, top_k=20)


def _stop(model) -> str:
    """A word in the middle of PROMPTS[3]'s greedy text (a stop string that ends it there)."""
    return " " + _solo(model, PROMPTS[3], 25)[0].split()[6]


def test_batched_lean_step_equals_solo_steps_to_rounding(pair):
    """The engine's step at the array level: rows with different sources (encoder keys/values right-padded behind
    the cross bias) and different decoder lengths (keys right-aligned behind padding, per-row positions) give each
    row's solo logits within float32 rounding."""
    from forgegrad.models.hf._decode_seq2seq import lean_seq2seq_step
    from forgegrad.models.hf.t5 import _padding_mask
    _, model = pair
    sources = PROMPTS
    start = model.decoder_start_token_id
    decoded = [[start, 7, 9], [], [start], [start, 4, 4, 4, 4]]  # fed before the step: at positions 3, 0, 1, 5
    S, L = max(map(len, sources)), max(map(len, decoded))
    B = len(sources)
    cross, cache = None, model.new_cache(B, L + 1)
    bias = np.zeros((B, S), bool)
    solo, tokens = [], np.array([13, start, 17, 19])
    with fg.no_grad():
        for b, (src, dec) in enumerate(zip(sources, decoded)):
            kv = [(k.numpy(), v.numpy()) for k, v in model.cross_kv(model.encode(np.array([src])))]
            if cross is None:
                cross = [(np.zeros((B,) + k.shape[1:2] + (S,) + k.shape[3:], np.float32),
                          np.zeros((B,) + v.shape[1:2] + (S,) + v.shape[3:], np.float32)) for k, v in kv]
            for (K, V), (k, v) in zip(cross, kv):
                K[b, :, :len(src)], V[b, :, :len(src)] = k[0], v[0]
            bias[b, :len(src)] = True
            one = lean_seq2seq_step(model, kv, None, model.new_cache(1, len(dec) + 1))
            for t in dec:
                one(np.array([t]))
            for layer in range(len(cache.keys)):
                cache.keys[layer][b, :, L - len(dec):L] = one.cache.keys[layer][0, :, :len(dec)]
                cache.values[layer][b, :, L - len(dec):L] = one.cache.values[layer][0, :, :len(dec)]
            solo.append(one(np.array([tokens[b]])))
        cache.length = L
        padding = np.zeros((B, L + 1), bool)
        for b, dec in enumerate(decoded):
            padding[b, L - len(dec):] = True
        step = lean_seq2seq_step(model, [], None, None)
        step.rebind(cache, cross, _padding_mask(bias))
        batched = step(tokens, np.array([len(d) for d in decoded]), padding)
    np.testing.assert_allclose(batched, np.concatenate(solo), rtol=1e-5, atol=1e-5)
