"""Automatic prefix caching in the completions server (serve/prefix_cache.py): a prompt that starts with blocks an
earlier prompt prefilled reuses their keys and values, reports them as ``usage.prompt_tokens_details.cached_tokens``,
and answers what the server without a prefix cache answers (greedy). The real server on loopback, checkpoints
transformers wrote (byte tokens)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from forgegrad.models.hf import from_pretrained
from forgegrad.models.hf._layers import KVCache
from forgegrad.serve.prefix_cache import PrefixCache, prefix_cache_applies

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from serve_helpers import metric, post_all, running_app  # noqa: E402

BLOCK = 16
SYSTEM = "You are a terse assistant. Answer in one short line; never apologise. "  # 70 byte tokens
QUESTIONS = ["Q: why is the sky blue?", "Q: how far is the moon?", "Q: name a prime.", "Q: why is the sky blue?"]
LLAMA = dict(num_hidden_layers=2, hidden_size=48, num_attention_heads=6, num_key_value_heads=2, intermediate_size=80,
             vocab_size=300, max_position_embeddings=512, initializer_range=0.3, eos_token_id=299)


def _save(path, build):
    torch.manual_seed(0)
    build().save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from hf_conformance import tiny_byte_gpt2
    root = tmp_path_factory.mktemp("prefix_cache")
    return {
        "gpt2": str(tiny_byte_gpt2(root / "gpt2", n_positions=1024)),
        # every layer attends to its last 24 keys: the shared prefixes here are longer than that
        "mistral": _save(root / "mistral", lambda: transformers.MistralForCausalLM(
            transformers.MistralConfig(**LLAMA, sliding_window=24))),
        # Gemma 2: a window of 20 on every other layer, capped scores and logits
        "gemma2": _save(root / "gemma2", lambda: transformers.Gemma2ForCausalLM(transformers.Gemma2Config(
            **LLAMA, head_dim=16, query_pre_attn_scalar=12, sliding_window=20, attn_logit_softcapping=20.0,
            final_logit_softcapping=10.0, pad_token_id=0))),
        # dynamic NTK rope: a call's frequencies depend on its longest position, so no prefix cache
        "dynamic": _save(root / "dynamic", lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
            **dict(LLAMA, max_position_embeddings=64), rope_parameters={"rope_type": "dynamic", "factor": 4.0,
                                                                         "rope_theta": 10000.0}))),
    }


def _app(path, **kw):
    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    return create_completions_app(GenerationServeConfig(path, model_name="m", **kw))


def _ask(c, prompt, max_tokens=10, **kw):
    r = c.post("/v1/completions", json=dict({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0}, **kw))
    assert r.status_code == 200, r.text
    body = r.json()
    return body["choices"][0]["text"], body["usage"]["prompt_tokens_details"]["cached_tokens"]


def _reused(stored: str, prompt: str) -> int:
    """The tokens (bytes) of ``prompt`` a cache holding ``stored``'s full blocks gives it: whole shared blocks,
    never its last token."""
    shared = len(os.path.commonprefix([stored.encode(), prompt.encode()]))
    return min(shared // BLOCK, len(stored.encode()) // BLOCK, (len(prompt.encode()) - 1) // BLOCK) * BLOCK


def _without_cache(path, prompts, max_tokens=10):
    with running_app(_app(path, prefix_cache_mb=0)) as url, httpx.Client(base_url=url, timeout=120) as c:
        answers = [_ask(c, p, max_tokens) for p in prompts]
        assert "forgegrad_prefix_cache" not in c.get("/metrics").text
    assert all(cached == 0 for _, cached in answers)
    return [text for text, _ in answers]


@pytest.mark.parametrize("arch", ["gpt2", "mistral", "gemma2"])
def test_a_shared_prefix_is_reused_and_answers_as_without_the_cache(checkpoints, arch):
    """Each prompt after the first reuses the system prompt's full blocks (and a repeated prompt all its blocks
    but the one with its last token) and answers, token for token, what the server without a cache answers;
    the metrics count the hits, the misses and the tokens. Mistral's and Gemma 2's sliding windows are shorter
    than the reused prefixes."""
    prompts = [SYSTEM + q for q in QUESTIONS]
    want = _without_cache(checkpoints[arch], prompts)
    with running_app(_app(checkpoints[arch], prefix_block=BLOCK)) as url, httpx.Client(base_url=url, timeout=120) as c:
        got = [_ask(c, p) for p in prompts]
        m = c.get("/metrics").text
    assert [text for text, _ in got] == want
    expected = [0] + [max(_reused(s, p) for s in prompts[:i]) for i, p in enumerate(prompts) if i]
    assert [cached for _, cached in got] == expected
    assert expected[1] == len(SYSTEM) // BLOCK * BLOCK and expected[3] == (len(prompts[3]) - 1) // BLOCK * BLOCK
    assert metric(m, "forgegrad_prefix_cache_hits_total", model="m") == 3
    assert metric(m, "forgegrad_prefix_cache_misses_total", model="m") == 1
    assert metric(m, "forgegrad_prefix_cache_hit_tokens_total", model="m") == sum(expected)
    # the prompts' blocks, and those of prompt + answer that run past them (test_an_answer_s_keys_are_kept...)
    blocks = len({p.encode()[:(j + 1) * BLOCK] for p in prompts for j in range(len(p.encode()) // BLOCK)})
    kept = metric(m, "forgegrad_prefix_cache_blocks", model="m")
    assert blocks <= kept <= blocks + len(set(prompts))  # 9 answer tokens fed: one block past a prompt at most
    # keys and values, 2 layers, (kv heads, head_dim) (4, 8) / (2, 8) / (2, 16), float32
    per_block = {"gpt2": 2 * 2 * 4 * 8, "mistral": 2 * 2 * 2 * 8, "gemma2": 2 * 2 * 2 * 16}[arch] * BLOCK * 4
    assert metric(m, "forgegrad_prefix_cache_bytes", model="m") == kept * per_block


def test_prompts_diverging_mid_block_reuse_the_whole_blocks_before(checkpoints):
    """A prompt that leaves the cached one in the middle of its third block reuses two blocks; one that differs in
    its first token reuses none; streamed answers report the same usage; chat-free token-id prompts too."""
    base = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOP"  # 52 tokens: three full blocks
    prompts = [base, base[:40] + "!" + base[41:], "Z" + base[1:], base[:33]]
    want = _without_cache(checkpoints["gpt2"], prompts)
    with running_app(_app(checkpoints["gpt2"], prefix_block=BLOCK)) as url, \
            httpx.Client(base_url=url, timeout=120) as c:
        got = [_ask(c, p) for p in prompts]
        with c.stream("POST", "/v1/completions", json={"prompt": list(base[:40].encode()) + [33], "max_tokens": 4,
                                                       "stream": True, "stream_options": {"include_usage": True}}) as s:
            chunks = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
    assert [text for text, _ in got] == want
    assert [cached for _, cached in got] == [0, 32, 0, 32]
    assert chunks[-1]["usage"]["prompt_tokens_details"] == {"cached_tokens": 32}


def test_a_tiny_limit_evicts_the_least_recently_used_blocks(checkpoints):
    """Room for three blocks: a 70-token prompt keeps its first three, another prompt then evicts them for its own,
    so the first prompt asked again reuses nothing (and still answers the same); the bytes stay under the limit."""
    per_block = 2 * 2 * 4 * BLOCK * 8 * 4  # keys and values, 2 layers, 4 heads of 8, float32
    limit_mb = 3 * per_block / 2 ** 20
    first, other = SYSTEM, "Completely different words, so nothing is shared with the other one at all."
    want = _without_cache(checkpoints["gpt2"], [first, other, first])
    with running_app(_app(checkpoints["gpt2"], prefix_block=BLOCK, prefix_cache_mb=limit_mb)) as url, \
            httpx.Client(base_url=url, timeout=120) as c:
        got = [_ask(c, first), _ask(c, first), _ask(c, other), _ask(c, first)]
        m = c.get("/metrics").text
    assert [text for text, _ in got] == [want[0], want[0], want[1], want[2]]
    assert [cached for _, cached in got] == [0, 3 * BLOCK, 0, 0]
    assert metric(m, "forgegrad_prefix_cache_bytes", model="m") == 3 * per_block
    assert metric(m, "forgegrad_prefix_cache_blocks", model="m") == 3
    assert metric(m, "forgegrad_prefix_cache_evictions_total", model="m") == 6  # other's 3, then first's 3


def test_concurrent_requests_share_the_prefix_and_answer_as_without_the_cache(checkpoints):
    """Eight requests at once (two of them with n = 2) sharing the system prompt: prefills run one after another on
    the engine's thread, so every prompt but the first prefilled reuses the system prompt's blocks, while the
    others decode; every answer is the cache-free server's."""
    prompts = [SYSTEM + str(i) + q for i in range(4) for q in QUESTIONS[:2]]  # only the system prompt's blocks shared
    want = _without_cache(checkpoints["gpt2"], prompts, max_tokens=16)
    bodies = [{"prompt": p, "max_tokens": 16, "temperature": 0, "n": 2 if i < 2 else 1} for i, p in enumerate(prompts)]
    with running_app(_app(checkpoints["gpt2"], prefix_block=BLOCK, prefill_chunk=16)) as url:
        answers = [r.json() for r in post_all(url, bodies)]
        with httpx.Client(base_url=url, timeout=120) as c:
            m = c.get("/metrics").text
    assert [[ch["text"] for ch in a["choices"]] for a in answers] == [[w] * b["n"] for w, b in zip(want, bodies)]
    cached = [a["usage"]["prompt_tokens_details"]["cached_tokens"] for a in answers]
    assert sorted(cached)[0] == 0 and sorted(cached)[1:] == [len(SYSTEM) // BLOCK * BLOCK] * 7
    assert metric(m, "forgegrad_prefix_cache_hits_total", model="m") == 7
    assert metric(m, "forgegrad_prefix_cache_misses_total", model="m") == 1


def test_models_where_a_cached_prefix_differs_from_a_prefill_get_no_cache(checkpoints):
    """A dynamic NTK rope picks a call's frequencies by its longest position: its server keeps no prefix cache (no
    cached tokens, no metrics); the decoders above do."""
    assert not prefix_cache_applies(from_pretrained(checkpoints["dynamic"]))
    assert all(prefix_cache_applies(from_pretrained(checkpoints[a])) for a in ("gpt2", "mistral", "gemma2"))
    with running_app(_app(checkpoints["dynamic"])) as url, httpx.Client(base_url=url, timeout=120) as c:
        assert [_ask(c, SYSTEM)[1], _ask(c, SYSTEM)[1]] == [0, 0]
        assert "forgegrad_prefix_cache" not in c.get("/metrics").text


def _filled(ids, layers=2, heads=2, dim=4):
    """A one-row cache whose keys and values at each place are functions of the token there."""
    cache = KVCache(layers, 1, heads, len(ids), dim)
    for layer in range(layers):
        cache.keys[layer][0] = np.asarray(ids, np.float32)[None, :, None] + layer
        cache.values[layer][0] = -np.asarray(ids, np.float32)[None, :, None] - layer
    cache.length = len(ids)
    return cache


def test_a_hash_collision_is_a_miss_never_another_prompts_keys():
    """With every block under one hash, a lookup still checks the tokens and the block before: another prompt's
    block is never loaded, and a stored block is loaded as stored."""

    class Colliding(PrefixCache):
        def _key(self, parent, tokens):
            return 7

    cache = Colliding(1 << 20, block_tokens=4)
    a, b = list(range(1, 10)), list(range(20, 29))
    cache.store(a, _filled(a))
    assert len(cache) == 1  # a's second block collides with its first: not stored
    assert cache.load(b, KVCache(2, 1, 2, 9, 4)) == 0
    got = KVCache(2, 1, 2, 9, 4)
    assert cache.load(a, got) == 4 and got.length == 4
    want = _filled(a)
    for layer in range(2):
        np.testing.assert_array_equal(got.keys[layer][:, :, :4], want.keys[layer][:, :, :4])
        np.testing.assert_array_equal(got.values[layer][:, :, :4], want.values[layer][:, :, :4])
    assert (cache.hits, cache.misses, cache.hit_tokens) == (1, 1, 4)


def test_eviction_takes_the_ends_of_prefixes_first():
    """Blocks are evicted least recently used first, a prefix's later blocks before its earlier ones, so no block
    stays behind whose prefix is gone; a bad size is a ValueError naming it."""
    per_block = 2 * 2 * 2 * 4 * 4 * 4
    cache = PrefixCache(5 * per_block, block_tokens=4)
    shared = list(range(1, 9))  # two blocks
    one, two = shared + [50, 51, 52, 53, 54], shared + [60, 61, 62, 63, 64]
    cache.store(one, _filled(one))
    cache.store(two, _filled(two))  # shared's two blocks, then one block each: 4 blocks
    third = list(range(100, 109))
    cache.store(third, _filled(third))  # two more blocks: evicts one's last block, the least recently used
    assert cache.evictions == 1 and cache.bytes == 5 * per_block
    assert cache.load(two, KVCache(2, 1, 2, 13, 4)) == 12
    assert cache.load(one, KVCache(2, 1, 2, 13, 4)) == 8
    kept = list(cache._blocks.values())
    assert all(b.parent is None or b.parent in kept for b in kept)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="max_bytes"):
            PrefixCache(bad)
    with pytest.raises(ValueError, match="block_tokens"):
        PrefixCache(100, block_tokens=0)


