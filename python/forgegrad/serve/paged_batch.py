"""Continuous batching of decoder-only models on a paged KV cache (kv_pool.py), as vLLM's PagedAttention: the
completions server's engine for GPT-2 and Llama-style checkpoints. The loop is generation_batch.py's (admission,
chunked prefill, one batched decode step of every row, each row's own token rules and sampler); where the keys and
values live is what differs:

* every row holds a block table into one pool of 16-token blocks: the step attends to each row's own keys through
  its table (models/hf/_decode.py ``PagedKV``), so a row joins the batch or leaves it without a key being copied,
  there is no padding between rows and no rebuild, and a row costs the blocks of its own length;
* a prompt is prefilled straight into pool blocks (the model's forward on a kv_pool.BlockCache, chunks between the
  others' steps; blocks out of its reservation as its keys reach them), with no contiguous cache of every layer
  beside them: its full blocks are shared by its n choices (reference counts), the first choice takes over the last,
  partial block and each other one gets its own copy of it, and a row writes only its last block from then on;
* with a prefix cache (prefix_cache.py), the cached blocks of the longest block prefix of a prompt become the first
  blocks of its rows, shared, not copied (a chunk gathers one layer's keys at a time to attend to them); the
  prompt's full blocks, and when a row ends those of its prompt and answer, are kept in the cache by reference. A
  prompt with images is looked up and kept with its images' digests in its blocks' keys (image_prefix.py), and uses
  the blocks found only when they hold every image token: the rest is then prefilled as text (Qwen2-VL's at its
  images' rope delta); otherwise the whole prompt with its images, in one call (PaliGemma's always);
* memory is bounded by the pool (``--kv-cache-mb``), and blocks are taken as rows grow, as vLLM takes them: a prompt
  about to be prefilled reserves its blocks (less the cached prefix) and, for each of its rows, the blocks of the
  next ``lookahead`` tokens, and waits, first in line, while the pool cannot give them (the others decode on and
  free blocks as they end); a decoding row that fills its blocks takes one more from the pool. When the pool has
  none left, the row that came last (its request's arrival, then its choice index; a prompt being prefilled too)
  is preempted, as vLLM's recompute mode preempts: its blocks go back (its full ones kept in the prefix cache, if
  any) and it waits at the head of the line, before every later request, with its prompt and the tokens it has
  fed; once blocks are free again they are prefilled (from the cached blocks still there) and it decodes on from
  the token it had picked (a row of a prompt with images: the prompt with its images in one call, then the tokens it
  had fed as text, a Qwen2-VL row's at their text positions plus the rope delta that call leaves on its cache; or,
  where its blocks kept in the prefix cache still hold every image token, only the rest, as text).
  Nothing it picks is picked again, so its random generator, its processors' and grammar's state and its stream go
  on as if it had never left: the client sees only a pause. Rows whose client went away
  leave before anyone takes a block, and a cancelled request waiting anywhere in line leaves at once. A model whose
  rotary frequencies depend on a call's length (dynamic NTK) is never preempted: a recomputed key would be rotated
  otherwise than its decode step rotated it, so its rows reserve every block they can take as they join. A request
  whose rows need more blocks than the whole pool (prompt and max_tokens, every choice) fails with a 400.

A row's logits equal its solo logits to float32 rounding, as in the contiguous engine; the step's attention reads
no padding (each row attends to its own length), so a row's values do not depend on the other rows' lengths. A
preempted row's recomputed keys are its prefill's, equal to the ones it had to float32 rounding as well.
"""
from __future__ import annotations

import logging
import time
from typing import List, Optional

import numpy as np

from ..autograd import no_grad
from .generation_batch import BatchEngine, _Prefill, _Row, rope_reads_call_length
from .kv_pool import BlockCache, KVPool, PoolFull, table_array

log = logging.getLogger("forgegrad.serve")
PREEMPTION_LOG_EVERY = 50  # a warning at the first preemption, then at every 50th


class _Resume(_Prefill):
    """A preempted row waiting for blocks to come back: the keys it had (its prompt and the tokens it fed) to prefill
    again; then it rejoins the batch as it was (its next token already picked)."""

    def __init__(self, row: _Row):
        prompt = row.job.prompt_ids[row.index]
        super().__init__(row.job, list(prompt) + list(row.stream.tokens[:row.n - len(prompt)]), None)
        self.row = row
        self.redo = len(self.ids)  # every key it prefills it had before (recomputed_tokens)
        # a row of a prompt with images: the prompt again with its images, in one call, then the answer's tokens
        # (or only the tokens after its cached blocks, where they hold every image token: _begin)
        self.image_tokens = len(prompt) if row.job.images else 0

    @property
    def rows(self) -> int:
        return 1


