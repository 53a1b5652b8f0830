"""The paged KV cache of the batched completions engine (paged_batch.py): one pool of fixed-size blocks of keys and
values, allocated on demand, shared by reference count, bounded by a configured size, as vLLM's PagedAttention
keeps them.

* Each layer's keys are one array (blocks, kv_heads, block_tokens, head_dim), its values another; a block id
  names the same block in every layer. A row holds a block table (its block ids in order): its key at position
  ``p`` is in block ``table[p // block_tokens]``, place ``p % block_tokens``. The decode step attends through the
  tables (models/hf/_decode.py ``PagedKV``), so a row joining or leaving the batch moves no keys or values.
* A full block is never written again: rows and the prefix cache (prefix_cache.py) share it by reference count
  (a prompt's blocks are the prefix cache's and every row of the prompt's), and it returns to the free list when
  the last holder lets it go. Only a row's last, partial block is written, and it is its own.
* A prompt's prefill writes its keys straight into its blocks (``BlockCache``: the model's forward sees a KVCache),
  so that a long prompt costs its blocks, not also a contiguous copy of every layer's keys.
* Free blocks are handed out lowest id first: the pool's arrays are zeros the OS commits only where written, so
  the memory the cache takes is its high-water mark of blocks in use, not the configured size.
* Blocks are taken as rows grow, as vLLM takes them: a prompt about to be prefilled reserves the blocks of its
  prompt and a small look-ahead of each of its rows (reserved blocks are promised: nobody else takes them), and a
  decoding row that fills its last block takes another, out of what it still has reserved, else out of the free
  blocks (``take``). When none is left the engine preempts a row (paged_batch.py: it lets its blocks go and
  recomputes its keys later), so the pool bounds memory, not the tokens a request may still ask for. Blocks only
  the prefix cache holds count as available: they are evicted, least recently used first, when a reservation or a
  growing row needs them.

The engine's worker thread owns the pool; the server's metrics only read its counters.
"""
from __future__ import annotations

import heapq
from typing import Iterable, List, Optional

import numpy as np


class PoolFull(Exception):
    """A reservation larger than the whole pool: the request can never run with this ``--kv-cache-mb``."""