def test_bad_prefix_cache_settings_are_refused(checkpoints):
    from forgegrad.serve.completions import GenerationServeConfig
    for bad in (-1, "big", float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="prefix_cache_mb"):
            GenerationServeConfig(checkpoints["gpt2"], prefix_cache_mb=bad).validate()
    with pytest.raises(ValueError, match="prefix_block"):
        GenerationServeConfig(checkpoints["gpt2"], prefix_block=0).validate()


def test_the_prefix_cache_mb_flag(checkpoints, tmp_path, capsys):
    """``forgegrad serve DIR --prefix-cache-mb 0`` serves without a prefix cache (the same prompt twice reuses
    nothing, no metrics); the flag is refused for a directory that is not a decoder's, and a negative size."""
    from forgegrad.cli import main
    from serve_helpers import start_cli_server, write_checkpoint
    write_checkpoint("mlp", str(tmp_path / "ckpt"))
    assert main(["serve", str(tmp_path / "ckpt"), "--prefix-cache-mb", "64"]) == 2
    assert "--prefix-cache-mb applies to a Hugging Face decoder directory" in capsys.readouterr().err
    assert main(["serve", checkpoints["gpt2"], "--prefix-cache-mb", "-1"]) == 2
    assert "--prefix-cache-mb" in capsys.readouterr().err
    proc, url = start_cli_server(checkpoints["gpt2"], "--threads", "1", "--prefix-cache-mb", "0", "--log-level",
                                 "warning")
    try:
        with httpx.Client(base_url=url, timeout=60) as c:
            assert [_ask(c, SYSTEM)[1], _ask(c, SYSTEM)[1]] == [0, 0]
            assert "forgegrad_prefix_cache" not in c.get("/metrics").text
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_an_answer_s_keys_are_kept_for_the_next_turn(checkpoints):
    """A row that ends leaves the blocks of its prompt and answer (but the answer's last token, never fed): the next
    request, the same prompt followed by that answer (as a chat's next turn is), reuses blocks past its prompt and
    answers as the server without a cache does."""
    first = SYSTEM + "Q: say A."
    forced = {"logit_bias": {"65": 100}, "max_tokens": 40}  # greedy with a bias: forty "A"s
    follow = first + "A" * 39 + " Thanks. Q: and B?"
    want = _without_cache(checkpoints["gpt2"], [follow])
    with running_app(_app(checkpoints["gpt2"], prefix_block=BLOCK)) as url, \
            httpx.Client(base_url=url, timeout=120) as c:
        assert _ask(c, first, **forced) == ("A" * 40, 0)
        got = _ask(c, follow)
    assert got == (want[0], (len(first) + 39) // BLOCK * BLOCK)
    assert got[1] > len(first) // BLOCK * BLOCK


def test_a_chat_s_next_turn_reuses_the_conversation_so_far(tmp_path):
    """Chat completions: the second turn (system prompt, question, the first answer, a new question) reuses the
    first turn's whole prompt and reports it in ``usage.prompt_tokens_details``, and answers as without a cache."""
    from hf_conformance import tiny_chat_gpt2
    chatml = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
              "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    path = str(tiny_chat_gpt2(tmp_path / "chat", chatml))
    first = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hello world, a tiny corpus"}]

    def turns(c):
        r = c.post("/v1/chat/completions", json={"messages": first, "max_tokens": 12, "temperature": 0}).json()
        answer = r["choices"][0]["message"]["content"]
        second = first + [{"role": "assistant", "content": answer}, {"role": "user", "content": "a tiny world"}]
        r2 = c.post("/v1/chat/completions", json={"messages": second, "max_tokens": 12, "temperature": 0}).json()
        return [(x["choices"][0]["message"]["content"], x["usage"]["prompt_tokens"],
                 x["usage"]["prompt_tokens_details"]["cached_tokens"]) for x in (r, r2)]

    with running_app(_app(path, prefix_cache_mb=0)) as url, httpx.Client(base_url=url, timeout=120) as c:
        want = turns(c)
    with running_app(_app(path, prefix_block=BLOCK)) as url, httpx.Client(base_url=url, timeout=120) as c:
        got = turns(c)
    assert [(text, n) for text, n, _ in got] == [(text, n) for text, n, _ in want]
    assert [cached for _, _, cached in want] == [0, 0] and got[0][2] == 0
    assert got[1][2] >= got[0][1] // BLOCK * BLOCK > 0


def test_one_at_a_time_serving_reuses_prefixes_too(checkpoints):
    """``max_batch=1`` (no batched engine: generate, one request after another) keeps and reuses the same blocks:
    the cached tokens, the metrics and a conversation's next turn (prompt + answer reused) as the batched engine's,
    the answers those of the one-at-a-time server without a cache."""
    prompts = [SYSTEM + q for q in QUESTIONS]
    first = SYSTEM + "Q: say A."
    forced = {"logit_bias": {"65": 100}, "max_tokens": 40}  # greedy with a bias: forty "A"s
    follow = first + "A" * 39 + " Thanks. Q: and B?"
    with running_app(_app(checkpoints["gpt2"], max_batch=1, prefix_cache_mb=0)) as url, \
            httpx.Client(base_url=url, timeout=120) as c:
        want = [_ask(c, p) for p in prompts + [follow]]
    assert all(cached == 0 for _, cached in want)
    with running_app(_app(checkpoints["gpt2"], max_batch=1, prefix_block=BLOCK)) as url, \
            httpx.Client(base_url=url, timeout=120) as c:
        got = [_ask(c, p) for p in prompts]
        with c.stream("POST", "/v1/completions", json={"prompt": prompts[1], "max_tokens": 4, "stream": True,
                                                       "stream_options": {"include_usage": True}}) as s:
            chunks = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
        assert _ask(c, first, **forced) == ("A" * 40, len(SYSTEM) // BLOCK * BLOCK)
        got.append(_ask(c, follow))
        m = c.get("/metrics").text
    assert [text for text, _ in got] == [text for text, _ in want]
    expected = [0] + [max(_reused(s, p) for s in prompts[:i]) for i, p in enumerate(prompts) if i]
    assert [cached for _, cached in got[:4]] == expected and expected[1] > 0
    assert chunks[-1]["usage"]["prompt_tokens_details"] == {"cached_tokens": (len(prompts[1]) - 1) // BLOCK * BLOCK}
    assert got[4][1] == (len(first) + 39) // BLOCK * BLOCK > len(first) // BLOCK * BLOCK  # the answer's blocks too
    assert metric(m, "forgegrad_prefix_cache_misses_total", model="m") == 1
    assert metric(m, "forgegrad_prefix_cache_hits_total", model="m") == 6
    assert metric(m, "forgegrad_prefix_cache_hit_tokens_total", model="m") == sum(
        cached for _, cached in got) + chunks[-1]["usage"]["prompt_tokens_details"]["cached_tokens"] + len(
        SYSTEM) // BLOCK * BLOCK


def test_generate_with_a_prefix_cache(checkpoints):
    """generate's ``prefix_cache``: a second call reads the first prompt's blocks and gives the same tokens; calls
    it cannot serve (two prompts, beams, a model it does not apply to) are refused, naming why."""
    from forgegrad.models.hf import generate
    model = from_pretrained(checkpoints["gpt2"])
    prompt = list((SYSTEM + "Q: hi").encode())
    want = generate(model, [prompt], max_new_tokens=8, do_sample=False)
    cache = PrefixCache(1 << 24, BLOCK)
    for expected_hits in (0, (len(prompt) - 1) // BLOCK * BLOCK):
        np.testing.assert_array_equal(generate(model, [prompt], max_new_tokens=8, do_sample=False,
                                               prefix_cache=cache), want)
        assert cache.hit_tokens == expected_hits
    with pytest.raises(ValueError, match="one prompt"):
        generate(model, [prompt, prompt], max_new_tokens=2, prefix_cache=cache)
    with pytest.raises(ValueError, match="num_beams"):
        generate(model, [prompt], max_new_tokens=2, num_beams=2, prefix_cache=cache)
    with pytest.raises(ValueError, match="dynamic NTK"):
        generate(from_pretrained(checkpoints["dynamic"]), [prompt[:20]], max_new_tokens=2, prefix_cache=cache)
    with pytest.raises(TypeError, match="PrefixCache"):
        generate(model, [prompt], max_new_tokens=2, prefix_cache={})


def test_a_prefix_cache_that_cannot_apply_is_named_at_startup(checkpoints, tmp_path, caplog):
    """A model the prefix cache does not apply to (a length-dependent rope, an encoder-decoder) is served without one,
    and the startup log says why, once: a warning where prefix_cache_mb was given (the flag has no effect), an info
    line by default; one at a time as batched."""
    import logging

    from hf_conformance import tiny_generator
    tiny_generator("t5", 300).save_pretrained(tmp_path / "t5")
    cases = [(checkpoints["dynamic"], {"max_batch": 1}, "DynamicNTKRopeEmbedding"),
             (checkpoints["dynamic"], {}, "DynamicNTKRopeEmbedding"),
             (str(tmp_path / "t5"), {}, "encoder-decoder")]
    for path, kw, why in cases:
        for given in (64, None):
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="forgegrad.serve"):
                with running_app(_app(path, prefix_cache_mb=given, **kw)) as url, \
                        httpx.Client(base_url=url, timeout=120) as c:
                    if path == checkpoints["dynamic"]:
                        assert [_ask(c, SYSTEM)[1], _ask(c, SYSTEM)[1]] == [0, 0]
                    assert "forgegrad_prefix_cache" not in c.get("/metrics").text
            said = [r for r in caplog.records if "no prefix cache" in r.getMessage()]
            assert len(said) == 1 and why in said[0].getMessage(), caplog.text
            assert "--prefix-cache-mb has no effect" in said[0].getMessage()
            assert said[0].levelno == (logging.WARNING if given else logging.INFO)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="forgegrad.serve"), running_app(_app(checkpoints["gpt2"], max_batch=1)):
        pass
    assert not any("no prefix cache" in r.getMessage() for r in caplog.records)
    assert any("one at a time, a prefix cache of up to 1024 MiB" in r.getMessage() for r in caplog.records)


def test_generate_with_a_prefix_cache_names_bad_prompts(checkpoints):
    """An empty or malformed prompt with ``prefix_cache`` gets generate's own error naming input_ids (as without the
    cache), not numpy's."""
    from forgegrad.models.hf import generate
    model = from_pretrained(checkpoints["gpt2"])
    for bad, words in (([[]], "at least one token"), ([], "at least one token"), ("abc", "shape"),
                       (np.zeros((1, 0), np.int64), "at least one token")):
        for cache in (None, PrefixCache(1 << 20, BLOCK)):
            with pytest.raises(ValueError, match=f"generate: input_ids .*{words}"):
                generate(model, bad, max_new_tokens=2, prefix_cache=cache)


def test_threads_sharing_one_prefix_cache_take_turns():
    """generate calls on several threads may share one PrefixCache: a store evicting another thread's prefix while
    that thread stores after it waits its turn (a lock), where it used to leave a block whose prefix was evicted and
    fail with a KeyError. Thread A stops inside its store (reading its cache's keys); thread B's store, which needs
    A's prefix's room, must not run until A's is done."""
    import threading
    per_block = 2 * 2 * 2 * 4 * 4 * 4
    cache = PrefixCache(3 * per_block, block_tokens=4)
    prefix = list(range(1, 9))  # two blocks, kept first
    cache.store(prefix, _filled(prefix))
    inside, go, errors = threading.Event(), threading.Event(), []

    class Paused(KVCache):
        """A's cache: the first read of its keys (inside store, after the prefix's blocks were matched) waits."""

        @property
        def keys(self):
            if not inside.is_set():
                inside.set()
                go.wait(10)
            return self._keys

        @keys.setter
        def keys(self, value):
            self._keys = value

    longer = prefix + [40, 41, 42, 43]
    a = _filled(longer)
    paused = Paused(2, 1, 2, len(longer), 4)
    paused.keys, paused.values, paused.length = a.keys, a.values, a.length

    def run(ids, kv):
        try:
            cache.store(ids, kv)
        except Exception as e:  # noqa: BLE001 - the test reports it
            errors.append(e)

    other = list(range(100, 113))  # three blocks: all the room, so storing them evicts the prefix's
    thread_a = threading.Thread(target=run, args=(longer, paused))
    thread_a.start()
    assert inside.wait(10)
    thread_b = threading.Thread(target=run, args=(other, _filled(other)))
    thread_b.start()
    thread_b.join(1.0)  # with the lock it waits for A (this join times out); without, it evicts A's prefix now
    go.set()
    thread_a.join(10)
    thread_b.join(10)
    assert errors == []
    kept = list(cache._blocks.values())
    assert all(b.parent is None or b.parent in kept for b in kept)
    assert cache.bytes == sum(b.kv.nbytes for b in kept) <= cache.max_bytes
