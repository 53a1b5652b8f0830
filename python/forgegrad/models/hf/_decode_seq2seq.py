"""The encoder-decoders' lean decode steps (T5, BART, Marian): one new token per row through the decoder as
direct kernel calls on the parameters' own arrays (norms, GEMVs with the activation fused, batched GEMMs over
the self-attention cache and the encoder's keys/values, softmax), as ``_decode.LeanDecoder`` does for the
decoder-only models.

Through the Tensor layer a T5-small step is ~270 ops, each tens of microseconds of Python dispatch: ~4 ms
on an ~6 ms memory-bound token. The math is the Tensor forward's, op for op (T5's relative-position bias of
the step's query is a row of the first layer's table, looked up by the same buckets; BART's position a row
of its table).

The steps also run a continuously batched decode (the completions server's, serve/seq2seq_batch.py): rows with
their own decoder positions (``positions``), each row's cached keys right-aligned behind masked padding
(``padding``), and each row's encoder keys/values padded to the batch's longest source with an additive bias
(``rebind``), as a padded batch's cross-attention masks its encoder padding. BART's family also steps on a
paged KV cache (serve/paged_seq2seq.py): its self-attention keys in a ``PagedKV``'s blocks, its encoder keys/values
in a ``PagedCross``'s blocks of the same pool, and so does T5: its self-attention's relative-position bias goes to
the paged kernel (``_C.attention.paged_decode``) as a table by distance, built once per model. NLLB-MoE's step
(BartLeanStep with its sparse feed-forwards) is in _decode_nllb_moe.py.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from ... import _C
from ...grad_mode import graph_free
from ...nn.hooks import has_call_hooks
from ._decode import (_GELU_TANH, _bf16_embedding, _bf16_linear, _layer_norm, _rms_norm, _rows, _weight_only_linear,
                      lean_linear, weight_dtypes_are_lean)

__all__ = ["T5LeanStep", "BartLeanStep", "PagedCross", "lean_seq2seq_step"]


def _plain_types() -> tuple:
    from ... import nn
    from . import bart, longt5, nllb_moe, pegasus_x, prophetnet, t5
    return (t5.T5ForConditionalGeneration, t5.MT5ForConditionalGeneration, t5.UMT5ForConditionalGeneration,
            longt5.LongT5ForConditionalGeneration, longt5.LongT5EncoderStack, longt5.LongT5EncoderBlock,
            longt5.LongT5EncoderSubLayer, longt5.LongT5LocalAttention, longt5.LongT5TransientGlobalAttention,
            t5.T5Stack, t5.T5Block, t5.T5SubLayer, t5.T5Attention, t5.T5FeedForward,
            bart.BartForConditionalGeneration, bart.MarianMTModel, bart.MBartForConditionalGeneration,
            bart.M2M100ForConditionalGeneration, bart.PegasusForConditionalGeneration,
            bart.BlenderbotForConditionalGeneration, bart.BlenderbotSmallForConditionalGeneration, bart.BartStack,
            bart.BartLayer, bart.BartAttention, pegasus_x.PegasusXForConditionalGeneration,
            pegasus_x.PegasusXEncoderStack, pegasus_x.PegasusXEncoderLayer, pegasus_x.PegasusXGlobalLocalAttention,
            pegasus_x.PegasusXDecoderStack, nllb_moe.NllbMoeForConditionalGeneration, nllb_moe.NllbMoeStack,
            nllb_moe.NllbMoeLayer, nllb_moe.NllbMoeDenseActDense, nllb_moe.NllbMoeSparseMLP, nllb_moe.NllbMoeTop2Router,
            nn.ModuleDict, prophetnet.ProphetNetForConditionalGeneration, prophetnet.ProphetNetEncoder,
            prophetnet.ProphetNetDecoder, prophetnet.ProphetNetEncoderLayer, prophetnet.ProphetNetDecoderLayer,
            prophetnet.ProphetNetAttention, prophetnet.ProphetNetNgramSelfAttention, prophetnet.ProphetNetFeedForward,
            nn.Linear, nn.RMSNorm, nn.LayerNorm, nn.Embedding, nn.Dropout, nn.ModuleList, _bf16_linear(),
            _bf16_embedding(), _weight_only_linear())


def lean_seq2seq_step(model, cross, mask, cache, rows_alone: bool = False):
    """The lean step for ``model`` (T5's and BART's families, PEGASUS-X, NLLB-MoE, ProphetNet) when it computes what
    its Tensor decode does, else None. ``rows_alone``: NLLB-MoE's routers route each row's token as a call of that
    row alone would (the completions server's rows, each equal to ``generate`` on its prompt alone); else the step's
    tokens together, as the Tensor decode of the batch (``generate``'s, transformers')."""
    from . import bart, nllb_moe, prophetnet, t5
    if not lean_applies(model):
        return None
    if isinstance(model, prophetnet.ProphetNetForConditionalGeneration):
        from ._decode_prophetnet import ProphetNetLeanStep
        return ProphetNetLeanStep(model, cross, mask, cache)
    if isinstance(model, t5.T5ForConditionalGeneration):  # (mT5, umT5: lean_applies took only the exact classes)
        return T5LeanStep(model, cross, mask, cache)
    if isinstance(model, nllb_moe.NllbMoeForConditionalGeneration):
        from ._decode_nllb_moe import NllbMoeLeanStep, nllb_moe_lean_applies
        return NllbMoeLeanStep(model, cross, mask, cache, rows_alone) if nllb_moe_lean_applies(model) else None
    if isinstance(model, bart.BartForConditionalGeneration):
        return BartLeanStep(model, cross, mask, cache)
    return None


def lean_applies(model) -> bool:
    """Whether a lean step computes what the model's decode does: no graph to record, eval mode, only the module
    types from_pretrained builds (bfloat16 ones too) or quantize_weight_only puts in, no forward pre-hooks, CPU
    parameters of the dtypes those layers hold."""
    if not graph_free() or model.training:
        return False
    plain = _plain_types()
    for m in model.modules():
        if type(m) not in plain or has_call_hooks(m) or not weight_dtypes_are_lean(m, plain[-1]):
            return False
    return True


_linear = lean_linear


def _attend(q: np.ndarray, keys: np.ndarray, values: np.ndarray, bias: Optional[np.ndarray],
            scale: float = 1.0) -> np.ndarray:
    """softmax(scale * q k^T + bias) v for q (B, H, D) over keys/values (B, H, L, D) (T5 does not scale the
    scores); ``bias`` broadcasts against the scores (B, H, 1, L)."""
    B, H, L, D = keys.shape
    scores = np.empty((B * H, 1, L), np.float32)
    _C.gemm.bmm(np.ascontiguousarray(q).reshape(B * H, 1, D), keys.reshape(B * H, L, D), scores, False, True, scale,
                0.0)
    if bias is not None:
        scores = np.ascontiguousarray(scores.reshape(B, H, 1, L) + bias, dtype=np.float32).reshape(B * H, 1, L)
    probs = np.empty_like(scores)
    _C.softmax.softmax_forward(scores.reshape(-1, L), probs.reshape(-1, L))
    out = np.empty((B * H, 1, D), np.float32)
    _C.gemm.bmm(probs, values.reshape(B * H, L, D), out, False, False, 1.0, 0.0)
    return out.reshape(B, H * D)


class PagedCross:
    """Each row's encoder keys and values in blocks of a paged pool (serve/kv_pool.py), read, never written: per
    layer a pool (blocks, H, block_tokens, D) of keys and one of values, and for each row its block table and its
    source's length. Row b's encoder key at position s is in block ``tables[b, s // block_tokens]``, place
    ``s % block_tokens``; a row attends to its first ``lengths[b]`` (no padding, so no bias).

    Args:
        keys, values: per layer (blocks, H, block_tokens, D) float32 arrays.
        tables: (B, width) int64, each row's block ids (past its blocks: any valid id, never read).
        lengths: (B,) int64, each row's source tokens (>= 1).
    """

    def __init__(self, keys, values, tables: np.ndarray, lengths: np.ndarray):
        self.keys, self.values = keys, values
        self.tables = np.ascontiguousarray(tables, np.int64)
        self.lengths = np.ascontiguousarray(lengths, np.int64)

    def attend(self, layer: int, q: np.ndarray, scale: float) -> np.ndarray:
        """q (B, H, D) against each row's encoder keys of ``layer``; (B, H * D)."""
        from ...kernels.attention import paged_attention_decode
        out = paged_attention_decode(q[:, :, None], self.keys[layer], self.values[layer], self.tables, self.lengths,
                                     scale)
        return out.reshape(q.shape[0], -1)


def _array(t) -> np.ndarray:
    return np.ascontiguousarray(t if isinstance(t, np.ndarray) else t.numpy())


class _LeanStep:
    """What the lean steps share: the model, its KVCache, each layer's encoder keys and values as arrays, the
    encoder input's padding bias, the feed-forward's fused activation; ``_next_place`` checks the cache's room.
    ``cache`` may be None for a step bound later (``rebind``)."""

    def __init__(self, model, cross: List[Tuple], mask: Optional[np.ndarray], cache, activation: str):
        from .t5 import _padding_mask
        self.model = model
        self.rebind(cache, [(_array(k), _array(v)) for k, v in cross], _padding_mask(mask))  # bias: (B, 1, 1, S)
        self.act = _GELU_TANH.get(activation)
        if self.act is None:
            raise ValueError(f"{type(self).__name__}: no fused kernel for the activation {activation!r}")

    def rebind(self, cache, cross, cross_bias: Optional[np.ndarray]) -> None:
        """Step another batch: ``cache`` (a KVCache), ``cross`` each layer's encoder (keys, values) as C-contiguous
        float32 arrays (B, H, S, D), ``cross_bias`` (B, 1, 1, S) additive (0 where a row has an encoder key, the
        float32 minimum on its padding), or None. BART's family on a paged pool: ``cache`` a PagedKV, ``cross`` a
        PagedCross, ``cross_bias`` None (each row attends to its own keys only), and the step's ``positions``
        given."""
        from ._decode import PagedKV
        from ._layers import KVCache
        if cache is not None and not isinstance(cache, (KVCache, PagedKV)):
            raise TypeError(f"{type(self).__name__}: cache must be a KVCache or a PagedKV, got {type(cache).__name__}")
        if isinstance(cache, PagedKV) != isinstance(cross, PagedCross):
            raise TypeError(f"{type(self).__name__}: a PagedKV cache goes with PagedCross encoder keys, and a KVCache "
                            "with per-layer arrays")
        self.cache, self.cross, self.cross_bias = cache, cross, cross_bias

    def _paged(self) -> bool:
        from ._decode import PagedKV
        return isinstance(self.cache, PagedKV)

    @staticmethod
    def _self_padding(padding: Optional[np.ndarray]) -> Optional[np.ndarray]:
        """(B, 1, 1, p + 1) additive bias of the self-attention keys ``padding`` marks False (None: none)."""
        from .t5 import _padding_mask
        return None if padding is None else _padding_mask(np.asarray(padding, bool))

    def _next_place(self) -> int:
        if self._paged():
            return -1  # each row's place is its own (PagedKV's lengths)
        p = self.cache.length
        if p + 1 > self.cache.max_length:
            raise ValueError(f"{type(self).__name__}: {p + 1} tokens exceed the cache's max_length "
                             f"{self.cache.max_length}")
        return p

    def _self_attention(self, i: int, p: int, q, k, v, bias, scale: float = 1.0, paged_bias=None) -> np.ndarray:
        """Layer i's new keys/values (B, H, D) written at place p of the cache, then q over places 0..p (a PagedKV:
        at each row's own place, then q over each row's own keys, ``paged_bias`` (H, distances) added by distance)."""
        if self._paged():
            return self.cache.attend(i, q[:, :, None], k, v, scale, bias=paged_bias)
        keys, values = self.cache.keys[i], self.cache.values[i]
        keys[:, :, p], values[:, :, p] = k, v
        return _attend(q, keys[:, :, :p + 1], values[:, :, :p + 1], bias, scale)


    def _cross_attention(self, i: int, q, scale: float) -> np.ndarray:
        """q (B, H, D) against layer i's encoder keys and values; (B, H * D)."""
        if isinstance(self.cross, PagedCross):
            return self.cross.attend(i, q, scale)
        k, v = self.cross[i]
        return _attend(q, k, v, self.cross_bias, scale)


class T5LeanStep(_LeanStep):
    """``step(tokens (B,)) -> logits (B, vocab)``: the decoder on one new token per row, appending to ``cache``
    (a KVCache, or a PagedKV with ``cross`` a PagedCross: ``rebind``) and attending to ``cross`` (each layer's
    encoder keys and values) with the encoder input's padding ``mask`` (B, S) of 0/1, or None. The self-attention's
    relative-position bias is the first layer's table of each distance (every layer reuses it, as transformers'
    T5Stack): sliced per step for a KVCache, one (H, max_distance + 1) table for the paged kernel."""

    def __init__(self, model, cross: List[Tuple], mask: Optional[np.ndarray], cache):
        from .t5 import _feed_forward_kind, relative_position_bucket
        gated, act = _feed_forward_kind(model.config)
        super().__init__(model, cross, mask, cache, act)
        self.gated = gated
        atts = model.decoder.bias_attentions()  # each layer's table's attention (T5: the first layer's for all)
        att = atts[0]
        self._bucket = lambda rel: relative_position_bucket(rel, False, att.num_buckets, att.max_distance)
        self.tables = [a.relative_attention_bias.weight.numpy() for a in atts]  # (buckets, heads) each
        self.heads = att.heads
        # the paged kernel's table (H, max_distance + 1): the bias of each distance d = query - key; every distance
        # from max_distance on falls in the last bucket, so the kernel's reading of the last column past the table
        # is the bias of any longer distance
        d = np.arange(att.max_distance + 1)
        self.by_distances = [np.ascontiguousarray(t[self._bucket(-d)].T, dtype=np.float32) for t in self.tables]

    def __call__(self, tokens: np.ndarray, positions: Optional[np.ndarray] = None,
                 padding: Optional[np.ndarray] = None) -> np.ndarray:
        """``padding`` (B, p + 1) bool: the cached keys each row has (False: padding before its own, right-aligned
        keys), the new place included; None: all. The distance of a right-aligned key to the new query is the same
        in every row, so T5 needs no ``positions``."""
        m, cache = self.model, self.cache
        dec = m.decoder
        p = self._next_place()
        x = _rows(m.shared, np.asarray(tokens, np.int64))  # (B, d)
        B, H = x.shape[0], self.heads
        biases = [None] * len(self.tables)
        if not self._paged():  # (paged: each row's query at its own last key, the kernel adds the bias by distance)
            # the query at place p over keys 0..p: the learned bias of each distance, (1, H, 1, p + 1) per table
            buckets = self._bucket(np.arange(p + 1) - p)
            pad = self._self_padding(padding)
            biases = [t[buckets].T[None, :, None, :] for t in self.tables]
            if pad is not None:
                biases = [np.ascontiguousarray(b + pad, dtype=np.float32) for b in biases]  # (B, H, 1, p + 1)
        per_layer = len(self.tables) > 1
        for i, block in enumerate(dec.block):
            sub_self, sub_cross, sub_ff = block.layer
            att = sub_self.SelfAttention
            h = _rms_norm(x, sub_self.layer_norm.weight.numpy(), sub_self.layer_norm.eps)
            j = i if per_layer else 0
            a = self._self_attention(i, p, *(_linear(w, h).reshape(B, H, -1) for w in (att.q, att.k, att.v)),
                                     biases[j], paged_bias=self.by_distances[j])
            x = x + _linear(att.o, a)
            ca = sub_cross.EncDecAttention
            h = _rms_norm(x, sub_cross.layer_norm.weight.numpy(), sub_cross.layer_norm.eps)
            x = x + _linear(ca.o, self._cross_attention(i, _linear(ca.q, h).reshape(B, H, -1), 1.0))
            ff = sub_ff.DenseReluDense
            h = _rms_norm(x, sub_ff.layer_norm.weight.numpy(), sub_ff.layer_norm.eps)
            f = _linear(ff.wi_0, h, self.act) * _linear(ff.wi_1, h) if self.gated else _linear(ff.wi, h, self.act)
            x = x + _linear(ff.wo, f)
        x = _rms_norm(x, dec.final_layer_norm.weight.numpy(), dec.final_layer_norm.eps)
        cache.advance(1)
        if m.scale_head:
            x = x * (m.config["d_model"] ** -0.5)
        head = m.shared if m.tied else m.lm_head
        return _linear(head, np.ascontiguousarray(x, dtype=np.float32))


class BartLeanStep(_LeanStep):
    """BART's, Marian's and mBART's decoder on one new token per row (``step(tokens (B,)) -> logits (B, vocab)``),
    as T5LeanStep: post-norm layers (residual, then LayerNorm; mBART: pre-norm, and a LayerNorm after the last
    layer), biased projections, scores scaled by 1/sqrt(D), the token embedding scaled and the position a row of
    the table (BART's from row 2, with its embedding LayerNorm; BlenderBot-small's decoder normalizes the token
    embedding before adding it; PEGASUS-X's sinusoids are computed at the row's place), ``final_logits_bias``
    added."""

    def __init__(self, model, cross: List[Tuple], mask: Optional[np.ndarray], cache):
        super().__init__(model, cross, mask, cache, model.config.get("activation_function", "gelu"))

    def __call__(self, tokens: np.ndarray, positions: Optional[np.ndarray] = None,
                 padding: Optional[np.ndarray] = None) -> np.ndarray:
        """``positions`` (B,): each row's decoder position (None: the cache's length, every row); ``padding`` as
        T5LeanStep's."""
        m, cache = self.model, self.cache
        dec = m.decoder
        p = self._next_place()
        x = _rows(m.decoder_embedding(), np.asarray(tokens, np.int64))
        if m.embed_scale != 1.0:
            x = x * m.embed_scale
        tokens = np.asarray(tokens, np.int64)
        if positions is None and self._paged():
            raise ValueError("BartLeanStep: a paged step needs each row's positions")
        at = p if positions is None else np.asarray(positions, np.int64)
        if dec.positions == "m2m100":
            row = dec.position_rows(tokens[:, None], at if positions is None else at[:, None])[:, 0]
        else:
            row = at + dec.offset
        self_bias = self._self_padding(padding)
        if dec.embed_norm == "tokens":  # BlenderBot-small's decoder: the norm before the positions
            x = _norm(dec.layernorm_embedding, x)
        if dec.positions == "pegasus_x":  # no table: each row's sinusoid at its own place
            from .pegasus_x import pegasus_x_positions
            places = np.broadcast_to(np.asarray(row, np.int64), (x.shape[0],))
            lo = int(places.min())
            position = pegasus_x_positions(lo, int(places.max()) - lo + 1, x.shape[1])[places - lo]
        else:
            position = dec._table().numpy()[row]
        x = np.ascontiguousarray(x + position, dtype=np.float32)
        if dec.embed_norm == "sum":
            x = _norm(dec.layernorm_embedding, x)
        B = x.shape[0]
        pre = m.pre_norm

        def sub_layer(norm, x, f):  # post-norm: norm(x + f(x)); pre-norm (mBART): x + f(norm(x))
            return x + f(_norm(norm, x)) if pre else _norm(norm, x + f(x))

        for i, layer in enumerate(dec.layers):
            att, (ca, cross_norm, ff_norm) = layer.self_attn, self._parts(layer)
            H = att.heads
            scale = 1.0 / float(np.sqrt(x.shape[1] // H))

            def self_attention(y, i=i, att=att):
                qkv = (_linear(w, y).reshape(B, H, -1) for w in (att.q_proj, att.k_proj, att.v_proj))
                return _linear(att.out_proj, self._self_attention(i, p, *qkv, self_bias, scale))

            def cross_attention(y, i=i, ca=ca):
                return _linear(ca.out_proj, self._cross_attention(i, _linear(ca.q_proj, y).reshape(B, H, -1), scale))

            x = sub_layer(layer.self_attn_layer_norm, x, self_attention)
            x = sub_layer(cross_norm, x, cross_attention)
            x = sub_layer(ff_norm, x, lambda y, layer=layer: self._feed_forward(layer, y))
        if pre:
            x = _norm(dec.layer_norm, x)
        cache.advance(1)
        head = m.decoder_embedding() if m.tied else m.lm_head
        return _linear(head, x) + m.final_logits_bias.numpy()

    @staticmethod
    def _parts(layer) -> tuple:
        """A decoder layer's (cross-attention, its LayerNorm, the feed-forward's LayerNorm)."""
        return layer.encoder_attn, layer.encoder_attn_layer_norm, layer.final_layer_norm

    def _feed_forward(self, layer, y: np.ndarray) -> np.ndarray:
        """A decoder layer's feed-forward on its normalised rows y (B, d)."""
        return _linear(layer.fc2, _linear(layer.fc1, y, self.act))


def _norm(ln, x: np.ndarray) -> np.ndarray:
    return _layer_norm(np.ascontiguousarray(x, dtype=np.float32), ln.weight.numpy(), ln.bias.numpy(), ln.eps)
