"""The paged KV cache of the completions engine (serve/kv_pool.py, serve/paged_batch.py): the decode kernel through
block tables against its gathered oracle, the pool's blocks and reference counts, and the engine on it: the same
tokens (and log-probabilities to 1e-6) as the contiguous engine and as ``generate``, prompts waiting for blocks when
the pool is full, and no block left held once the requests are done."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from forgegrad.kernels.attention import paged_attention_decode
from forgegrad.models.hf._decode import paged_attention_reference
from forgegrad.serve.kv_pool import KVPool, PoolFull, table_array
from forgegrad.serve.prefix_cache import PagedPrefixCache

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from serve_helpers import metric, post_all, running_app  # noqa: E402

SYSTEM = "You are a terse assistant. Answer in one short line; never apologise. "  # 70 byte tokens


# ---- the kernel ---------------------------------------------------------------------------------------------------
def _paged_case(rng, B=5, Hkv=2, rep=3, D=13, bt=4, blocks=40):
    """Pools of random keys/values, each row's blocks scattered over them, mixed lengths (one a block's end)."""
    k = rng.standard_normal((blocks, Hkv, bt, D)).astype(np.float32)
    v = rng.standard_normal((blocks, Hkv, bt, D)).astype(np.float32)
    lengths = np.array([1, 7, 8, 23, 12][:B], np.int64)
    ids = rng.permutation(blocks)
    tables, at = [], 0
    for n in lengths:
        need = -(-int(n) // bt)
        tables.append(list(ids[at:at + need]))
        at += need
    q = rng.standard_normal((B, Hkv, rep, D)).astype(np.float32)
    return q, k, v, table_array(tables), lengths


@pytest.mark.parametrize("rep,D,softcap,window", [(1, 8, None, None), (3, 13, None, None), (2, 16, 5.0, None),
                                                  (3, 13, None, 6), (1, 64, 20.0, 9)])
def test_the_paged_decode_kernel_equals_its_gathered_oracle(rep, D, softcap, window, simd_path, threads):
    """Each row against its own blocks (scattered, lengths 1 to 23, grouped-query heads, a head size with a vector
    tail, Gemma 2's cap, a sliding window) is the padded, gathered attention of the contiguous step, to float32
    rounding, on every instruction set; the same bits at 1, 2 and 3 threads."""
    q, k, v, tables, lengths = _paged_case(np.random.default_rng(rep * 100 + D), rep=rep, D=D)
    want = paged_attention_reference(q, k, v, tables, lengths, 0.3, softcap, window)
    runs = []
    for n in (1, 2, 3):
        threads(n)
        runs.append(paged_attention_decode(q, k, v, tables, lengths, 0.3, softcap, window))
    np.testing.assert_allclose(runs[0].reshape(len(q), -1), want, rtol=2e-5, atol=2e-6)
    assert runs[0].tobytes() == runs[1].tobytes() == runs[2].tobytes()


def _biased_reference(q, k, v, tables, lengths, scale, softcap, window, bias):
    """Plain float64 numpy: each row's keys gathered position by position, the scores scaled, capped, then
    ``bias[head, min(len - 1 - p, distances - 1)]`` added, the softmax and the weighted sum of the values."""
    B, Hkv, rep, D = q.shape
    bt = k.shape[2]
    out = np.zeros(q.shape, np.float64)
    for b in range(B):
        n = int(lengths[b])
        lo = n - window if window and n > window else 0
        pos = np.arange(lo, n)
        blocks, places = tables[b, pos // bt], pos % bt
        for h in range(Hkv):
            K, V = k[blocks, h, places].astype(np.float64), v[blocks, h, places].astype(np.float64)
            for r in range(rep):
                s = K @ q[b, h, r].astype(np.float64) * scale
                if softcap:
                    s = softcap * np.tanh(s / softcap)
                s = s + bias[h * rep + r, np.minimum(n - 1 - pos, bias.shape[1] - 1)]
                p = np.exp(s - s.max())
                out[b, h, r] = (p / p.sum()) @ V
    return out


@pytest.mark.parametrize("rep,D,softcap,window,distances", [(1, 8, None, None, 32), (3, 13, None, None, 5),
                                                            (2, 16, 5.0, None, 1), (3, 13, None, 6, 40),
                                                            (1, 64, None, 9, 3)])
def test_the_paged_decode_kernel_adds_a_bias_by_distance(rep, D, softcap, window, distances, simd_path, threads):
    """T5's relative-position bias: each query head's score against a key at distance d gains bias[head, d], the
    table's last column past its end (distances 1 to 40 against rows of 1 to 23 keys, a window, a cap, odd head
    sizes), to float32 rounding of a float64 numpy reference on every instruction set; the same bits at 1, 2 and 3
    threads; a zero table changes no bit of the unbiased kernel's result."""
    rng = np.random.default_rng(rep * 1000 + D + distances)
    q, k, v, tables, lengths = _paged_case(rng, rep=rep, D=D)
    bias = (3 * rng.standard_normal((q.shape[1] * rep, distances))).astype(np.float32)
    want = _biased_reference(q, k, v, tables, lengths, 0.3, softcap, window, bias)
    runs = []
    for n in (1, 2, 3):
        threads(n)
        runs.append(paged_attention_decode(q, k, v, tables, lengths, 0.3, softcap, window, bias=bias))
    np.testing.assert_allclose(runs[0], want, rtol=2e-5, atol=2e-6)
    assert runs[0].tobytes() == runs[1].tobytes() == runs[2].tobytes()
    zero = paged_attention_decode(q, k, v, tables, lengths, 0.3, softcap, window, bias=np.zeros_like(bias))
    assert zero.tobytes() == paged_attention_decode(q, k, v, tables, lengths, 0.3, softcap, window).tobytes()


