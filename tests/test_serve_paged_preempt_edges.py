"""Preemption in the paged KV cache at its edges (serve/paged_batch.py): a prompt preempted while it is being
prefilled (counted once in the prefix cache's hits and misses, its lost work in recomputed_tokens), every per-row
sampling rule carrying on across a resume (stop strings, penalties, logit_bias, min_tokens, top log-probabilities,
bad words, structured outputs), sliding-window and soft-capped models (Mistral, Gemma 2), dynamic NTK rope (never
preempted: its keys depend on the call that computed them), clients that go away (waiting in line, decoding, or
streaming from a server: their places and blocks given back at once, the gauges idle again), and requests that each
fill the pool finishing first come, first served."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from forgegrad.serve.kv_pool import KVPool
from forgegrad.serve.prefix_cache import PagedPrefixCache

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from test_serve_paged_kv import _jobs  # noqa: E402
from test_serve_paged_preempt import _assert_clean, _engine  # noqa: E402

LLAMA = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             vocab_size=300, max_position_embeddings=512, initializer_range=0.3, eos_token_id=299, bos_token_id=298)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from hf_conformance import tiny_byte_gpt2
    root = tmp_path_factory.mktemp("preempt_edges")

    def save(name, make):
        torch.manual_seed(1)
        make().save_pretrained(root / name)
        return str(root / name)

    return {
        "gpt2": str(tiny_byte_gpt2(root / "gpt2", n_positions=1024)),
        # every layer attends to its last 24 keys: the rows here are longer than that when they are preempted
        "mistral": save("mistral", lambda: transformers.MistralForCausalLM(
            transformers.MistralConfig(**LLAMA, sliding_window=24))),
        # a window of 20 on every other layer, capped scores and logits
        "gemma2": save("gemma2", lambda: transformers.Gemma2ForCausalLM(transformers.Gemma2Config(
            **LLAMA, head_dim=16, query_pre_attn_scalar=12, sliding_window=20, attn_logit_softcapping=20.0,
            final_logit_softcapping=10.0, pad_token_id=0))),
        # dynamic NTK rope: past 64 positions a call's frequencies depend on its longest position
        "dynamic": save("dynamic", lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
            **dict(LLAMA, max_position_embeddings=64), rope_parameters={"rope_type": "dynamic", "factor": 4.0,
                                                                         "rope_theta": 10000.0}))),
    }


def _counting(base):
    """``base`` (an engine class) counting the prompt tokens its prefill calls feed, and the preempted prefills."""

    class Counting(base):
        def __init__(self, *a, **kw):
            self.fed = self.preempted_prefills = 0
            super().__init__(*a, **kw)

        def _prefill_chunk(self, p):
            before = p.done
            logits = super()._prefill_chunk(p)
            self.fed += p.done - before
            return logits

        def _preempt(self, victim):
            from forgegrad.serve.generation_batch import _Prefill
            self.preempted_prefills += isinstance(victim, _Prefill) and victim.cache is not None
            super()._preempt(victim)

    return Counting


@pytest.mark.parametrize("prefix_mb", [0, 1])
def test_a_prompt_preempted_during_its_prefill_is_counted_once(checkpoints, prefix_mb):
    """A 15-token prompt decoding 60 tokens and a 300-token prompt prefilled 16 tokens at a time beside it, in a pool of
    21 blocks: the short row's third block is the pool's last, so the long prompt's prefill is preempted halfway and
    starts over once the row is done. Both answer as in a roomy pool; the prefix cache counts one lookup per prompt
    (a hit or a miss, not one per start), every prompt token prefilled twice is in recomputed_tokens, and waiting for
    its blocks again is a preemption, not a prompt's wait."""
    cls, _ = _engine(256, prefix_mb, 0)
    bodies = [dict(prompt="Once upon a ti.", max_tokens=60, temperature=0, ignore_eos=True),
              dict(prompt="".join(chr(97 + i % 26) for i in range(300)), max_tokens=4, temperature=0)]

    def make(blocks):
        def build(gen):
            pool = KVPool.for_model(gen.model, blocks=blocks, block_tokens=16)
            prefix = PagedPrefixCache(int(prefix_mb * 2 ** 20), 16, pool) if prefix_mb else None
            return dict(pool=pool, prefix_cache=prefix, prefill_chunk=16, lookahead=0)
        return build

    want, _, roomy = _jobs(_counting(cls), checkpoints["gpt2"], bodies, make(256))
    got, _, tight = _jobs(_counting(cls), checkpoints["gpt2"], bodies, make(21))
    assert [c.token_ids for r in got for c in r] == [c.token_ids for r in want for c in r]
    assert roomy.pool.preemptions == 0 and tight.preempted_prefills == tight.pool.preemptions == 1
    assert tight.pool.waits == 0  # it waited for blocks only once preempted (a preemption, not a wait)
    assert tight.fed == roomy.fed + tight.pool.recomputed_tokens and tight.pool.recomputed_tokens > 0
    if prefix_mb:
        assert tight.prefix.hits + tight.prefix.misses == roomy.prefix.hits + roomy.prefix.misses == 2
    _assert_clean(tight)


