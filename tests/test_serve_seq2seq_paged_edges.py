"""Encoder-decoders on the paged KV cache (serve/paged_seq2seq.py): the reference counts of a source's blocks
shared by a request's n choices and the reservations of rows that end early (stop strings, end tokens, a client that
goes away while its rows decode or while its prompt waits for blocks) leave no block held; a cancelled request waiting
behind a full pool is answered at once; mBART's and NLLB's forced language token (``forced_bos_token_id``) on the pool
gives transformers' tokens (the engine driven directly, as the server drives it; checkpoints transformers wrote)."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
transformers.logging.set_verbosity_error()

from test_serve_seq2seq_batching import EOS, PROMPTS, _write  # noqa: E402


def _engine(path, blocks):
    from forgegrad.serve.completions import TextGenerator
    from forgegrad.serve.kv_pool import KVPool
    from forgegrad.serve.paged_seq2seq import PagedSeq2SeqEngine
    gen = TextGenerator(str(path))
    return PagedSeq2SeqEngine(gen, 8, KVPool.for_model(gen.model, blocks=blocks, block_tokens=16))


def _job(body, ids, cancelled, on_text=None):
    from forgegrad.serve.completion_request import parse
    from forgegrad.serve.generation_batch import Job
    req = parse(json.dumps(dict(body, prompt=ids, model="m", stream=True)).encode(), "m")
    return Job(req, [ids] * body.get("n", 1), on_text or (lambda *a: None), cancelled)


def _assert_clean(pool):
    assert pool.reserved == 0 and pool.in_use == 0 and not pool.refs.any()
    assert sorted(pool._free) == list(range(pool.blocks))


@pytest.mark.parametrize("kind", ["bart", "m2m100", "t5"])
def test_no_block_is_left_held_after_cancellations_stops_and_early_ends(tmp_path, kind):
    """Forty requests (sources of 1-59 tokens, n up to 3, stop strings, end tokens or not, some cancelled before they
    run, some by their client after a few chunks) through a pool of 14 blocks: every request answers, prompts waited
    for blocks (rows may have been preempted too), and afterwards no block is held or reserved (each source's blocks
    released once per choice)."""
    _write(kind, tmp_path / kind)
    engine = _engine(tmp_path / kind, 14)
    rng = np.random.default_rng(0)
    futures = []
    try:
        for i in range(40):
            ids = [int(t) for t in rng.integers(2, 290, int(rng.integers(1, 60)))]
            body = {"prompt": ids, "max_tokens": int(rng.integers(1, 40)), "temperature": 0.8, "seed": i,
                    "n": int(rng.integers(1, 4)), "ignore_eos": i % 3 == 0}
            if i % 4 == 0:
                body["stop"] = ["t1"]
            if i % 7 == 0:
                body["logprobs"] = 2
            cancelled = threading.Event()
            if i % 9 == 4:
                cancelled.set()

            def on_text(index, text, lp, seen=[0], cancelled=cancelled, cancel=i % 5 == 1):
                seen[0] += 1
                if cancel and seen[0] > 5:
                    cancelled.set()

            futures.append((body, engine.submit(_job(body, ids, cancelled, on_text))))
        results = [(body, f.result(timeout=120)) for body, f in futures]
    finally:
        engine.close()
    assert all(len(r) == body["n"] for body, r in results)
    assert {c.finish_reason for _, r in results for c in r} >= {"cancelled", "length", "stop"}
    assert engine.pool.waits > 0
    _assert_clean(engine.pool)


def test_a_cancelled_request_waiting_for_blocks_is_answered_at_once(tmp_path):
    """A 40-token source decoding 200 tokens takes all 16 blocks as it grows; two requests submitted once it holds
    them wait (a waiting prompt preempts nobody); the second, cancelled by its client while it waits behind the first,
    is answered (with nothing) at once, not once its turn comes; the waiting one is served when the first is done."""
    _write("bart", tmp_path / "bart")
    engine = _engine(tmp_path / "bart", 16)
    done, later = [], []

    def submit(name, ids, max_tokens, on_text=None):
        cancelled = threading.Event()
        if name == "cancelled":
            cancelled.set()
        body = {"max_tokens": max_tokens, "temperature": 0, "ignore_eos": name == "first"}
        job = engine.submit(_job(body, ids, cancelled, on_text))
        job.add_done_callback(lambda f, name=name: done.append(name))
        return job

    def full(*_):  # the engine's thread: the pool is full as the first row streams on
        if engine.pool.in_use == 16 and not later:
            later.extend([submit("waiting", PROMPTS[2], 9), submit("cancelled", [7], 9)])

    try:
        first = submit("first", PROMPTS[1], 200, full)
        results = [first.result(timeout=120)] + [j.result(timeout=120) for j in later]
    finally:
        engine.close()
    assert done == ["cancelled", "first", "waiting"] and engine.pool.waits == 1 and engine.pool.preemptions == 0
    assert [r[0].finish_reason for r in results][::2] == ["length", "cancelled"] and results[2][0].token_ids == []
    assert len(results[0][0].token_ids) == 200 and engine.pool.peak == 16
    _assert_clean(engine.pool)


def _language_pair(kind, path):
    """A tiny mBART or NLLB (M2M100) whose generation_config forces a target-language token first, as the Hub's
    translation checkpoints do; the transformers model (eval mode) to compare with."""
    torch.manual_seed(0)
    common = dict(vocab_size=300, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                  decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=40, max_position_embeddings=512,
                  dropout=0.0, init_std=0.5, eos_token_id=EOS, decoder_start_token_id=EOS, pad_token_id=1,
                  bos_token_id=0)
    if kind == "mbart":  # mbart-large-cc25's kind: forced last token too
        hf = transformers.MBartForConditionalGeneration(transformers.MBartConfig(**common, forced_eos_token_id=EOS))
    else:
        hf = transformers.M2M100ForConditionalGeneration(transformers.M2M100Config(**common, scale_embedding=True))
    hf.eval()
    hf.generation_config.forced_bos_token_id = 17
    hf.save_pretrained(path)
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({f"t{i}": i for i in range(300)}, unk_token="t2"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(path / "tokenizer.json"))
    return hf


@pytest.mark.parametrize("kind", ["mbart", "nllb"])
def test_forced_language_tokens_on_the_pool_are_transformers(tmp_path, kind):
    """Four greedy requests at once (sources of 2-40 tokens) on a pool of 9 blocks, so some wait: each answer starts
    with the forced language token and is transformers' generate's; no block is held afterwards."""
    hf = _language_pair(kind, tmp_path / kind)
    lengths = [40, 7, 25, 33]
    want = []
    for ids, n in zip(PROMPTS, lengths):
        with torch.no_grad():
            out = hf.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, num_beams=1)[0, 1:].tolist()
        want.append(out[:out.index(EOS)] if EOS in out else out)
    engine = _engine(tmp_path / kind, 9)
    try:
        futures = [engine.submit(_job({"max_tokens": n, "temperature": 0}, ids, threading.Event()))
                   for ids, n in zip(PROMPTS, lengths)]
        got = [[t for t in f.result(timeout=120)[0].token_ids if t != EOS] for f in futures]
    finally:
        engine.close()
    assert all(w[0] == 17 for w in want) and got == want
    assert engine.pool.waits > 0
    _assert_clean(engine.pool)