def test_the_paged_decode_kernel_refuses_a_bias_of_the_wrong_kind():
    q, k, v, tables, lengths = _paged_case(np.random.default_rng(1))  # 2 kv heads x 3 query heads
    with pytest.raises(ValueError, match=r"bias must be \(heads, distances\) = \(6, >= 1\).*got \(2, 4\)"):
        paged_attention_decode(q, k, v, tables, lengths, 1.0, bias=np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"bias must be \(heads, distances\).*got \(6, 0\)"):
        paged_attention_decode(q, k, v, tables, lengths, 1.0, bias=np.zeros((6, 0), np.float32))
    with pytest.raises(ValueError, match="bias"):
        paged_attention_decode(q, k, v, tables, lengths, 1.0, bias=np.zeros((6,), np.float32))
    with pytest.raises(TypeError, match="bias must have dtype float32, got float64"):
        paged_attention_decode(q, k, v, tables, lengths, 1.0, bias=np.zeros((6, 4)))
    with pytest.raises(TypeError, match="bias must be a numpy.ndarray"):
        paged_attention_decode(q, k, v, tables, lengths, 1.0, bias=[[0.0] * 4] * 6)


def test_the_paged_decode_kernel_refuses_reads_outside_the_pools():
    q, k, v, tables, lengths = _paged_case(np.random.default_rng(0))
    bad = tables.copy()
    bad[3, 2] = 40
    with pytest.raises(ValueError, match=r"tables\[3, 2\] = 40 is not a block"):
        paged_attention_decode(q, k, v, bad, lengths, 1.0)
    with pytest.raises(ValueError, match=r"lengths\[0\] = 0 must be in \[1, 24\]"):
        paged_attention_decode(q, k, v, tables, np.array([0, 7, 8, 23, 12]), 1.0)
    with pytest.raises(ValueError, match="must be in"):
        paged_attention_decode(q, k, v, tables, np.array([1, 7, 8, 25, 12]), 1.0)
    with pytest.raises(ValueError, match="window"):
        paged_attention_decode(q, k, v, tables, lengths, 1.0, window=0)
    with pytest.raises(ValueError, match="k_pool"):
        paged_attention_decode(q, k[:, :1], v, tables, lengths, 1.0)
    with pytest.raises(ValueError, match="k_pool must be C-contiguous"):
        paged_attention_decode(q, k[:, :, ::2], v[:, :, ::2], tables // 2, lengths // 2 + 1, 1.0)
    # block ids and lengths are integers: a float table (3.7) or length (7.9) is refused, not truncated to block 3
    with pytest.raises(TypeError, match="tables must hold integer block ids, got dtype float64"):
        paged_attention_decode(q, k, v, tables + 0.7, lengths, 1.0)
    with pytest.raises(TypeError, match="lengths must hold integers, got dtype float64"):
        paged_attention_decode(q, k, v, tables, lengths + 0.9, 1.0)
    np.testing.assert_array_equal(paged_attention_decode(q, k, v, tables.astype(np.int32), lengths.astype(np.uint8),
                                                         1.0), paged_attention_decode(q, k, v, tables, lengths, 1.0))


# ---- the pool -----------------------------------------------------------------------------------------------------
def test_blocks_come_lowest_first_and_are_reused_once_released():
    pool = KVPool(2, 2, 4, blocks=6, block_tokens=4)
    assert pool.block_bytes == 2 * 2 * 2 * 4 * 4 * 4
    assert pool.reserve(4)
    a = [pool.allocate(), pool.allocate()]
    b = [pool.allocate(), pool.allocate()]
    assert (a, b, pool.in_use, pool.reserved) == ([0, 1], [2, 3], 4, 0)
    pool.release(a)  # a row ends: its blocks are the next ones handed out
    assert pool.reserve(2) and [pool.allocate(), pool.allocate()] == [0, 1]
    assert pool.peak == 4
    pool.share([2])  # a second holder (another row, the prefix cache)
    pool.release([2, 3])
    assert pool.refs[2] == 1 and pool.refs[3] == 0 and pool.in_use == 3
    with pytest.raises(RuntimeError, match="already free"):
        pool.release([3])
    with pytest.raises(RuntimeError, match="no block reserved"):
        pool.allocate()
    assert pool.available() == 3 and not pool.reserve(4) and pool.waits == 1
    with pytest.raises(PoolFull, match="needs 7 blocks.*--kv-cache-mb"):
        pool.check_fits(7)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="blocks"):
            KVPool(1, 1, 1, bad)


