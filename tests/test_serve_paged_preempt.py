"""Preemption in the paged KV cache (serve/paged_batch.py, serve/kv_pool.py): rows take blocks as they grow, and in a
pool too small for the rows running together the row that came last lets its blocks go and is prefilled again later.
Its client sees only a pause: the same tokens (greedy: ``generate``'s; seeded sampling: what the same seed gives
without preemption), log-probabilities within 1e-6, n choices and the prefix cache's shared blocks intact, first come
first served, and every block back in the pool once the requests are done."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from forgegrad.serve.kv_pool import KVPool
from forgegrad.serve.prefix_cache import PagedPrefixCache

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from serve_helpers import metric, post_all, running_app  # noqa: E402
from test_serve_paged_kv import PROMPTS, SYSTEM, _jobs  # noqa: E402


# ---- the pool -----------------------------------------------------------------------------------------------------
def test_a_growing_row_takes_free_blocks_then_the_prefix_cache_s_then_none():
    """``take`` hands out a free block not promised to anyone, then one only the prefix cache holds (evicted, least
    recently used first), never a reserved one or one a row reads; None when there is none (the engine preempts)."""
    pool = KVPool(1, 1, 2, blocks=5, block_tokens=2)
    cache = PagedPrefixCache(1 << 20, block_tokens=2, pool=pool)
    assert pool.reserve(2)
    table = [pool.allocate(), pool.allocate()]
    cache.store([1, 2, 3, 4], table)
    pool.release(table[1:])  # the row still reads its first block; the cache alone holds the second
    assert pool.reserve(1)  # promised to a prompt: not for a growing row
    assert [pool.take(), pool.take()] == [2, 3]
    assert pool.take() == table[1] and cache.evictions == 1 and len(cache) == 1
    assert pool.take() is None and pool.waits == 0  # a growing row's refusal is not a prompt's wait
    assert (pool.in_use, pool.reserved, int(pool.refs[table[0]])) == (4, 1, 2)


# ---- the engine ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from hf_conformance import tiny_byte_gpt2
    root = tmp_path_factory.mktemp("preempt")
    torch.manual_seed(1)
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=300, max_position_embeddings=512,
                                   initializer_range=0.3, eos_token_id=299, bos_token_id=298)
    transformers.LlamaForCausalLM(cfg).save_pretrained(root / "llama")
    return {"gpt2": str(tiny_byte_gpt2(root / "gpt2", n_positions=1024)), "llama": str(root / "llama")}


def _watched():
    """PagedBatchEngine noting, each time a prompt or a preempted row starts its prefill, its place in line and
    those of the ones still waiting behind it (first come, first served: it must come before all of them)."""
    from forgegrad.serve.paged_batch import PagedBatchEngine, _order, _Resume

    class Watched(PagedBatchEngine):
        def __init__(self, *a, **kw):
            self.started, self.resumed = [], 0
            super().__init__(*a, **kw)

        def _begin(self, p):
            if not super()._begin(p):
                return False
            self.started.append((_order(p), [_order(q) for q in self.prefills[1:]]))
            self.resumed += isinstance(p, _Resume)
            return True

    return Watched


def _engine(blocks, prefix_mb=0, lookahead=None):
    def make(gen):
        pool = KVPool.for_model(gen.model, blocks=blocks, block_tokens=16)
        prefix = PagedPrefixCache(int(prefix_mb * 2 ** 20), 16, pool) if prefix_mb else None
        return dict(pool=pool, prefix_cache=prefix, prefill_chunk=16, lookahead=lookahead)

    return _watched(), make


def _bodies():
    """Six requests of mixed lengths (two sharing a 70-token system prompt), greedy and seeded, one with n = 3, all
    streaming two log-probabilities per token: 22 blocks of 16 tokens at their longest, together."""
    kinds = [{"temperature": 0}, {"temperature": 0.9, "seed": 5}, {"temperature": 0.8, "seed": 11, "n": 3},
             {"temperature": 0}, {"temperature": 0.7, "seed": 3, "top_k": 40}, {"temperature": 0}]
    prompts = PROMPTS + ["The sea, the sea: " * 3]
    return [dict(kind, prompt=p, max_tokens=44, logprobs=2, ignore_eos=True) for p, kind in zip(prompts, kinds)]


def _solo(model, ids, n):
    """``generate``'s greedy continuation, up to its end token (the requests here go on past it: ignore_eos)."""
    from forgegrad.models import generate
    out = [int(t) for t in generate(model, [ids], max_new_tokens=n)[0, len(ids):]]
    return out[:out.index(299) + 1] if 299 in out else out


