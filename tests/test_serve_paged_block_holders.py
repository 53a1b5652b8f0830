"""Who holds and who writes the paged KV cache's blocks (serve/kv_pool.py), checked at every decode step while rows are
preempted: a block's reference count is the number of its holders (rows' block tables, an encoder-decoder row's
source table, a prefill under way, the prefix cache), and every write lands in a block only one holder has: a prompt
prefilled straight into blocks (``BlockCache.store``) past a cached prefix, a choice's copy of the prompt's partial
last block, a row's decode step. Shared blocks (a prompt's, the prefix cache's, a source's) are never written.

Decoder-only: a grouped-query Llama with the prefix cache, a chunked prefill, prompts of exactly two blocks (no partial
last block), n = 2 and 3, two prompts in one request, max_tokens ending a row on a block boundary. Encoder-decoder:
mBART (its forced first and last tokens) whose preempted choices come back sharing the source blocks a sibling still
decoding holds. Both answer as a pool with room for every row does (checkpoints transformers wrote; the engines
driven directly, as the server drives them)."""
from __future__ import annotations

import json
import threading
from collections import Counter

import numpy as np
import pytest

from forgegrad.serve.kv_pool import BlockCache, KVPool

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
transformers.logging.set_verbosity_error()

SYS = "0123456789abcdef" * 2  # 32 byte tokens: two full blocks of 16


