"""What the encoder-decoders (T5, BART, Marian) share: the shared token embedding's accessors, the decoder's
start token and ``forward``, around each architecture's ``encode`` and ``decode`` (which ``generate`` calls)."""
from __future__ import annotations

from ...factories import cat
from ...tensor import Tensor
from ._layers import FLOAT32_MAX, key_places


class EncoderDecoder:
    """Mixed into an nn.Module with ``config``, ``shared`` (the token embedding), ``encode`` and ``decode``.
    ``start_fallback``: the config key whose token starts the decoder when decoder_start_token_id is unset."""

    is_encoder_decoder = True
    start_fallback = "pad_token_id"

    @property
    def vocab_size(self) -> int:
        return self.config["vocab_size"]

    @property
    def decoder_vocab_size(self) -> int:
        """The decoder's vocabulary (its tokens, the logits' width; Marian's may differ from the encoder's)."""
        return self.vocab_size

    def encoder_embedding(self):
        return self.shared

    def decoder_embedding(self):
        return self.shared

    def tied_embedding(self):
        """The token embedding the LM head is tied to (the decoder's)."""
        return self.decoder_embedding()

    @property
    def decoder_start_token_id(self) -> int:
        start = self.config.get("decoder_start_token_id")
        if isinstance(start, int):
            return int(start)
        fallback = self.config.get(self.start_fallback)
        return int(fallback) if isinstance(fallback, int) else 0

    def forward(self, input_ids, attention_mask=None, decoder_input_ids=None) -> Tensor:
        """Logits (B, T_dec, vocab) of ``decoder_input_ids`` after the encoder read ``input_ids``."""
        if decoder_input_ids is None:
            raise ValueError(f"{type(self).__name__}: decoder_input_ids is required (the decoder's tokens, starting "
                             f"with decoder_start_token_id {self.decoder_start_token_id}); generate() makes them")
        return self.decode(decoder_input_ids, self.encode(input_ids, attention_mask), attention_mask)


class BartStyleDecoder:
    """``cross_kv`` and ``new_cache`` of a model whose ``decoder.layers`` each have an ``encoder_attn`` with
    ``project_kv`` and whose config gives ``decoder_attention_heads`` and ``d_model`` (BART's family, Whisper)."""

    def cross_kv(self, encoder_states: Tensor) -> list:
        return [layer.encoder_attn.project_kv(encoder_states) for layer in self.decoder.layers]

    def new_cache(self, batch: int, max_length: int):
        from ._layers import KVCache
        c = self.config
        heads = c["decoder_attention_heads"]
        return KVCache(len(self.decoder.layers), batch, heads, max_length, c["d_model"] // heads)


def attention_kv(attention, x: Tensor, kv, cache, layer: int):
    """An encoder-decoder attention's keys and values: the encoder's precomputed ``kv`` (cross-attention), or
    ``x``'s own projections (``attention.project_kv``), appended to ``cache`` when one is given."""
    if kv is not None:
        return kv
    k, v = attention.project_kv(x)
    return cache.update(layer, k, v) if cache is not None else (k, v)


# --- the exported graphs' decoder places (export_seq2seq traces them) ---
def decoder_places(input_ids: Tensor, cache) -> tuple:
    """(keys (B, past + T), queries (B, T)): the places of the cached and the new decoder tokens, from the
    first cached key's length (a PastKeyValues) and the new ids."""
    past = cache.keys[0][:, 0, :, 0] * 0 + 1  # (B, past), past may be 0
    keys = key_places(cat([past, input_ids.float() * 0 + 1], dim=1))
    return keys, keys[:, cache.length:]


def causal_bias(keys: Tensor, queries: Tensor) -> Tensor:
    """(B, 1, T, past + T) additive bias of ``decoder_places``: 0 where a query may see a key (not a later one),
    minus float32's max elsewhere."""
    return (((keys.unsqueeze(1) <= queries.unsqueeze(2)).float() - 1) * FLOAT32_MAX).unsqueeze(1)