def test_a_reservation_evicts_blocks_only_the_prefix_cache_holds():
    """The prefix cache's blocks count as available: a reservation that needs them evicts the least recently used
    of those no row reads; a block a row shares stays."""
    pool = KVPool(1, 1, 2, blocks=4, block_tokens=2)
    cache = PagedPrefixCache(1 << 20, block_tokens=2, pool=pool)
    assert pool.reserve(4)
    table = [pool.allocate() for _ in range(4)]
    cache.store([1, 2, 3, 4, 5, 6, 7, 8], table)  # four blocks, held twice
    pool.release(table[2:])  # the row lets go of its last two; it still reads the first two
    assert (pool.in_use, cache.evictable(), pool.available()) == (4, 2, 2)
    assert pool.reserve(2) and (len(cache), cache.evictions) == (2, 2)  # the ends of the prefix went
    assert cache.match([1, 2, 3, 4, 9]) == table[:2]
    assert [pool.allocate(), pool.allocate()] == sorted(table[2:])
    pool.release(table[:2])  # the row ends: only the cache holds its blocks now
    assert [int(pool.refs[b]) for b in table[:2]] == [1, 1] and cache.evictable() == 2


def _row(pool, ids):
    """A row's block table for ``ids``, its keys and values at each place functions of the token there (as if
    prefilled), held by the row."""
    B = pool.block_tokens
    assert pool.reserve(pool.blocks_for(len(ids)))
    table = [pool.allocate() for _ in range(pool.blocks_for(len(ids)))]
    for p, t in enumerate(ids):
        for layer in range(len(pool.keys)):
            pool.keys[layer][table[p // B], :, p % B] = t + layer
            pool.values[layer][table[p // B], :, p % B] = -t - layer
    return table


def _stored(cache, pool, ids):
    """Store a row's full blocks, then end the row (the cache alone holds them)."""
    table = _row(pool, ids)
    cache.store(ids, table)
    pool.release(table)
    return table


def test_a_paged_prefix_cache_hash_collision_is_a_miss_never_another_prompts_blocks():
    """With every block under one hash, a lookup still checks the tokens and the block before: another prompt's
    block is never matched, and a stored block is the pool block the row wrote (shared, not copied)."""

    class Colliding(PagedPrefixCache):
        def _key(self, parent, tokens):
            return 7

    pool = KVPool(2, 2, 4, blocks=8, block_tokens=4)
    cache = Colliding(1 << 20, block_tokens=4, pool=pool)
    a, b = list(range(1, 10)), list(range(20, 29))
    table = _stored(cache, pool, a)
    assert len(cache) == 1 and pool.in_use == 1  # a's second block collides with its first: not stored, freed
    assert cache.match(b) == []
    assert cache.match(a) == [table[0]]
    np.testing.assert_array_equal(pool.keys[1][table[0], 0, :, 0], np.array(a[:4], np.float32) + 1)
    np.testing.assert_array_equal(pool.values[0][table[0], 1, :, 3], -np.array(a[:4], np.float32))
    cache.count(0)
    cache.count(1)
    assert (cache.hits, cache.misses, cache.hit_tokens) == (1, 1, 4)
    with pytest.raises(TypeError, match="shared, not copied"):
        cache.load(a, None)


def test_paged_prefix_cache_eviction_takes_the_ends_of_prefixes_first():
    """Blocks are evicted least recently used first, a prefix's later blocks before its earlier ones, so no block
    stays behind whose prefix is gone; an evicted block goes back to the pool; the pool's block size must be the
    cache's."""
    pool = KVPool(2, 2, 4, blocks=16, block_tokens=4)
    per_block = pool.block_bytes
    assert per_block == 2 * 2 * 2 * 4 * 4 * 4
    cache = PagedPrefixCache(5 * per_block, block_tokens=4, pool=pool)
    shared = list(range(1, 9))  # two blocks
    one, two = shared + [50, 51, 52, 53, 54], shared + [60, 61, 62, 63, 64]
    _stored(cache, pool, one)
    _stored(cache, pool, two)  # shared's two blocks, then one block each: 4 blocks
    third = list(range(100, 109))
    _stored(cache, pool, third)  # two more blocks: evicts one's last block, the least recently used
    assert cache.evictions == 1 and cache.bytes == 5 * per_block and pool.in_use == 5
    assert len(cache.match(two)) == 3
    assert len(cache.match(one)) == 2
    kept = list(cache._blocks.values())
    assert all(b.parent is None or b.parent in kept for b in kept)
    with pytest.raises(ValueError, match="16 tokens"):
        PagedPrefixCache(100, block_tokens=4, pool=KVPool(1, 1, 1, 1, block_tokens=16))


# ---- the engine ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from hf_conformance import tiny_byte_gpt2
    root = tmp_path_factory.mktemp("paged")
    torch.manual_seed(1)
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=300, max_position_embeddings=512,
                                   initializer_range=0.3, eos_token_id=299, bos_token_id=298)
    transformers.LlamaForCausalLM(cfg).save_pretrained(root / "llama")
    return {"gpt2": str(tiny_byte_gpt2(root / "gpt2", n_positions=1024)), "llama": str(root / "llama")}


def _jobs(engine_cls, path, bodies, make=None, **kw):
    """Run completion requests (one body each, all submitted at once; a body's "prompt" may be a list of prompts: one
    request with a row each) on an engine over ``path`` directly; per request its completions and the
    log-probability entries streamed for each row, and the engine (closed)."""
    import json

    from forgegrad.serve.completion_request import parse
    from forgegrad.serve.completions import TextGenerator
    from forgegrad.serve.generation_batch import Job
    gen = TextGenerator(path)
    engine = engine_cls(gen, 8, **(make(gen) if make is not None else kw))
    jobs, entries = [], []
    try:
        for body in bodies:
            prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
            req = parse(json.dumps(dict(body, prompt=prompts[0], model="m", stream=True)).encode(), "m")
            got = {}
            entries.append(got)

            def on_text(i, text, lp, got=got):
                got.setdefault(i, []).extend(lp or [])

            ids = [list(p.encode()) for p in prompts for _ in range(req.candidates)]
            jobs.append(engine.submit(Job(req, ids, on_text, threading.Event())))
        return [j.result(timeout=120) for j in jobs], entries, engine
    finally:
        engine.close()


def _paged(pool_blocks=None, prefix_mb=0):
    from forgegrad.serve.paged_batch import PagedBatchEngine

    def make(gen):
        pool = KVPool.for_model(gen.model, blocks=pool_blocks or 256, block_tokens=16)
        prefix = PagedPrefixCache(int(prefix_mb * 2 ** 20), 16, pool) if prefix_mb else None
        return dict(pool=pool, prefix_cache=prefix, prefill_chunk=16)

    return PagedBatchEngine, make


PROMPTS = ["Hi", "Hello there, how are you today? Tell me a story about forty robots.", "abc", SYSTEM + "Q: why?",
           SYSTEM + "Q: how far is the moon?"]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_paged_rows_answer_as_the_contiguous_engine_and_generate(checkpoints, arch):
    """Five concurrent requests of mixed lengths (two sharing a 70-token system prompt through the prefix cache, one
    with n = 2): the same tokens as the contiguous engine and as ``generate`` alone, the streamed log-probabilities
    within 1e-6 of the contiguous engine's."""
    from forgegrad.models import from_pretrained, generate
    from forgegrad.serve.generation_batch import BatchEngine
    lengths = [30, 7, 25, 20, 12]
    bodies = [{"prompt": p, "max_tokens": n, "temperature": 0, "logprobs": 2, "n": 2 if i == 2 else 1}
              for i, (p, n) in enumerate(zip(PROMPTS, lengths))]
    old, old_lp, _ = _jobs(BatchEngine, checkpoints[arch], bodies, prefill_chunk=16)
    cls, make = _paged(prefix_mb=64)
    new, new_lp, engine = _jobs(cls, checkpoints[arch], bodies, make)
    assert engine.pool.in_use == len(engine.prefix) and engine.pool.reserved == 0
    model = from_pretrained(checkpoints[arch])
    for body, a, b in zip(bodies, old, new):
        ids = list(body["prompt"].encode())
        solo = [int(t) for t in generate(model, [ids], max_new_tokens=body["max_tokens"])[0, len(ids):]]
        for x, y in zip(a, b):
            assert x.token_ids == y.token_ids == solo[:len(x.token_ids)]
    for a, b in zip(old_lp, new_lp):
        for i in a:
            assert [e.token for e in a[i]] == [e.token for e in b[i]]
            np.testing.assert_allclose([e.logprob for e in b[i]], [e.logprob for e in a[i]], atol=1e-6, rtol=0)
            np.testing.assert_allclose([t[1] for e in b[i] for t in e.top], [t[1] for e in a[i] for t in e.top],
                                       atol=1e-6, rtol=0)
    assert new[4][0].cached_tokens == len(SYSTEM) // 16 * 16  # shared, not copied: see the refcount test


def test_no_block_is_left_held_after_many_requests(checkpoints):
    """Forty requests (n up to 3, stop strings, some ending at their first token) through a small pool with a prefix
    cache: afterwards only the prefix cache holds blocks, each once, nothing is reserved, and the peak stayed within
    the pool."""
    rng = np.random.default_rng(0)
    bodies = [{"prompt": SYSTEM[:int(rng.integers(1, 70))] + str(i), "max_tokens": int(rng.integers(1, 24)),
               "temperature": 0.8, "seed": i, "n": int(rng.integers(1, 4))} for i in range(40)]
    for body in bodies[::3]:
        body["stop"] = ["e"]
    cls, make = _paged(pool_blocks=30, prefix_mb=1)
    results, _, engine = _jobs(cls, checkpoints["gpt2"], bodies, make)
    assert all(len(r) == b["n"] for r, b in zip(results, bodies))
    pool, cache = engine.pool, engine.prefix
    held = [b.block for b in cache._blocks.values()]
    assert pool.in_use == len(held) == len(set(held)) and all(pool.refs[b] == 1 for b in held)
    assert pool.reserved == 0 and pool.peak <= pool.blocks
    assert sorted(pool._free + held) == list(range(pool.blocks))


def test_prompts_wait_for_blocks_when_the_pool_is_full(checkpoints):
    """A pool of 10 blocks, about one prompt's at a time: the prompts of one request wait for blocks (first in, first
    served) rather than fail, and each answers what it answers in a pool with room for all."""
    bodies = [{"prompt": PROMPTS, "max_tokens": 40, "temperature": 0}]
    cls, make = _paged(pool_blocks=64)
    (want,), _, roomy = _jobs(cls, checkpoints["gpt2"], bodies, make)
    cls, make = _paged(pool_blocks=10)
    (got,), _, tight = _jobs(cls, checkpoints["gpt2"], bodies, make)
    assert [c.token_ids for c in got] == [c.token_ids for c in want]
    assert roomy.pool.waits == 0 and roomy.pool.peak > 10
    assert tight.pool.waits > 0 and tight.pool.peak <= 10 and tight.pool.in_use == tight.pool.reserved == 0


def test_the_server_s_kv_cache_size_metrics_and_a_request_that_never_fits(checkpoints):
    """``kv_cache_mb`` sizes the pool (10 blocks here); the metrics show its blocks, the peak, nothing held once the
    answers are in; a request whose prompt and max_tokens need more blocks than the whole pool gets a 400 naming
    max_tokens and --kv-cache-mb."""
    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    path = checkpoints["gpt2"]
    per_block = 2 * 2 * 4 * 16 * 8 * 4  # keys and values, 2 layers, 4 heads of 8, float32
    app = create_completions_app(GenerationServeConfig(path, model_name="m", prefix_cache_mb=0,
                                                       kv_cache_mb=10 * per_block / 2 ** 20))
    bodies = [{"prompt": p, "max_tokens": 40, "temperature": 0} for p in PROMPTS]
    with running_app(app) as url:
        assert all(r.status_code == 200 for r in post_all(url, bodies))
        with httpx.Client(base_url=url, timeout=60) as c:
            r = c.post("/v1/completions", json={"prompt": "x" * 150, "max_tokens": 20})
            m = c.get("/metrics").text
    assert metric(m, "forgegrad_kv_cache_blocks", model="m") == 10
    assert 0 < metric(m, "forgegrad_kv_cache_peak", model="m") <= 10
    assert metric(m, "forgegrad_kv_cache_in_use", model="m") == metric(m, "forgegrad_kv_cache_reserved", model="m") == 0
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens", r.text
    assert "needs 11 blocks" in r.json()["error"]["message"] and "--kv-cache-mb" in r.json()["error"]["message"]


def test_bad_kv_cache_settings_are_refused(checkpoints):
    from forgegrad.serve.completions import GenerationServeConfig
    for bad in (0, -1, "big", float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="kv_cache_mb"):
            GenerationServeConfig(checkpoints["gpt2"], kv_cache_mb=bad).validate()


def test_the_kv_cache_mb_flag_is_refused_where_it_does_not_apply(tmp_path, capsys):
    """``--kv-cache-mb`` sizes a decoder directory's pool: a forgegrad checkpoint (no paged cache) or a size that is
    not a positive number is a usage error."""
    from forgegrad.cli import main
    from serve_helpers import write_checkpoint
    write_checkpoint("mlp", str(tmp_path / "ckpt"))
    assert main(["serve", str(tmp_path / "ckpt"), "--kv-cache-mb", "64"]) == 2
    assert "--kv-cache-mb applies to a Hugging Face decoder directory" in capsys.readouterr().err
    for bad in ("0", "-1", "inf", "big"):
        assert main(["serve", str(tmp_path / "ckpt"), "--kv-cache-mb", bad]) == 2
        assert "argument --kv-cache-mb: expected a positive number" in capsys.readouterr().err


def test_the_default_pool_serves_a_request_with_more_choices_than_max_batch(tmp_path):
    """Without --kv-cache-mb the pool holds the worst case of any one request: n = 4 choices to the end of a 64-token
    context at --max-batch 2 answer (as the contiguous engine did), not a 400 asking for --kv-cache-mb."""
    from hf_conformance import tiny_byte_gpt2

    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    path = str(tiny_byte_gpt2(tmp_path / "gpt2", n_positions=64))
    app = create_completions_app(GenerationServeConfig(path, model_name="m", max_batch=2, prefix_cache_mb=0))
    with running_app(app) as url:
        with httpx.Client(base_url=url, timeout=60) as c:
            r = c.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 60, "n": 4, "temperature": 0.7,
                                                "seed": 3})
    assert r.status_code == 200, r.text
    assert len(r.json()["choices"]) == 4


def test_the_waits_counter_counts_each_waiting_prompt_once(checkpoints):
    """``forgegrad_kv_cache_waits_total`` counts prompts that waited for blocks, not the decode steps they waited
    through: five prompts in a pool of about one prompt's blocks wait at most four times (the first never waits)."""
    bodies = [{"prompt": PROMPTS, "max_tokens": 40, "temperature": 0}]
    cls, make = _paged(pool_blocks=10)
    _, _, engine = _jobs(cls, checkpoints["gpt2"], bodies, make)
    assert 1 <= engine.pool.waits <= len(PROMPTS) - 1


def test_a_kv_cache_size_the_server_cannot_use_is_a_startup_warning(checkpoints, tmp_path, caplog):
    """``kv_cache_mb`` sizes the paged engine's pool: a decoder served one at a time (max_batch 1) has none, and the
    startup log warns that the setting has no effect, once, with why; no kv_cache metrics. The paged engines (a
    decoder's, T5's with its relative-position bias in the paged kernel) say nothing."""
    import logging

    from hf_conformance import tiny_generator

    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    tiny_generator("t5", 300).save_pretrained(tmp_path / "t5")
    for path, kw, why in [(checkpoints["gpt2"], {"max_batch": 1}, "one at a time"),
                          (str(tmp_path / "t5"), {}, None), (checkpoints["gpt2"], {}, None)]:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="forgegrad.serve"):
            app = create_completions_app(GenerationServeConfig(path, model_name="m", kv_cache_mb=4, **kw))
            with running_app(app) as url, httpx.Client(base_url=url, timeout=60) as c:
                m = c.get("/metrics").text
        said = [r for r in caplog.records if "--kv-cache-mb has no effect" in r.getMessage()]
        if why is None:
            assert not said and "forgegrad_kv_cache_blocks" in m
            continue
        assert len(said) == 1 and why in said[0].getMessage() and said[0].levelno == logging.WARNING, caplog.text
        assert "forgegrad_kv_cache" not in m