def _order(item) -> tuple:
    """First come, first served: a row's, a waiting prompt's or a preempted row's place (its request's arrival, then
    its choice index); the largest is the first preempted, the smallest waiting one the first to go on."""
    if isinstance(item, _Resume):
        return item.job.seq, item.row.index
    if isinstance(item, _Prefill):
        return item.job.seq, item.choices[0][0] if item.choices else 0
    return item.job.seq, item.index


class PagedBatchEngine(BatchEngine):
    """BatchEngine on a KVPool: ``submit(job)``; ``close()``.

    Args (beyond BatchEngine's):
        pool: the KVPool rows' keys and values live in (``KVPool.for_model``).
        prefix_cache: a PrefixCache attached to ``pool`` (prefix_cache.py), or None.
        lookahead: tokens past its prompt (or its keys, coming back from a preemption) whose blocks a row reserves
            as it joins; it takes the blocks beyond them as it grows. None: one block's tokens. A model whose rotary
            frequencies depend on a call's length (``rope_reads_call_length``: dynamic NTK) ignores it: its rows
            reserve every block they can take as they join and are never preempted, since keys recomputed in one
            prefill would be rotated otherwise than the decode steps rotated them.
    """

    def __init__(self, gen, max_batch: int, pool: KVPool, prefix_cache=None, lookahead: Optional[int] = None, **kw):
        # set before the loop's thread starts (in BatchEngine.__init__)
        self.pool = pool
        self.lookahead = pool.block_tokens if lookahead is None else int(lookahead)
        if self.lookahead < 0:
            raise ValueError(f"PagedBatchEngine: lookahead must be a number of tokens >= 0, got {lookahead!r}")
        self.preempts = not rope_reads_call_length(gen.model)  # False: rows reserve all their blocks as they join
        self.prefix = prefix_cache  # only this thread touches it
        # prompts with images read and keep cached blocks too, keyed by their images (image_prefix.py), save
        # PaliGemma's (its whole prompt is attended both ways)
        from .image_prefix import why_no_image_prefix
        why = why_no_image_prefix(gen.model) if getattr(gen.model, "takes_images", False) else None
        self.image_prefix = prefix_cache is not None and why is None
        if prefix_cache is not None and why is not None:
            log.info("prompts with images use no prefix cache: %s", why)
        if prefix_cache is not None and prefix_cache.pool is not pool:
            raise ValueError("PagedBatchEngine: the prefix cache must be attached to the engine's pool")
        super().__init__(gen, max_batch, **kw)

    def check_fits(self, prompt_ids: List[List[int]], max_tokens: int) -> None:
        """Raise a 400 (CompletionError naming max_tokens) when a prompt's rows (one per entry of ``prompt_ids``, the
        same prompt repeated for its choices) need more blocks than the whole pool, as ``_begin`` would find (a cached
        prefix's blocks count too, so the answer does not depend on the cache): the request is refused as it arrives,
        before a stream opens. Reads only the pool's fixed sizes: safe from any thread."""
        rows = {}
        for ids in prompt_ids:
            rows[tuple(ids)] = rows.get(tuple(ids), 0) + 1
        for ids, n in rows.items():
            full = len(ids) // self.pool.block_tokens
            try:
                self.pool.check_fits(full + n * self._own_blocks(len(ids), max_tokens, full))
            except PoolFull as e:
                from .completion_request import CompletionError
                raise CompletionError(400, str(e), "max_tokens") from None

    def _prefill_cache(self, ids: List[int]):
        return None  # made when its prefill starts (a waiting prompt holds no memory)

    # ---- prefill --------------------------------------------------------------------------------------------------
    def _prefill_step(self) -> None:
        self._drop_cancelled()
        if not self.prefills:
            return
        p = self.prefills[0]
        if self._cancel_prefill(p):
            self._let_go(p)
            return
        joined: List[_Row] = []
        try:
            if p.cache is None and not self._begin(p):
                return  # waits for blocks: the others decode on
            logits = self._prefill_chunk(p)
            if logits is None:
                return
            self.prefills.pop(0)
            prompt = self._commit(p)
            # a preempted row's next token was picked before it left: it decodes on from there
            joined = [p.row] if isinstance(p, _Resume) else self._first_rows(p, logits, None)
            for row in joined:
                self._give_blocks(row, p, prompt)
        except Exception as e:
            if not isinstance(e, PoolFull):
                log.exception("prefill failed")
            for row in joined:
                self._release(row, keep=False)
            self._drop(p.job, e)
            self._let_go(p)
            return
        self._let_go(p)
        self.rows = self.rows + joined
        self.slots = self.rows

    def _prefill_chunk(self, p: _Prefill):
        """BatchEngine's, counting in ``recomputed_tokens`` the keys it computes again: a preempted row's, and those a
        prompt preempted during its prefill had computed before (``redo``: the keys before it were computed once)."""
        before = p.done
        logits = super()._prefill_chunk(p)
        self.pool.recomputed_tokens += max(0, min(p.done, getattr(p, "redo", 0)) - before)
        return logits

    def _drop_cancelled(self) -> None:
        """End the waiting prompts and preempted rows (not being prefilled) whose request was cancelled or has failed,
        wherever they are in line: here a prompt may wait long for blocks, and one that waits behind it for nothing
        would keep its place in the batch (and its request in the server's queue) until its turn came."""
        gone = [p for p in self.prefills if p.cache is None and (p.job.cancelled.is_set() or p.job.future.done())]
        for p in gone:
            self.prefills.remove(p)
            rows = [p.row] if isinstance(p, _Resume) else [_Row(p.job, i, stream, rng, None, 0, 0)
                                                            for i, stream, rng in p.choices]
            for row in rows:
                row.stream.cancel()
                self._finish(row)

    def _cancel_prefill(self, p: _Prefill) -> bool:
        if not isinstance(p, _Resume):
            return super()._cancel_prefill(p)
        if not (p.job.cancelled.is_set() or p.job.future.done()):
            return False
        self.prefills.pop(0)
        p.row.stream.cancel()
        self._finish(p.row)
        return True

    def _begin(self, p: _Prefill) -> bool:
        """Start a prompt's prefill (or a preempted row's again): share the cached blocks of its longest cached prefix
        and reserve the blocks of the rest and of its rows' look-ahead; False (nothing held) while the pool cannot
        give them."""
        P, pool = len(p.ids), self.pool
        resume = isinstance(p, _Resume)
        full = P // pool.block_tokens
        limits = [self._limit(p.row)] if resume else [P + max(int(s.max_tokens), 1) for _, s, _ in p.choices]
        if not resume:  # a request that can never fit (engines driven directly: the server checks on arrival)
            pool.check_fits(full + sum(pool.blocks_for(k) - full for k in limits))
        cached, keys = self._cached(p)
        need = full - len(cached) + sum(self._start_blocks(P, k, full) for k in limits)
        pool.share(cached)  # before reserving: a reservation may evict the prefix cache's other blocks
        # a preempted row waiting is counted in preemptions, not in waits (which counts prompts)
        if not pool.reserve(need, first_try=not (resume or getattr(p, "waited", False))):
            pool.release(cached)
            p.waited = True  # asks again after the next step: one wait in the counters
            return False
        if self.prefix is not None and not (resume or getattr(p, "counted", False)):
            self.prefix.count(len(cached))  # one lookup per prompt, however often its prefill starts over
            p.counted = True
        p.blocks, p.reserved = list(cached), need
        p.done = len(cached) * pool.block_tokens
        p.cache = BlockCache(pool, p.blocks, p.done, P, lambda: self._prefill_block(p))  # straight into its blocks
        if p.job.images:
            if getattr(p, "image_span", None) is None:
                p.image_span = p.image_tokens  # the prompt with its images in one call, unless its images are cached
            # cached blocks past every image token: the rest is text, prefilled in chunks (Qwen2-VL's at the rope
            # delta its images give); else the whole prompt with its images, from position 0
            p.image_tokens = 0 if cached else p.image_span
            if cached and keys.delta:
                p.cache.rope_deltas = np.array([keys.delta], np.int64)
        for _, stream, _ in p.choices:
            stream.cached_tokens = p.done
        return True

    def _cached(self, p: _Prefill):
        """(the cached blocks prompt ``p`` starts from, its images' keys or None). A prompt with images is looked up
        by its tokens and its images (image_prefix.py) and uses the blocks found only when they hold every image
        token (the rest then is text, attended causally); else none (its whole prompt is prefilled with its
        images). PaliGemma's prompts with images read none (``image_prefix``)."""
        job = p.job
        if self.prefix is None or (job.images and not self.image_prefix):
            return [], None
        if not job.images:
            return self.prefix.match(p.ids), None
        keys = self._image_keys(job)
        cached = self.prefix.match(p.ids, keys.marks(self.pool.block_tokens))
        return (cached if len(cached) * self.pool.block_tokens >= keys.end else []), keys

    def _image_keys(self, job):
        """The job's images' prefix-cache keys (made once: a digest of each image's pixel values)."""
        if job.image_keys is None:
            from .image_prefix import ImageKeys
            job.image_keys = ImageKeys(self.model, job.prompt_ids[0], job.images)
        return job.image_keys

    def _marks(self, job) -> Optional[dict]:
        """The block marks a job's blocks are kept under (its images' digests), or None for a text job."""
        return self._image_keys(job).marks(self.pool.block_tokens) if job.images else None

    def _keeps(self, job) -> bool:
        """Whether the job's blocks go to the prefix cache (a job with images only where ``image_prefix``)."""
        return self.prefix is not None and (not job.images or self.image_prefix)

    def _own_blocks(self, prompt: int, max_tokens: int, full: int) -> int:
        """Blocks a row of a ``prompt``-token prompt can take beyond the prompt's ``full`` blocks (shared): its keys
        are the prompt's and at most max_tokens - 1 answer tokens' (the last token picked is never fed)."""
        return self.pool.blocks_for(prompt + max(int(max_tokens), 1)) - full

    @staticmethod
    def _limit(row: _Row) -> int:
        """One past the most keys ``row`` can hold (its prompt and max_tokens; ``_own_blocks``'s count)."""
        return len(row.job.prompt_ids[row.index]) + max(int(row.stream.max_tokens), 1)

    def _start_blocks(self, keys: int, limit: int, full: int) -> int:
        """Blocks a row joining with ``keys`` keys (its prompt's ``full`` blocks shared) reserves: its own last block
        and those of its next token and ``lookahead`` more, never past ``limit`` (``_limit``); all of them up to
        ``limit`` where rows are never preempted."""
        if not self.preempts:
            return self.pool.blocks_for(limit) - full
        return self.pool.blocks_for(min(keys + 1 + self.lookahead, limit)) - full

    def _prefill_block(self, p: _Prefill) -> int:
        """A block for the prefill's next keys (BlockCache's ``grow``), out of its reservation: the prompt's full
        blocks not cached, then its partial last block, which its first row takes over (``_give_blocks``)."""
        p.reserved -= 1
        return self.pool.allocate()

    def _commit(self, p: _Prefill) -> List[int]:
        """Keep the prefilled prompt's full blocks (written by its prefill, held by it until its rows share them) in
        the prefix cache; the prompt's full blocks."""
        full = len(p.ids) // self.pool.block_tokens
        if self._keeps(p.job):
            self.prefix.store(p.ids, p.blocks[:full], self._marks(p.job))
        return p.blocks[:full]

    def _give_blocks(self, row: _Row, p: _Prefill, prompt: List[int]) -> None:
        """A new row's block table: the prompt's full blocks (shared) and its own partial last one (the prefill's for
        the first row, a copy of it for the others); its share of the prefill's reservation (``_start_blocks``)."""
        pool, B = self.pool, self.pool.block_tokens
        own = self._start_blocks(len(p.ids), self._limit(row), len(prompt))
        row.table = list(prompt)
        pool.share(prompt)
        tail = len(p.ids) - len(prompt) * B
        first = tail and len(p.blocks) > len(prompt)
        if first:  # the prefill's partial block: the first row's, out of its share
            p.tail = p.blocks.pop()
            row.table.append(p.tail)
            own -= 1
        p.reserved -= own
        row.reserve = own
        if tail and not first:  # the next rows: a copy of it (a row writes its last block)
            row.table.append(self._allocate(row))
            pool.copy(p.tail, row.table[-1], tail)

    def _allocate(self, row: _Row) -> int:
        row.reserve -= 1
        return self.pool.allocate()

    def _let_go(self, p: _Prefill) -> None:
        """A prompt's prefill is over (done, failed or cancelled): its cache goes, its holds on blocks and the
        reservation its rows did not take go back to the pool."""
        if getattr(p, "blocks", None) is None:
            return
        self.pool.release(p.blocks)
        self.pool.unreserve(p.reserved)
        p.blocks, p.reserved, p.cache = None, 0, None

    def _drop(self, job, error: Exception) -> None:
        for p in self.prefills:
            if p.job is job:
                self._let_go(p)
        if isinstance(error, PoolFull):  # a 400: the request can never fit
            from .completion_request import CompletionError
            error = CompletionError(400, str(error), "max_tokens")
        super()._drop(job, error)

    # ---- decode ---------------------------------------------------------------------------------------------------
    def _step(self) -> None:
        from ..models.hf._decode import PagedKV
        B = self.pool.block_tokens
        gone = [r for r in self.rows if r.job.cancelled.is_set() or r.job.future.done()]
        for row in gone:  # clients that went away: their blocks go back before a growing row may preempt another
            row.stream.cancel()
            self._finish(row)
        if gone:
            self._leave(gone)
        for row in sorted(self.rows, key=_order):  # a row whose next key starts a block: one more, oldest row first
            if row.table is not None and row.n == len(row.table) * B:
                self._grow(row)
        rows = self.rows
        if not rows:
            return
        tokens = np.array([r.token for r in rows], np.int64)
        positions = np.array([r.n for r in rows], np.int64)
        kv = PagedKV(self.pool.keys, self.pool.values, table_array([r.table for r in rows]), positions + 1)
        # the rotary positions: a Qwen2-VL row after its images runs its rope delta off its key count (the new key's
        # place in its blocks stays its count: PagedKV's lengths)
        rotary = positions + np.array([r.rope_delta for r in rows], np.int64)
        t0 = time.perf_counter()
        with no_grad():
            logits = self.lean.step(tokens, rotary, None, kv)
        if self.on_step is not None:
            self.on_step(len(rows), time.perf_counter() - t0)
        ended = self._advance(rows, logits)
        for row in ended:
            self._finish(row)
        if ended:
            self._leave(ended)

    def _grow(self, row: _Row) -> None:
        """One more block for ``row``: out of its reservation, else a free one; while the pool has none, preempt the
        row (or the prompt being prefilled) that came last, which may be ``row`` itself."""
        while True:
            if row.reserve > 0:
                row.table.append(self._allocate(row))
                return
            block = self.pool.take()
            if block is not None:
                row.table.append(block)
                return
            started = self.prefills[:1] if self.prefills and self.prefills[0].cache is not None else []
            victim = max(self.rows + started, key=_order)
            self._preempt(victim)
            if victim is row:
                return

    def _preempt(self, victim) -> None:
        """Let a row's blocks go (its full ones kept in the prefix cache, if any) and put it back in line, before
        every later request: it is prefilled again once blocks are free. A prompt being prefilled (``_Prefill``) lets
        its blocks go and starts over when its turn comes again."""
        pool = self.pool
        pool.preemptions += 1
        if isinstance(victim, _Prefill):
            self._let_go(victim)
            victim.redo, victim.done = max(getattr(victim, "redo", 0), victim.done), 0
            victim.waited = True  # counted in preemptions: waiting for its blocks again is not one more wait
            self.prefills.sort(key=_order)  # back in its place: preempted rows that came before it go first
            what = f"the prefill of a {len(victim.ids)}-token prompt"
        else:
            self._release(victim)
            self.rows = [r for r in self.rows if r is not victim]
            self.slots = self.rows
            victim = self._resume(victim)
            at = 1 if self.prefills and self.prefills[0].cache is not None else 0  # a prefill under way goes on
            while at < len(self.prefills) and _order(self.prefills[at]) < _order(victim):
                at += 1
            self.prefills.insert(at, victim)
            what = f"a row of {victim.redo} tokens"  # an encoder-decoder's: its source and decoder tokens
        if pool.preemptions % PREEMPTION_LOG_EVERY == 1:
            log.warning("the KV cache is full: preempted %s (it is recomputed once blocks are free; %d preemptions so "
                        "far: a larger --kv-cache-mb avoids them)", what, pool.preemptions)

    @staticmethod
    def _resume(row: _Row) -> _Resume:
        """A preempted row's place in line (what its prefill computes again)."""
        return _Resume(row)

    # ---- membership: nothing moves --------------------------------------------------------------------------------
    def _leave(self, ended: List[_Row]) -> None:
        """Ended rows leave: their prompt and answer's full blocks kept in the prefix cache (if any), their blocks
        and unused reservation back to the pool."""
        gone = {id(r) for r in ended}
        for row in ended:
            self._release(row)
        self.rows = [r for r in self.rows if id(r) not in gone]
        self.slots = self.rows

    def _release(self, row: _Row, keep: bool = True) -> None:
        if getattr(row, "table", None) is None:
            return
        # the tokens it fed: its prompt, its answer but the last token picked (a prompt with images': keyed by its
        # images too)
        if keep and self._keeps(row.job):
            prompt = row.job.prompt_ids[row.index]
            self.prefix.store(prompt + row.stream.tokens[:row.n - len(prompt)], row.table, self._marks(row.job))
        self.pool.release(row.table)
        self.pool.unreserve(row.reserve)
        row.table, row.reserve = None, 0

    def _fail(self, error: Exception, drain: bool = False) -> None:
        for row in self.rows:
            self._release(row, keep=False)
        if drain:
            for p in self.prefills:
                self._let_go(p)
        super()._fail(error, drain)
