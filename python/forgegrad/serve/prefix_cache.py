"""Automatic prefix caching for the completions server (``generate``'s ``prefix_cache`` on the one-at-a-time path:
PrefixCache; the batched engine of paged_batch.py: PagedPrefixCache, whose blocks are the paged KV cache's own,
shared by reference count, not copied): the keys and values of prompts already prefilled, kept in blocks of
``block_tokens`` tokens, so that a prompt starting with one of them (a chat's system prompt and earlier turns, a
few-shot preamble) prefills only the rest, as vLLM's automatic prefix caching and OpenAI's prompt caching do.

* A block's key is a hash of its tokens and of the key of the block before it, so one key stands for the whole
  prefix up to the block's end. A hash is never trusted alone: a block is reused only when its stored tokens equal
  the prompt's and its parent is the block matched just before it (a collision is a miss, not another prompt's keys).
* ``load(ids, cache)`` copies the longest cached block prefix of a prompt into its (empty) prefill cache, always
  leaving at least the prompt's last token to prefill (its logits pick the first token); the engine then prefills
  the rest as one more chunk of a chunked prefill, attending to the cached keys. ``store(ids, cache, row, start)``
  keeps the full blocks of a prompt whose prefill is done, and of a prompt and its answer when its row ends (a
  chat's next turn starts with both).
* Bounded by bytes (the blocks' keys and values), least recently used first out. A lookup or store touches a
  prefix's blocks from its last to its first, so every block was used more recently than the blocks after it and
  eviction always takes the end of a prefix, never a block whose continuation stays behind unreachable.

A prompt's cached keys are the ones its own prefill would compute only for a model whose key at a position depends
on the tokens up to it and nothing else: ``prefix_cache_applies`` says which (see there; ``why_no_prefix_cache`` says
why not, in the server's startup log). The server's engine thread (one at a time: its worker) uses the cache; its
metrics only read the counters. ``load`` and ``store`` take a lock, so that ``generate`` calls on several threads may
share one cache (a store evicting blocks while another thread's store or load works on them would break its chain).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import List, Optional, Sequence

import numpy as np


def prefix_cache_applies(model) -> bool:
    """Whether a prompt's cached keys and values equal what its own prefill computes (to float32 rounding, as a
    chunked prefill's do), so that reusing them is safe: a decoder-only model whose key at position i depends on
    tokens 0..i alone.

    Not for encoder-decoders (the prompt is the encoder's input, attended bidirectionally; nothing of it is in the
    decoder's cache), nor for rotary embeddings whose frequencies depend on how long the call is (dynamic NTK,
    longrope: transformers picks them per forward from the longest position, so a key cached by a short prompt
    differs from the same key computed in a longer one). Sliding-window layers (Mistral, Qwen2, Gemma 2 and 3) are
    safe here: forgegrad's cache keeps every key and masks those out of the window by position, so a key depends on
    the tokens before it whatever the window, and a prefill after a cached prefix masks exactly as one prefill does.
    """
    return why_no_prefix_cache(model) is None


def why_no_prefix_cache(model) -> Optional[str]:
    """None where ``prefix_cache_applies`` to ``model``, else why not, in words (the server's startup log)."""
    if getattr(model, "is_encoder_decoder", False):
        return ("it is an encoder-decoder: the prompt is the encoder's input, attended both ways, and nothing of it is "
                "in the decoder's cache")
    if not hasattr(model, "new_cache"):
        return f"{type(model).__name__} is not a decoder"
    from ..models.hf._layers import LengthScaledRope
    rope = next((m for m in model.modules() if isinstance(m, LengthScaledRope)), None)
    if rope is not None:
        return (f"its rotary embedding ({type(rope).__name__}: dynamic NTK or longrope) picks a call's frequencies by "
                "its longest position, so a key cached by one prompt is not the key a longer prompt's prefill computes")
    return None


class _Block:
    __slots__ = ("key", "tokens", "parent", "kv")

    def __init__(self, key: int, tokens: tuple, parent: Optional["_Block"], kv: np.ndarray):
        # kv: (2, layers, kv_heads, block_tokens, head_dim): the block's keys [0] and values [1]
        self.key, self.tokens, self.parent, self.kv = key, tokens, parent, kv


class PrefixCache:
    """Prefilled keys and values by block of prompt tokens, at most ``max_bytes`` of them.

    Args:
        max_bytes: the most bytes of keys and values kept (> 0).
        block_tokens: tokens per block (a prompt reuses whole blocks only).

    Counters (read by the server's metrics): ``hits`` and ``misses`` (prompts that reused some blocks, or none),
    ``hit_tokens`` (prompt tokens read from the cache instead of prefilled), ``evictions`` (blocks dropped for
    room), ``bytes`` and ``len(cache)`` (blocks kept).
    """

    def __init__(self, max_bytes: int, block_tokens: int = 16):
        for name, v in (("max_bytes", max_bytes), ("block_tokens", block_tokens)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"PrefixCache: {name} must be a positive integer, got {v!r}")
        self.max_bytes, self.block_tokens = max_bytes, block_tokens
        self._blocks: "OrderedDict[int, _Block]" = OrderedDict()  # least recently used first
        self.bytes = 0
        self.hits = self.misses = self.hit_tokens = self.evictions = 0
        self._lock = threading.Lock()  # load and store, one thread at a time

    def __len__(self) -> int:
        return len(self._blocks)

    def _key(self, parent: Optional[_Block], tokens: tuple) -> int:
        return hash((0 if parent is None else parent.key, tokens))

    def _unit(self, ids: Sequence[int], j: int, marks: Optional[dict]) -> tuple:
        """What block ``j`` of ``ids`` is keyed and verified by: its tokens, and the digests of the images whose first
        token is in it (``marks``: {block index: digests}, image_prefix.py; None for a text prompt), so that the key
        of every block from an image's first token on stands for that image too (the chain carries it)."""
        B = self.block_tokens
        tokens = tuple(ids[j * B:(j + 1) * B])
        extra = marks.get(j) if marks else None
        return tokens + tuple(extra) if extra else tokens

    def _match(self, ids: Sequence[int], blocks: int, marks: Optional[dict] = None) -> List[_Block]:
        """The cached blocks that spell ids' first tokens (and images: ``marks``), at most ``blocks`` of them, each
        one verified."""
        chain, parent = [], None
        for j in range(blocks):
            tokens = self._unit(ids, j, marks)
            block = self._blocks.get(self._key(parent, tokens))
            if block is None or block.tokens != tokens or block.parent is not parent:
                break
            chain.append(block)
            parent = block
        return chain

    def _touch(self, chain: List[_Block]) -> None:
        """Most recently used: the chain's first block last, so blocks always outlive their continuations."""
        for block in reversed(chain):
            self._blocks.move_to_end(block.key)

    def load(self, ids: Sequence[int], cache) -> int:
        """Copy the keys and values of the longest cached block prefix of ``ids`` (leaving at least its last token)
        into row 0 of ``cache`` (a KVCache, empty), advance it past them; the number of tokens loaded."""
        with self._lock:
            return self._load(ids, cache)

    def _load(self, ids: Sequence[int], cache) -> int:
        chain = self._match(ids, (len(ids) - 1) // self.block_tokens)
        if not chain:
            self.misses += 1
            return 0
        self._touch(chain)
        B = self.block_tokens
        for j, block in enumerate(chain):
            for layer in range(len(cache.keys)):
                cache.keys[layer][0, :, j * B:(j + 1) * B] = block.kv[0, layer]
                cache.values[layer][0, :, j * B:(j + 1) * B] = block.kv[1, layer]
        n = len(chain) * B
        cache.length = n
        self.hits += 1
        self.hit_tokens += n
        return n

    def store(self, ids: Sequence[int], cache, row: int = 0, start: int = 0) -> None:
        """Keep the full blocks of ``ids`` whose keys and values fill row ``row`` of ``cache`` from column ``start``
        (those not kept yet), evicting the least recently used blocks for room; stops at the first block there is
        no room for (the blocks before it still kept)."""
        with self._lock:
            self._store(ids, cache, row, start)

    def _store(self, ids: Sequence[int], cache, row: int = 0, start: int = 0) -> None:
        B = self.block_tokens
        blocks = min(len(ids), cache.length - start) // B
        chain = self._match(ids, blocks)
        keep = {id(b) for b in chain}  # never evicted for this prefix's new blocks; touched once, at the end
        parent = chain[-1] if chain else None
        for j in range(len(chain), blocks):
            tokens = tuple(ids[j * B:(j + 1) * B])
            key = self._key(parent, tokens)
            if key in self._blocks:  # another prefix under the same hash: keep the one there
                break
            cols = slice(start + j * B, start + (j + 1) * B)
            kv = np.stack([np.stack([k[row, :, cols] for k in cache.keys]),
                           np.stack([v[row, :, cols] for v in cache.values])])
            if not self._make_room(kv.nbytes, keep):
                break
            block = _Block(key, tokens, parent, kv)
            self._blocks[key] = block
            self.bytes += kv.nbytes
            chain.append(block)
            keep.add(id(block))
            parent = block
        self._touch(chain)

    def _make_room(self, nbytes: int, keep: set) -> bool:
        """Evict least recently used blocks until ``nbytes`` more fit, never one in ``keep`` (the prefix being
        stored); False when they cannot fit."""
        while self.bytes + nbytes > self.max_bytes:
            if not self._blocks:
                return False
            oldest = next(iter(self._blocks.values()))
            if id(oldest) in keep:
                return False
            del self._blocks[oldest.key]
            self.bytes -= oldest.kv.nbytes
            self.evictions += 1
        return True


class _PoolBlock:
    __slots__ = ("key", "tokens", "parent", "block")

    def __init__(self, key: int, tokens: tuple, parent: Optional["_PoolBlock"], block: int):
        self.key, self.tokens, self.parent, self.block = key, tokens, parent, block  # block: the pool's block id


class PagedPrefixCache(PrefixCache):
    """The batched engine's prefix cache (paged_batch.py): the same blocks, keys, verification and LRU order as
    PrefixCache, but its blocks are the paged KV cache's own (kv_pool.py), held by reference count, not copied: a
    prompt's rows share the cached blocks as their first blocks, and a row that ends leaves its full blocks here
    without a copy (full blocks are never written again). Only the engine's thread touches it (no lock).

    Args:
        max_bytes: the most bytes of blocks held (> 0).
        block_tokens: tokens per block: the pool's.
        pool: the KVPool the blocks are in (or ``attach`` it later); the cache becomes its evictor, so blocks only the
            cache holds go back to the pool, least recently used first, when a prompt needs room.

    ``match(ids)`` and ``count(blocks)`` take the place of ``load``, ``store(ids, table)`` of ``store``.
    """

    def __init__(self, max_bytes: int, block_tokens: int = 16, pool=None):
        super().__init__(max_bytes, block_tokens)
        self.pool = None
        if pool is not None:
            self.attach(pool)

    def attach(self, pool) -> None:
        """Keep blocks of ``pool`` (its block size must be the cache's); the pool evicts through the cache."""
        if pool.block_tokens != self.block_tokens:
            raise ValueError(f"PagedPrefixCache: the pool's blocks hold {pool.block_tokens} tokens, the cache's "
                             f"{self.block_tokens}")
        self.pool, pool.evictor = pool, self

    def load(self, ids, cache) -> int:
        raise TypeError("PagedPrefixCache: its blocks are shared, not copied: match(ids), then KVPool.share")

    def match(self, ids: Sequence[int], marks: Optional[dict] = None) -> List[int]:
        """The pool blocks holding the keys and values of the longest cached block prefix of ``ids`` (leaving at
        least its last token; a prompt with images: its ``marks``, image_prefix.py); the caller shares the ones it
        keeps, and ``count``s the lookup once it uses it."""
        chain = self._match(ids, (len(ids) - 1) // self.block_tokens, marks)
        self._touch(chain)
        return [b.block for b in chain]

    def count(self, blocks: int) -> None:
        """A prompt started from ``blocks`` cached blocks: a hit (a miss when 0) in the counters."""
        if blocks:
            self.hits += 1
            self.hit_tokens += blocks * self.block_tokens
        else:
            self.misses += 1

    def store(self, ids: Sequence[int], table: Sequence[int], marks: Optional[dict] = None) -> None:
        """Keep the full blocks of ``ids`` (a prompt with images: keyed with its ``marks`` too) whose keys and values
        are in the pool blocks ``table`` (in order; those not kept yet, one more reference each), evicting the least
        recently used blocks for room; stops at the first block there is no room for (the blocks before it still
        kept)."""
        B = self.block_tokens
        blocks = min(len(ids) // B, len(table))
        chain = self._match(ids, blocks, marks)
        keep = {id(b) for b in chain}  # never evicted for this prefix's new blocks; touched once, at the end
        parent = chain[-1] if chain else None
        for j in range(len(chain), blocks):
            tokens = self._unit(ids, j, marks)
            key = self._key(parent, tokens)
            if key in self._blocks:  # another prefix under the same hash: keep the one there
                break
            if not self._make_room(self.pool.block_bytes, keep):
                break
            block = _PoolBlock(key, tokens, parent, int(table[j]))
            self.pool.share([block.block])
            self._blocks[key] = block
            self.bytes += self.pool.block_bytes
            chain.append(block)
            keep.add(id(block))
            parent = block
        self._touch(chain)

    def _drop(self, block: _PoolBlock) -> None:
        del self._blocks[block.key]
        self.pool.release([block.block])
        self.bytes -= self.pool.block_bytes
        self.evictions += 1

    def _make_room(self, nbytes: int, keep: set) -> bool:
        while self.bytes + nbytes > self.max_bytes:
            if not self._blocks:
                return False
            oldest = next(iter(self._blocks.values()))
            if id(oldest) in keep:
                return False
            self._drop(oldest)
        return True

    # ---- the pool's evictor ---------------------------------------------------------------------------------------
    def evictable(self) -> int:
        """Blocks only the cache holds (no row reads them): what evicting could give back to the pool."""
        refs = self.pool.refs
        return sum(1 for b in self._blocks.values() if refs[b.block] == 1)

    def evict(self, n: int) -> None:
        """Give ``n`` blocks back to the pool: the least recently used of those no row holds."""
        refs = self.pool.refs
        for block in [b for b in self._blocks.values() if refs[b.block] == 1][:n]:
            self._drop(block)
