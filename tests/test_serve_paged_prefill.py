"""A prompt prefilled straight into pool blocks (serve/kv_pool.py ``BlockCache``): the model's forward writes each
layer's keys and values into a row's blocks, taking blocks as they are reached, with no contiguous cache beside them.
Whole or in chunks (the first through the lean prefill, the others through the Tensor path's ``update``), after a
cached prefix or not, the blocks hold what a KVCache holds and the logits are the KVCache prefill's (GPT-2 and a
grouped-query Llama that transformers wrote)."""
from __future__ import annotations

import numpy as np
import pytest

from forgegrad.serve.kv_pool import BlockCache, KVPool

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def model(request, tmp_path_factory):
    from forgegrad.models import from_pretrained
    from hf_conformance import tiny_byte_gpt2
    root = tmp_path_factory.mktemp("paged-prefill")
    if request.param == "gpt2":
        return from_pretrained(str(tiny_byte_gpt2(root / "gpt2")))
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=300, max_position_embeddings=256,
                                   initializer_range=0.3)
    transformers.LlamaForCausalLM(cfg).save_pretrained(root / "llama")
    return from_pretrained(str(root / "llama"))


def _prefill(model, ids, cache, chunks):
    """Logits (V,) of the last token, prefilled on ``cache`` from its length in ``chunks`` of tokens."""
    from forgegrad.autograd import no_grad
    at, logits = cache.length, None
    with no_grad():
        for n in chunks:
            end = at + n
            logits = model(np.array([ids[at:end]]), np.ones((1, end), bool), np.arange(at, end)[None], cache=cache,
                           logits_to_keep=1).numpy()[0, -1]
            at = end
    return logits


@pytest.mark.parametrize("chunks", [[40], [16, 13, 11]])
@pytest.mark.parametrize("prefix", [0, 1])
def test_the_blocks_hold_what_a_kv_cache_holds(model, chunks, prefix):
    """A 40-token prompt in blocks of 16 (two full, one partial), after ``prefix`` blocks already written (a cached
    prefix: the prefill starting past them)."""
    ids = [int(t) for t in np.random.default_rng(3).integers(3, 250, 40)]
    ref = model.new_cache(1, 40)
    want = _prefill(model, ids, ref, [40])
    pool = KVPool.for_model(model, blocks=6, block_tokens=16)
    assert pool.reserve(3)
    table = []
    if prefix:  # a cached prefix: its block written by a prefill of its tokens alone, as the prefix cache keeps it
        _prefill(model, ids, BlockCache(pool, table, 0, 16, pool.allocate), [16])
    cache = BlockCache(pool, table, 16 * prefix, 40, pool.allocate)
    if prefix:  # the prefix's tokens are not fed again
        chunks = [24] if len(chunks) == 1 else [13, 11]
    got = _prefill(model, ids, cache, chunks)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    assert cache.length == 40 and len(table) == 3 and pool.reserved == 0 and pool.in_use == 3
    for layer in range(len(ref.keys)):
        for kv, pooled in ((ref.keys, pool.keys), (ref.values, pool.values)):
            blocks = np.concatenate([pooled[layer][b] for b in table], axis=1)[:, :40]  # (Hkv, 40, D)
            np.testing.assert_allclose(blocks, kv[layer][0], atol=1e-5, rtol=1e-5)


def test_writing_past_max_length_or_more_than_one_row_is_refused(model):
    pool = KVPool.for_model(model, blocks=2, block_tokens=16)
    cache = BlockCache(pool, [], 0, 8, pool.take)
    k = np.zeros((1, pool.keys[0].shape[1], 9, pool.keys[0].shape[3]), np.float32)
    with pytest.raises(ValueError, match="max_length 8"):
        cache.store(0, k, k)
    with pytest.raises(ValueError, match="one row"):
        cache.store(0, np.concatenate([k, k])[:, :, :4], np.concatenate([k, k])[:, :, :4])
