"""The completions server's KV-cache engines and prefix cache, built from its configuration: the paged pool's
default size, the decoder-only or encoder-decoder engine on it, and the prefix cache where the model allows one
(why not, logged once at startup)."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Optional

from .completion_request import MAX_N
from .kv_pool import KVPool
from .openai_routes import available_bytes
from .paged_batch import PagedBatchEngine
from .paged_seq2seq import PagedSeq2SeqEngine
from .prefix_cache import PagedPrefixCache, PrefixCache, why_no_prefix_cache

if TYPE_CHECKING:
    from .generation_config import GenerationServeConfig

log = logging.getLogger("forgegrad.serve")

PREFIX_CACHE_MB = 1024  # the prefix cache's default size (--prefix-cache-mb)

# the tokens of a row the default pool makes room for where the model has no position table (T5): a request whose rows
# need more than the pool is refused with a 400 naming max_tokens, and --kv-cache-mb sizes the pool instead
RELATIVE_ROW_TOKENS = 2048


def default_pool_blocks(context: int, block_tokens: int, block_bytes: int, max_batch: int,
                        room: Optional[int]) -> int:
    """Blocks of the default pool: max_batch rows of the whole context, so that rows are never preempted at the
    default size, and at least MAX_N (a request's n or best_of rows of one prompt must fit together, and may be more
    than max_batch: a request larger than the pool is refused); but no more than half of
    ``room`` (the bytes this process may still take, None: unknown) allows, and at least one row of the whole context.
    The pool's pages are committed only where written, yet a pool far past the machine's memory (a long-context
    model: 16 rows of 128k tokens are hundreds of GiB) could be refused at start or fill the memory under load."""
    per_row = -(-(int(context) + 1) // block_tokens)
    blocks = max(max_batch, MAX_N) * per_row
    if room is not None:
        blocks = min(blocks, max(per_row, int(room) // 2 // block_bytes))
    return blocks


def paged_engine(gen, config: "GenerationServeConfig", name: str, metrics, kw, prefix) -> PagedBatchEngine:
    """The decoder-only engine on a paged KV cache of ``kv_cache_mb`` (default: ``default_pool_blocks``), with a
    prefix cache of ``prefix``'s size in it (``prefix_cache_for``'s, or None: none); BART's family's and T5's engine
    (paged_seq2seq.py: its decoder's and encoder's keys in the pool, rows preempted and encoded again when it is full,
    no prefix cache) for an encoder-decoder."""
    model = gen.model
    bt = config.prefix_block
    if config.kv_cache_mb is None:
        block_bytes = KVPool.for_model(model, blocks=1, block_tokens=bt).block_bytes
        # an encoder-decoder's row holds its source's blocks (up to a context) and its decoder's (up to a context, the
        # decoder's own positions): two contexts and a block. T5's relative positions have no table to run past
        # (max_positions 1 << 30): rows of RELATIVE_ROW_TOKENS and a block instead
        if gen.context >= 1 << 30:
            context = RELATIVE_ROW_TOKENS + (bt if gen.seq2seq else 0)
        else:
            context = gen.context * (2 if gen.seq2seq else 1) + (bt if gen.seq2seq else 0)
        blocks = default_pool_blocks(context, bt, block_bytes, config.max_batch, available_bytes())
        pool = KVPool.for_model(model, blocks=blocks, block_tokens=bt)
    else:
        pool = KVPool.for_model(model, max_bytes=int(config.kv_cache_mb * 2 ** 20), block_tokens=bt)
    metrics.kv_cache(name, pool)
    if gen.seq2seq:
        engine = PagedSeq2SeqEngine(gen, config.max_batch, pool, **kw)
    else:
        paged = None if prefix is None else PagedPrefixCache(prefix.max_bytes, bt, pool)
        engine = PagedBatchEngine(gen, config.max_batch, pool, prefix_cache=paged, **kw)
    log.info("%s: a paged KV cache of %d blocks of %d tokens (%.1f MiB, committed as they are first written): %s",
             name, pool.blocks, bt, pool.blocks * pool.block_bytes / 2 ** 20,
             "rows take blocks as they grow, and when it is full the row that came last is preempted and recomputed "
             "later" if engine.preempts else "each row reserves every block it can take as it joins, and is never "
             "preempted (the model's rotary frequencies depend on a call's length, so recomputed keys would differ)")
    return engine


def prefix_cache_for(config: "GenerationServeConfig", model, name: str) -> Optional[PrefixCache]:
    """The server's prefix cache (the batched engine's, or the one-at-a-time path's), or None: none asked for, or a
    model it does not apply to, which the log says once, with why (a warning where prefix_cache_mb was given)."""
    mb = PREFIX_CACHE_MB if config.prefix_cache_mb is None else config.prefix_cache_mb
    if mb == 0:
        return None
    why = why_no_prefix_cache(model)
    if why is None and getattr(model, "recompute_cache_at", None) is not None:
        why = "it recomputes its cache past its original context (longrope)"
    if why is not None:
        (log.info if config.prefix_cache_mb is None else log.warning)(
            "%s: no prefix cache (--prefix-cache-mb has no effect for this model): %s", name, why)
        return None
    return PrefixCache(int(mb * 2 ** 20) or 1, config.prefix_block)
