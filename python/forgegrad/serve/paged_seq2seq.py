"""Continuous batching of BART's family (BART, Marian, mBART, M2M100 / NLLB, Pegasus, BlenderBot, PEGASUS-X,
NLLB-MoE) and T5's (T5, mT5, umT5, LongT5) on the paged KV cache (kv_pool.py):
the completions server's encoder-decoder engine when the pool applies. The loop is paged_batch.py's (admission,
one batched decode step of every row, each row's own token rules and sampler, no padding, no rebuild); the prefill
is seq2seq_batch.py's (the encoder once on the prompt, its choices joining with the decoder's start token).

* Both kinds of keys live in the one pool, in blocks of the same shape (every decoder layer's heads, block_tokens
  places, head_dim): a row's decoder self-attention keys and values in its own block table, which grows as it
  decodes; its encoder keys and values (each decoder layer's cross-attention projections of the encoder output) in a
  second table, written once as it joins and shared by reference count by a request's n choices of one prompt. The
  step attends through both tables with the paged kernel (models/hf/_decode_seq2seq.py ``PagedCross``), each row to
  its own source length, so no row pads to the batch's longest source.
* ``--kv-cache-mb`` bounds both, and blocks are taken as rows grow, as the decoder-only engine takes them: a prompt
  about to be encoded reserves its source's blocks and, for each of its rows, the blocks of its first ``lookahead``
  decoder keys, and waits, first in line, while the pool cannot give them; a decoding row that fills its blocks takes
  one more. When the pool has none left, the row that came last (its request's arrival, then its choice index) is
  preempted: its decoder blocks and its hold on its source's go back and it waits at the head of the line, before
  every later request; once blocks are free again its source is encoded again (its encoder keys into new blocks, or
  the blocks a choice of its request still decoding holds, shared again) and the decoder tokens it had fed (the start
  token and its answer but the last token picked) are prefilled again in one decoder call, straight into its blocks
  (kv_pool.BlockCache), and it decodes on from the token it had picked. Nothing it picks is picked again, so its
  random generator, its processors' state and its stream go on as if it had never left: the client sees only a
  pause. A request whose rows need more blocks than the whole pool (source and max_tokens, every choice) fails with a
  400 as it arrives.
* T5's self-attention adds a learned relative-position bias per head and distance: the paged kernel
  (``_C.attention.paged_decode``) takes it as a table (heads, max_distance + 1) by distance, built once per model
  (T5LeanStep), each row's query at its own last key, so rows of any lengths share one step.

* NLLB-MoE's expert capacity counts the tokens of a call: each row's token is routed as a step of that row alone
  would route it (the lean step's ``rows_alone``), and a preempted row's decoder tokens are fed again one per call,
  so that its answer is ``generate``'s on its prompt alone.

A row's logits equal its solo logits to float32 rounding (the contiguous engine's claim; here no row reads another's
padding at all). A preempted row's recomputed keys are a decoder prefill's, equal to the ones it had to float32
rounding as well.
"""
from __future__ import annotations

import logging
from typing import List

import numpy as np

from ..autograd import no_grad
from .generation_batch import _Prefill, _Row
from .kv_pool import BlockCache, KVPool, PoolFull, table_array
from .paged_batch import PagedBatchEngine, _Resume

log = logging.getLogger("forgegrad.serve")


def paged_seq2seq_applies(model) -> bool:
    """An encoder-decoder whose lean step can run on the paged pool: BART's family (PEGASUS-X's and NLLB-MoE's
    decoders are its own) and T5, mT5, umT5 and LongT5 (their relative-position bias a table by distance in the paged
    kernel; umT5's one per layer; LongT5's decoder is T5's)."""
    from ..models.hf import bart, longt5, t5
    return isinstance(model, bart.BartForConditionalGeneration) or type(model) in (
        t5.T5ForConditionalGeneration, t5.MT5ForConditionalGeneration, t5.UMT5ForConditionalGeneration,
        longt5.LongT5ForConditionalGeneration)


class _Reencode(_Resume):
    """A preempted row waiting for blocks to come back: its source to encode again (``ids``) and the decoder tokens
    it had fed (``decoder``: the start token and its answer but the last token picked) to prefill again; then it
    rejoins the batch as it was (its next token already picked)."""

    def __init__(self, row: _Row, start: int):
        _Prefill.__init__(self, row.job, list(row.job.prompt_ids[row.index]), None)
        self.row = row
        self.decoder = [start] + list(row.stream.tokens[:row.n - 1]) if row.n else []
        self.redo = len(self.ids) + len(self.decoder)  # recomputed_tokens: the source's and the decoder's


