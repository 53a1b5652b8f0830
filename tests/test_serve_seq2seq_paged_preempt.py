"""Preemption of encoder-decoder rows on the paged KV cache (serve/paged_seq2seq.py): in a pool too small for the rows
running together, the row that came last lets its decoder blocks and its hold on its source's go, and is encoded again
and its decoder tokens prefilled again once blocks are free. Its client sees only a pause: the tokens of a pool with
room for all (greedy ones ``generate``'s; seeded sampling, n = 2, what the same seed gives without preemption; BART's
no-repeated-trigram and forced tokens; T5's relative-position bias), log-probabilities to float32 rounding, a stream
whose chunks spell the answer once; a request cancelled while preempted is answered at once; no block stays held
(the engine driven directly, as the server drives it; checkpoints transformers wrote)."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
transformers.logging.set_verbosity_error()

from test_serve_seq2seq_batching import PROMPTS, _solo, _write  # noqa: E402

BODIES = [{"prompt": PROMPTS[1], "max_tokens": 40, "temperature": 0},
          {"prompt": PROMPTS[0], "max_tokens": 40, "temperature": 0, "logprobs": 2},
          {"prompt": PROMPTS[3], "max_tokens": 40, "temperature": 1.0, "seed": 7, "n": 2, "logprobs": 2,
           "ignore_eos": True},
          {"prompt": PROMPTS[2], "max_tokens": 36, "temperature": 0.8, "top_p": 0.9, "seed": 11, "ignore_eos": True},
          {"prompt": PROMPTS[0], "max_tokens": 40, "temperature": 0, "ignore_eos": True}]


@pytest.fixture(scope="module", params=["bart", "t5"])
def checkpoint(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("seq2seq-preempt") / request.param
    _write(request.param, path)
    return path


def _engine(path, blocks, cls=None):
    from forgegrad.serve.completions import TextGenerator
    from forgegrad.serve.kv_pool import KVPool
    from forgegrad.serve.paged_seq2seq import PagedSeq2SeqEngine
    gen = TextGenerator(str(path))
    return (cls or PagedSeq2SeqEngine)(gen, 8, KVPool.for_model(gen.model, blocks=blocks, block_tokens=16),
                                       lookahead=0)


def _run(engine, bodies, cancel=()):
    """Submit every body at once; per request its completions, and per row the text chunks and log-probability
    entries it streamed. ``cancel``: indices of requests whose Event the caller sets (returned as well)."""
    from forgegrad.serve.completion_request import parse
    from forgegrad.serve.generation_batch import Job
    futures, streamed, events = [], [], []
    try:
        for body in bodies:
            req = parse(json.dumps(dict(body, model="m", stream=True)).encode(), "m")
            got = {}
            streamed.append(got)

            def on_text(i, text, lp, got=got):
                texts, entries = got.setdefault(i, ([], []))
                texts.append(text)
                entries.extend(lp or [])

            events.append(threading.Event())
            futures.append(engine.submit(Job(req, [body["prompt"]] * body.get("n", 1), on_text, events[-1])))
        return [f.result(timeout=120) for f in futures], streamed
    finally:
        engine.close()


def _assert_clean(pool):
    assert pool.reserved == 0 and pool.in_use == 0 and not pool.refs.any()
    assert sorted(pool._free) == list(range(pool.blocks))


def test_preempted_rows_answer_as_without_preemption(checkpoint):
    from forgegrad.models import from_pretrained
    roomy = _engine(checkpoint, 256)
    want, want_streamed = _run(roomy, BODIES)
    tight = _engine(checkpoint, 9)
    got, got_streamed = _run(tight, BODIES)
    assert roomy.pool.preemptions == 0 and tight.pool.preemptions > 0 and tight.pool.recomputed_tokens > 0
    assert tight.pool.peak <= 9
    for a, b in zip(want, got):
        assert [c.token_ids for c in b] == [c.token_ids for c in a]
        assert [c.finish_reason for c in b] == [c.finish_reason for c in a]
    assert len(got[2][0].token_ids) == 40 and got[2][0].token_ids != got[2][1].token_ids  # n = 2: two samples
    for a, b, result in zip(want_streamed, got_streamed, got):
        for i, (texts, entries) in b.items():
            assert "".join(texts) == result[i].text  # every token once: nothing streamed twice, nothing skipped
            assert [e.token for e in entries] == [e.token for e in a[i][1]]
            # float32 rounding: the recomputed keys are a decoder prefill's, not the decode steps' (T5's larger
            # logits move a log-probability by ~3e-5)
            np.testing.assert_allclose([e.logprob for e in entries], [e.logprob for e in a[i][1]], atol=1e-5,
                                       rtol=1e-4)
    model = from_pretrained(checkpoint)
    for body, (c,) in ((b, r) for b, r in zip(BODIES, got) if b["temperature"] == 0 and not b.get("ignore_eos")):
        assert (c.text, c.completion_tokens) == _solo(model, body["prompt"], body["max_tokens"])
    _assert_clean(tight.pool)


def test_a_request_cancelled_while_preempted_is_answered_at_once(checkpoint):
    """The first row preempted is cancelled by its client as it leaves the batch: its request is answered with the
    tokens it had (finish_reason "cancelled"), its blocks stay in the pool, and the others answer as before."""
    from forgegrad.serve.paged_seq2seq import PagedSeq2SeqEngine

    class CancelsTheFirstPreempted(PagedSeq2SeqEngine):
        victims = []

        def _preempt(self, victim):
            super()._preempt(victim)
            if not self.victims:
                self.victims.append((victim.job, len(victim.stream.tokens)))
                victim.job.cancelled.set()  # its client goes away while it waits in line

    roomy, _ = _run(_engine(checkpoint, 256), BODIES)
    engine = _engine(checkpoint, 9, CancelsTheFirstPreempted)
    got, _ = _run(engine, BODIES)
    (job, had), = engine.victims
    index = next(i for i, r in enumerate(got) if any(c.finish_reason == "cancelled" for c in r))
    cancelled = [c for c in got[index] if c.finish_reason == "cancelled"]
    assert len(cancelled) >= 1 and any(len(c.token_ids) == had for c in cancelled)
    for i, (a, b) in enumerate(zip(roomy, got)):
        if i != index:
            assert [c.token_ids for c in b] == [c.token_ids for c in a]
        else:  # what it had streamed is the start of its answer without preemption
            assert all(c.token_ids == w.token_ids[:len(c.token_ids)] for c, w in zip(b, a))
    _assert_clean(engine.pool)