class KVPool:
    """Keys and values of every layer in ``blocks`` blocks of ``block_tokens`` tokens.

    Args:
        layers, kv_heads, head_dim: the model's cache shape (``model.new_cache``'s).
        blocks: blocks in the pool (> 0).
        block_tokens: tokens per block (> 0; the prefix cache's block size).

    Counters: ``in_use`` (blocks held by a row or the prefix cache), ``peak`` (the most in use at once),
    ``reserved`` (blocks promised and not yet taken), ``waits`` (prompts that waited for blocks: a refused
    ``reserve`` with ``first_try``); the engine's, kept here for the metrics: ``preemptions`` (rows that let their
    blocks go for others' and were recomputed), ``recomputed_tokens`` (tokens prefilled again for them).
    """

    def __init__(self, layers: int, kv_heads: int, head_dim: int, blocks: int, block_tokens: int = 16):
        for name, v in (("layers", layers), ("kv_heads", kv_heads), ("head_dim", head_dim), ("blocks", blocks),
                        ("block_tokens", block_tokens)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"KVPool: {name} must be a positive integer, got {v!r}")
        shape = (int(blocks), int(kv_heads), int(block_tokens), int(head_dim))
        self.keys: List[np.ndarray] = [np.zeros(shape, np.float32) for _ in range(layers)]
        self.values: List[np.ndarray] = [np.zeros(shape, np.float32) for _ in range(layers)]
        self.blocks, self.block_tokens = int(blocks), int(block_tokens)
        self.refs = np.zeros(self.blocks, np.int32)
        self._free = list(range(self.blocks))  # a heap: lowest id first
        self.reserved = 0
        self.peak = 0
        self.waits = 0
        self.preemptions = self.recomputed_tokens = 0
        self.evictor = None  # the prefix cache: evictable() -> int, evict(n) frees n blocks only it holds

    @classmethod
    def for_model(cls, model, blocks: Optional[int] = None, max_bytes: Optional[int] = None,
                  block_tokens: int = 16) -> "KVPool":
        """A pool for ``model``'s cache (``model.new_cache``'s shape): ``blocks`` blocks, or as many as fit in
        ``max_bytes`` (at least one)."""
        probe = model.new_cache(1, 1)
        layers, (_, kv_heads, _, head_dim) = len(probe.keys), probe.keys[0].shape
        if blocks is None:
            blocks = max(1, int(max_bytes) // (2 * layers * kv_heads * block_tokens * head_dim * 4))
        return cls(layers, kv_heads, head_dim, blocks, block_tokens)

    @property
    def block_bytes(self) -> int:
        """Bytes of one block's keys and values in every layer."""
        k = self.keys[0]
        return 2 * len(self.keys) * k.shape[1] * k.shape[2] * k.shape[3] * 4

    @property
    def in_use(self) -> int:
        return self.blocks - len(self._free)

    def blocks_for(self, tokens: int) -> int:
        """Blocks that hold ``tokens`` keys."""
        return -(-int(tokens) // self.block_tokens)

    # ---- reservations ---------------------------------------------------------------------------------------------
    def available(self) -> int:
        """Blocks a reservation can still get: free ones not promised, and those only the prefix cache holds."""
        spare = len(self._free) - self.reserved
        return spare + (self.evictor.evictable() if self.evictor is not None else 0)

    def check_fits(self, n: int) -> None:
        """Raise PoolFull when ``n`` blocks (all a request's rows can hold) exceed the whole pool: such a request
        would wait forever."""
        if n > self.blocks:
            raise PoolFull(f"the request needs {n} blocks of {self.block_tokens} tokens for its keys and values "
                           f"(prompt and max_tokens, every choice), more than the KV cache's {self.blocks} "
                           f"({self.blocks * self.block_bytes / 2 ** 20:.1f} MiB: raise --kv-cache-mb or lower "
                           "max_tokens)")

    def reserve(self, n: int, first_try: bool = True) -> bool:
        """Promise ``n`` blocks to a prompt (evicting prefix-cache blocks if needed); False, promising nothing,
        while they are not available. first_try: False for a prompt asking again, so that ``waits`` counts prompts,
        not the decode steps they wait through."""
        if n > self.available():
            self.waits += bool(first_try)
            return False
        short = n - (len(self._free) - self.reserved)
        if short > 0:
            self.evictor.evict(short)
        self.reserved += n
        return True

    def unreserve(self, n: int) -> None:
        """Give back ``n`` promised blocks not taken (a row that ended early)."""
        if n < 0 or n > self.reserved:
            raise ValueError(f"KVPool.unreserve: {n} blocks, with {self.reserved} reserved")
        self.reserved -= n

    # ---- blocks ---------------------------------------------------------------------------------------------------
    def allocate(self) -> int:
        """A free block out of a reservation, held once (its keys and values: whatever was there)."""
        if self.reserved < 1 or not self._free:
            raise RuntimeError("KVPool.allocate: no block reserved (a bug in the engine's bookkeeping)")
        self.reserved -= 1
        block = heapq.heappop(self._free)
        self.refs[block] = 1
        self.peak = max(self.peak, self.in_use)
        return block

    def take(self) -> Optional[int]:
        """One block for a growing row beyond its reservation, held once (evicting a block only the prefix cache
        holds if no other is free), or None while none is available (the engine then preempts a row)."""
        if not self.reserve(1, first_try=False):
            return None
        return self.allocate()

    def share(self, blocks: Iterable[int]) -> None:
        """One more holder of each of ``blocks`` (full blocks: read, never written)."""
        for b in blocks:
            if self.refs[b] < 1:
                raise RuntimeError(f"KVPool.share: block {b} is free")
            self.refs[b] += 1

    def release(self, blocks: Iterable[int]) -> None:
        """One holder fewer of each of ``blocks``; a block nobody holds is free again."""
        for b in blocks:
            if self.refs[b] < 1:
                raise RuntimeError(f"KVPool.release: block {b} is already free")
            self.refs[b] -= 1
            if self.refs[b] == 0:
                heapq.heappush(self._free, int(b))

    def copy(self, src: int, dst: int, places: int) -> None:
        """Copy the first ``places`` keys and values of block ``src`` into block ``dst`` (every layer)."""
        for layer in range(len(self.keys)):
            self.keys[layer][dst, :, :places] = self.keys[layer][src, :, :places]
            self.values[layer][dst, :, :places] = self.values[layer][src, :, :places]


class BlockCache:
    """One row's keys and values as a prefill writes them, straight into pool blocks: models/hf's KVCache interface
    (``store``, ``update``, ``advance``, ``length``, ``max_length``) on the block table ``table``, so that a prompt's
    keys go into the blocks its rows will read, with no contiguous cache of every layer beside them (the prefill's
    peak memory: its blocks, and one layer's keys gathered while a chunk attends to those before it).

    Args:
        pool: the KVPool.
        table: the row's block ids in order (a list, appended to as the writes reach past its blocks: ``grow``).
        length: keys already in the blocks (a cached prefix's).
        max_length: the most keys the row's prefill writes.
        grow: () -> a new block id (held once) for the next ``pool.block_tokens`` places.
    """

    def __init__(self, pool: "KVPool", table: List[int], length: int, max_length: int, grow):
        self.pool, self.table, self.grow = pool, table, grow
        self.length, self.max_length = int(length), int(max_length)

    def _places(self, start: int, stop: int):
        """(blocks, places) of keys ``start:stop``, taking blocks for those past the table."""
        if stop > self.max_length:
            raise ValueError(f"BlockCache: {stop} tokens exceed the cache's max_length {self.max_length}")
        B = self.pool.block_tokens
        while len(self.table) * B < stop:
            self.table.append(self.grow())
        pos = np.arange(start, stop)
        return np.asarray(self.table, np.int64)[pos // B], pos % B

    def store(self, layer: int, k, v) -> None:
        """Write the new keys/values (1, kv_heads, t, D) of ``layer`` at places ``length`` on (arrays or Tensors)."""
        k = k if isinstance(k, np.ndarray) else k.numpy()
        v = v if isinstance(v, np.ndarray) else v.numpy()
        if k.shape[0] != 1:
            raise ValueError(f"BlockCache: one row's keys, got a batch of {k.shape[0]}")
        blocks, places = self._places(self.length, self.length + k.shape[2])
        self.pool.keys[layer][blocks, :, places] = k[0].transpose(1, 0, 2)  # (t, kv_heads, D): the indexed layout
        self.pool.values[layer][blocks, :, places] = v[0].transpose(1, 0, 2)

    def update(self, layer: int, k, v):
        """``store``, then every key and value so far (1, kv_heads, length + t, D) as Tensors (gathered: one
        layer's)."""
        from ..tensor import Tensor
        self.store(layer, k, v)
        blocks, places = self._places(0, self.length + k.shape[2])
        keys = np.ascontiguousarray(self.pool.keys[layer][blocks, :, places].transpose(1, 0, 2)[None])
        values = np.ascontiguousarray(self.pool.values[layer][blocks, :, places].transpose(1, 0, 2)[None])
        return Tensor._wrap(keys), Tensor._wrap(values)

    def advance(self, t: int) -> None:
        self.length += t


def table_array(tables: List[List[int]], width: Optional[int] = None) -> np.ndarray:
    """Block tables as one (rows, width) int64 array, each padded with block 0 (never read: past its length)."""
    width = max(len(t) for t in tables) if width is None else width
    out = np.zeros((len(tables), max(width, 1)), np.int64)
    for b, t in enumerate(tables):
        out[b, :len(t)] = t
    return out