class _PagedStep:
    """The engine's lean step as ``step(tokens, positions, padding, kv)`` (PagedBatchEngine's call), each row's
    encoder blocks bound beside its decoder blocks (``kv``, a PagedKV)."""

    def __init__(self, lean, engine: "PagedSeq2SeqEngine"):
        self.lean, self.engine = lean, engine

    def step(self, tokens: np.ndarray, positions: np.ndarray, padding, kv) -> np.ndarray:
        from ..models.hf._decode_seq2seq import PagedCross
        rows, pool = self.engine.rows, self.engine.pool  # the order PagedBatchEngine._step built tokens in
        cross = PagedCross(pool.keys, pool.values, table_array([r.cross_table for r in rows]),
                           np.array([r.source for r in rows], np.int64))
        self.lean.rebind(kv, cross, None)
        try:
            return self.lean(tokens, positions)
        finally:
            self.lean.rebind(None, [], None)  # no hold on the step's tables between steps


class PagedSeq2SeqEngine(PagedBatchEngine):
    """PagedBatchEngine for BART's family and T5: ``submit(job)`` (its prompts are the encoder's inputs); ``close()``.

    Args:
        gen: the server's TextGenerator (an encoder-decoder that ``paged_seq2seq_applies`` to).
        max_batch: rows decoded together.
        pool: the KVPool both the decoder's and the encoder's keys live in (``KVPool.for_model``: the decoder's
            layers, heads and head_dim, which its cross-attention shares).
        lookahead: decoder tokens (past those it has) whose blocks a row reserves as it joins; it takes the blocks
            beyond them as it grows. None: one block's tokens.
        Other keywords: BatchEngine's (``on_step``, ``on_prefill``; ``prefill_chunk`` has no use here: the encoder
        reads a prompt in one call).
    """

    def __init__(self, gen, max_batch: int, pool: KVPool, **kw):
        if not paged_seq2seq_applies(gen.model):
            raise TypeError(f"PagedSeq2SeqEngine: {type(gen.model).__name__} has no paged decode step (BART's family: "
                            "BART, Marian, mBART, M2M100, Pegasus, BlenderBot, BlenderBot-small, PEGASUS-X, NLLB-MoE; "
                            "T5, mT5, umT5 and LongT5 have; others are served by Seq2SeqBatchEngine)")
        self.start = int(gen.model.decoder_start_token_id)
        super().__init__(gen, max_batch, pool, prefix_cache=None, **kw)

    def _decoder_step(self):
        from ..models.hf._decode_seq2seq import lean_seq2seq_step
        with no_grad():
            step = lean_seq2seq_step(self.model, [], None, None, rows_alone=True)  # each row as if alone
        if step is None:
            raise TypeError(f"PagedSeq2SeqEngine: no lean decode step for {type(self.model).__name__}")
        return _PagedStep(step, self)

    def _row_blocks(self, source: int, max_tokens: int, n: int) -> int:
        """Blocks ``n`` rows of one ``source``-token prompt hold at most: the source's (shared) and each row's
        max_tokens decoder keys (the start token and every token it feeds; the last one picked is never fed)."""
        return self.pool.blocks_for(source) + n * self.pool.blocks_for(max(int(max_tokens), 1))

    def check_fits(self, prompt_ids: List[List[int]], max_tokens: int) -> None:
        """Raise a 400 (CompletionError naming max_tokens) when a prompt's rows need more blocks than the whole pool
        (``_row_blocks``). Reads only the pool's fixed sizes: safe from any thread."""
        rows = {}
        for ids in prompt_ids:
            rows[tuple(ids)] = rows.get(tuple(ids), 0) + 1
        for ids, n in rows.items():
            try:
                self.pool.check_fits(self._row_blocks(len(ids), max_tokens, n))
            except PoolFull as e:
                from .completion_request import CompletionError
                raise CompletionError(400, str(e), "max_tokens") from None

    @staticmethod
    def _limit(row: _Row) -> int:
        """One past the most decoder keys ``row`` can hold (the start token and max_tokens - 1 answer tokens)."""
        return max(int(row.stream.max_tokens), 1)

    def _resume(self, row: _Row) -> _Reencode:
        return _Reencode(row, self.start)

    # ---- prefill: the encoder, its keys into blocks ---------------------------------------------------------------
    def _prefill_step(self) -> None:
        """The first waiting prompt through the encoder once the pool can promise its source's blocks and its rows'
        first ones (``_start_blocks``); its encoder keys and values into its source's blocks; its choices join with
        the start token. A preempted row (``_Reencode``) is encoded again and its decoder tokens prefilled again
        straight into its blocks, and it rejoins with the token it had picked."""
        self._drop_cancelled()
        if not self.prefills:
            return
        p = self.prefills[0]
        if self._cancel_prefill(p):
            return
        pool, S = self.pool, len(p.ids)
        resume = isinstance(p, _Reencode)
        keys = len(p.decoder) if resume else 0
        limits = [self._limit(p.row)] if resume else [max(int(s.max_tokens), 1) for _, s, _ in p.choices]
        try:  # engines driven directly: the server refuses such a request as it arrives
            pool.check_fits(pool.blocks_for(S) + sum(pool.blocks_for(k) for k in limits))
        except PoolFull as e:
            self._drop(p.job, e)
            return
        shared = self._sibling_source(p.row) if resume else None
        need = (0 if shared else pool.blocks_for(S)) + sum(self._start_blocks(keys, k, 0) for k in limits)
        if not pool.reserve(need, first_try=not (resume or getattr(p, "waited", False))):
            p.waited = True  # asks again after the next step: one wait in the counters (a preempted row: none)
            return
        self.prefills.pop(0)
        p.reserved = need
        blocks: List[int] = []
        joined: List[_Row] = []
        try:
            if shared:  # its source's blocks are still in the pool, a sibling's: held once more, not written again
                blocks = list(shared)
                pool.share(blocks)
            if not shared or keys:  # the decoder's prefill attends to the encoder's output
                with no_grad():
                    states = self.model.encode(np.array([p.ids]), None)
                    cross = self.model.cross_kv(states)
                if self.on_prefill is not None:
                    self.on_prefill()
            B = pool.block_tokens
            for j in range(0 if shared else pool.blocks_for(S)):
                blocks.append(pool.allocate())
                p.reserved -= 1
                n = min(B, S - j * B)
                for layer, (k, v) in enumerate(cross):
                    pool.keys[layer][blocks[-1], :, :n] = k.numpy()[0, :, j * B:j * B + n]
                    pool.values[layer][blocks[-1], :, :n] = v.numpy()[0, :, j * B:j * B + n]
            rows = [p.row] if resume else [_Row(p.job, index, stream, rng, None, 0, self.start)
                                           for index, stream, rng in p.choices]
            for row, limit in zip(rows, limits):
                row.source, row.cross_table = S, list(blocks)
                pool.share(blocks)
                row.table, row.reserve = [], self._start_blocks(keys, limit, 0)
                p.reserved -= row.reserve
                joined.append(row)
            if resume and keys:
                self._prefill_decoder(p, states, cross)
        except Exception as e:
            log.exception("encoding a prompt failed")
            pool.unreserve(p.reserved)  # what no row took
            for row in joined:
                self._release(row)
            pool.release(blocks)
            self._drop(p.job, e)
            return
        pool.release(blocks)  # the prefill's hold: its rows hold them now
        if resume:
            pool.recomputed_tokens += p.redo
        self.rows = self.rows + joined
        self.slots = self.rows

    def _sibling_source(self, row: _Row):
        """The source blocks of a row decoding on the same prompt of ``row``'s request (its n choices share them), or
        None: a preempted choice coming back holds them once more instead of a second copy."""
        ids = row.job.prompt_ids[row.index]
        for other in self.rows:
            if other.job is row.job and other.cross_table and other.job.prompt_ids[other.index] == ids:
                return other.cross_table
        return None

    def _prefill_decoder(self, p: _Reencode, states, cross) -> None:
        """A preempted row's decoder tokens through the decoder again (one call, its cross-attention on the encoder's
        keys), their keys and values straight into the row's blocks (out of its reservation, then taken)."""
        row = p.row
        cache = BlockCache(self.pool, row.table, 0, len(p.decoder), lambda: self._take(row))
        # NLLB-MoE's expert capacity counts a call's tokens: its tokens one per call, as its decode steps fed them
        calls = [p.decoder[i:i + 1] for i in range(len(p.decoder))] if getattr(
            self.model, "routes_per_call", False) else [p.decoder]
        with no_grad():
            for tokens in calls:
                self.model.decode(np.array([tokens]), states, None, cross=cross, cache=cache)
        if self.on_prefill is not None:
            self.on_prefill()

    def _take(self, row: _Row) -> int:
        if row.reserve > 0:
            return self._allocate(row)
        raise RuntimeError("PagedSeq2SeqEngine: a preempted row's decoder outgrew its reservation (a bug in the "
                           "engine's bookkeeping)")

    def _release(self, row: _Row, keep: bool = True) -> None:
        """The row's decoder blocks and unused reservation back to the pool, and its hold on its source's blocks."""
        cross = getattr(row, "cross_table", None)
        if cross is not None:
            self.pool.release(cross)
            row.cross_table = None
        super()._release(row, keep=False)