@pytest.fixture
def watched_writes(monkeypatch):
    """Every prefill write's and choice copy's target blocks with more than one holder, appended to a list."""
    shared = []
    store, copy = BlockCache.store, KVPool.copy

    def checked_store(self, layer, k, v):
        B = self.pool.block_tokens
        for j in range(self.length // B, min(len(self.table), -(-(self.length + k.shape[2]) // B))):
            if self.pool.refs[self.table[j]] != 1:
                shared.append(("prefill", self.table[j], int(self.pool.refs[self.table[j]])))
        return store(self, layer, k, v)

    def checked_copy(self, src, dst, places):
        if self.refs[dst] != 1:
            shared.append(("copy", dst, int(self.refs[dst])))
        return copy(self, src, dst, places)

    monkeypatch.setattr(BlockCache, "store", checked_store)
    monkeypatch.setattr(KVPool, "copy", checked_copy)
    return shared


def _checked(base, shared, steps):
    """``base`` (an engine class) checking before each decode step that every block's reference count is its number
    of holders, that the choices of one prompt read one copy of its source, and that the block each row writes is its
    own (``shared``: the violations; ``steps``: steps checked)."""

    class Checked(base):
        def _step(self):
            pool, B = self.pool, self.pool.block_tokens
            lean_step = self.lean.step

            def step(tokens, positions, padding, kv):
                holders = Counter()
                for r in self.rows:
                    holders.update(r.table)
                    holders.update(getattr(r, "cross_table", None) or [])
                if self.prefills and getattr(self.prefills[0], "blocks", None):  # a prefill under way
                    holders.update(self.prefills[0].blocks)
                if self.prefix is not None:
                    holders.update(b.block for b in self.prefix._blocks.values())
                counted = np.zeros_like(pool.refs)
                for block, n in holders.items():
                    counted[block] = n
                if not np.array_equal(counted, pool.refs):
                    shared.append(("refs", np.flatnonzero(counted != pool.refs).tolist()))
                sources = {}  # the choices of one prompt of a request read one copy of its source's keys
                for r in self.rows:
                    if getattr(r, "cross_table", None) is not None:
                        key = (id(r.job), tuple(r.job.prompt_ids[r.index]))
                        if sources.setdefault(key, r.cross_table) != r.cross_table:
                            shared.append(("second copy of a source", sources[key], r.cross_table))
                    if pool.refs[r.table[r.n // B]] != 1:
                        shared.append(("decode", r.table[r.n // B], int(pool.refs[r.table[r.n // B]])))
                steps.append(len(self.rows))
                return lean_step(tokens, positions, padding, kv)

            self.lean.step = step
            try:
                super()._step()
            finally:
                self.lean.step = lean_step

    return Checked


def _run(engine, bodies):
    """Every body submitted at once (its "prompt": token ids, or a list of them: a row each); per request its
    completions and the log-probabilities each row streamed."""
    from forgegrad.serve.completion_request import parse
    from forgegrad.serve.generation_batch import Job
    futures, streamed = [], []
    try:
        for body in bodies:
            prompts = body["prompt"] if isinstance(body["prompt"][0], list) else [body["prompt"]]
            req = parse(json.dumps(dict(body, prompt=prompts[0], model="m", stream=True)).encode(), "m")
            got = {}
            streamed.append(got)

            def on_text(i, text, lp, got=got):
                got.setdefault(i, []).extend(e.logprob for e in lp or [])

            ids = [p for p in prompts for _ in range(req.candidates)]
            futures.append(engine.submit(Job(req, ids, on_text, threading.Event())))
        return [f.result(timeout=120) for f in futures], streamed
    finally:
        engine.close()


def _same_answers(want, got):
    (a, a_lp), (b, b_lp) = want, got
    assert [[(c.token_ids, c.finish_reason) for c in r] for r in b] == [[(c.token_ids, c.finish_reason) for c in r]
                                                                       for r in a]
    for x, y in zip(a_lp, b_lp):
        assert sorted(x) == sorted(y)
        for i in x:
            np.testing.assert_allclose(y[i], x[i], atol=1e-5, rtol=1e-5)


def test_a_decoder_s_shared_blocks_are_never_written(tmp_path, watched_writes):
    from forgegrad.serve.completions import TextGenerator
    from forgegrad.serve.paged_batch import PagedBatchEngine
    from forgegrad.serve.prefix_cache import PagedPrefixCache
    torch.manual_seed(1)
    transformers.LlamaForCausalLM(transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=300, max_position_embeddings=512, initializer_range=0.3, eos_token_id=299,
        bos_token_id=298)).save_pretrained(tmp_path)
    ids = lambda text: list(text.encode())  # noqa: E731 (byte tokens)
    bodies = [dict(prompt=ids(SYS), max_tokens=16, temperature=0, logprobs=2),  # ends as its third block fills
              dict(prompt=ids(SYS + "0123456789ABCDEF"), max_tokens=32, temperature=0.9, seed=5, n=3, logprobs=1),
              dict(prompt=ids(SYS + "xyz"), max_tokens=29, temperature=0, n=2),
              dict(prompt=ids(SYS), max_tokens=33, temperature=0.8, seed=2, n=2),
              dict(prompt=[ids(SYS + "AB"), ids(SYS + "0123456789ABCDEF")], max_tokens=20, temperature=1.0, seed=4),
              dict(prompt=ids("Hello"), max_tokens=43, temperature=0)] * 2
    bodies = [dict(b, ignore_eos=True) for b in bodies]
    gen = TextGenerator(str(tmp_path))
    steps = []
    roomy = _checked(PagedBatchEngine, watched_writes, steps)(
        gen, 8, KVPool.for_model(gen.model, blocks=512, block_tokens=16), prefill_chunk=0)
    want = _run(roomy, bodies)
    pool = KVPool.for_model(gen.model, blocks=14, block_tokens=16)
    prefix = PagedPrefixCache(1 << 20, 16, pool)
    tight = _checked(PagedBatchEngine, watched_writes, steps)(gen, 8, pool, prefix_cache=prefix, prefill_chunk=8,
                                                             lookahead=0)
    got = _run(tight, bodies)
    assert pool.preemptions > 0 and prefix.hits > 0 and pool.peak <= 14 and len(steps) > 100
    assert watched_writes == []
    _same_answers(want, got)
    assert pool.reserved == 0 and pool.in_use == len(prefix)  # only the prefix cache holds blocks, once each
    assert sorted(pool.refs[b.block] for b in prefix._blocks.values()) == [1] * len(prefix)


def test_a_preempted_seq2seq_choice_shares_its_sibling_s_source_blocks(tmp_path, watched_writes):
    from forgegrad.serve.completions import TextGenerator
    from forgegrad.serve.paged_seq2seq import PagedSeq2SeqEngine
    torch.manual_seed(0)
    hf = transformers.MBartForConditionalGeneration(transformers.MBartConfig(
        vocab_size=300, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=40, max_position_embeddings=512, dropout=0.0,
        init_std=0.5, eos_token_id=299, decoder_start_token_id=299, pad_token_id=1, bos_token_id=0,
        forced_eos_token_id=299))
    hf.generation_config.forced_bos_token_id = 7  # mBART's target-language token
    hf.save_pretrained(tmp_path)
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({f"t{i}": i for i in range(300)}, unk_token="t2"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    rng = np.random.default_rng(5)
    p16, p32, p17 = ([int(t) for t in rng.integers(2, 290, n)] for n in (16, 32, 17))
    bodies = [dict(prompt=p16, max_tokens=16, temperature=0),
              dict(prompt=p32, max_tokens=32, temperature=0.9, seed=3, n=3, logprobs=1),
              dict(prompt=p17, max_tokens=33, temperature=1.0, seed=4, n=3),
              dict(prompt=[p16, p17], max_tokens=31, temperature=0.7, seed=9, logprobs=2),
              dict(prompt=p32, max_tokens=17, temperature=0, logprobs=3)] * 2
    bodies = [dict(b, ignore_eos=True) for b in bodies]
    shared_sources = []

    class Sharing(PagedSeq2SeqEngine):
        def _sibling_source(self, row):
            blocks = super()._sibling_source(row)
            if blocks is not None:
                shared_sources.append(list(blocks))
            return blocks

    gen = TextGenerator(str(tmp_path))
    steps = []
    want = _run(_checked(Sharing, watched_writes, steps)(
        gen, 8, KVPool.for_model(gen.model, blocks=256, block_tokens=16)), bodies)
    assert not shared_sources
    pool = KVPool.for_model(gen.model, blocks=12, block_tokens=16)
    got = _run(_checked(Sharing, watched_writes, steps)(gen, 8, pool, lookahead=0), bodies)
    assert pool.preemptions > 0 and shared_sources and pool.peak <= 12 and len(steps) > 100
    assert watched_writes == []
    _same_answers(want, got)
    assert all(len(c.token_ids) == 32 and c.token_ids[0] == 7 for c in got[0][1])  # the forced first token
    assert pool.reserved == 0 and pool.in_use == 0 and not pool.refs.any()