def _assert_clean(engine):
    """Every block back in the pool (the prefix cache's excepted, each held once), nothing reserved."""
    pool, cache = engine.pool, engine.prefix
    held = [] if cache is None else [b.block for b in cache._blocks.values()]
    assert pool.reserved == 0 and pool.in_use == len(held) == len(set(held))
    assert all(pool.refs[b] == 1 for b in held)
    assert sorted(pool._free + held) == list(range(pool.blocks))


@pytest.mark.parametrize("arch,prefix_mb,lookahead", [("gpt2", 0, 0), ("gpt2", 1, None), ("llama", 1, 0)])
def test_preempted_rows_answer_as_without_preemption(checkpoints, arch, prefix_mb, lookahead):
    """In a pool of 9 blocks (the longest row's at its end) the rows must preempt one another: each request's tokens
    are those of a pool with room for all (greedy ones ``generate``'s), its streamed log-probabilities within 1e-6 +
    2e-6 x their size (float32 rounding: the recomputed keys are a prefill's, not the decode step's; this tiny
    Llama's logits are large, and its paged and contiguous engines already differ by 1.9e-6 here), its n choices each
    its own; the preempted rows came back first in line, and no block stays held."""
    from forgegrad.models import from_pretrained
    bodies = _bodies()
    cls, make = _engine(256, prefix_mb)
    want, want_lp, roomy = _jobs(cls, checkpoints[arch], bodies, make)
    cls, make = _engine(9, prefix_mb, lookahead)
    got, got_lp, tight = _jobs(cls, checkpoints[arch], bodies, make)
    assert roomy.pool.preemptions == 0 and tight.pool.preemptions > 0 and tight.resumed > 0
    assert tight.pool.peak <= 9 and tight.pool.recomputed_tokens > 0
    for a, b in zip(want, got):
        assert [c.token_ids for c in b] == [c.token_ids for c in a]
        assert all(len(c.token_ids) == 44 for c in b)
    assert len({tuple(c.token_ids) for c in got[2]}) == 3  # n = 3: three samples, not one row's thrice
    for a, b in zip(want_lp, got_lp):
        assert sorted(a) == sorted(b)
        for i in a:
            assert [e.token for e in a[i]] == [e.token for e in b[i]]
            np.testing.assert_allclose([e.logprob for e in b[i]], [e.logprob for e in a[i]], atol=1e-6, rtol=2e-6)
            np.testing.assert_allclose([t[1] for e in b[i] for t in e.top], [t[1] for e in a[i] for t in e.top],
                                       atol=1e-6, rtol=2e-6)
    model = from_pretrained(checkpoints[arch])
    for body, (c,) in ((b, r) for b, r in zip(bodies, got) if b["temperature"] == 0):
        ids = list(body["prompt"].encode())
        solo = _solo(model, ids, 44)
        assert c.token_ids[:len(solo)] == solo
    assert all(all(o < w for w in waiting) for o, waiting in tight.started)  # first come, first served
    _assert_clean(tight)
    _assert_clean(roomy)


def test_no_block_is_left_held_after_preemptions_cancellations_and_stops(checkpoints):
    """Thirty requests (n up to 3, stop strings, some ending at their first token, some cancelled by their client
    halfway) through a pool of 16 blocks with a prefix cache and no look-ahead: rows are preempted, every request
    answers (a cancelled one with what it had), and afterwards only the prefix cache holds blocks, each once."""
    from forgegrad.serve.completion_request import parse
    from forgegrad.serve.completions import TextGenerator
    from forgegrad.serve.generation_batch import Job
    rng = np.random.default_rng(0)
    gen = TextGenerator(checkpoints["gpt2"])
    cls, make = _engine(16, prefix_mb=1, lookahead=0)
    engine = cls(gen, 8, **make(gen))
    futures = []
    try:
        for i in range(30):
            body = {"prompt": SYSTEM[:int(rng.integers(1, 70))] + str(i), "max_tokens": int(rng.integers(1, 40)),
                    "temperature": 0.8, "seed": i, "n": int(rng.integers(1, 4)), "model": "m", "stream": True}
            if i % 4 == 0:
                body["stop"] = ["e"]
            req = parse(json.dumps(body).encode(), "m")
            cancelled = threading.Event()

            def on_text(index, text, lp, seen=[0], cancelled=cancelled, cancel=i % 5 == 1):
                seen[0] += 1
                if cancel and seen[0] > 10:
                    cancelled.set()

            ids = [list(body["prompt"].encode())] * body["n"]
            futures.append((body, engine.submit(Job(req, ids, on_text, cancelled))))
        for body, f in futures:
            assert len(f.result(timeout=120)) == body["n"]
    finally:
        engine.close()
    assert engine.pool.preemptions > 0
    _assert_clean(engine)