def _feature_bodies():
    """Requests that each lean on a rule a resumed row must carry on with, not restart or apply twice."""
    base = dict(max_tokens=40, ignore_eos=True)
    return [
        dict(base, prompt="Hello there, how are you today?", temperature=0, logprobs=5),
        dict(base, prompt="Penalties apply here ", temperature=0.8, seed=3, presence_penalty=1.5,
             frequency_penalty=0.7, repetition_penalty=1.3, n=2),
        dict(base, prompt="Bias and floor: ", temperature=0.7, seed=9, logit_bias={"101": 4, "32": -100},
             min_tokens=30, top_p=0.9, top_k=50),
        dict(base, prompt="The sea, the sea: the sea, the sea", temperature=0.6, seed=1, n=3, bad_words=["the s"]),
        dict(base, prompt="Stop me if you can: ", temperature=0.9, seed=7, stop=["zz", "I\x037"], logprobs=3),
        dict(prompt="Digits only: ", max_tokens=40, temperature=1.0, seed=2, guided_regex="[0-9]{5,30}x"),
    ]


@pytest.mark.parametrize("prefix_mb", [0, 1])
def test_every_sampling_rule_carries_on_across_a_resume(checkpoints, prefix_mb):
    """Six requests (top log-probabilities, penalties with n = 2, logit_bias with min_tokens and top-p, bad words with
    n = 3, a stop string, a regular-expression grammar) through a pool of 12 blocks that preempts them, the stop
    string's and the grammar's rows before they end: each answers exactly as in a roomy pool (tokens, finish reasons,
    texts, streamed log-probabilities and their top tokens), and no block stays held."""
    bodies = _feature_bodies()
    cls, make = _engine(256, prefix_mb)
    want, want_lp, _ = _jobs(cls, checkpoints["gpt2"], bodies, make)
    cls, make = _engine(12, prefix_mb, 0)
    got, got_lp, tight = _jobs(cls, checkpoints["gpt2"], bodies, make)
    begun = [o for o, _ in tight.started]
    assert {(4, 0), (5, 0)} <= {o for o in begun if begun.count(o) > 1}  # the stop string's and the grammar's rows
    assert [c.finish_reason for c in got[4] + got[5]] == ["stop", "stop"]
    for a, b in zip(want, got):
        assert [(c.token_ids, c.finish_reason, c.text) for c in b] == [(c.token_ids, c.finish_reason, c.text)
                                                                       for c in a]
    assert [set(c.text[:-1]) <= set("0123456789") for c in got[5]] == [True]
    for a, b in zip(want_lp, got_lp):
        assert sorted(a) == sorted(b)
        for i in a:
            assert [e.token for e in a[i]] == [e.token for e in b[i]]
            assert [[t[0] for t in e.top] for e in a[i]] == [[t[0] for t in e.top] for e in b[i]]
            np.testing.assert_allclose([e.logprob for e in b[i]], [e.logprob for e in a[i]], atol=1e-6, rtol=2e-6)
    _assert_clean(tight)


@pytest.mark.parametrize("arch", ["mistral", "gemma2"])
def test_windowed_and_capped_models_resume_as_they_ran(checkpoints, arch):
    """Mistral (a 24-key window on every layer) and Gemma 2 (a 20-key window on every other layer, capped scores and
    logits): rows preempted past their window are recomputed with the window's mask, and answer as in a roomy pool."""
    bodies = [dict(prompt=p, max_tokens=44, temperature=t, seed=4, logprobs=1, ignore_eos=True)
              for p, t in (("Hello there, how are you", 0), ("abc", 0.8), ("The sea, the sea", 0), ("Hi!", 0.9))]
    cls, make = _engine(256, 1)
    want, want_lp, _ = _jobs(cls, checkpoints[arch], bodies, make)
    cls, make = _engine(7, 1, 0)
    got, got_lp, tight = _jobs(cls, checkpoints[arch], bodies, make)
    assert tight.pool.preemptions > 0 and tight.pool.recomputed_tokens > 24
    assert [c.token_ids for r in got for c in r] == [c.token_ids for r in want for c in r]
    for a, b in zip(want_lp, got_lp):
        np.testing.assert_allclose([e.logprob for e in b[0]], [e.logprob for e in a[0]], atol=1e-5, rtol=1e-5)
    _assert_clean(tight)