def test_a_streamed_request_that_never_fits_is_a_400_before_its_stream_opens(checkpoints):
    """Whether a request's rows can ever fit in the pool does not depend on the prefix cache (the cached blocks count
    too), so it is checked as the request arrives: ``stream: true`` gets the same 400 naming max_tokens as a plain
    request, not a 200 stream whose only event is the error; a request that fits streams on."""
    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    per_block = 2 * 2 * 4 * 16 * 8 * 4
    app = create_completions_app(GenerationServeConfig(checkpoints["gpt2"], model_name="m",
                                                       kv_cache_mb=10 * per_block / 2 ** 20))
    with running_app(app) as url, httpx.Client(base_url=url, timeout=60) as c:
        for n, want in ((1, 11), (2, 13)):  # 9 full prompt blocks and the last, shared; n copies of the last
            r = c.post("/v1/completions", json={"prompt": "x" * 150, "max_tokens": 20, "n": n, "stream": True})
            assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens", r.text
            assert f"needs {want} blocks" in r.json()["error"]["message"]
        r = c.post("/v1/completions", json={"prompt": "x" * 100, "max_tokens": 20, "stream": True})
        assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n") and '"error"' not in r.text


def test_the_default_pool_is_capped_by_the_memory_free_at_start():
    """16 rows of a 128k context would be hundreds of GiB of pool: the default stops at half the memory free at start,
    keeps room for at least one row of the whole context, and is max_batch (at least MAX_N) rows where memory allows."""
    from forgegrad.serve.completion_request import MAX_N
    from forgegrad.serve.engine_setup import default_pool_blocks
    per_row = -(-(131072 + 1) // 16)
    block = 2 * 32 * 8 * 16 * 128 * 4  # a Llama-8B-shaped block: 32 layers, 8 kv heads, head size 128
    assert default_pool_blocks(131072, 16, block, 32, None) == 32 * per_row
    capped = default_pool_blocks(131072, 16, block, 32, 24 * 2 ** 30)
    assert per_row <= capped * block <= 12 * 2 ** 30 or capped == per_row
    assert capped == max(per_row, (12 * 2 ** 30) // block)
    assert default_pool_blocks(131072, 16, block, 32, 2 ** 20) == per_row  # at least one row of the whole context
    assert default_pool_blocks(64, 16, 4096, 2, 2 ** 40) == MAX_N * 5  # memory allows: at least MAX_N rows