# ---- the server ---------------------------------------------------------------------------------------------------
def _stream_texts(response, n):
    """Each choice's text and log-probabilities of a streamed completion."""
    texts, lps = [""] * n, [[] for _ in range(n)]
    for line in response.text.splitlines():
        if not line.startswith("data: {"):
            continue
        for choice in json.loads(line[6:])["choices"]:
            texts[choice["index"]] += choice["text"]
            if choice.get("logprobs"):
                lps[choice["index"]] += choice["logprobs"]["token_logprobs"]
    return texts, lps


def _answers(responses, bodies):
    out = []
    for r, body in zip(responses, bodies):
        assert r.status_code == 200, r.text
        n = body.get("n", 1)
        if body["stream"]:
            out.append(_stream_texts(r, n))
        else:
            choices = sorted(r.json()["choices"], key=lambda c: c["index"])
            out.append(([c["text"] for c in choices], [c["logprobs"]["token_logprobs"] for c in choices]))
    return out


def test_the_server_preempts_and_every_client_gets_its_answer(checkpoints):
    """A server whose --kv-cache-mb holds 9 blocks, the prefix cache on: six concurrent requests, streamed and not,
    greedy and seeded, one with n = 3, must preempt one another; each gets the text and log-probabilities (within
    1e-6) a server with room for all gives, greedy ones ``generate``'s; the metrics count the preemptions, and no
    block is held but the prefix cache's."""
    from forgegrad.models import from_pretrained
    from forgegrad.models.hf.tokenizer import ByteTokenizer
    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    path = checkpoints["gpt2"]
    bodies = [dict(b, stream=i % 2 == 1) for i, b in enumerate(_bodies())]
    per_block = 2 * 2 * 4 * 16 * 8 * 4  # keys and values, 2 layers, 4 heads of 8, float32
    answers = {}
    for blocks in (256, 9):
        app = create_completions_app(GenerationServeConfig(path, model_name="m", prefix_cache_mb=1,
                                                           kv_cache_mb=blocks * per_block / 2 ** 20))
        with running_app(app) as url:
            answers[blocks] = _answers(post_all(url, bodies), bodies)
            with httpx.Client(base_url=url, timeout=60) as c:
                answers[blocks, "metrics"] = c.get("/metrics").text
    m = answers[9, "metrics"]
    assert metric(answers[256, "metrics"], "forgegrad_kv_cache_preemptions_total", model="m") == 0
    assert metric(m, "forgegrad_kv_cache_preemptions_total", model="m") > 0
    assert metric(m, "forgegrad_kv_cache_recomputed_tokens_total", model="m") > 0
    assert metric(m, "forgegrad_kv_cache_peak", model="m") <= 9
    assert metric(m, "forgegrad_kv_cache_reserved", model="m") == 0
    assert metric(m, "forgegrad_kv_cache_in_use", model="m") == metric(m, "forgegrad_prefix_cache_blocks", model="m")
    model = from_pretrained(path)
    for body, (texts, lps), (want_texts, want_lps) in zip(bodies, answers[9], answers[256]):
        assert texts == want_texts
        for a, b in zip(lps, want_lps):
            assert len(a) == len(b) == 44
            np.testing.assert_allclose(a, b, atol=1e-6, rtol=2e-6)
        if body["temperature"] == 0:
            ids = list(body["prompt"].encode())
            solo = _solo(model, ids, 44)
            assert texts[0][:len(ByteTokenizer().decode(solo))] == ByteTokenizer().decode(solo)
    assert len(set(answers[9][2][0])) == 3