def test_a_dynamic_ntk_model_reserves_its_rows_blocks_and_answers_as_generate(checkpoints):
    """Dynamic NTK rope (frequencies picked by a call's longest position past 64): a key depends on the call that
    computed it, so each row of the batched engines picks its frequencies by its own position (not the batch's
    longest), a prompt is prefilled in one call, as generate prefills it, and the paged engine reserves every block a
    row can take instead of preempting it (recomputed keys would be rotated otherwise). Four requests, one with a
    70-token prompt, decoded past position 64 together, in a roomy pool, in a pool of 12 blocks (they wait instead)
    and in the contiguous engine: each answers what ``generate`` answers alone."""
    from forgegrad.models import from_pretrained
    from forgegrad.serve.generation_batch import BatchEngine
    from test_serve_paged_preempt import _solo
    prompts = ["Hello", "abcdefgh", "The sea", "".join(chr(97 + i % 26) for i in range(70))]
    bodies = [dict(prompt=p, max_tokens=80, temperature=0, ignore_eos=True) for p in prompts]
    cls, make = _engine(256, 0, 0)
    roomy, _, _ = _jobs(cls, checkpoints["dynamic"], bodies, make)
    cls, make = _engine(12, 0, 0)
    tight, _, engine = _jobs(cls, checkpoints["dynamic"], bodies, make)
    contiguous, _, _ = _jobs(BatchEngine, checkpoints["dynamic"], bodies, prefill_chunk=16)
    assert engine.pool.preemptions == 0 and engine.pool.waits > 0 and engine.pool.peak <= 12
    model = from_pretrained(checkpoints["dynamic"])
    for p, a, b, c in zip(prompts, roomy, tight, contiguous):
        solo = _solo(model, list(p.encode()), 80)
        assert a[0].token_ids[:len(solo)] == b[0].token_ids[:len(solo)] == c[0].token_ids[:len(solo)] == solo
    _assert_clean(engine)


def test_a_cancelled_request_waiting_in_line_leaves_at_once(checkpoints):
    """A 100-token prompt decoding 100 tokens holds 7 of 16 blocks, so the 150-token prompt after it waits for blocks
    until it is done; a third request, cancelled by its client while it waits behind that one, is answered (with
    nothing) at once, not once its turn comes: it no longer holds a place in the batch or in the server's queue."""
    from forgegrad.serve.completion_request import parse
    from forgegrad.serve.completions import TextGenerator
    from forgegrad.serve.generation_batch import Job
    cls, make = _engine(16, 0, 0)
    gen = TextGenerator(checkpoints["gpt2"])
    engine = cls(gen, 8, **make(gen))
    done, jobs = [], []
    try:
        for name, prompt, max_tokens in (("first", "a" * 100, 100), ("waiting", "b" * 150, 4), ("cancelled", "c", 9)):
            req = parse(json.dumps(dict(prompt=prompt, max_tokens=max_tokens, temperature=0, ignore_eos=True,
                                        model="m", stream=True)).encode(), "m")
            cancelled = threading.Event()
            if name == "cancelled":
                cancelled.set()
            jobs.append(engine.submit(Job(req, [list(prompt.encode())], lambda *a: None, cancelled)))
            jobs[-1].add_done_callback(lambda f, name=name: done.append(name))
        results = [j.result(timeout=120) for j in jobs]
    finally:
        engine.close()
    assert done == ["cancelled", "first", "waiting"] and engine.pool.waits == 1
    assert [r[0].finish_reason for r in results] == ["length", "length", "cancelled"] and results[2][0].token_ids == []
    _assert_clean(engine)


