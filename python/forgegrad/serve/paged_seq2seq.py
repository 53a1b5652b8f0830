"""Continuous batching of BART's family (BART, Marian, mBART, M2M100 / NLLB) and T5 on the paged KV cache (kv_pool.py):
the completions server's encoder-decoder engine when the pool applies. The loop is paged_batch.py's (admission,
one batched decode step of every row, each row's own token rules and sampler, no padding, no rebuild); the prefill
is seq2seq_batch.py's (the encoder once on the prompt, its choices joining with the decoder's start token).

* Both kinds of keys live in the one pool, in blocks of the same shape (every decoder layer's heads, block_tokens
  places, head_dim): a row's decoder self-attention keys and values in its own block table, which grows as it
  decodes; its encoder keys and values (each decoder layer's cross-attention projections of the encoder output) in a
  second table, written once as it joins and shared by reference count by a request's n choices of one prompt. The
  step attends through both tables with the paged kernel (models/hf/_decode_seq2seq.py ``PagedCross``), each row to
  its own source length, so no row pads to the batch's longest source.
* ``--kv-cache-mb`` bounds both: a prompt about to be encoded reserves its source's blocks and, for each of its rows,
  the blocks of max_tokens decoder keys (the start token and the tokens it feeds), and waits, first in line, while
  the pool cannot give them; the others decode on and free blocks as they end. A request whose rows need more blocks
  than the whole pool fails with a 400 as it arrives.
* Rows are never preempted (as the dynamic-NTK decoder-only rows): a recomputed row would need its encoder output
  again and a decoder prefill over its tokens with cross-attention, which the lean step does not have; reserving a
  row's blocks as it joins costs only blocks promised early, not memory (a block's pages are committed when first
  written).
* T5's self-attention adds a learned relative-position bias per head and distance: the paged kernel
  (``_C.attention.paged_decode``) takes it as a table (heads, max_distance + 1) by distance, built once per model
  (T5LeanStep), each row's query at its own last key, so rows of any lengths share one step.

A row's logits equal its solo logits to float32 rounding (the contiguous engine's claim; here no row reads another's
padding at all).
"""
from __future__ import annotations

import logging
from typing import List

import numpy as np

from ..autograd import no_grad
from .generation_batch import _Row
from .kv_pool import KVPool, PoolFull, table_array
from .paged_batch import PagedBatchEngine

log = logging.getLogger("forgegrad.serve")


def paged_seq2seq_applies(model) -> bool:
    """An encoder-decoder whose lean step can run on the paged pool: BART's family and T5 (its relative-position bias
    a table by distance in the paged kernel)."""
    from ..models.hf import bart, t5
    return isinstance(model, bart.BartForConditionalGeneration) or type(model) is t5.T5ForConditionalGeneration


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
        Other keywords: BatchEngine's (``on_step``, ``on_prefill``; ``prefill_chunk`` has no use here: the encoder
        reads a prompt in one call).
    """

    def __init__(self, gen, max_batch: int, pool: KVPool, **kw):
        if not paged_seq2seq_applies(gen.model):
            raise TypeError(f"PagedSeq2SeqEngine: {type(gen.model).__name__} has no paged decode step (BART, Marian, "
                            "mBART, M2M100 and T5 have; others are served by Seq2SeqBatchEngine)")
        self.start = int(gen.model.decoder_start_token_id)
        super().__init__(gen, max_batch, pool, prefix_cache=None, **kw)
        self.preempts = False  # (read only by the prefill, which never runs before a job is submitted)

    def _decoder_step(self):
        from ..models.hf._decode_seq2seq import lean_seq2seq_step
        with no_grad():
            step = lean_seq2seq_step(self.model, [], None, None)
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

    # ---- prefill: the encoder, its keys into blocks ---------------------------------------------------------------
    def _prefill_step(self) -> None:
        """The first waiting prompt through the encoder once the pool can promise its rows every block they may
        take; its encoder keys and values into its source's blocks; its choices join with the start token."""
        self._drop_cancelled()
        if not self.prefills:
            return
        p = self.prefills[0]
        if self._cancel_prefill(p):
            return
        pool, S = self.pool, len(p.ids)
        try:
            need = pool.blocks_for(S) + sum(pool.blocks_for(max(int(s.max_tokens), 1)) for _, s, _ in p.choices)
            pool.check_fits(need)  # engines driven directly: the server refuses such a request as it arrives
        except PoolFull as e:
            self._drop(p.job, e)
            return
        if not pool.reserve(need, first_try=not getattr(p, "waited", False)):
            p.waited = True  # asks again after the next step: one wait in the counters
            return
        self.prefills.pop(0)
        blocks: List[int] = []
        joined: List[_Row] = []
        try:
            with no_grad():
                states = self.model.encode(np.array([p.ids]), None)
                cross = [(k.numpy(), v.numpy()) for k, v in self.model.cross_kv(states)]  # (1, H, S, D) each
            if self.on_prefill is not None:
                self.on_prefill()
            B = pool.block_tokens
            for j in range(pool.blocks_for(S)):
                block = pool.allocate()
                blocks.append(block)
                n = min(B, S - j * B)
                for layer, (k, v) in enumerate(cross):
                    pool.keys[layer][block, :, :n] = k[0, :, j * B:j * B + n]
                    pool.values[layer][block, :, :n] = v[0, :, j * B:j * B + n]
            for index, stream, rng in p.choices:
                row = _Row(p.job, index, stream, rng, None, 0, self.start)
                row.source, row.cross_table = S, list(blocks)
                pool.share(blocks)
                row.table, row.reserve = [], pool.blocks_for(max(int(stream.max_tokens), 1))
                joined.append(row)
        except Exception as e:
            log.exception("encoding a prompt failed")
            pool.unreserve(need - len(blocks) - sum(r.reserve for r in joined))  # what no row took
            for row in joined:
                self._release(row)
            pool.release(blocks)
            self._drop(p.job, e)
            return
        pool.release(blocks)  # the prefill's hold: its rows hold them now
        self.rows = self.rows + joined
        self.slots = self.rows

    def _preempt(self, victim) -> None:
        """Never reached: a row holds the blocks of its max_tokens from the start, so it never takes one the pool must
        find (a row that did would be a bookkeeping bug, not a reason to recompute someone's encoder)."""
        raise RuntimeError("PagedSeq2SeqEngine: a row outgrew the blocks it reserved (a bug in the engine's "
                           "bookkeeping)")

    def _release(self, row: _Row, keep: bool = True) -> None:
        """The row's decoder blocks and unused reservation back to the pool, and its hold on its source's blocks."""
        cross = getattr(row, "cross_table", None)
        if cross is not None:
            self.pool.release(cross)
            row.cross_table = None
        super()._release(row, keep=False)