def test_the_server_s_gauges_are_idle_again_after_clients_leave_preempted_streams(checkpoints):
    """A server whose KV cache holds 9 blocks, the prefix cache on: six streamed requests preempt one another and
    three of their clients go away after a few chunks. The others get the answers they get alone, and once all are
    done the queue is empty, nothing is reserved and only the prefix cache holds blocks."""
    import time

    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    from serve_helpers import metric, running_app

    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    per_block = 2 * 2 * 4 * 16 * 8 * 4  # keys and values, 2 layers, 4 heads of 8, float32
    app = create_completions_app(GenerationServeConfig(checkpoints["gpt2"], model_name="m", prefix_cache_mb=1,
                                                       kv_cache_mb=9 * per_block / 2 ** 20))
    # 60 tokens each: any two rows decoding at once need more than the 9 blocks, so the test preempts however the
    # six arrivals spread out on a busy machine (with 44, three had to overlap, and under load sometimes did not)
    bodies = [dict(prompt=f"Request {i} says: " + "la " * i, max_tokens=60, temperature=0.8, seed=i, stream=True,
                   ignore_eos=True) for i in range(6)]
    texts = {}
    start = threading.Barrier(6)

    def client(url, i):
        with httpx.Client(base_url=url, timeout=120) as c:
            start.wait(60)  # the six requests leave together
            with c.stream("POST", "/v1/completions", json=bodies[i]) as r:
                assert r.status_code == 200
                events = 0
                text = ""
                for line in r.iter_lines():
                    if line.startswith("data: {"):
                        events += 1
                        text += "".join(ch["text"] for ch in json.loads(line[6:])["choices"])
                    if i % 2 and events == 3:
                        return  # goes away: the connection closes mid-stream
                texts[i] = text

    with running_app(app) as url:
        threads = [threading.Thread(target=client, args=(url, i)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        with httpx.Client(base_url=url, timeout=60) as c:
            deadline = time.monotonic() + 60
            while True:  # the clients that went away end at their rows' next step, or as they wait in line
                m = c.get("/metrics").text
                if metric(m, "forgegrad_queue_depth", model="m") == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            alone = {i: c.post("/v1/completions", json=dict(bodies[i], stream=False)).json()["choices"][0]["text"]
                     for i in texts}
    assert sorted(texts) == [0, 2, 4] and texts == alone
    assert metric(m, "forgegrad_queue_depth", model="m") == 0
    assert metric(m, "forgegrad_kv_cache_preemptions_total", model="m") > 0
    assert metric(m, "forgegrad_kv_cache_reserved", model="m") == 0
    assert metric(m, "forgegrad_kv_cache_in_use", model="m") == metric(m, "forgegrad_prefix_cache_blocks", model="m")


def test_a_row_whose_client_left_lets_its_blocks_go_before_anyone_is_preempted(checkpoints):
    """A 15-token and a 23-token prompt decode in a pool of 12 blocks; the older request's client goes away just as
    the newer row fills its 6th block, when the two hold all 12: the row whose client left lets its blocks go before
    the newer row needs its 7th, so that one takes it without being preempted."""
    from forgegrad.serve.completion_request import parse
    from forgegrad.serve.completions import TextGenerator
    from forgegrad.serve.generation_batch import Job
    cls, make = _engine(12, 0, 0)

    class Leaving(cls):
        def _advance(self, slots, logits):
            ended = super()._advance(slots, logits)
            for row in slots:
                if row is not None and row.job is jobs[1] and row.n == 96:
                    assert self.pool.in_use == 12
                    jobs[0].cancelled.set()  # as the server does when the client's connection closes
            return ended

    gen = TextGenerator(checkpoints["gpt2"])
    engine = Leaving(gen, 8, **make(gen))
    jobs = []
    try:
        for prompt, max_tokens in (("a" * 15, 160), ("b" * 23, 100)):
            req = parse(json.dumps(dict(prompt=prompt, max_tokens=max_tokens, temperature=0, ignore_eos=True,
                                        model="m", stream=True)).encode(), "m")
            jobs.append(Job(req, [list(prompt.encode())], lambda *a: None, threading.Event()))
        results = [engine.submit(j) for j in jobs]
        results = [f.result(timeout=120) for f in results]
    finally:
        engine.close()
    assert [r[0].finish_reason for r in results] == ["cancelled", "length"] and len(results[1][0].token_ids) == 100
    assert engine.pool.preemptions == 0 and engine.pool.peak <= 12
    _assert_clean(engine)


@pytest.mark.parametrize("prefix_mb", [0, 1])
def test_requests_that_each_fill_the_pool_finish_first_come_first_served(checkpoints, prefix_mb):
    """Six requests of 20 prompt tokens and 100 answer tokens, each taking all 8 blocks of the pool at its end, with
    no look-ahead: they preempt one another at every block, yet none is starved and none livelocks (a preempted row
    always comes back before every later request), so they finish in the order they came, each with its answer."""
    cls, make = _engine(8, prefix_mb, 0)
    done = []

    class Recording(cls):
        def _finish(self, row):
            super()._finish(row)
            if row.job.future.done() and row.job.seq not in done:
                done.append(row.job.seq)

    bodies = [dict(prompt=f"Request number {i:>4}.", max_tokens=100, temperature=0.9, seed=i, ignore_eos=True)
              for i in range(6)]
    got, _, engine = _jobs(Recording, checkpoints["gpt2"], bodies, make)
    assert done == list(range(6)) and all(len(r[0].token_ids) == 100 for r in got)
    assert engine.pool.preemptions >= 5 and engine.pool.peak <= 8
    cls, make = _engine(256, prefix_mb)
    want, _, _ = _jobs(cls, checkpoints["gpt2"], bodies, make)
    assert [r[0].token_ids for r in got] == [r[0].token_ids for r in want]
    _assert_clean(engine)
